"""VMs (lifecycle actions, NICs, disk attachments, snapshots), templates and
disks: oVirt documents in, typed service calls, oVirt documents out."""
from ..errors import bad_request, not_found
from ..models import Disk, DiskAttachment, Host, Nic, Snapshot, Template, Vm, VmInitialization
from ..services import cloud_init
from ..services import disks as disk_svc
from ..services import lookup, reads
from ..services import snapshots as snap_svc
from ..services import templates as tpl_svc
from ..services import vms as vm_svc
from ..services.lookup import Ref
from . import guest, schemas, views
from .common import listing, obj, row
from .fields import get, required
from ..representation import Many
from .framework import (action_job, body, bool_param, created, ctx, finish_job, follow_param, raw_body, reader,
                        removed, render, route, session)

LIST = ("search", "max", "case_sensitive")


# ---- templates ------------------------------------------------------------------
def _template_page(follow):
    def page(rows):
        if "disk_attachments" in follow:
            return reads.attachments(reader(), DiskAttachment.template_id, [r.id for r in rows])
        return None
    return page


def _template_view(follow):
    def view(t, atts):
        return views.template(t, atts.get(t.id, []) if atts is not None else None)
    return view


@route("/templates", ["GET"], "List templates (Blank is built in)", query=LIST + ("follow",))
def templates_list():
    f = follow_param()
    return listing("templates", "template", reads.TEMPLATES, _template_view(f), page=_template_page(f))


@route("/templates", ["POST"], "Create a template from a down VM (its disks are copied by a job)",
       body=schemas.TEMPLATE, query=("async",), created=True, job=True)
def templates_add():
    b = body(schemas.TEMPLATE)
    _same_cluster_as_vm(b)
    t, job = tpl_svc.create_template(ctx(), session(), tpl_svc.TemplateSpec(
        name=required(b, "name"), vm=required(b, "vm"), description=b.get("description", ""),
        memory=b.get("memory"), cpus=_cpus(b), os_type=get(b, "os", "type")))
    return created("template", job, lambda: views.template(t), lambda: _template_now(t.id))


@route("/templates/<ident>", ["PUT"], "Update a template: name, description, memory, CPUs, operating system",
       body=schemas.TEMPLATE)
def template_update(ident):
    b = body(schemas.TEMPLATE)
    t = tpl_svc.update_template(ctx(), session(), obj(Template, ident, "template"), tpl_svc.TemplateChanges(
        name=b.get("name"), description=b.get("description"), memory=b.get("memory"), cpus=_cpus(b),
        os_type=get(b, "os", "type"), cluster=b.get("cluster"), vm=b.get("vm")))
    session().flush()
    return render("template", _template_now(t.id))


def _same_cluster_as_vm(b):
    """A template lives in its VM's cluster; naming that cluster (as
    ovirt_template does) is fine, naming another is refused."""
    if b.get("cluster") and b.get("vm"):
        vm = lookup.require(session(), Vm, b["vm"], "VM", "vm")
        cl = lookup.resolve(session(), reads.Cluster, b["cluster"], "cluster", "cluster")
        if cl.id != vm.cluster_id:
            raise bad_request("cluster: a template is made in the cluster of its VM; other clusters are "
                              "not supported yet")


def _template_now(ident):
    t = row(reads.TEMPLATES, ident)
    return views.template(t, reads.attachments(reader(), DiskAttachment.template_id, [t.id]).get(t.id, []))


@route("/templates/<ident>", ["GET"], "Get a template", query=("follow",))
def template_get(ident):
    t = row(reads.TEMPLATES, ident)
    atts = _template_page(follow_param())([t])
    return render("template", _template_view(None)(t, atts))


@route("/templates/<ident>", ["DELETE"], "Remove a template no VM uses", query=("async",), job=True)
def template_remove(ident):
    return removed(tpl_svc.remove_template(ctx(), session(), obj(Template, ident, "template")))


@route("/templates/<ident>/diskattachments", ["GET"], "List a template's disks")
def template_disks(ident):
    t = row(reads.TEMPLATES, ident)
    atts = reads.attachments(reader(), DiskAttachment.template_id, [t.id]).get(t.id, [])
    return render("disk_attachments", Many("disk_attachment", [
        views.disk_attachment(a, d, "templates", t.id) for a, d in atts]))


