"""Rows -> oVirt-shaped structures (one model for XML and JSON)."""
from sqlalchemy import select

from ..models import Cluster, Host, Nic, Snapshot, Vm
from ..representation import Many
from ..services import disks as disk_svc
from .framework import href, ref

VERSION = {"major": 4, "minor": 6}


def links(base, *rels):
    return [{"rel": r, "href": f"{base}/{r}"} for r in rels]


def datacenter(s, dc):
    return {"id": dc.id, "href": href("datacenters", dc.id), "name": dc.name,
            "description": dc.description, "local": dc.local, "status": "up",
            "storage_format": "v5", "version": VERSION,
            "supported_versions": Many("version", [VERSION]),
            "link": links(href("datacenters", dc.id), "clusters", "storagedomains", "networks")}


def cluster(s, cl):
    return {"id": cl.id, "href": href("clusters", cl.id), "name": cl.name, "description": cl.description,
            "data_center": ref("datacenters", cl.data_center_id),
            "scheduling_policy": {"name": cl.scheduling_policy},
            "cpu": {"architecture": "x86_64", "type": "qemu64"}, "version": VERSION}


def host(s, h, follow=()):
    out = {"id": h.id, "href": href("hosts", h.id), "name": h.name, "address": h.address,
           "status": h.status, "status_detail": h.status_detail or None,
           "cluster": ref("clusters", h.cluster_id),
           "cpu": {"name": h.cpu_model, "topology": {"sockets": 1, "cores": h.cpus or 1, "threads": 1}},
           "memory": h.memory_total, "max_scheduling_memory": h.memory_free,
           "libvirt_version": None, "type": "rhel",
           "hardware_information": {"manufacturer": "keel", "product_name": h.hostname},
           "summary": {"active": _count_vms(s, h.id), "total": _count_vms(s, h.id)},
           "link": links(href("hosts", h.id), "fenceagents", "nics")}
    if "cluster" in follow:
        out["cluster"] = cluster(s, s.get(Cluster, h.cluster_id))
    return out


def _count_vms(s, host_id):
    return len(s.scalars(select(Vm.id).where(Vm.host_id == host_id)).all())


def fence_agent(s, a):
    return {"id": a.id, "href": href("hosts", a.host_id, "fenceagents", a.id), "address": a.address,
            "port": a.port, "username": a.username, "type": a.type, "order": a.order,
            "encrypt_options": a.encrypt_options,
            "options": Many("option", [{"name": k, "value": v} for k, v in sorted((a.options or {}).items())]),
            "host": ref("hosts", a.host_id)}


def storage_domain(s, sd):
    return {"id": sd.id, "href": href("storagedomains", sd.id), "name": sd.name,
            "description": sd.description, "type": sd.type, "status": sd.status,
            "external_status": "ok", "master": True, "storage_format": "v5",
            "storage": {"type": sd.storage_type, "path": sd.path, "address": sd.address},
            "available": sd.available, "used": sd.used, "committed": 0,
            "data_centers": Many("data_center", [ref("datacenters", sd.data_center_id)] if sd.data_center_id else []),
            "link": links(href("storagedomains", sd.id), "disks")}


def network(s, n):
    return {"id": n.id, "href": href("networks", n.id), "name": n.name, "description": n.description,
            "data_center": ref("datacenters", n.data_center_id),
            "vlan": {"id": n.vlan} if n.vlan else None, "mtu": n.mtu, "stp": False,
            "usages": Many("usage", ["vm"])}


def topology(cpus):
    return {"topology": {"sockets": cpus, "cores": 1, "threads": 1}}


def template(s, t, follow=()):
    out = {"id": t.id, "href": href("templates", t.id), "name": t.name, "description": t.description,
           "status": t.status, "memory": t.memory, "cpu": topology(t.cpus), "os": {"type": t.os_type},
           "cluster": ref("clusters", t.cluster_id), "creation_time": t.created, "type": "server",
           "version": {"version_number": 1, "base_template": ref("templates", t.id)},
           "link": links(href("templates", t.id), "diskattachments", "nics")}
    if "disk_attachments" in follow:
        out["disk_attachments"] = Many("disk_attachment", [
            disk_attachment(s, a, d, "templates", t.id) for a, d, _sd in disk_svc.template_disks(s, t.id)])
    return out


