"""VMs (lifecycle actions, NICs, disk attachments, snapshots), templates and disks."""
from flask import request
from sqlalchemy import select

from ..errors import Fault, not_found
from ..models import Cluster, Disk, DiskAttachment, Host, Nic, Permission, Snapshot, Template, Vm
from ..representation import Many
from ..services import disks as disk_svc
from ..services import lookup
from ..services import snapshots as snap_svc
from ..services import templates as tpl_svc
from ..services import vms as vm_svc
from . import views
from .common import action_body, action_done, get, listing, removed
from .framework import body, ctx, follow_param, render, route, session


# ---- templates ------------------------------------------------------------------
@route("/templates", ["GET"], "List templates (Blank is built in)")
def templates_list():
    s = session()
    f = follow_param()
    return listing("templates", "template", s.scalars(select(Template).order_by(Template.name)).all(),
                   lambda r: views.template(s, r, f))


@route("/templates", ["POST"], "Create a template from a down VM")
def templates_add():
    s = session()
    return render("template", views.template(s, tpl_svc.create_template(ctx(), s, body())), 201)


@route("/templates/<ident>", ["GET"], "Get a template")
def template_get(ident):
    s = session()
    return render("template", views.template(s, get(Template, ident, "template"), follow_param()))


@route("/templates/<ident>", ["DELETE"], "Remove a template no VM uses")
def template_remove(ident):
    tpl_svc.remove_template(ctx(), session(), get(Template, ident, "template"))
    return removed()


@route("/templates/<ident>/diskattachments", ["GET"], "List a template's disks")
def template_disks(ident):
    s = session()
    t = get(Template, ident, "template")
    rows = disk_svc.template_disks(s, t.id)
    return render("disk_attachments", Many("disk_attachment", [
        views.disk_attachment(s, a, d, "templates", t.id) for a, d, _sd in rows]))


# ---- vms ------------------------------------------------------------------------------
def _vm_fields(s):
    clusters = {c.id: c.name for c in s.scalars(select(Cluster))}
    hosts = {h.id: h.name for h in s.scalars(select(Host))}
    templates = {t.id: t.name for t in s.scalars(select(Template))}
    return lambda v: {"name": v.name, "status": v.status, "cluster": clusters.get(v.cluster_id),
                      "host": hosts.get(v.host_id), "template": templates.get(v.template_id),
                      "description": v.description}


@route("/vms", ["GET"], "List VMs (search: name, status, cluster, host, template, description)")
def vms_list():
    s = session()
    f = follow_param()
    return listing("vms", "vm", s.scalars(select(Vm).order_by(Vm.name)).all(), lambda r: views.vm(s, r, f),
                   _vm_fields(s), ("name", "status", "cluster", "host", "template", "description"))


@route("/vms", ["POST"], "Create a VM from a template (thin qcow2 overlays)")
def vms_add():
    s = session()
    return render("vm", views.vm(s, vm_svc.add_vm(ctx(), s, body())), 201)


@route("/vms/<ident>", ["GET"], "Get a VM")
def vm_get(ident):
    s = session()
    return render("vm", views.vm(s, get(Vm, ident, "VM"), follow_param()))


@route("/vms/<ident>", ["PUT"], "Update a VM")
def vm_update(ident):
    s = session()
    return render("vm", views.vm(s, vm_svc.update_vm(ctx(), s, get(Vm, ident, "VM"), body())))


@route("/vms/<ident>", ["DELETE"], "Remove a down VM and its disks")
def vm_remove(ident):
    vm_svc.remove_vm(ctx(), session(), get(Vm, ident, "VM"))
    return removed()


def _target_host(b, key_path):
    """<action><vm><placement_policy><hosts><host/></hosts></placement_policy></vm></action> or <host/>."""
    s = session()
    r = b.ref("host")
    if r is None:
        hosts = b.sub("vm").sub("placement_policy").list("hosts", "host")
        if hosts:
            d = hosts[0].data
            r = (d.get("id"), d.get("name"))
    return lookup.resolve(s, Host, r, "host", key_path) if r and (r[0] or r[1]) else None


