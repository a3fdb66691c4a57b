"""Snapshots: a new qcow2 overlay per disk. Cold when the VM is down; live
through libvirt (external, disk-only, no libvirt metadata: the database is
the only record) when it is up. Restore makes a fresh overlay on the
snapshot's volumes and deletes the layers nothing needs any more."""
from xml.sax.saxutils import quoteattr

import libvirt
from sqlalchemy import select

from .. import virt
from ..errors import conflict
from ..models import Snapshot, Volume
from . import disks as disk_svc
from . import events, jobs
from .vms import _domain


def create_snapshot(ctx, s, vm, body):
    description = body.str("description", default="", maxlen=1024)
    if vm.status not in ("down", "up"):
        raise conflict(f"VM {vm.name} is {vm.status}; snapshots are taken when it is up or down")
    job = jobs.start(s, f"Creating snapshot of VM {vm.name}", ctx.user_id)
    frozen, new_tops = {}, {}
    for _att, disk, sd in disk_svc.vm_disks(s, vm.id):
        frozen[disk.id] = disk.active_volume
        new_tops[disk.id] = (disk, sd, disk_svc.new_volume_name(disk.id))
    if vm.status == "up" and new_tops:
        # live: libvirt pivots the running qemu onto new overlays (external, disk-only)
        host, conn, dom = _domain(ctx, s, vm)
        try:
            if dom is None:
                raise conflict(f"VM {vm.name} is not running on host {host.name}")
            disks_xml = "".join(
                f"<disk name={quoteattr(disk_svc.volume_path(sd, disk.active_volume))} snapshot='external'>"
                f"<driver type='qcow2'/><source file={quoteattr(disk_svc.volume_path(sd, new))}/></disk>"
                for disk, sd, new in new_tops.values())
            snap_xml = f"<domainsnapshot><disks>{disks_xml}</disks></domainsnapshot>"
            flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                     | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
            virt.with_deadline(lambda: dom.snapshotCreateXML(snap_xml, flags), ctx.config.libvirt_timeout * 3,
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
    snap = Snapshot(vm_id=vm.id, description=description, volumes=frozen, memory=vm.memory, cpus=vm.cpus)
    s.add(snap)
    s.flush()
    jobs.finish(job)
    events.add(s, events.SNAPSHOT_CREATED, f"Snapshot '{description}' of VM {vm.name} was created"
               f"{' live' if vm.status == 'up' else ''}.", vm_id=vm.id, user_id=ctx.user_id)
    return snap


def restore_snapshot(ctx, s, vm, snap):
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; restore a snapshot while it is down")
    job = jobs.start(s, f"Restoring VM {vm.name} to snapshot '{snap.description}'", ctx.user_id)
    later = s.scalars(select(Snapshot).where(Snapshot.vm_id == vm.id, Snapshot.date > snap.date)).all()
    for other in later:
        s.delete(other)
    keep_snaps = [x for x in s.scalars(select(Snapshot).where(Snapshot.vm_id == vm.id)) if x not in later]
    for _att, disk, sd in disk_svc.vm_disks(s, vm.id):
        base = snap.volumes.get(disk.id)
        if base is None:
            continue   # disk attached after the snapshot: left as it is
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
    vm.memory, vm.cpus = snap.memory, snap.cpus
    jobs.finish(job)
    events.add(s, events.SNAPSHOT_RESTORED, f"VM {vm.name} was restored to snapshot '{snap.description}'"
               f"{f'; {len(later)} later snapshot(s) removed' if later else ''}.", vm_id=vm.id,
               user_id=ctx.user_id)
    return vm


def remove_snapshot(ctx, s, vm, snap):
    # The snapshot's qcow2 layer stays in the chain (merging layers is not
    # implemented yet); its space is freed when the VM's disks are removed.
    s.delete(snap)
    events.add(s, events.SNAPSHOT_REMOVED, f"Snapshot '{snap.description}' of VM {vm.name} was removed.",
               vm_id=vm.id, user_id=ctx.user_id)
