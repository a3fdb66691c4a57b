"""A storage domain as attached to its data center (oVirt's
datacenters/{id}/storagedomains/{id}): activate, put into maintenance,
detach. A domain in maintenance takes no new disks and no VM with a disk on
it may be running when it goes there."""
from __future__ import annotations

from sqlalchemy import func, select

from ..errors import conflict
from ..models import Disk, DiskAttachment, Vm
from . import access, events


def activate(ctx, s, dc, sd):
    access.check(ctx, s, "manipulate_storage_domain", sd)
    if sd.status == "active":
        return sd
    if sd.status != "maintenance":
        raise conflict(f"storage domain {sd.name} is {sd.status}; only a domain in maintenance can be activated")
    sd.status = "active"
    events.add(s, events.OBJECT_UPDATED, f"Storage domain {sd.name} was activated in data center {dc.name}.",
               storage_domain_id=sd.id, data_center_id=dc.id, user_id=ctx.user_id)
    return sd


def deactivate(ctx, s, dc, sd):
    access.check(ctx, s, "manipulate_storage_domain", sd)
    if sd.status == "maintenance":
        return sd
    if sd.status != "active":
        raise conflict(f"storage domain {sd.name} is {sd.status}; only an active domain can go into maintenance")
    running = s.scalars(select(Vm.name).join(DiskAttachment, DiskAttachment.vm_id == Vm.id)
                        .join(Disk, Disk.id == DiskAttachment.disk_id)
                        .where(Disk.storage_domain_id == sd.id, Vm.status != "down").distinct()).all()
    if running:
        raise conflict(f"storage domain {sd.name} holds disks of running VMs: {', '.join(sorted(running))}; "
                       "stop them first")
    if s.scalar(select(func.count()).select_from(Disk).where(Disk.storage_domain_id == sd.id,
                                                           Disk.status == "locked")):
        raise conflict(f"storage domain {sd.name} has disks being created or removed; try again when they are done")
    sd.status = "maintenance"
    events.add(s, events.OBJECT_UPDATED, f"Storage domain {sd.name} was put into maintenance in data center "
               f"{dc.name}.", storage_domain_id=sd.id, data_center_id=dc.id, user_id=ctx.user_id)
    return sd


def detach(ctx, s, dc, sd):
    access.check(ctx, s, "manipulate_storage_domain", sd)
    if sd.status != "maintenance":
        raise conflict(f"storage domain {sd.name} is {sd.status}; put it into maintenance before detaching it")
    if s.scalar(select(func.count()).select_from(Disk).where(Disk.storage_domain_id == sd.id)):
        raise conflict(f"storage domain {sd.name} still holds disks; Keel reaches a domain's disks through its "
                       "data center, so remove or move them first")
    sd.data_center_id, sd.status = None, "unattached"
    events.add(s, events.OBJECT_UPDATED, f"Storage domain {sd.name} was detached from data center {dc.name}.",
               storage_domain_id=sd.id, user_id=ctx.user_id)
    return sd
