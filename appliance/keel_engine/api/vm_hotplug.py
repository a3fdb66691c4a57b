"""Plugging a VM's NICs and disks in and out (services/hotplug.py): oVirt's
PUT on a NIC (`plugged`) and its activate/deactivate actions, which the
ovirt_nic module's states plugged/unplugged use, and PUT on a disk
attachment (`active`, interface, bootable). On an up VM they are jobs."""
from ..errors import bad_request
from ..models import Disk, Vm
from ..services import disks as disk_svc
from ..services import hotplug
from . import schemas, views
from .common import obj
from .fields import get
from .framework import action_job, body, ctx, finish_job, render, route, session
from .vms import _attachment, _nic


def _answer(job, view):
    """The object once its job ended (202 with it as it is meanwhile), or at once."""
    if job is None:
        session().flush()
        return render(*view())
    return finish_job(job, lambda _j: render(*view()), lambda _j: render(*view(), 202))


@route("/vms/<ident>/nics/<nic>", ["PUT"], "Update a network interface: name; model, MAC address and vNIC "
       "profile while it is unplugged or the VM down; plugged false/true unplugs or plugs it (live when "
       "the VM is up, by a job)", body=schemas.NIC, query=("async",), job=True)
def vm_nic_update(ident, nic):
    b = body(schemas.NIC)
    vm = obj(Vm, ident, "VM")
    n = _nic(vm.id, nic)
    job = hotplug.update_nic(ctx(), session(), vm, n, hotplug.NicChanges(
        name=b.get("name"), interface=b.get("interface"), mac=get(b, "mac", "address"),
        network=b.get("vnic_profile") or b.get("network"), plugged=b.get("plugged")))
    return _answer(job, lambda: ("nic", views.nic(n)))


def _plug_action(ident, nic, plugged):
    b = body(schemas.ACTION)
    vm = obj(Vm, ident, "VM")
    job = hotplug.update_nic(ctx(), session(), vm, _nic(vm.id, nic), hotplug.NicChanges(plugged=plugged))
    return action_job(job, b)


@route("/vms/<ident>/nics/<nic>/activate", ["POST"], "Plug a network interface in (live when the VM is up)",
       body=schemas.ACTION, query=("async",), job=True)
def vm_nic_activate(ident, nic):
    return _plug_action(ident, nic, True)


@route("/vms/<ident>/nics/<nic>/deactivate", ["POST"], "Unplug a network interface (live when the VM is up: "
       "the guest must release it)", body=schemas.ACTION, query=("async",), job=True)
def vm_nic_deactivate(ident, nic):
    return _plug_action(ident, nic, False)


@route("/vms/<ident>/diskattachments/<att>", ["PUT"], "Update a disk attachment: active false/true unplugs or "
       "plugs the disk (live when the VM is up, by a job); interface while it is inactive or the VM down; "
       "bootable", body=schemas.DISK_ATTACHMENT, query=("async",), job=True)
def vm_disk_update(ident, att):
    b = body(schemas.DISK_ATTACHMENT)
    vm = obj(Vm, ident, "VM")
    a = _attachment(vm.id, att)
    job = hotplug.update_disk_attachment(ctx(), session(), vm, a, hotplug.AttachmentChanges(
        interface=b.get("interface"), bootable=b.get("bootable"), active=b.get("active"),
        disk=_disk_as_sent(b.get("disk"))))
    return _answer(job, lambda: ("disk_attachment",
                                 views.disk_attachment(a, session().get(Disk, a.disk_id), "vms", vm.id)))


def _disk_as_sent(d):
    """The disk oVirt's clients send along with an attachment (ovirt_disk sends the whole disk)."""
    if not d:
        return None
    if d.get("sparse") is False:
        raise bad_request("disk.sparse: only sparse (thin qcow2) disks are supported yet")
    # an empty storage domain names none (the SDK writes <storage_domain/> when a task names none)
    sds = [sd for sd in d.get("storage_domains") or [] if sd is not None]
    return disk_svc.DiskChanges(name=d.get("name") or d.get("alias"), description=d.get("description"),
                                provisioned_size=d.get("provisioned_size"), format=d.get("format"),
                                storage_domain=sds[0] if sds else None)
