"""Snapshots: a new qcow2 overlay per disk. Cold when the VM is down; live
through libvirt (external, disk-only, no libvirt metadata: the database is
the only record) when it is up. Restore makes a fresh overlay on the
snapshot's volumes and deletes the layers nothing needs any more.

Preview (oVirt's "preview, then commit or undo") runs a down VM from a
snapshot without losing where it was: a fresh overlay on the snapshot's
volumes becomes each disk's active volume, the previewed snapshot is
`in_preview`, and a snapshot row of oVirt's type `preview` ("Active VM before
the preview") keeps the volumes and configuration the VM had. Commit keeps
the preview (later snapshots and the layers only they needed go); undo
returns to the kept volumes (the preview's layers go).

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

# Snapshot.status beyond oVirt's ok/locked: the previewed snapshot is
# "in_preview"; the row that keeps the VM as it was before the preview is
# "preview" (shown as oVirt's snapshot_type preview, status ok).
IN_PREVIEW, PREVIEW = "in_preview", "preview"
PREVIEW_DESCRIPTION = "Active VM before the preview"
# oVirt's audit codes: USER_TRY_BACK_TO_SNAPSHOT, USER_RESTORE_FROM_SNAPSHOT;
# undoing a preview has no code of its own in oVirt
SNAPSHOT_PREVIEWED, SNAPSHOT_COMMITTED, SNAPSHOT_UNDONE = 92, 95, 9003


def preview_state(s, vm_id) -> tuple[Snapshot | None, Snapshot | None]:
    """(the snapshot in preview, the row keeping the VM before it), or (None, None)."""
    rows = s.scalars(select(Snapshot).where(Snapshot.vm_id == vm_id,
                                            Snapshot.status.in_((IN_PREVIEW, PREVIEW)))).all()
    previewed = next((x for x in rows if x.status == IN_PREVIEW), None)
    saved = next((x for x in rows if x.status == PREVIEW), None)
    return previewed, saved


def _refuse_in_preview(s, vm, doing):
    previewed, _saved = preview_state(s, vm.id)
    if previewed is not None:
        raise conflict(f"VM {vm.name} is previewing snapshot '{previewed.description}'; commit or undo "
                       f"the preview before {doing}")


def create_snapshot(ctx, s, vm, description: str = "") -> tuple[Snapshot, jobs.Job]:
    access.check(ctx, s, "manipulate_vm_snapshots", vm)
    if vm.status not in ("down", "up"):
        raise conflict(f"VM {vm.name} is {vm.status}; snapshots are taken when it is up or down")
    _refuse_in_preview(s, vm, "taking a snapshot")
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
    frozen, new_tops, unplugged = {}, {}, set()
    for att, disk, sd in disk_svc.vm_disks(s, vm.id):
        frozen[disk.id] = disk.active_volume
        new_tops[disk.id] = (disk, sd, disk_svc.new_volume_name(disk.id))
        if not att.active:
            unplugged.add(disk.id)
    live = vm.status == "up"
    # a disk unplugged from the running VM (hot-plug) is not in its domain: its overlay is made cold
    pivots = {i: top for i, top in new_tops.items() if live and i not in unplugged}
    jobs.step(s, job, f"{'Live' if live else 'Cold'} snapshot of {len(new_tops)} disk(s) of VM {vm.name}")
    s.commit()
    if pivots:
        # libvirt pivots the running qemu onto new overlays (external, disk-only)
        host, conn, dom = _domain(ctx, s, vm)
        try:
            if dom is None:
                raise conflict(f"VM {vm.name} is not running on host {host.name}")
            xml = virt.snapshot_xml([(disk_svc.volume_path(sd, disk.active_volume), disk_svc.volume_path(sd, new))
                                     for disk, sd, new in pivots.values()])
            flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                     | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
            virt.with_deadline(lambda: dom.snapshotCreateXML(xml, flags), ctx.config.libvirt_timeout * 3,
                               f"snapshot {vm.name}")
        except virt.VirtError as e:
            raise conflict(f"snapshot of VM {vm.name} failed: {e}")
        finally:
            conn.close()
    for i, (disk, sd, new) in new_tops.items():
        if i not in pivots:
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
    _claimed_for(s, vm, snap, "restore a snapshot", "restoring a snapshot")
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
        raise conflict(f"snapshot '{snap.description}' is being "
                       f"{'copied to a new VM' if snap.volumes else 'created'}")
    if snap.status in (IN_PREVIEW, PREVIEW):
        raise conflict(f"snapshot '{snap.description}' is part of the preview of VM {vm.name}; commit or "
                       "undo the preview first")
    s.delete(snap)
    events.add(s, events.SNAPSHOT_REMOVED, f"Snapshot '{snap.description}' of VM {vm.name} was removed.",
               vm_id=vm.id, user_id=ctx.user_id)


# ---- preview, commit, undo -------------------------------------------------------
def _claimed_for(s, vm, snap, doing, in_preview_doing):
    """Restore and preview: the VM down and not previewing, `snap` whole,
    then claimed for the job. `doing`: "restore a snapshot"."""
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; {doing} while it is down")
    _refuse_in_preview(s, vm, in_preview_doing)
    if snap.status != "ok":
        raise conflict(f"snapshot '{snap.description}' is {snap.status}")
    _claimed(s, vm, doing)


def _locked_for(snap) -> str:
    """Why a snapshot is locked: one being taken has no volumes yet; one that
    has them is being copied to a new VM (services/vm_from_snapshot.py)."""
    return "copied to a new VM" if snap.volumes else "taken"


def _claimed(s, vm, doing):
    """No snapshot of the VM being taken (its job moves the disks' active
    volumes, which restore, preview, commit and undo replace), then the VM
    claimed for the job; its callers have checked it is down (the claim
    refuses it atomically if it no longer is)."""
    busy = s.execute(select(Snapshot.description, Snapshot.volumes)
                     .where(Snapshot.vm_id == vm.id, Snapshot.status == "locked")).first()
    if busy is not None:
        raise conflict(f"snapshot '{busy.description}' of VM {vm.name} is being {_locked_for(busy)}; {doing} "
                       "once it is done")
    _claim(s, vm, ("down",), "image_locked", 3600, verb=f"{doing} of")


def preview_snapshot(ctx, s, vm, snap) -> jobs.Job:
    access.check(ctx, s, "manipulate_vm_snapshots", vm)
    _claimed_for(s, vm, snap, "preview a snapshot", "previewing another snapshot")
    return jobs.submit(s, jobs.SNAPSHOT_PREVIEW, {"snapshot_id": snap.id, "vm_id": vm.id},
                       f"Previewing snapshot '{snap.description}' of VM {vm.name}", ctx.user_id)


def run_preview(ctx, s, job):
    vm, snap = s.get(Vm, job.params["vm_id"]), s.get(Snapshot, job.params["snapshot_id"])
    if vm is None or snap is None:
        raise conflict("the VM or its snapshot was removed")
    with jobs.undo_on_failure(s, Vm, vm.id, jobs.vm_down_again):
        _preview(ctx, s, vm, snap, job)
    jobs.vm_down_again(s, vm)
    events.add(s, SNAPSHOT_PREVIEWED, f"VM {vm.name} is previewing snapshot '{snap.description}'.",
               vm_id=vm.id, user_id=job.owner_id)
    return {"vm_id": vm.id}


def _preview(ctx, s, vm, snap, job):
    disks = disk_svc.vm_disks(s, vm.id)
    kept = {disk.id: disk.active_volume for _att, disk, _sd in disks}
    made = []   # (disk, sd, new volume): made on storage, not yet recorded
    try:
        for _att, disk, sd in disks:
            base = snap.volumes.get(disk.id)
            if base is None:
                continue   # disk attached after the snapshot: the preview leaves it as it is
            jobs.step(s, job, f"Previewing disk {disk.name}")
            new = disk_svc.new_volume_name(disk.id)
            with disk_svc.pool_for(ctx, s, sd) as pool:
                virt.create_volume(pool, new, disk.provisioned_size, disk_svc.volume_path(sd, base))
            made.append((disk, sd, new, base))
    except Exception:
        _delete_made(ctx, s, [(sd, new) for _d, sd, new, _b in made])
        raise
    s.add(Snapshot(vm_id=vm.id, description=PREVIEW_DESCRIPTION, volumes=kept, memory=vm.memory, cpus=vm.cpus,
                   status=PREVIEW))
    for disk, _sd, new, base in made:
        s.add(Volume(name=new, disk_id=disk.id, backing=base))
        disk.active_volume = new
    snap.status = IN_PREVIEW
    vm.memory, vm.cpus = snap.memory, snap.cpus


def _delete_made(ctx, s, made):
    """Volumes a failed job made and recorded nowhere; their deletion failing
    leaves unreferenced files, the job's failure is reported anyway."""
    s.rollback()
    for sd, name in made:
        try:
            with disk_svc.pool_for(ctx, s, sd) as pool:
                virt.delete_volume(pool, name)
        except Exception:
            pass