# ---- vms ------------------------------------------------------------------------------
def _vm_page(follow, all_content=False):
    """What the views show beside the VMs' rows; all_content: their cloud-init too."""
    s = reader()

    def page(rows):
        ids = [r.id for r in rows]
        return {
            "nics": reads.grouped(s, Nic, Nic.vm_id, ids, (Nic.name,)) if "nics" in follow else None,
            "disk_attachments": (reads.attachments(s, DiskAttachment.vm_id, ids)
                                 if "disk_attachments" in follow else None),
            "snapshots": (reads.grouped(s, Snapshot, Snapshot.vm_id, ids, (Snapshot.date,))
                          if "snapshots" in follow else None),
            "host": reads.by_id(s, Host, [r.host_id for r in rows], ctx()) if "host" in follow else None,
            "cluster": (reads.by_id(s, reads.Cluster, [r.cluster_id for r in rows], ctx())
                        if "cluster" in follow else None),
            "reported_devices": "reported_devices" in follow,   # from the VM's own row
            "initialization": (reads.grouped(s, VmInitialization, VmInitialization.vm_id, ids)
                               if all_content else None),
        }
    return page


def _vm_view(v, extra):
    if extra is None:
        return views.vm(v)

    def many(key):
        return None if extra[key] is None else extra[key].get(v.id, [])

    def one(key, ident):
        return None if extra[key] is None else extra[key].get(ident)
    return views.vm(v, nics=many("nics"), attachments=many("disk_attachments"), snapshots=many("snapshots"),
                    host_row=one("host", v.host_id), cluster_row=one("cluster", v.cluster_id),
                    reported_devices=extra["reported_devices"],
                    initialization=(many("initialization") or [None])[0])


def _vm_now(ident, all_content=None):
    """all_content (None: the query's): with the VM's cloud-init configuration.
    A write's answer always has it; a read only when asked (as in oVirt),
    so that a plain GET stays one query."""
    v = row(reads.VMS, ident)
    follow = follow_param()
    all_content = bool_param("all_content") if all_content is None else all_content
    return _vm_view(v, _vm_page(follow, all_content)([v]) if follow or all_content else None)


@route("/vms", ["GET"], "List VMs (search: name, status, cluster, host, template, description, datacenter; "
       "all_content=true adds each VM's cloud-init configuration)", query=LIST + ("follow", "all_content"))
def vms_list():
    follow, all_content = follow_param(), bool_param("all_content")
    return listing("vms", "vm", reads.VMS, _vm_view,
                   page=_vm_page(follow, all_content) if follow or all_content else None)


def _vm_spec(b):
    return vm_svc.VmSpec(
        name=required(b, "name"), cluster=required(b, "cluster"), template=b.get("template"),
        description=b.get("description", ""), memory=b.get("memory"), cpus=_cpus(b),
        os_type=get(b, "os", "type"), high_availability=get(b, "high_availability", "enabled", default=False),
        ha_priority=get(b, "high_availability", "priority", default=1),
        lease_storage_domain=_lease(b)[0], clone=bool_param("clone"), boot=_boot(b),
        initialization=_initialization(b.get("initialization")))


def _initialization(d):
    """oVirt's Initialization as the service's (None: not given)."""
    if not d:
        return None
    nics = d.get("nic_configurations")
    return cloud_init.Initialization(
        **{k: d.get(k) for k in cloud_init.TEXT_FIELDS},
        nic_configurations=None if nics is None else tuple(cloud_init.NicConfiguration(
            name=n.get("name"), boot_protocol=n.get("boot_protocol"), address=get(n, "ip", "address"),
            netmask=get(n, "ip", "netmask"), gateway=get(n, "ip", "gateway"), on_boot=n.get("on_boot", True))
            for n in nics))


def _boot(b):
    os_ = b.get("os") or {}
    if not any(k in os_ for k in ("kernel", "initrd", "cmdline")):
        return None
    return vm_svc.DirectBoot(kernel=os_.get("kernel"), initrd=os_.get("initrd"), cmdline=os_.get("cmdline"))


