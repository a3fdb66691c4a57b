"""Templates: a flattened qcow2 copy of a down VM's disks; VMs made from a
template get thin overlays on those volumes (see vms.add_vm). The copy is
the engine worker's: meanwhile the template is `locked` and its source VM
`image_locked`, as in oVirt."""
from __future__ import annotations

from dataclasses import dataclass

import libvirt
from sqlalchemy import select

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import BLANK_TEMPLATE_ID, Cluster, Disk, DiskAttachment, Template, Vm, Volume
from . import disks as disk_svc
from . import access, events, jobs, lookup, roles
from .lookup import Ref
from . import vms as vm_svc
from .vms import _claim


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    vm: Ref
    description: str = ""
    # the VM's own unless given (as in oVirt, the new template's configuration may differ from its VM's)
    memory: int | None = None
    cpus: int | None = None
    os_type: str | None = None


@dataclass(frozen=True)
class TemplateChanges:
    """What a template update sets (None: unchanged). `cluster` and `vm` may
    only name what the template already has: a template stays where it was
    made, and from what."""
    name: str | None = None
    description: str | None = None
    memory: int | None = None
    cpus: int | None = None
    os_type: str | None = None
    cluster: Ref | None = None
    vm: Ref | None = None


def create_template(ctx, s, spec: TemplateSpec) -> tuple[Template, jobs.Job]:
    vm = lookup.require(s, Vm, spec.vm, "VM", "vm")
    access.check_ref(ctx, s, "create_template", vm, "vm", spec.vm)
    lookup.unique_name(s, Template, spec.name, "template")
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; a template is made from a down VM")
    vm_svc.check_configuration(spec.memory, spec.cpus)
    t = Template(name=spec.name, description=spec.description, cluster_id=vm.cluster_id,
                 memory=spec.memory or vm.memory, cpus=spec.cpus or vm.cpus, os_type=spec.os_type or vm.os_type,
                 source_vm_id=vm.id, status="locked")
    s.add(t)
    s.flush()
    _claim(s, vm, ("down",), "image_locked", 3600, verb="copy")
    job = jobs.submit(s, jobs.TEMPLATE_CREATE, {"template_id": t.id, "vm_id": vm.id},
                      f"Creating template {spec.name} from VM {vm.name}", ctx.user_id)
    roles.grant_owner(ctx, s, t)
    return t, job


def run_create(ctx, s, job):
    t, vm = s.get(Template, job.params["template_id"]), s.get(Vm, job.params["vm_id"])
    if t is None or vm is None:
        raise conflict("the template or its VM was removed")
    made = []
    try:
        for i, (att, disk, sd) in enumerate(disk_svc.vm_disks(s, vm.id)):
            jobs.step(s, job, f"Copying disk {disk.name}")
            tdisk = Disk(name=f"{t.name}_Disk{i + 1}", storage_domain_id=sd.id,
                         provisioned_size=disk.provisioned_size, template_id=t.id, active_volume="")
            s.add(tdisk)
            s.flush()
            vol = disk_svc.new_volume_name(tdisk.id)
            s.commit()
            with disk_svc.pool_for(ctx, s, sd) as pool:
                try:
                    virt.clone_volume(pool, disk.active_volume, vol)
                except libvirt.libvirtError as e:
                    raise conflict(f"cannot copy disk {disk.name}: {e.get_error_message()}")
            made.append((sd, vol))
            tdisk.active_volume = vol
            s.add(Volume(name=vol, disk_id=tdisk.id))
            s.add(DiskAttachment(id=tdisk.id, disk_id=tdisk.id, template_id=t.id, interface=att.interface,
                                 bootable=att.bootable, position=i))
            s.commit()
    except Fault:
        s.rollback()
        _undo(ctx, s, job, made)
        raise
    t.status = "ok"
    vm.status, vm.busy_until = "down", None
    events.add(s, events.TEMPLATE_CREATED, f"Template {t.name} was created from VM {vm.name}.",
               template_id=t.id, vm_id=vm.id, user_id=job.owner_id)
    return {"template_id": t.id}


