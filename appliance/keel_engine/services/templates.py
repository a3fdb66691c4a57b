"""Templates: a flattened qcow2 copy of a down VM's disks; VMs made from a
template get thin overlays on those volumes (see vms.add_vm)."""
import libvirt
from sqlalchemy import select

from .. import virt
from ..errors import conflict
from ..models import BLANK_TEMPLATE_ID, Disk, DiskAttachment, Template, Vm, Volume
from . import disks as disk_svc
from . import events, jobs, lookup


def create_template(ctx, s, body):
    name = body.name()
    lookup.unique_name(s, Template, name, "template")
    vm = lookup.resolve(s, Vm, body.ref("vm", required=True), "VM", "vm")
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; a template is made from a down VM")
    t = Template(name=name, description=body.str("description", default=""), cluster_id=vm.cluster_id,
                 memory=vm.memory, cpus=vm.cpus, os_type=vm.os_type, source_vm_id=vm.id)
    s.add(t)
    s.flush()
    job = jobs.start(s, f"Creating template {name} from VM {vm.name}", ctx.user_id)
    for i, (att, disk, sd) in enumerate(disk_svc.vm_disks(s, vm.id)):
        tdisk = Disk(name=f"{name}_Disk{i + 1}", storage_domain_id=sd.id, provisioned_size=disk.provisioned_size,
                     template_id=t.id, active_volume="")
        s.add(tdisk)
        s.flush()
        vol = disk_svc.new_volume_name(tdisk.id)
        with disk_svc.pool_for(ctx, s, sd) as pool:
            try:
                virt.clone_volume(pool, disk.active_volume, vol)
            except libvirt.libvirtError as e:
                raise conflict(f"cannot copy disk {disk.name}: {e.get_error_message()}")
        tdisk.active_volume = vol
        s.add(Volume(name=vol, disk_id=tdisk.id))
        s.add(DiskAttachment(id=tdisk.id, disk_id=tdisk.id, template_id=t.id, interface=att.interface,
                             bootable=att.bootable, position=i))
    jobs.finish(job)
    events.add(s, events.TEMPLATE_CREATED, f"Template {name} was created from VM {vm.name}.",
               template_id=t.id, vm_id=vm.id, user_id=ctx.user_id)
    return t


def remove_template(ctx, s, t):
    if t.id == BLANK_TEMPLATE_ID:
        raise conflict("the Blank template cannot be removed")
    users = s.scalars(select(Vm.name).where(Vm.template_id == t.id)).all()
    if users:
        raise conflict(f"template {t.name} is used by VMs: {', '.join(sorted(users))}")
    for _att, disk, _sd in disk_svc.template_disks(s, t.id):
        disk_svc.delete_disk(ctx, s, disk)
    s.delete(t)
    events.add(s, events.TEMPLATE_REMOVED, f"Template {t.name} was removed.", user_id=ctx.user_id)
