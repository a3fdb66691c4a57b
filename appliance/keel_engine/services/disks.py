"""Disks as qcow2 volumes in the storage domain's libvirt pool, reached
through any 'up' host of the domain's data center (the pool is shared)."""
import contextlib
import logging
import os
import uuid

from sqlalchemy import func, select

from .. import virt
from ..errors import bad_request, conflict
from ..models import Disk, DiskAttachment, StorageDomain, Volume
from . import events, hosts, lookup

log = logging.getLogger("keel.engine.disks")
MAX_DISK = 16 * 2 ** 40


@contextlib.contextmanager
def pool_for(ctx, s, sd):
    host = hosts.any_up_host(s, sd.data_center_id)
    if host is None:
        raise conflict(f"no 'up' host can reach storage domain {sd.name}")
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


def create_disk(ctx, s, sd, name, size, backing=None, template_id=None, description=""):
    """A new disk with one volume; backing = (storage domain, volume name) for thin copies."""
    if sd.status != "active":
        raise conflict(f"storage domain {sd.name} is not attached to a data center")
    disk = Disk(name=name, storage_domain_id=sd.id, provisioned_size=size, format="cow",
                template_id=template_id, description=description, active_volume="")
    s.add(disk)
    s.flush()
    vol = new_volume_name(disk.id)
    backing_path = volume_path(backing[0], backing[1]) if backing else None
    with pool_for(ctx, s, sd) as pool:
        try:
            virt.create_volume(pool, vol, size, backing_path)
        except Exception as e:
            raise conflict(f"cannot create volume for disk {name} on {sd.name}: {e}")
    disk.active_volume = vol
    s.add(Volume(name=vol, disk_id=disk.id, backing=backing[1] if backing else None))
    events.add(s, events.DISK_CREATED, f"Disk {name} ({size // 2**20} MiB) was created on {sd.name}.",
               storage_domain_id=sd.id)
    return disk


def delete_disk(ctx, s, disk):
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
            virt.delete_volume(pool, name)
    s.delete(disk)
    events.add(s, events.DISK_REMOVED, f"Disk {disk.name} was removed.", storage_domain_id=sd.id)


def disk_from_body(ctx, s, body, default_name):
    """<disk> of a new disk attachment or a floating disk."""
    size = body.int("provisioned_size", required=True, minimum=1024 * 1024, maximum=MAX_DISK)
    fmt = body.str("format", default="cow", choices=("cow", "raw"))
    if fmt != "cow":
        raise bad_request("disk.format: only 'cow' (qcow2) disks are supported")
    sds = body.list("storage_domains", "storage_domain")
    if len(sds) != 1:
        raise bad_request(f"{body.prefix}storage_domains: give exactly one storage domain")
    ident, sd_name = sds[0].data.get("id"), sds[0].data.get("name")
    if not ident and not sd_name:
        raise bad_request(f"{body.prefix}storage_domains.storage_domain: needs an id or a name")
    sd = lookup.resolve(s, StorageDomain, (ident, sd_name), "storage domain",
                        f"{body.prefix}storage_domains.storage_domain")
    name = body.name("name", required=False) or default_name
    return create_disk(ctx, s, sd, name, size, description=body.str("description", default=""))


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