def commit_snapshot(ctx, s, vm) -> jobs.Job:
    access.check(ctx, s, "manipulate_vm_snapshots", vm)
    previewed, _saved = _require_preview(s, vm, "commit")
    _claimed(s, vm, "commit the preview")
    return jobs.submit(s, jobs.SNAPSHOT_COMMIT, {"snapshot_id": previewed.id, "vm_id": vm.id},
                       f"Committing the preview of snapshot '{previewed.description}' of VM {vm.name}",
                       ctx.user_id)


def undo_snapshot(ctx, s, vm) -> jobs.Job:
    access.check(ctx, s, "manipulate_vm_snapshots", vm)
    previewed, _saved = _require_preview(s, vm, "undo")
    _claimed(s, vm, "undo the preview")
    return jobs.submit(s, jobs.SNAPSHOT_UNDO, {"snapshot_id": previewed.id, "vm_id": vm.id},
                       f"Undoing the preview of snapshot '{previewed.description}' of VM {vm.name}",
                       ctx.user_id)


def _require_preview(s, vm, verb):
    previewed, saved = preview_state(s, vm.id)
    if previewed is None or saved is None:
        raise conflict(f"VM {vm.name} is not previewing a snapshot; nothing to {verb}")
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; {verb} the preview while it is down")
    return previewed, saved