def _lease(b):
    """(storage domain ref, remove?): <lease><storage_domain/></lease> sets the
    VM's lease, an empty <lease/> removes it."""
    raw = raw_body().get("lease")
    if raw is None:
        return None, False
    sd = get(b, "lease", "storage_domain")
    if sd:
        return sd, False
    if raw in ("", {}):
        return None, True
    raise bad_request("lease.storage_domain: give the storage domain (id or name) for the VM's lease, "
                      "or an empty <lease/> to remove it")


def _cpus(b):
    topo = get(b, "cpu", "topology")
    if not topo:
        return None
    n = topo.get("sockets", 1) * topo.get("cores", 1) * topo.get("threads", 1)
    if n > vm_svc.MAX_CPUS:
        raise bad_request(f"cpu.topology: more than {vm_svc.MAX_CPUS} virtual CPUs")
    return n


@route("/vms", ["POST"], "Create a VM from a template (thin qcow2 overlays, or full copies with clone=true) or "
       "from a snapshot of another VM (<snapshots>: full copies of its disks as they were then); made by a job", body=schemas.VM, query=("async", "clone", "clone_permissions"), created=True, job=True)
def vms_add():
    if bool_param("clone_permissions"):
        raise bad_request("clone_permissions: copying the template's permissions to the VM is not supported yet")
    b = body(schemas.VM)
    if b.get("snapshots"):      # a new VM from a snapshot of another
        from . import vm_from_snapshot   # it imports this module
        return vm_from_snapshot.add(b)
    vm, job = vm_svc.add_vm(ctx(), session(), _vm_spec(b))
    return created("vm", job, lambda: _vm_now(vm.id, True), lambda: _vm_now(vm.id, True))


@route("/vms/<ident>/clone", ["POST"], "Copy a down VM: a new VM with full copies of its disks (made by a job)",
       body=schemas.CLONE, query=("async",), job=True)
def vm_clone(ident):
    b = body(schemas.CLONE)
    source = obj(Vm, ident, "VM")
    vm, job = vm_svc.clone_vm(ctx(), session(), source, get(b, "vm", "name"))
    vm_id = vm.id
    return action_job(job, b, extra_of=lambda _j: {"vm": {"id": vm_id, "href": f"{views.API}/vms/{vm_id}"}})


@route("/vms/<ident>", ["GET"], "Get a VM (all_content=true: with its cloud-init configuration)",
       query=("follow", "all_content"))
def vm_get(ident):
    return render("vm", _vm_now(ident))


@route("/vms/<ident>", ["PUT"], "Update a VM", body=schemas.VM)
def vm_update(ident):
    b = body(schemas.VM)
    lease, remove_lease = _lease(b)
    ch = vm_svc.VmChanges(
        name=b.get("name"), description=b.get("description"), memory=b.get("memory"), cpus=_cpus(b),
        os_type=get(b, "os", "type"), high_availability=get(b, "high_availability", "enabled"),
        ha_priority=get(b, "high_availability", "priority"), cluster=b.get("cluster"),
        lease_storage_domain=lease, remove_lease=remove_lease, boot=_boot(b),
        initialization=_initialization(b.get("initialization")))
    vm = vm_svc.update_vm(ctx(), session(), obj(Vm, ident, "VM"), ch)
    session().flush()
    return render("vm", _vm_now(vm.id, True))


@route("/vms/<ident>", ["DELETE"], "Remove a down VM and its disks", query=("async",), job=True)
def vm_remove(ident):
    return removed(vm_svc.remove_vm(ctx(), session(), obj(Vm, ident, "VM")))


def _target_host(b):
    """<action><host/></action>, or <vm><placement_policy><hosts><host/></hosts></placement_policy></vm>."""
    r = b.get("host")
    if r is None:
        hosts = get(b, "vm", "placement_policy", "hosts", default=[])
        r = hosts[0] if hosts else None
    return lookup.resolve(session(), Host, r, "host", "host") if r else None


@route("/vms/<ident>/start", ["POST"], "Start a VM on the host the scheduler picks (or the one given); "
       "use_cloud_init=true with vm.initialization: cloud-init for this boot only", body=schemas.START,
       query=("async",), job=True)