def _undo(ctx, s, job, made):
    for sd, vol in made:
        try:
            with disk_svc.pool_for(ctx, s, sd) as pool:
                virt.delete_volume(pool, vol)
        except Fault:
            pass   # the copy stays behind as an unreferenced file; the failure is reported anyway
    t, vm = s.get(Template, job.params["template_id"]), s.get(Vm, job.params["vm_id"])
    for d in s.scalars(select(Disk).where(Disk.template_id == job.params["template_id"])):
        s.delete(d)
    if t is not None:
        s.delete(t)
    if vm is not None:
        vm.status, vm.busy_until = "down", None
    s.commit()


def update_template(ctx, s, t, ch: TemplateChanges) -> Template:
    """Configuration only (stored at once): VMs made from the template keep
    theirs, as in oVirt; its disks are not touched."""
    access.check(ctx, s, "edit_template_properties", t)
    if t.id == BLANK_TEMPLATE_ID:
        raise conflict("the Blank template is built in and cannot be changed; make a template of your own")
    if t.status != "ok":
        raise conflict(f"template {t.name} is {t.status}; change it once its job ended")
    vm_svc.check_configuration(ch.memory, ch.cpus)
    if ch.cluster is not None:
        cl = lookup.resolve(s, Cluster, ch.cluster, "cluster", "cluster")
        if cl.id != t.cluster_id:
            raise bad_request("cluster: a template stays in the cluster it was made in; moving it is not "
                              "supported yet")
    if ch.vm is not None:
        vm = lookup.resolve(s, Vm, ch.vm, "VM", "vm")
        if vm.id != t.source_vm_id:
            raise bad_request(f"vm: template {t.name} was not made from VM {vm.name}; a template's VM "
                              "cannot be changed")
    changed = []
    if ch.name is not None and ch.name != t.name:
        lookup.unique_name(s, Template, ch.name, "template", exclude_id=t.id)
        changed.append(f"name (was {t.name})")
        t.name = ch.name
    for attr, label in (("description", "description"), ("memory", "memory"), ("cpus", "CPUs"),
                        ("os_type", "operating system")):
        value = getattr(ch, attr)
        if value is not None and value != getattr(t, attr):
            setattr(t, attr, value)
            changed.append(label)
    if changed:
        events.add(s, events.OBJECT_UPDATED, f"Template {t.name} was updated: {', '.join(changed)}.",
                   template_id=t.id, user_id=ctx.user_id)
    return t


def remove_template(ctx, s, t) -> jobs.Job | None:
    access.check(ctx, s, "delete_template", t)
    if t.id == BLANK_TEMPLATE_ID:
        raise conflict("the Blank template cannot be removed")
    if t.status != "ok":
        raise conflict(f"template {t.name} is {t.status}")
    users = s.scalars(select(Vm.name).where(Vm.template_id == t.id)).all()
    if users:
        raise conflict(f"template {t.name} is used by VMs: {', '.join(sorted(users))}")
    if not disk_svc.template_disks(s, t.id):
        s.delete(t)
        events.add(s, events.TEMPLATE_REMOVED, f"Template {t.name} was removed.", user_id=ctx.user_id)
        return None
    t.status = "locked"
    return jobs.submit(s, jobs.TEMPLATE_REMOVE, {"template_id": t.id}, f"Removing template {t.name}",
                       ctx.user_id)


def run_remove(ctx, s, job):
    t = s.get(Template, job.params["template_id"])
    if t is None:
        return {}
    name = t.name
    with jobs.undo_on_failure(s, Template, t.id, lambda _s, tpl: setattr(tpl, "status", "ok")):
        for _att, disk, _sd in disk_svc.template_disks(s, t.id):
            jobs.step(s, job, f"Removing disk {disk.name}")
            disk_svc.delete_volumes_of(ctx, s, disk)
            s.delete(disk)
            s.commit()
    s.delete(t)
    events.add(s, events.TEMPLATE_REMOVED, f"Template {name} was removed.", user_id=job.owner_id)
    return {}
