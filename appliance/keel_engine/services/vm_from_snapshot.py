"""A new VM from a snapshot of another (oVirt's POST /vms with
<snapshots><snapshot id="..."/></snapshots>).

The new VM gets the snapshot's memory and CPUs and the rest of the source
VM's configuration as it is now (a snapshot records no more), NICs with new
MAC addresses, no VM lease unless one is given, and a full, independent copy
of each of the source's disks as it was in the snapshot: the snapshot's
volume of the disk (a read-only layer of its chain, which nothing writes
again) and everything it backs on, read into one qcow2 file by the clone
job (services/vms.run_create_disks). Fields of the request override the
source's.

The source may be up or down and stays so. While the copy runs, the
snapshot and the source disks it covers are `locked` (as oVirt locks them),
so nothing that deletes layers (restoring or previewing a snapshot,
committing or undoing a preview, removing the VM or one of those disks)
runs meanwhile; the job unlocks them however it ends."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from ..errors import bad_request, conflict
from ..models import BLANK_TEMPLATE_ID, Cluster, Disk, Nic, Snapshot, StorageDomain, Template, Vm
from . import access, events, jobs, lookup, roles
from . import disks as disk_svc
from . import vms as vm_svc
from .lookup import Ref


@dataclass(frozen=True)
class FromSnapshot:
    """What POST /vms asks for; None: as the source VM (or its snapshot) has it."""
    name: str
    snapshot: str                      # the snapshot's id
    cluster: Ref | None = None
    template: Ref | None = None        # Blank or the source's template (ovirt_vm sends Blank)
    description: str | None = None
    memory: int | None = None
    cpus: int | None = None
    os_type: str | None = None
    high_availability: bool | None = None
    ha_priority: int | None = None
    boot: vm_svc.DirectBoot | None = None
    lease_storage_domain: Ref | None = None


def _pick(given, source_value):
    return source_value if given is None else given


def add_vm(ctx, s, spec: FromSnapshot) -> tuple[Vm, jobs.Job | None]:
    """The VM row now (image_locked while its disks are copied by a job)."""
    snap = s.get(Snapshot, spec.snapshot) if spec.snapshot and lookup.valid_uuid(spec.snapshot) else None
    source = s.get(Vm, snap.vm_id) if snap is not None else None
    if source is None:
        raise bad_request(f"snapshots.snapshot: snapshot with id '{spec.snapshot}' does not exist")
    access.require_visible(ctx, s, source, "snapshots.snapshot", Ref(id=spec.snapshot))
    access.check(ctx, s, "create_vm", source)
    cluster = lookup.resolve(s, Cluster, spec.cluster, "cluster", "cluster") or s.get(Cluster, source.cluster_id)
    access.check_ref(ctx, s, "create_vm", cluster, "cluster", spec.cluster)
    source_dc = s.scalar(select(Cluster.data_center_id).where(Cluster.id == source.cluster_id))
    if cluster.data_center_id != source_dc:
        raise bad_request(f"cluster: a VM made from a snapshot of VM {source.name} is in the data center of "
                          "that VM (its disks are copied on the same storage domains)")
    template = lookup.resolve(s, Template, spec.template, "template", "template")
    if template is not None and template.id not in (BLANK_TEMPLATE_ID, source.template_id):
        raise bad_request(f"template: a VM made from a snapshot keeps the template of VM {source.name}; "
                          "leave template out or name Blank")
    lookup.unique_name(s, Vm, spec.name, "VM")
    vm_svc._check(spec.memory, spec.cpus, spec.ha_priority)
    if source.status == "image_locked":
        raise conflict(f"VM {source.name} is image_locked (its disks are being changed); try again when it "
                       "is done")
    if snap.status == "locked":
        raise conflict(f"snapshot '{snap.description}' of VM {source.name} is being taken or copied to a new VM; "
                       "try again when that is done")
    if snap.status != "ok":
        raise conflict(f"snapshot '{snap.description}' of VM {source.name} is part of a preview ({snap.status}); "
                       "commit or undo the preview first")
    vm = Vm(name=spec.name, cluster_id=cluster.id, template_id=source.template_id,
            description=_pick(spec.description, source.description), memory=spec.memory or snap.memory,
            cpus=spec.cpus or snap.cpus, os_type=spec.os_type or source.os_type,
            high_availability=_pick(spec.high_availability, source.high_availability),
            ha_priority=_pick(spec.ha_priority, source.ha_priority),
            kernel_path=source.kernel_path, initrd_path=source.initrd_path, kernel_params=source.kernel_params,
            cdrom_file=source.cdrom_file, cdrom_storage_domain_id=source.cdrom_storage_domain_id)
    vm_svc._set_boot(vm, spec.boot)
    if spec.lease_storage_domain:
        sd = lookup.resolve(s, StorageDomain, spec.lease_storage_domain, "storage domain", "lease.storage_domain")
        vm.lease_storage_domain_id = access.require_visible(ctx, s, sd, "lease.storage_domain",
                                                            spec.lease_storage_domain).id
    s.add(vm)
    s.flush()
    for nic in s.scalars(select(Nic).where(Nic.vm_id == source.id).order_by(Nic.name)).all():
        s.add(Nic(vm_id=vm.id, name=nic.name, mac=vm_svc._new_mac(s), interface=nic.interface,
                  network_id=nic.network_id))
    copies, locked = _copies(s, vm, source, snap, spec.name)
    job = None
    if copies:
        _lock(s, Snapshot, snap.id, f"snapshot '{snap.description}' of VM {source.name}")
        vm.status = "image_locked"
        job = jobs.submit(s, jobs.VM_FROM_SNAPSHOT, {"vm_id": vm.id, "copies": copies, "snapshot_id": snap.id,
                                                     "locked_disks": locked},
                          f"Creating VM {spec.name} from snapshot '{snap.description}' of VM {source.name}",
                          ctx.user_id)
    left = len(snap.volumes or {}) - len(copies)
    note = f"; {left} disk(s) of the snapshot are no longer the VM's and were not copied" if left else ""
    events.add(s, events.VM_CREATED, f"VM {spec.name} was created from snapshot '{snap.description}' of VM "
               f"{source.name}{note}.", vm_id=vm.id, cluster_id=vm.cluster_id, template_id=vm.template_id,
               user_id=ctx.user_id)
    roles.grant_owner(ctx, s, vm)
    return vm, job


def _copies(s, vm, source, snap, name):
    """New disks for the source's disks the snapshot covers ({new disk id:
    the snapshot's volume}) and the source disks locked for the copy."""
    copies, locked = {}, []
    for att, disk, sd in disk_svc.vm_disks(s, source.id):
        frozen = (snap.volumes or {}).get(disk.id)
        if frozen is None:
            continue   # attached after the snapshot
        _lock(s, Disk, disk.id, f"disk {disk.name} of VM {source.name}")
        locked.append(disk.id)
        new = disk_svc.new_disk_row(s, sd, f"{name}_Disk{len(copies) + 1}", disk.provisioned_size,
                                    description=disk.description)
        copies[new.id] = frozen
        disk_svc.attach(s, vm, new, att.interface, att.bootable, att.active)
        s.flush()
    return copies, locked


def _lock(s, model, ident, what):
    """ok -> locked, atomically: of two requests exactly one wins."""
    res = s.execute(update(model).where(model.id == ident, model.status == "ok").values(status="locked")
                    .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise conflict(f"{what} is locked by an operation in progress; try again when it is done")


def run_create(ctx, s, job):
    """(worker) The clone job, then the snapshot and the source's disks unlocked."""
    try:
        result = vm_svc.run_create_disks(ctx, s, job)
    except Exception:
        s.rollback()
        _unlock(s, job.params)
        s.commit()
        raise
    _unlock(s, job.params)
    return result


def _unlock(s, params):
    for model, ids in ((Snapshot, [params["snapshot_id"]]), (Disk, params.get("locked_disks") or [])):
        s.execute(update(model).where(model.id.in_(ids), model.status == "locked").values(status="ok")
                  .execution_options(synchronize_session=False))