@route("/vms/<ident>/start", ["POST"], "Start a VM on the host the scheduler picks (or the one given)")
def vm_start(ident):
    b = action_body()
    s = session()
    vm = get(Vm, ident, "VM")
    vm, job = vm_svc.start_vm(ctx(), s, vm, _target_host(b, "vm.placement_policy.hosts.host"))
    return action_done(job=job)


@route("/vms/<ident>/stop", ["POST"], "Power a VM off")
def vm_stop(ident):
    action_body()
    vm_svc.stop_vm(ctx(), session(), get(Vm, ident, "VM"))
    return action_done()


@route("/vms/<ident>/shutdown", ["POST"], "Shut a VM down (ACPI; forced off after the timeout)")
def vm_shutdown(ident):
    action_body()
    vm_svc.shutdown_vm(ctx(), session(), get(Vm, ident, "VM"))
    return action_done()


@route("/vms/<ident>/reboot", ["POST"], "Reboot a VM (ACPI)")
def vm_reboot(ident):
    action_body()
    vm_svc.reboot_vm(ctx(), session(), get(Vm, ident, "VM"))
    return action_done()


@route("/vms/<ident>/migrate", ["POST"], "Live-migrate a VM (peer-to-peer) to the given or the best host")
def vm_migrate(ident):
    b = action_body()
    s = session()
    vm, job = vm_svc.migrate_vm(ctx(), s, get(Vm, ident, "VM"), _target_host(b, "host"))
    return action_done(job=job)


@route("/vms/<ident>/nics", ["GET"], "List a VM's network interfaces")
def vm_nics(ident):
    s = session()
    vm = get(Vm, ident, "VM")
    rows = s.scalars(select(Nic).where(Nic.vm_id == vm.id).order_by(Nic.name)).all()
    return listing("nics", "nic", rows, lambda n: views.nic(s, n))


@route("/vms/<ident>/nics", ["POST"], "Add a network interface to a down VM")
def vm_nics_add(ident):
    s = session()
    return render("nic", views.nic(s, vm_svc.add_nic(ctx(), s, get(Vm, ident, "VM"), body())), 201)


def _nic(vm_id, nic_id):
    n = session().get(Nic, nic_id)
    if n is None or n.vm_id != vm_id:
        raise not_found("network interface", nic_id)
    return n


@route("/vms/<ident>/nics/<nic>", ["GET"], "Get a network interface")
def vm_nic_get(ident, nic):
    s = session()
    return render("nic", views.nic(s, _nic(get(Vm, ident, "VM").id, nic)))


@route("/vms/<ident>/nics/<nic>", ["DELETE"], "Remove a network interface")
def vm_nic_remove(ident, nic):
    s = session()
    vm = get(Vm, ident, "VM")
    vm_svc.remove_nic(ctx(), s, vm, _nic(vm.id, nic))
    return removed()


@route("/vms/<ident>/diskattachments", ["GET"], "List a VM's disk attachments")
def vm_disks(ident):
    s = session()
    vm = get(Vm, ident, "VM")
    return render("disk_attachments", Many("disk_attachment", [
        views.disk_attachment(s, a, d, "vms", vm.id) for a, d, _sd in disk_svc.vm_disks(s, vm.id)]))


@route("/vms/<ident>/diskattachments", ["POST"], "Attach a new or existing disk to a down VM")
def vm_disks_add(ident):
    s = session()
    vm = get(Vm, ident, "VM")
    att = vm_svc.add_disk_attachment(ctx(), s, vm, body())
    return render("disk_attachment", views.disk_attachment(s, att, s.get(Disk, att.disk_id), "vms", vm.id), 201)


def _attachment(vm_id, att_id):
    a = session().get(DiskAttachment, att_id)
    if a is None or a.vm_id != vm_id:
        raise not_found("disk attachment", att_id)
    return a