def vm_start(ident):
    b = body(schemas.START)
    job = vm_svc.request_start(ctx(), session(), obj(Vm, ident, "VM"), _target_host(b),
                               use_cloud_init=b.get("use_cloud_init", False),
                               initialization=_initialization(get(b, "vm", "initialization")))
    return action_job(job, b)


@route("/vms/<ident>/stop", ["POST"], "Power a VM off", body=schemas.ACTION, query=("async",), job=True)
def vm_stop(ident):
    b = body(schemas.ACTION)
    return action_job(vm_svc.request_stop(ctx(), session(), obj(Vm, ident, "VM")), b)


@route("/vms/<ident>/shutdown", ["POST"], "Shut a VM down (ACPI; forced off after the timeout)",
       body=schemas.ACTION, query=("async",), job=True)
def vm_shutdown(ident):
    b = body(schemas.ACTION)
    return action_job(vm_svc.request_shutdown(ctx(), session(), obj(Vm, ident, "VM")), b)


@route("/vms/<ident>/reboot", ["POST"], "Reboot a VM (ACPI)", body=schemas.ACTION, query=("async",), job=True)
def vm_reboot(ident):
    b = body(schemas.ACTION)
    return action_job(vm_svc.request_reboot(ctx(), session(), obj(Vm, ident, "VM")), b)


@route("/vms/<ident>/migrate", ["POST"], "Live-migrate a VM (peer-to-peer) to the given or the best host",
       body=schemas.MIGRATE, query=("async",), job=True)
def vm_migrate(ident):
    b = body(schemas.MIGRATE)
    job = vm_svc.request_migrate(ctx(), session(), obj(Vm, ident, "VM"), _target_host(b))
    return action_job(job, b)


@route("/vms/<ident>/nics", ["GET"], "List a VM's network interfaces", query=LIST + ("follow",))
def vm_nics(ident):
    vm = row(reads.VMS, ident)
    return listing("nics", "nic", reads.NICS, guest.nic_view(vm), Nic.vm_id == vm.id)


@route("/vms/<ident>/nics", ["POST"], "Add a network interface (hot-plugged by a job when the VM is up)",
       body=schemas.NIC, query=("async",), created=True, job=True)
def vm_nics_add(ident):
    b = body(schemas.NIC)
    nic, job = vm_svc.add_nic(ctx(), session(), obj(Vm, ident, "VM"), vm_svc.NicSpec(
        name=required(b, "name"), interface=b.get("interface", "virtio"), mac=get(b, "mac", "address"),
        network=b.get("vnic_profile") or b.get("network"), plugged=b.get("plugged", True)))
    return created("nic", job, lambda: views.nic(nic), lambda: views.nic(nic))


def _nic(vm_id, nic_id):
    n = session().get(Nic, nic_id) if lookup.valid_uuid(nic_id) else None
    if n is None or n.vm_id != vm_id:
        raise not_found("network interface", nic_id)
    return n


@route("/vms/<ident>/nics/<nic>", ["GET"], "Get a network interface", query=("follow",))
def vm_nic_get(ident, nic):
    vm = row(reads.VMS, ident)
    return render("nic", guest.nic_view(vm)(row(reads.NICS, nic, Nic.vm_id == vm.id)))


@route("/vms/<ident>/nics/<nic>", ["DELETE"], "Remove a network interface (unplugged first by a job when "
       "the VM is up)", query=("async",), job=True)
def vm_nic_remove(ident, nic):
    vm = obj(Vm, ident, "VM")
    return removed(vm_svc.remove_nic(ctx(), session(), vm, _nic(vm.id, nic)))


@route("/vms/<ident>/diskattachments", ["GET"], "List a VM's disk attachments")
def vm_disks(ident):
    vm = row(reads.VMS, ident)
    atts = reads.attachments(reader(), DiskAttachment.vm_id, [vm.id]).get(vm.id, [])
    return render("disk_attachments", Many("disk_attachment", [
        views.disk_attachment(a, d, "vms", vm.id) for a, d in atts]))


def _disk_spec(d, default_name=None):
    sds = d.get("storage_domains") or []
    if len(sds) != 1 or sds[0] is None:
        raise bad_request("disk.storage_domains: give exactly one storage domain")
    if d.get("sparse") is False:
        raise bad_request("disk.sparse: only sparse (thin qcow2) disks are supported yet")
    return disk_svc.DiskSpec(provisioned_size=required({"disk": d}, "disk", "provisioned_size"),
                             storage_domain=sds[0], name=d.get("name") or d.get("alias") or default_name,
                             format=d.get("format", "cow"), description=d.get("description", ""))


