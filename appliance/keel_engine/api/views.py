"""Rows -> oVirt-shaped structures (one model for XML and JSON).

Views are pure: they get a row and whatever else they show (loaded for the
whole page by services.reads), never a database session, so a list costs
the same few queries whatever its length."""
from ..representation import Many
from . import guest_views

API = "/ovirt-engine/api"
VERSION = {"major": 4, "minor": 6}


def href(*parts):
    return "/".join((API, *parts))


def ref(kind, ident, name=None):
    if ident is None:
        return None
    out = {"id": ident, "href": f"{API}/{kind}/{ident}"}
    if name is not None:
        out["name"] = name
    return out


def links(base, *rels):
    return [{"rel": r, "href": f"{base}/{r}"} for r in rels]


def datacenter(dc):
    base = f"{API}/datacenters/{dc.id}"
    return {"id": dc.id, "href": base, "name": dc.name,
            "description": dc.description, "local": dc.local, "status": "up",
            "storage_format": "v5", "version": VERSION,
            "supported_versions": Many("version", [VERSION]),
            "link": links(base, "clusters", "storagedomains", "networks")}


# scheduling policies as oVirt names them, with fixed ids (api/vm_devices.py serves them)
SCHEDULING_POLICY_IDS = {"evenly_distributed": "8d5d7bec-68de-4a67-b53e-0ac54686d586",
                         "none": "b4ed2332-a7ac-4d5f-9596-99a439cb2812"}
# what a Keel cluster does, in the terms oVirt clients read (and compare
# before deciding to update): no KSM, no ballooning, fencing on, HA VMs
# restarted elsewhere, migration settings left to libvirt
MAC_POOL_ID = "00000000-0000-0000-0000-00000000000a"
CLUSTER_FACTS = {
    "ballooning_enabled": False, "virt_service": True, "gluster_service": False, "threads_as_cores": False,
    "ha_reservation": False, "trusted_service": False, "maintenance_reason_required": False,
    "optional_reason": False, "switch_type": "legacy", "firewall_type": "firewalld",
    "ksm": {"enabled": False, "merge_across_nodes": True},
    "fencing_policy": {"enabled": True, "skip_if_gluster_bricks_up": False, "skip_if_gluster_quorum_not_met": False,
                       "skip_if_sd_active": {"enabled": False},
                       "skip_if_connectivity_broken": {"enabled": False, "threshold": 50}},
    "error_handling": {"on_error": "migrate"},
    "migration": {"auto_converge": "inherit", "compressed": "inherit", "encrypted": "inherit",
                  "bandwidth": {"assignment_method": "auto"}},
    "memory_policy": {"over_commit": {"percent": 100}, "transparent_hugepages": {"enabled": False}},
    # every VM has a virtio RNG fed from the host's /dev/urandom (oVirt's default)
    "required_rng_sources": Many("required_rng_source", ["urandom"]),
    # one pool of MAC addresses for the whole engine (56:6f:...), as oVirt's Default
    "mac_pool": {"id": MAC_POOL_ID, "href": f"{API}/macpools/{MAC_POOL_ID}"},
}


def cluster(cl):
    policy = SCHEDULING_POLICY_IDS.get(cl.scheduling_policy)
    return {"id": cl.id, "href": f"{API}/clusters/{cl.id}", "name": cl.name, "description": cl.description,
            "data_center": ref("datacenters", cl.data_center_id),
            "scheduling_policy": {**(ref("schedulingpolicies", policy) or {}), "name": cl.scheduling_policy},
            "cpu": {"architecture": "x86_64", "type": "qemu64"}, "version": VERSION, **CLUSTER_FACTS}


def host(h, vm_count=0, cluster_row=None, power_managed=False):
    base = f"{API}/hosts/{h.id}"
    return {"id": h.id, "href": base, "name": h.name, "address": h.address,
            "status": h.status, "status_detail": h.status_detail or None,
            "cluster": cluster(cluster_row) if cluster_row is not None else ref("clusters", h.cluster_id),
            "cpu": {"name": h.cpu_model, "topology": {"sockets": 1, "cores": h.cpus or 1, "threads": 1}},
            "memory": h.memory_total, "max_scheduling_memory": h.memory_free,
            "type": "rhel", "hardware_information": {"manufacturer": "keel", "product_name": h.hostname},
            "summary": {"active": vm_count, "total": vm_count},
            # power management is on when the host has a fence agent; no kdump detection
            "power_management": {"enabled": power_managed, "kdump_detection": False, "automatic_pm_enabled": True},
            # Keel has no storage pool manager: every host reaches storage alike
            "spm": {"priority": 5, "status": "none"},
            "os": {"type": "Debian", "custom_kernel_cmdline": ""},
            "link": links(base, "fenceagents", "nics")}


