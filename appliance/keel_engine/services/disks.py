"""Disks as qcow2 volumes in the storage domain's libvirt pool, reached
through any 'up' host of the domain's data center (the pool is shared).

A new disk's row exists at once, `locked` (as in oVirt) until the engine
worker has made its volume; removing a disk's volumes is the worker's too.
An update renames a disk at once; growing it is the worker's: through the
pool when no qemu has it open, through the running domain otherwise (the
guest sees the new size live)."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update

from .. import virt
from ..errors import bad_request, conflict
from ..models import Disk, DiskAttachment, Snapshot, StorageDomain, Vm, Volume
from . import access, events, hosts, jobs, lookup, roles
from .lookup import Ref

log = logging.getLogger("keel.engine.disks")
MiB = 2 ** 20
MIN_DISK, MAX_DISK = MiB, 16 * 2 ** 40
# the job kind and oVirt's event codes of a disk's update (USER_UPDATE_VM_DISK,
# USER_EXTEND_DISK_SIZE_SUCCESS / _FAILURE)


@dataclass(frozen=True)
class DiskSpec:
    provisioned_size: int
    storage_domain: Ref
    name: str | None = None
    format: str = "cow"
    description: str = ""


@dataclass(frozen=True)
class DiskChanges:
    """What an update asks for; None leaves a field as it is. A storage domain
    or format may be given (oVirt's clients send the whole disk) but must be
    the disk's own."""
    name: str | None = None
    description: str | None = None
    provisioned_size: int | None = None
    storage_domain: Ref | None = None
    format: str | None = None


_POOL_LOCKS: dict[str, threading.Lock] = {}
_POOL_GUARD = threading.Lock()


def _pool_lock(sd_id) -> threading.Lock:
    with _POOL_GUARD:
        return _POOL_LOCKS.setdefault(sd_id, threading.Lock())


@contextlib.contextmanager
def pool_for(ctx, s, sd, host=None):
    """The storage domain's pool through `host`, else an up host (worker), one
    job at a time per storage domain (libvirt refuses some pool operations
    while another job's volume is being made). Commits what is pending
    first: no transaction stays open while the host works."""
    host = host or hosts.any_up_host(s, sd.data_center_id)
    if host is None:
        raise conflict(f"no 'up' host can reach storage domain {sd.name}")
    s.commit()
    with _pool_lock(sd.id):
        try:
            conn = virt.connect(host.libvirt_uri, ctx.config.libvirt_timeout)
        except virt.VirtError as e:
            raise conflict(str(e))
        try:
            yield virt.ensure_pool(conn, sd)
        except virt.VirtError as e:
            raise conflict(str(e))
        finally:
            conn.close()


def volume_path(sd, name):
    return os.path.join(sd.path, name)


def new_volume_name(disk_id):
    return f"{disk_id}.{uuid.uuid4().hex[:8]}.qcow2"


def new_disk_row(s, sd, name, size, backing_volume=None, template_id=None, description=""):
    """A disk whose volume the worker creates (create_volume_of); `backing_volume`:
    a thin overlay on that volume of the same storage domain."""
    if sd.status != "active":
        raise conflict(f"storage domain {sd.name} is not attached to a data center")
    disk = Disk(name=name, storage_domain_id=sd.id, provisioned_size=size, format="cow",
                template_id=template_id, description=description, active_volume="", status="locked")
    s.add(disk)
    s.flush()
    disk.active_volume = new_volume_name(disk.id)
    s.add(Volume(name=disk.active_volume, disk_id=disk.id, backing=backing_volume))
    s.flush()
    return disk


def create_volume_of(ctx, s, disk):
    """Make a locked disk's volume (worker); the disk is then ok."""
    sd = s.get(StorageDomain, disk.storage_domain_id)
    vol = s.get(Volume, disk.active_volume)
    backing = volume_path(sd, vol.backing) if vol is not None and vol.backing else None
    with pool_for(ctx, s, sd) as pool:
        try:
            virt.create_volume(pool, disk.active_volume, disk.provisioned_size, backing)
        except Exception as e:
            raise conflict(f"cannot create volume for disk {disk.name} on {sd.name}: {e}")
    disk.status = "ok"
    events.add(s, events.DISK_CREATED, f"Disk {disk.name} ({disk.provisioned_size // MiB} MiB) was created "
               f"on {sd.name}.", storage_domain_id=sd.id)


def copy_volume_of(ctx, s, disk, source_volume, user_id=None):
    """Make a locked disk's volume as a full copy of `source_volume` (worker):
    the source's whole chain read into one qcow2 with no backing file, so the
    copy depends on nothing (a clone). Source and copy share the storage domain."""
    sd = s.get(StorageDomain, disk.storage_domain_id)
    with pool_for(ctx, s, sd) as pool:
        try:
            virt.clone_volume(pool, source_volume, disk.active_volume)
        except Exception as e:
            raise conflict(f"cannot copy volume {source_volume} for disk {disk.name} on {sd.name}: {e}")
    disk.status = "ok"
    events.add(s, events.DISK_CREATED, f"Disk {disk.name} ({disk.provisioned_size // MiB} MiB) was created "
               f"on {sd.name} as a copy.", storage_domain_id=sd.id, user_id=user_id)


def delete_volumes_of(ctx, s, disk):
    """Delete a disk's volumes from storage (worker); the caller deletes the row."""
    sd = s.get(StorageDomain, disk.storage_domain_id)
    if s.scalar(select(func.count()).select_from(Volume).where(
            Volume.backing.in_(select(Volume.name).where(Volume.disk_id == disk.id)),
            Volume.disk_id != disk.id)):
        raise conflict(f"disk {disk.name} is the base of other disks (a template's disk "
                       "used by VMs); remove those first")
    vols = s.scalars(select(Volume).where(Volume.disk_id == disk.id)).all()
    with pool_for(ctx, s, sd) as pool:
        # top of the chain first, so no volume is deleted while another backs on it
        order, cur = [], disk.active_volume
        names = {v.name for v in vols}
        while cur in names:
            order.append(cur)
            cur = next((v.backing for v in vols if v.name == cur), None)
        order += [v.name for v in vols if v.name not in order]
        for name in order:
            try:
                virt.delete_volume(pool, name)
            except Exception as e:   # libvirt refused: the disk stays, the caller says why
                raise conflict(f"cannot delete volume {name} of disk {disk.name}: {e}")
    events.add(s, events.DISK_REMOVED, f"Disk {disk.name} was removed.", storage_domain_id=sd.id)


def add_disk(ctx, s, spec: DiskSpec, default_name: str):
    """A new (floating, or about to be attached) disk: (disk, job)."""
    disk = new_disk(ctx, s, spec, default_name)
    sd = s.get(StorageDomain, disk.storage_domain_id)
    job = jobs.submit(s, jobs.DISK_CREATE, {"disk_id": disk.id},
                      f"Creating disk {disk.name} on storage domain {sd.name}", ctx.user_id)
    return disk, job


def new_disk(ctx, s, spec: DiskSpec, default_name: str):
    """add_disk's row alone (locked): for a caller whose own job makes the
    volume (a disk hot-plugged into a running VM)."""
    if not MIN_DISK <= spec.provisioned_size <= MAX_DISK:
        raise bad_request(f"provisioned_size: must be at least {MIN_DISK} and at most {MAX_DISK}, "
                          f"got {spec.provisioned_size}")
    if spec.format != "cow":
        raise bad_request("disk.format: only 'cow' (qcow2) disks are supported")
    sd = lookup.require(s, StorageDomain, spec.storage_domain, "storage domain",
                        "storage_domains.storage_domain")
    access.check_ref(ctx, s, "create_disk", sd, "storage_domains.storage_domain", spec.storage_domain)
    disk = new_disk_row(s, sd, spec.name or default_name, spec.provisioned_size, description=spec.description)
    roles.grant_owner(ctx, s, disk)
    return disk


def run_create(ctx, s, job):
    disk = s.get(Disk, job.params["disk_id"])
    if disk is None:
        raise conflict("the disk was removed before its volume was created")
    with jobs.undo_on_failure(s, Disk, disk.id, jobs.delete_row):
        create_volume_of(ctx, s, disk)
    return {"disk_id": disk.id}


def remove_disk(ctx, s, disk) -> jobs.Job:
    access.check(ctx, s, "delete_disk", disk)
    return request_remove(ctx, s, disk)


def request_remove(ctx, s, disk) -> jobs.Job:
    """remove_disk without its check: for a caller that checked while the
    disk was still attached to its VM."""
    if disk.status == "locked":
        raise conflict(f"disk {disk.name} is locked by an operation in progress")
    if s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == disk.id)) is not None:
        raise conflict(f"disk {disk.name} is attached to a VM or template; detach it first")
    disk.status = "locked"
    return jobs.submit(s, jobs.DISK_REMOVE, {"disk_id": disk.id}, f"Removing disk {disk.name}", ctx.user_id)