def _job_preview(s, job):
    vm = s.get(Vm, job.params["vm_id"])
    if vm is None:
        raise conflict("the VM was removed")
    previewed, saved = preview_state(s, vm.id)
    if previewed is None or saved is None or previewed.id != job.params["snapshot_id"]:
        raise conflict(f"VM {vm.name} is no longer previewing that snapshot")
    return vm, previewed, saved


def run_commit(ctx, s, job):
    vm, previewed, saved = _job_preview(s, job)
    with jobs.undo_on_failure(s, Vm, vm.id, jobs.vm_down_again):
        # as in oVirt: the previewed snapshot is where the VM now is; what was
        # taken after it (and the state before the preview) is gone
        later = s.scalars(select(Snapshot).where(Snapshot.vm_id == vm.id, Snapshot.date > previewed.date,
                                                 Snapshot.id != saved.id)).all()
        for x in later + [saved]:
            s.delete(x)
        previewed.status = "ok"
        s.flush()
        jobs.step(s, job, f"Removing the layers the preview replaced on the disks of VM {vm.name}")
        _prune(ctx, s, vm)
    jobs.vm_down_again(s, vm)
    events.add(s, SNAPSHOT_COMMITTED, f"VM {vm.name} was committed to snapshot '{previewed.description}'"
               f"{f'; {len(later)} later snapshot(s) removed' if later else ''}.", vm_id=vm.id,
               user_id=job.owner_id)
    return {"vm_id": vm.id}


def run_undo(ctx, s, job):
    vm, previewed, saved = _job_preview(s, job)
    with jobs.undo_on_failure(s, Vm, vm.id, jobs.vm_down_again):
        for _att, disk, _sd in disk_svc.vm_disks(s, vm.id):
            kept = saved.volumes.get(disk.id)
            if kept is not None:
                disk.active_volume = kept
        vm.memory, vm.cpus = saved.memory, saved.cpus
        s.delete(saved)
        previewed.status = "ok"
        s.flush()
        jobs.step(s, job, f"Removing the preview's layers on the disks of VM {vm.name}")
        _prune(ctx, s, vm)
    jobs.vm_down_again(s, vm)
    events.add(s, SNAPSHOT_UNDONE, f"VM {vm.name} is back where it was before the preview of snapshot "
               f"'{previewed.description}'.", vm_id=vm.id, user_id=job.owner_id)
    return {"vm_id": vm.id}


def unneeded_volumes(volumes: dict, tops) -> list:
    """Volumes ({name: backing name or None}) no chain from `tops` reaches,
    topmost first (nothing left backs on a volume when it is deleted)."""
    needed = set()
    for cur in tops:
        while cur in volumes and cur not in needed:
            needed.add(cur)
            cur = volumes[cur]
    drop, order = set(volumes) - needed, []
    while drop:
        leaves = sorted(n for n in drop if not any(volumes[m] == n for m in drop))
        if not leaves:   # a cycle cannot be in a qcow2 chain; do not loop on bad rows
            leaves = sorted(drop)
        order += leaves
        drop -= set(leaves)
    return order


def _prune(ctx, s, vm):
    """Delete the layers of the VM's disks that neither the active volume nor
    a remaining snapshot needs."""
    snaps = s.scalars(select(Snapshot).where(Snapshot.vm_id == vm.id)).all()
    for _att, disk, sd in disk_svc.vm_disks(s, vm.id):
        vols = {v.name: v for v in s.scalars(select(Volume).where(Volume.disk_id == disk.id))}
        order = unneeded_volumes({n: v.backing for n, v in vols.items()},
                                 [disk.active_volume] + [x.volumes.get(disk.id) for x in snaps])
        if not order:
            continue
        with disk_svc.pool_for(ctx, s, sd) as pool:
            for name in order:
                virt.delete_volume(pool, name)
                s.delete(vols[name])
        s.commit()