def fence_agent(a):
    """Never the password: it is write-only."""
    return {"id": a.id, "href": f"{API}/hosts/{a.host_id}/fenceagents/{a.id}", "address": a.address,
            "port": a.port, "username": a.username, "type": a.type, "order": a.order,
            "encrypt_options": a.encrypt_options,
            "options": Many("option", [{"name": k, "value": v} for k, v in sorted((a.options or {}).items())]),
            "host": ref("hosts", a.host_id)}


def storage_of(sd):
    """oVirt's host storage: an nfs domain's path is the export on the server
    (where hosts mount it follows from the engine's [storage] nfs_mount_root)."""
    if sd.storage_type == "nfs":
        return {"type": "nfs", "address": sd.address, "path": sd.export_path}
    return {"type": sd.storage_type, "path": sd.path, "address": sd.address}


def storage_domain(sd):
    return {"id": sd.id, "href": f"{API}/storagedomains/{sd.id}", "name": sd.name,
            "description": sd.description, "type": sd.type, "status": sd.status,
            "external_status": "ok", "master": True, "storage_format": "v5",
            "storage": storage_of(sd),
            "available": sd.available, "used": sd.used, "committed": 0,
            "data_centers": Many("data_center", [ref("datacenters", sd.data_center_id)] if sd.data_center_id else []),
            "link": links(f"{API}/storagedomains/{sd.id}", "disks", "files")}


def network(n):
    return {"id": n.id, "href": f"{API}/networks/{n.id}", "name": n.name, "description": n.description,
            "data_center": ref("datacenters", n.data_center_id),
            "vlan": {"id": n.vlan} if n.vlan else None, "mtu": n.mtu, "stp": False,
            "usages": Many("usage", ["vm"])}


def vnic_profile(n):
    """One vNIC profile per network, with the network's id."""
    return {"id": n.id, "href": f"{API}/vnicprofiles/{n.id}", "name": n.name, "network": ref("networks", n.id)}


def topology(cpus):
    return {"topology": {"sockets": cpus, "cores": 1, "threads": 1}}


def template(t, attachments=None):
    base = f"{API}/templates/{t.id}"
    out = {"id": t.id, "href": base, "name": t.name, "description": t.description,
           "status": t.status, "memory": t.memory, "cpu": topology(t.cpus), "os": {"type": t.os_type},
           "cluster": ref("clusters", t.cluster_id), "creation_time": t.created, "type": "server",
           "version": {"version_number": 1, "base_template": ref("templates", t.id)},
           # what VMs made from it get (ovirt_template compares these before updating)
           "memory_policy": {"guaranteed": t.memory, "max": t.memory, "ballooning": False},
           "bios": {"type": "i440fx_sea_bios", "boot_menu": {"enabled": False}},
           "usb": {"enabled": False}, "io": {"threads": 0}, "sso": {"methods": Many("method", [])},
           "link": links(base, "diskattachments", "nics")}
    if attachments is not None:
        out["disk_attachments"] = Many("disk_attachment", [
            disk_attachment(a, d, "templates", t.id) for a, d in attachments])
    return out


VM_LINKS = ("nics", "diskattachments", "snapshots", "permissions", "reporteddevices")


def vm(v, nics=None, attachments=None, snapshots=None, host_row=None, cluster_row=None, reported_devices=False,
       initialization=None):
    base = f"{API}/vms/{v.id}"
    out = {"id": v.id, "href": base, "name": v.name, "description": v.description, "status": v.status,
           "memory": v.memory, "cpu": {"topology": {"sockets": v.cpus, "cores": 1, "threads": 1}},
           "os": {"type": v.os_type, "kernel": v.kernel_path or None, "initrd": v.initrd_path or None,
                  "cmdline": v.kernel_params or None},
           "cluster": {"id": v.cluster_id, "href": f"{API}/clusters/{v.cluster_id}"},
           "template": {"id": v.template_id, "href": f"{API}/templates/{v.template_id}"},
           "host": {"id": v.host_id, "href": f"{API}/hosts/{v.host_id}"} if v.host_id else None,
           "high_availability": {"enabled": v.high_availability, "priority": v.ha_priority},
           "lease": ({"storage_domain": ref("storagedomains", v.lease_storage_domain_id)}
                     if v.lease_storage_domain_id else None),
           "stop_reason": v.stop_reason or None, "start_time": v.start_time,
           "creation_time": v.created, "type": "server", "origin": "keel",
           "memory_policy": {"guaranteed": v.memory, "max": v.memory},
           "link": [{"rel": r, "href": f"{base}/{r}"} for r in VM_LINKS],
           **guest_views.vm_fields(v)}
    if reported_devices:
        out["reported_devices"] = Many("reported_device", guest_views.reported_devices(v.id, base,
                                                                                       v.guest_interfaces))
    if initialization is not None:
        out["initialization"] = vm_initialization(initialization)
    if nics is not None:
        out["nics"] = Many("nic", [nic(n) for n in nics])
    if attachments is not None:
        out["disk_attachments"] = Many("disk_attachment", [disk_attachment(a, d, "vms", v.id)
                                                           for a, d in attachments])
    if snapshots is not None:
        out["snapshots"] = Many("snapshot", [snapshot(x) for x in snapshots])
    if host_row is not None:
        out["host"] = host(host_row)
    if cluster_row is not None:
        out["cluster"] = cluster(cluster_row)
    return out