def run_remove(ctx, s, job):
    disk = s.get(Disk, job.params["disk_id"])
    if disk is None:
        return {}
    with jobs.undo_on_failure(s, Disk, disk.id, lambda _s, d: setattr(d, "status", "ok")):
        delete_volumes_of(ctx, s, disk)
    s.delete(disk)
    return {}


def attach(s, vm, disk, interface="virtio", bootable=False, active=True):
    if s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == disk.id)):
        raise conflict(f"disk {disk.name} is already attached")
    n = s.scalar(select(func.count()).select_from(DiskAttachment).where(DiskAttachment.vm_id == vm.id))
    att = DiskAttachment(id=disk.id, disk_id=disk.id, vm_id=vm.id, interface=interface,
                         bootable=bootable, active=active, position=n)
    s.add(att)
    return att


def vm_disks(s, vm_id):
    """[(attachment, disk, storage domain)] in attachment order."""
    rows = s.execute(select(DiskAttachment, Disk, StorageDomain)
                     .join(Disk, Disk.id == DiskAttachment.disk_id)
                     .join(StorageDomain, StorageDomain.id == Disk.storage_domain_id)
                     .where(DiskAttachment.vm_id == vm_id).order_by(DiskAttachment.position)).all()
    return [tuple(r) for r in rows]