def vm(s, v, follow=()):
    base = href("vms", v.id)
    out = {"id": v.id, "href": base, "name": v.name, "description": v.description, "status": v.status,
           "memory": v.memory, "cpu": topology(v.cpus), "os": {"type": v.os_type},
           "cluster": ref("clusters", v.cluster_id), "template": ref("templates", v.template_id),
           "host": ref("hosts", v.host_id) if v.host_id else None,
           "high_availability": {"enabled": v.high_availability, "priority": v.ha_priority},
           "lease": ({"storage_domain": ref("storagedomains", v.lease_storage_domain_id)}
                     if v.lease_storage_domain_id else None),
           "stop_reason": v.stop_reason or None, "start_time": v.start_time,
           "creation_time": v.created, "type": "server", "origin": "keel",
           "memory_policy": {"guaranteed": v.memory, "max": v.memory},
           "link": links(base, "nics", "diskattachments", "snapshots", "permissions")}
    if "nics" in follow:
        out["nics"] = Many("nic", [nic(s, n) for n in s.scalars(select(Nic).where(Nic.vm_id == v.id).order_by(Nic.name))])
    if "disk_attachments" in follow:
        out["disk_attachments"] = Many("disk_attachment", [
            disk_attachment(s, a, d, "vms", v.id) for a, d, _sd in disk_svc.vm_disks(s, v.id)])
    if "snapshots" in follow:
        out["snapshots"] = Many("snapshot", [snapshot(s, x) for x in s.scalars(
            select(Snapshot).where(Snapshot.vm_id == v.id).order_by(Snapshot.date))])
    if "host" in follow and v.host_id:
        out["host"] = host(s, s.get(Host, v.host_id))
    if "cluster" in follow:
        out["cluster"] = cluster(s, s.get(Cluster, v.cluster_id))
    return out


def nic(s, n):
    return {"id": n.id, "href": href("vms", n.vm_id, "nics", n.id), "name": n.name,
            "interface": n.interface, "mac": {"address": n.mac}, "plugged": True, "linked": True,
            "vnic_profile": ref("vnicprofiles", n.network_id) if n.network_id else None,
            "network": ref("networks", n.network_id) if n.network_id else None,
            "vm": ref("vms", n.vm_id)}


def disk(s, d):
    return {"id": d.id, "href": href("disks", d.id), "name": d.name, "alias": d.name,
            "description": d.description, "provisioned_size": d.provisioned_size, "format": d.format,
            "status": d.status, "storage_type": "image", "content_type": "data", "sparse": True,
            "shareable": False, "image_id": d.active_volume.split(".")[1] if "." in d.active_volume else None,
            "storage_domains": Many("storage_domain", [ref("storagedomains", d.storage_domain_id)]),
            "template": ref("templates", d.template_id) if d.template_id else None}


def disk_attachment(s, a, d, owner_kind, owner_id):
    owner = {"vms": "vm", "templates": "template"}[owner_kind]
    return {"id": a.id, "href": href(owner_kind, owner_id, "diskattachments", a.id),
            "interface": a.interface, "bootable": a.bootable, "active": a.active,
            "pass_discard": False, "read_only": False, "uses_scsi_reservation": False,
            "logical_name": None, "disk": disk(s, d), owner: ref(owner_kind, owner_id)}


def snapshot(s, x):
    return {"id": x.id, "href": href("vms", x.vm_id, "snapshots", x.id), "description": x.description,
            "snapshot_status": x.status, "snapshot_type": "regular", "date": x.date,
            "persist_memorystate": False, "vm": ref("vms", x.vm_id)}


def event(s, e):
    out = {"id": str(e.id), "href": href("events", str(e.id)), "code": e.code, "severity": e.severity,
           "description": e.description, "time": e.time, "origin": e.origin, "custom_id": e.custom_id,
           "flood_rate": 30, "index": e.id}
    for key, kind, col in (("vm", "vms", e.vm_id), ("host", "hosts", e.host_id),
                           ("cluster", "clusters", e.cluster_id),
                           ("data_center", "datacenters", e.data_center_id),
                           ("storage_domain", "storagedomains", e.storage_domain_id),
                           ("template", "templates", e.template_id), ("user", "users", e.user_id)):
        if col:
            out[key] = ref(kind, col)
    return out


def job(s, j):
    return {"id": j.id, "href": href("jobs", j.id), "description": j.description, "status": j.status,
            "start_time": j.start_time, "end_time": j.end_time, "last_updated": j.last_updated,
            "auto_cleared": j.auto_cleared, "external": j.external,
            "owner": ref("users", j.owner_id) if j.owner_id else None}


def user(s, u):
    return {"id": u.id, "href": href("users", u.id), "name": u.name, "user_name": f"{u.name}@{u.domain}",
            "principal": u.name, "namespace": "*", "domain": {"name": u.domain},
            "link": links(href("users", u.id), "permissions")}


def role(s, r):
    return {"id": r.id, "href": href("roles", r.id), "name": r.name, "description": r.description,
            "administrative": r.administrative, "mutable": False}


def permission(s, p):
    out = {"id": p.id, "href": href("permissions", p.id), "role": ref("roles", p.role_id),
           "user": ref("users", p.user_id)}
    if p.object_type:
        out[p.object_type] = ref(p.object_type + "s", p.object_id)
    return out