def vm_initialization(i):
    """A VM's stored cloud-init configuration; never its root password (as oVirt)."""
    def nic_configuration(n):
        ip = {"address": n.get("address"), "netmask": n.get("netmask"), "gateway": n.get("gateway"),
              "version": "v4"} if n.get("address") else None
        return {"name": n.get("name"), "boot_protocol": n.get("boot_protocol"),
                "on_boot": n.get("on_boot", True) is not False, "ip": ip}
    out = {k: getattr(i, k) or None for k in ("host_name", "user_name", "authorized_ssh_keys", "custom_script",
                                               "dns_servers", "dns_search", "timezone")}
    out["nic_configurations"] = Many("nic_configuration", [nic_configuration(n)
                                                           for n in i.nic_configurations or ()])
    return out


def nic(n, reported=None):
    """reported: the guest's view of it (api/guest.py), when followed."""
    base = f"{API}/vms/{n.vm_id}/nics/{n.id}"
    out = {"id": n.id, "href": base, "name": n.name,
           "interface": n.interface, "mac": {"address": n.mac}, "plugged": n.plugged, "linked": True,
           "vnic_profile": ref("vnicprofiles", n.network_id), "network": ref("networks", n.network_id),
           "vm": ref("vms", n.vm_id), "link": links(base, "reporteddevices", "networkfilterparameters")}
    if reported is not None:
        out["reported_devices"] = Many("reported_device", reported)
    return out


def disk(d):
    return {"id": d.id, "href": f"{API}/disks/{d.id}", "name": d.name, "alias": d.name,
            "description": d.description, "provisioned_size": d.provisioned_size, "format": d.format,
            "status": d.status, "storage_type": "image", "content_type": "data", "sparse": True,
            "shareable": False, "image_id": d.active_volume.split(".")[1] if "." in d.active_volume else None,
            "storage_domains": Many("storage_domain", [ref("storagedomains", d.storage_domain_id)]),
            "template": ref("templates", d.template_id)}


def disk_attachment(a, d, owner_kind, owner_id):
    owner = {"vms": "vm", "templates": "template"}[owner_kind]
    return {"id": a.id, "href": f"{API}/{owner_kind}/{owner_id}/diskattachments/{a.id}",
            "interface": a.interface, "bootable": a.bootable, "active": a.active,
            "pass_discard": False, "read_only": False, "uses_scsi_reservation": False,
            "disk": disk(d), owner: ref(owner_kind, owner_id)}


def snapshot(x):
    return {"id": x.id, "href": f"{API}/vms/{x.vm_id}/snapshots/{x.id}", "description": x.description,
            # the row keeping a VM as it was before a preview is oVirt's type "preview"
            "snapshot_status": "ok" if x.status == "preview" else x.status,
            "snapshot_type": "preview" if x.status == "preview" else "regular", "date": x.date,
            "persist_memorystate": False, "vm": ref("vms", x.vm_id)}


EVENT_REFS = (("vm", "vms", "vm_id"), ("host", "hosts", "host_id"), ("cluster", "clusters", "cluster_id"),
              ("data_center", "datacenters", "data_center_id"),
              ("storage_domain", "storagedomains", "storage_domain_id"),
              ("template", "templates", "template_id"), ("user", "users", "user_id"))


def event(e):
    out = {"id": str(e.id), "href": f"{API}/events/{e.id}", "code": e.code, "severity": e.severity,
           "description": e.description, "time": e.time, "origin": e.origin, "custom_id": e.custom_id,
           "flood_rate": 30, "index": e.id}
    for key, kind, col in EVENT_REFS:
        ident = getattr(e, col)
        if ident:
            out[key] = ref(kind, ident)
    return out


def job(j, steps=None):
    out = {"id": j.id, "href": f"{API}/jobs/{j.id}", "description": j.description, "status": j.status,
           "start_time": j.start_time, "end_time": j.end_time, "last_updated": j.last_updated,
           "auto_cleared": j.auto_cleared, "external": j.external,
           "owner": ref("users", j.owner_id), "link": links(f"{API}/jobs/{j.id}", "steps")}
    if steps is not None:
        out["steps"] = Many("step", [step(st) for st in steps])
    return out


def step(st):
    return {"id": st.id, "href": f"{API}/jobs/{st.job_id}/steps/{st.id}", "description": st.description,
            "type": st.type, "number": st.number, "status": st.status, "start_time": st.start_time,
            "end_time": st.end_time, "job": ref("jobs", st.job_id)}