def template_disks(s, template_id):
    rows = s.execute(select(DiskAttachment, Disk, StorageDomain)
                     .join(Disk, Disk.id == DiskAttachment.disk_id)
                     .join(StorageDomain, StorageDomain.id == Disk.storage_domain_id)
                     .where(DiskAttachment.template_id == template_id)
                     .order_by(DiskAttachment.position)).all()
    return [tuple(r) for r in rows]


def update_disk(ctx, s, disk, ch: DiskChanges) -> jobs.Job | None:
    """Rename and describe at once; a larger provisioned_size is a job
    (returned; None when the size stays). A disk never shrinks (as in oVirt:
    the guest's file systems end where the disk did)."""
    access.check(ctx, s, "edit_disk_properties", disk)
    if ch.format is not None and ch.format != disk.format:
        raise bad_request(f"disk.format: disk {disk.name} is '{disk.format}'; the format cannot be changed")
    if ch.storage_domain is not None:
        sd = lookup.require(s, StorageDomain, ch.storage_domain, "storage domain", "storage_domains.storage_domain")
        if sd.id != disk.storage_domain_id:
            raise bad_request("disk.storage_domains: moving a disk to another storage domain is not supported yet")
    size = ch.provisioned_size
    if size is not None and size > MAX_DISK:
        raise bad_request(f"provisioned_size: must be at most {MAX_DISK}, got {size}")
    if size is not None and size < disk.provisioned_size:
        raise conflict(f"disk.provisioned_size: disk {disk.name} is {disk.provisioned_size} bytes and cannot "
                       f"shrink to {size} (disks only grow)")
    grow = size is not None and size != disk.provisioned_size
    renamed = ch.name is not None and ch.name != disk.name
    # a description is free text: stored as given, never compared
    described = ch.description is not None
    if not (grow or renamed or described):
        return None
    if disk.status == "locked":
        raise conflict(f"disk {disk.name} is locked by an operation in progress")
    att = s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == disk.id))
    job = _request_grow(ctx, s, disk, att, size) if grow else None
    if renamed or described:
        old = disk.name
        disk.name = ch.name if renamed else disk.name
        disk.description = ch.description if described else disk.description
        events.add(s, events.DISK_UPDATED, f"Disk {old} was updated{f' (now named {disk.name})' if renamed else ''}.",
                   storage_domain_id=disk.storage_domain_id, vm_id=att.vm_id if att else None,
                   user_id=ctx.user_id)
    return job