@route("/vms/<ident>/diskattachments/<att>", ["GET"], "Get a disk attachment")
def vm_disk_get(ident, att):
    s = session()
    vm = get(Vm, ident, "VM")
    a = _attachment(vm.id, att)
    return render("disk_attachment", views.disk_attachment(s, a, s.get(Disk, a.disk_id), "vms", vm.id))


@route("/vms/<ident>/diskattachments/<att>", ["DELETE"], "Detach a disk (detach_only=false also deletes it)")
def vm_disk_remove(ident, att):
    s = session()
    vm = get(Vm, ident, "VM")
    detach_only = request.args.get("detach_only", "true").lower() != "false"
    vm_svc.remove_disk_attachment(ctx(), s, vm, _attachment(vm.id, att), detach_only)
    return removed()


@route("/vms/<ident>/snapshots", ["GET"], "List a VM's snapshots")
def vm_snapshots(ident):
    s = session()
    vm = get(Vm, ident, "VM")
    rows = s.scalars(select(Snapshot).where(Snapshot.vm_id == vm.id).order_by(Snapshot.date)).all()
    return listing("snapshots", "snapshot", rows, lambda x: views.snapshot(s, x),
                   lambda x: {"name": x.description}, ("name",))


@route("/vms/<ident>/snapshots", ["POST"], "Take a snapshot (live when the VM is up)")
def vm_snapshots_add(ident):
    s = session()
    snap = snap_svc.create_snapshot(ctx(), s, get(Vm, ident, "VM"), body())
    return render("snapshot", views.snapshot(s, snap), 201)


def _snapshot(vm_id, snap_id):
    x = session().get(Snapshot, snap_id)
    if x is None or x.vm_id != vm_id:
        raise not_found("snapshot", snap_id)
    return x


@route("/vms/<ident>/snapshots/<snap>", ["GET"], "Get a snapshot")
def vm_snapshot_get(ident, snap):
    s = session()
    return render("snapshot", views.snapshot(s, _snapshot(get(Vm, ident, "VM").id, snap)))


@route("/vms/<ident>/snapshots/<snap>", ["DELETE"], "Remove a snapshot")
def vm_snapshot_remove(ident, snap):
    s = session()
    vm = get(Vm, ident, "VM")
    snap_svc.remove_snapshot(ctx(), s, vm, _snapshot(vm.id, snap))
    return removed()


@route("/vms/<ident>/snapshots/<snap>/restore", ["POST"], "Restore a down VM to a snapshot")
def vm_snapshot_restore(ident, snap):
    action_body()
    s = session()
    vm = get(Vm, ident, "VM")
    snap_svc.restore_snapshot(ctx(), s, vm, _snapshot(vm.id, snap))
    return action_done()


@route("/vms/<ident>/permissions", ["GET"], "List the permissions on a VM")
def vm_permissions(ident):
    s = session()
    vm = get(Vm, ident, "VM")
    rows = s.scalars(select(Permission).where(Permission.object_id == vm.id)).all()
    return listing("permissions", "permission", rows, lambda p: views.permission(s, p), lambda p: {"name": p.id})


# ---- disks ------------------------------------------------------------------------------
@route("/disks", ["GET"], "List disks")
def disks_list():
    s = session()
    return listing("disks", "disk", s.scalars(select(Disk).order_by(Disk.name)).all(), lambda r: views.disk(s, r))


@route("/disks", ["POST"], "Create a floating disk")
def disks_add():
    s = session()
    b = body()
    d = disk_svc.disk_from_body(ctx(), s, b, b.name("name", required=True))
    return render("disk", views.disk(s, d), 201)


@route("/disks/<ident>", ["GET"], "Get a disk")
def disk_get(ident):
    s = session()
    return render("disk", views.disk(s, get(Disk, ident, "disk")))


@route("/disks/<ident>", ["DELETE"], "Remove a disk that is not attached")
def disk_remove(ident):
    s = session()
    d = get(Disk, ident, "disk")
    att = s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == d.id))
    if att is not None:
        raise Fault(409, "Operation Failed", f"disk {d.name} is attached to a VM or template; detach it first")
    disk_svc.delete_disk(ctx(), s, d)
    return removed()