@route("/vms/<ident>/diskattachments", ["POST"], "Attach a new or existing disk (hot-plugged by a job when "
       "the VM is up)",
       body=schemas.DISK_ATTACHMENT, query=("async",), created=True, job=True)
def vm_disks_add(ident):
    b = body(schemas.DISK_ATTACHMENT)
    d = b.get("disk") or {}
    # an existing disk by id (ovirt_disk sends the whole disk it just made, size included)
    existing = bool(d.get("id")) and ("provisioned_size" not in d or session().get(Disk, d["id"]) is not None)
    spec = vm_svc.AttachmentSpec(
        interface=b.get("interface", "virtio"), bootable=b.get("bootable", False), active=b.get("active", True),
        disk=Ref(id=d["id"]) if existing else None, new_disk=None if existing else _disk_spec(d))
    vm = obj(Vm, ident, "VM")
    att, job = vm_svc.add_disk_attachment(ctx(), session(), vm, spec)

    def now():
        return views.disk_attachment(att, session().get(Disk, att.disk_id), "vms", vm.id)
    return created("disk_attachment", job, now, now)


def _attachment(vm_id, att_id):
    a = session().get(DiskAttachment, att_id) if lookup.valid_uuid(att_id) else None
    if a is None or a.vm_id != vm_id:
        raise not_found("disk attachment", att_id)
    return a


@route("/vms/<ident>/diskattachments/<att>", ["GET"], "Get a disk attachment")
def vm_disk_get(ident, att):
    vm = row(reads.VMS, ident)
    a = row(reads.DISK_ATTACHMENTS, att, DiskAttachment.vm_id == vm.id)
    return render("disk_attachment", views.disk_attachment(a, row(reads.DISKS, a.disk_id), "vms", vm.id))


@route("/vms/<ident>/diskattachments/<att>", ["DELETE"], "Detach a disk, unplugged first when the VM is up "
       "(detach_only=false also deletes it)",
       query=("detach_only", "async"), job=True)
def vm_disk_remove(ident, att):
    vm = obj(Vm, ident, "VM")
    job = vm_svc.remove_disk_attachment(ctx(), session(), vm, _attachment(vm.id, att),
                                        bool_param("detach_only", True))
    return removed(job)


@route("/vms/<ident>/snapshots", ["GET"], "List a VM's snapshots", query=LIST)
def vm_snapshots(ident):
    vm = row(reads.VMS, ident)
    return listing("snapshots", "snapshot", reads.SNAPSHOTS, lambda x, _e: views.snapshot(x),
                   Snapshot.vm_id == vm.id)


@route("/vms/<ident>/snapshots", ["POST"], "Take a snapshot (live when the VM is up)", body=schemas.SNAPSHOT,
       query=("async",), created=True, job=True)
def vm_snapshots_add(ident):
    b = body(schemas.SNAPSHOT)
    snap, job = snap_svc.create_snapshot(ctx(), session(), obj(Vm, ident, "VM"), b.get("description", ""))
    return created("snapshot", job, lambda: views.snapshot(snap),
                   lambda: views.snapshot(row(reads.SNAPSHOTS, snap.id)))


def _snapshot(vm_id, snap_id):
    x = session().get(Snapshot, snap_id) if lookup.valid_uuid(snap_id) else None
    if x is None or x.vm_id != vm_id:
        raise not_found("snapshot", snap_id)
    return x


@route("/vms/<ident>/snapshots/<snap>", ["GET"], "Get a snapshot")
def vm_snapshot_get(ident, snap):
    return render("snapshot", views.snapshot(row(reads.SNAPSHOTS, snap, Snapshot.vm_id == row(reads.VMS, ident).id)))


@route("/vms/<ident>/snapshots/<snap>", ["DELETE"], "Remove a snapshot")
def vm_snapshot_remove(ident, snap):
    vm = obj(Vm, ident, "VM")
    snap_svc.remove_snapshot(ctx(), session(), vm, _snapshot(vm.id, snap))
    return removed()


