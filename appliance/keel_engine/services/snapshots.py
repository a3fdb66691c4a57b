"""Snapshots: a new qcow2 overlay per disk. Cold when the VM is down; live
through libvirt (external, disk-only, no libvirt metadata: the database is
the only record) when it is up. Restore makes a fresh overlay on the
snapshot's volumes and deletes the layers nothing needs any more.

The request records the snapshot (`locked`) or claims the VM; the engine
worker does the storage part."""
from __future__ import annotations

import libvirt
from sqlalchemy import select

from .. import virt
from ..errors import conflict
from ..models import Snapshot, Vm, Volume
from . import disks as disk_svc
from . import access, events, jobs
from .vms import _claim, _domain


def create_snapshot(ctx, s, vm, description: str = "") -> tuple[Snapshot, jobs.Job]:
    access.check(ctx, s, "manipulate_vm_snapshots", vm)
    if vm.status not in ("down", "up"):
        raise conflict(f"VM {vm.name} is {vm.status}; snapshots are taken when it is up or down")
    snap = Snapshot(vm_id=vm.id, description=description, volumes={}, memory=vm.memory, cpus=vm.cpus,
                    status="locked")
    s.add(snap)
    s.flush()
    job = jobs.submit(s, jobs.SNAPSHOT_CREATE, {"snapshot_id": snap.id},
                      f"Creating snapshot '{description}' of VM {vm.name}", ctx.user_id)
    return snap, job


def run_create(ctx, s, job):
    snap = s.get(Snapshot, job.params["snapshot_id"])
    vm = s.get(Vm, snap.vm_id) if snap is not None else None
    if vm is None:
        raise conflict("the VM or its snapshot was removed")
    with jobs.undo_on_failure(s, Snapshot, snap.id, jobs.delete_row):
        _take(ctx, s, vm, snap, job)
    return {"snapshot_id": snap.id}


def _take(ctx, s, vm, snap, job):
    if vm.status not in ("down", "up"):
        raise conflict(f"VM {vm.name} is {vm.status}; snapshots are taken when it is up or down")
    frozen, new_tops = {}, {}
    for _att, disk, sd in disk_svc.vm_disks(s, vm.id):
        frozen[disk.id] = disk.active_volume
        new_tops[disk.id] = (disk, sd, disk_svc.new_volume_name(disk.id))
    live = vm.status == "up"
    jobs.step(s, job, f"{'Live' if live else 'Cold'} snapshot of {len(new_tops)} disk(s) of VM {vm.name}")
    s.commit()
    if live and new_tops:
        # libvirt pivots the running qemu onto new overlays (external, disk-only)
        host, conn, dom = _domain(ctx, s, vm)
        try:
            if dom is None:
                raise conflict(f"VM {vm.name} is not running on host {host.name}")
            xml = virt.snapshot_xml([(disk_svc.volume_path(sd, disk.active_volume), disk_svc.volume_path(sd, new))
                                     for disk, sd, new in new_tops.values()])
            flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                     | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
            virt.with_deadline(lambda: dom.snapshotCreateXML(xml, flags), ctx.config.libvirt_timeout * 3,
                               f"snapshot {vm.name}")
        except virt.VirtError as e:
            raise conflict(f"snapshot of VM {vm.name} failed: {e}")
        finally:
            conn.close()
    else:
        for disk, sd, new in new_tops.values():
            with disk_svc.pool_for(ctx, s, sd) as pool:
                virt.create_volume(pool, new, disk.provisioned_size, disk_svc.volume_path(sd, disk.active_volume))
    for disk, sd, new in new_tops.values():
        s.add(Volume(name=new, disk_id=disk.id, backing=disk.active_volume))
        disk.active_volume = new
    snap.volumes, snap.status = frozen, "ok"
    events.add(s, events.SNAPSHOT_CREATED, f"Snapshot '{snap.description}' of VM {vm.name} was created"
               f"{' live' if live else ''}.", vm_id=vm.id, user_id=job.owner_id)


def restore_snapshot(ctx, s, vm, snap) -> jobs.Job:
    access.check(ctx, s, "manipulate_vm_snapshots", vm)
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; restore a snapshot while it is down")
    if snap.status != "ok":
        raise conflict(f"snapshot '{snap.description}' is {snap.status}")
    _claim(s, vm, ("down",), "image_locked", 3600, verb="restore")
    return jobs.submit(s, jobs.SNAPSHOT_RESTORE, {"snapshot_id": snap.id, "vm_id": vm.id},
                       f"Restoring VM {vm.name} to snapshot '{snap.description}'", ctx.user_id)


def run_restore(ctx, s, job):
    vm, snap = s.get(Vm, job.params["vm_id"]), s.get(Snapshot, job.params["snapshot_id"])
    if vm is None or snap is None:
        raise conflict("the VM or its snapshot was removed")
    with jobs.undo_on_failure(s, Vm, vm.id, jobs.vm_down_again):
        later = _restore(ctx, s, vm, snap, job)
    vm.memory, vm.cpus = snap.memory, snap.cpus
    jobs.vm_down_again(s, vm)
    events.add(s, events.SNAPSHOT_RESTORED, f"VM {vm.name} was restored to snapshot '{snap.description}'"
               f"{f'; {later} later snapshot(s) removed' if later else ''}.", vm_id=vm.id,
               user_id=job.owner_id)
    return {"vm_id": vm.id}


def _restore(ctx, s, vm, snap, job):
    later = s.scalars(select(Snapshot).where(Snapshot.vm_id == vm.id, Snapshot.date > snap.date)).all()
    for other in later:
        s.delete(other)
    keep_snaps = [x for x in s.scalars(select(Snapshot).where(Snapshot.vm_id == vm.id)) if x not in later]
    for _att, disk, sd in disk_svc.vm_disks(s, vm.id):
        base = snap.volumes.get(disk.id)
        if base is None:
            continue   # disk attached after the snapshot: left as it is
        jobs.step(s, job, f"Restoring disk {disk.name}")
        new = disk_svc.new_volume_name(disk.id)
        with disk_svc.pool_for(ctx, s, sd) as pool:
            virt.create_volume(pool, new, disk.provisioned_size, disk_svc.volume_path(sd, base))
            s.add(Volume(name=new, disk_id=disk.id, backing=base))
            disk.active_volume = new
            s.flush()
            # drop the layers written after the snapshot that nothing needs any more
            vols = {v.name: v for v in s.scalars(select(Volume).where(Volume.disk_id == disk.id))}
            needed, cur = set(), new
            while cur in vols:
                needed.add(cur)
                cur = vols[cur].backing
            for x in keep_snaps:
                cur = x.volumes.get(disk.id)
                while cur in vols:
                    needed.add(cur)
                    cur = vols[cur].backing
            for name in sorted(set(vols) - needed, key=lambda n: 0 if any(
                    v.backing == n for v in vols.values()) else -1):
                virt.delete_volume(pool, name)
                s.delete(vols[name])
    return len(later)


def remove_snapshot(ctx, s, vm, snap):
    access.check(ctx, s, "manipulate_vm_snapshots", vm)
    # The snapshot's qcow2 layer stays in the chain (merging layers is not
    # implemented yet); its space is freed when the VM's disks are removed.
    if snap.status == "locked":
        raise conflict(f"snapshot '{snap.description}' is being created")
    s.delete(snap)
    events.add(s, events.SNAPSHOT_REMOVED, f"Snapshot '{snap.description}' of VM {vm.name} was removed.",
               vm_id=vm.id, user_id=ctx.user_id)