def _request_grow(ctx, s, disk, att, size) -> jobs.Job:
    """Claim the disk (and a down VM that has it, so it cannot start while its
    volume changes); a running VM's disk grows live."""
    from .vms import _claim   # vms imports this module
    if att is not None and att.template_id is not None:
        raise conflict(f"disk {disk.name} is a template's disk (VMs' disks are based on it); it cannot grow")
    vm = s.get(Vm, att.vm_id) if att is not None and att.vm_id else None
    if vm is not None and vm.status not in ("down", "up"):
        raise conflict(f"VM {vm.name} is {vm.status}; its disks grow while it is up or down")
    if vm is not None and s.scalar(select(func.count()).select_from(Snapshot).where(
            Snapshot.vm_id == vm.id, Snapshot.status == "in_preview")):
        # undoing the preview returns to volumes of the old size
        raise conflict(f"VM {vm.name} is previewing a snapshot; commit or undo the preview before growing "
                       f"disk {disk.name}")
    claimed = s.execute(update(Disk).where(Disk.id == disk.id, Disk.status == "ok").values(status="locked")
                        .execution_options(synchronize_session=False))
    s.refresh(disk)
    if claimed.rowcount != 1:
        raise conflict(f"disk {disk.name} is {disk.status}; it cannot grow now")
    live = vm is not None and vm.status == "up"
    if vm is not None and not live:
        _claim(s, vm, ("down",), "image_locked", 3600, verb="grow a disk of")
    return jobs.submit(s, jobs.DISK_RESIZE, {"disk_id": disk.id, "provisioned_size": size,
                                        "vm_id": vm.id if vm is not None else None, "live": live},
                       f"Extending disk {disk.name} to {size // MiB} MiB", ctx.user_id)


def run_resize(ctx, s, job):
    disk = s.get(Disk, job.params["disk_id"])
    if disk is None:
        raise conflict("the disk was removed before it grew")
    size, vm_id, live = job.params["provisioned_size"], job.params["vm_id"], job.params["live"]

    def failed(s, d):
        d.status = "ok"
        vm = s.get(Vm, vm_id) if vm_id else None
        if vm is not None and not live and vm.status == "image_locked":
            jobs.vm_down_again(s, vm)
        events.add(s, events.DISK_EXTEND_FAILED, f"Failed to extend disk {d.name} to {size // MiB} MiB.",
                   severity="error", storage_domain_id=d.storage_domain_id, vm_id=vm_id, user_id=job.owner_id)

    with jobs.undo_on_failure(s, Disk, disk.id, failed):
        vm = s.get(Vm, vm_id) if vm_id else None
        if vm_id and vm is None:
            raise conflict("the disk's VM was removed before the disk grew")
        _grow(ctx, s, disk, vm if live else None, size, job)
    disk = s.get(Disk, job.params["disk_id"])
    disk.provisioned_size, disk.status = size, "ok"
    if vm_id and not live:
        jobs.vm_down_again(s, s.get(Vm, vm_id))
    events.add(s, events.DISK_EXTENDED, f"Size of disk {disk.name} was extended to {size // MiB} MiB"
               f"{' while its VM ran' if live else ''}.", storage_domain_id=disk.storage_domain_id,
               vm_id=vm_id, user_id=job.owner_id)
    return {"disk_id": disk.id}


def _aligned(size):
    # qemu sizes images in 512-byte sectors (as creating a volume rounds up);
    # the disk keeps the size it was asked for
    return -(-size // 512) * 512


def _grow(ctx, s, disk, running_vm, size, job):
    """The disk's active volume (top of its chain), `size` bytes: through the
    domain of `running_vm`, or through the pool when no VM runs it."""
    from .vms import _domain   # vms imports this module
    sd = s.get(StorageDomain, disk.storage_domain_id)
    if running_vm is None:
        jobs.step(s, job, f"Extending volume {disk.active_volume} of disk {disk.name}")
        with pool_for(ctx, s, sd) as pool:
            virt.grow_volume(pool, disk.active_volume, _aligned(size), ctx.config.libvirt_timeout * 3)
        return
    if running_vm.status != "up":
        raise conflict(f"VM {running_vm.name} is {running_vm.status}; its disk did not grow, try again")
    jobs.step(s, job, f"Extending disk {disk.name} of running VM {running_vm.name}")
    host, conn, dom = _domain(ctx, s, running_vm)
    try:
        if dom is None:
            raise conflict(f"VM {running_vm.name} is not running on host {host.name}")
        virt.grow_domain_disk(dom, volume_path(sd, disk.active_volume), _aligned(size),
                              ctx.config.libvirt_timeout * 3)
    except virt.VirtError as e:
        raise conflict(f"cannot extend disk {disk.name} of VM {running_vm.name}: {e}")
    finally:
        conn.close()