@route("/vms/<ident>/snapshots/<snap>/restore", ["POST"], "Restore a down VM to a snapshot",
       body=schemas.ACTION, query=("async",), job=True)
def vm_snapshot_restore(ident, snap):
    b = body(schemas.ACTION)
    vm = obj(Vm, ident, "VM")
    return action_job(snap_svc.restore_snapshot(ctx(), session(), vm, _snapshot(vm.id, snap)), b)


@route("/vms/<ident>/previewsnapshot", ["POST"], "Run a down VM from a snapshot until the preview is "
       "committed or undone", body=schemas.PREVIEW_SNAPSHOT, query=("async",), job=True)
def vm_preview_snapshot(ident):
    b = body(schemas.PREVIEW_SNAPSHOT)
    vm = obj(Vm, ident, "VM")
    if b.get("restore_memory"):
        raise bad_request("restore_memory: Keel takes disk-only snapshots, there is no memory to restore; "
                          "send false or leave it out")
    snap_id = get(b, "snapshot", "id")
    if not snap_id:
        raise bad_request("snapshot: the snapshot to preview is required, e.g. <snapshot id=\"...\"/>")
    return action_job(snap_svc.preview_snapshot(ctx(), session(), vm, _snapshot(vm.id, snap_id)), b)


@route("/vms/<ident>/commitsnapshot", ["POST"], "Keep the previewed snapshot's state (later snapshots go)",
       body=schemas.ACTION, query=("async",), job=True)
def vm_commit_snapshot(ident):
    b = body(schemas.ACTION)
    return action_job(snap_svc.commit_snapshot(ctx(), session(), obj(Vm, ident, "VM")), b)


@route("/vms/<ident>/undosnapshot", ["POST"], "Return a VM to where it was before the preview",
       body=schemas.ACTION, query=("async",), job=True)
def vm_undo_snapshot(ident):
    b = body(schemas.ACTION)
    return action_job(snap_svc.undo_snapshot(ctx(), session(), obj(Vm, ident, "VM")), b)


# ---- disks ------------------------------------------------------------------------------
@route("/disks", ["GET"], "List disks", query=LIST)
def disks_list():
    return listing("disks", "disk", reads.DISKS, lambda d, _e: views.disk(d))


@route("/disks", ["POST"], "Create a floating disk (its volume is made by a job)", body=schemas.DISK,
       query=("async",), created=True, job=True)
def disks_add():
    b = body(schemas.DISK)
    disk, job = disk_svc.add_disk(ctx(), session(), _disk_spec(b), default_name=required(b, "name"))
    return created("disk", job, lambda: views.disk(disk), lambda: views.disk(row(reads.DISKS, disk.id)))


@route("/disks/<ident>", ["GET"], "Get a disk")
def disk_get(ident):
    return render("disk", views.disk(row(reads.DISKS, ident)))


@route("/disks/<ident>", ["PUT"], "Update a disk: name and description; a larger provisioned_size grows it "
       "(live when its VM is up, by a job); disks never shrink", body=schemas.DISK, query=("async",), job=True)
def disk_update(ident):
    b = body(schemas.DISK)
    # an empty storage domain names none (clients send the whole disk)
    sds = [sd for sd in b.get("storage_domains") or [] if sd is not None]
    if b.get("sparse") is False:
        raise bad_request("disk.sparse: only sparse (thin qcow2) disks are supported yet")
    disk = obj(Disk, ident, "disk")
    job = disk_svc.update_disk(ctx(), session(), disk, disk_svc.DiskChanges(
        name=b.get("name") or b.get("alias"), description=b.get("description"),
        provisioned_size=b.get("provisioned_size"), storage_domain=sds[0] if sds else None, format=b.get("format")))

    def now(status=200):
        return render("disk", views.disk(row(reads.DISKS, disk.id)), status)
    if job is None:
        session().flush()
        return now()
    return finish_job(job, lambda _j: now(), lambda _j: now(202))


@route("/disks/<ident>", ["DELETE"], "Remove a disk that is not attached", query=("async",), job=True)
def disk_remove(ident):
    return removed(disk_svc.remove_disk(ctx(), session(), obj(Disk, ident, "disk")))
