"""A VM's CD-ROM (oVirt's `cdroms`): every VM has one IDE drive, empty or
holding an ISO image of a data storage domain of its data center
(services/isos.py). What it holds is two columns of the VM (the file and
its storage domain); every start puts the drive in the domain it builds.

Changing the CD, as in oVirt:
- without `current`: the VM's configuration. A down VM starts with it; a
  running VM keeps the medium it has until it is stopped and started again.
- with `current=true` (a running VM only): the medium in the running drive,
  through libvirt (updateDeviceFlags, live). Only the running VM changes:
  the configuration stays, and the next start has the configured CD again.
Both are jobs of the engine worker, because the file is looked up through a
host first: an unknown file is a 404 naming it and changes nothing."""
from __future__ import annotations

import os
from dataclasses import dataclass

import libvirt
from sqlalchemy import select, update

from keel_common import domainxml

from .. import virt
from ..errors import conflict
from ..models import StorageDomain, Vm
from . import access, events, isos, jobs, lookup
from . import vms as vm_svc
from .lookup import Ref

# oVirt-like codes: a CD inserted, the change failing, a CD ejected
CD_CHANGED, CD_CHANGE_FAILED, CD_EJECTED = 38, 39, 521
# a domain runs (its drive can change now) in these states
LIVE = ("up", "powering_up", "reboot_in_progress", "paused", "powering_down")


@dataclass(frozen=True)
class Cd:
    file: str                        # "" : no medium
    storage_domain_id: str | None


def configured(vm) -> Cd:
    return Cd(vm.cdrom_file or "", vm.cdrom_storage_domain_id if vm.cdrom_file else None)


def request_change(ctx, s, vm, file: str, current: bool = False, storage_domain: Ref | None = None) -> jobs.Job:
    """Put ISO image `file` ("" ejects) in the VM's CD-ROM: its configuration,
    or with `current` the running drive only."""
    access.check(ctx, s, "change_vm_cd", vm)
    if file:
        isos.check_name(file, "cdrom.file.id")
    sd = None
    if storage_domain:
        sd = lookup.resolve(s, StorageDomain, storage_domain, "storage domain", "cdrom.file.storage_domain")
        access.require_visible(ctx, s, sd, "cdrom.file.storage_domain", storage_domain)
    if current and (vm.status not in LIVE or vm.host_id is None):
        raise conflict(f"VM {vm.name} is {vm.status}; current=true changes the CD of a running VM (leave it out "
                       "to change the CD the VM starts with)")
    if vm.status == "image_locked" and not current:
        raise conflict(f"VM {vm.name} is image_locked; wait until its disks are ready")
    what = f"Inserting {file} into" if file else "Ejecting the CD of"
    return jobs.submit(s, jobs.VM_CHANGE_CD, {"vm_id": vm.id, "file": file, "current": bool(current),
                                               "storage_domain_id": sd.id if sd else None},
                       f"{what} {'running ' if current else ''}VM {vm.name}", ctx.user_id)


def run_change(ctx, s, job):
    vm = vm_svc._vm(s, job)
    file, current = job.params["file"], job.params["current"]
    image = isos.find(ctx, s, isos.data_center_of(s, vm), file, job.params.get("storage_domain_id")) \
        if file else None
    cd = Cd(file, image.storage_domain_id if image else None)
    s.refresh(vm)       # reading the storage took a while
    if current:
        _change_live(ctx, s, vm, cd, job)
    else:
        _change_configuration(s, vm, cd, job)
    return {"vm_id": vm.id, "file": cd.file, "storage_domain_id": cd.storage_domain_id, "current": current}


def _change_configuration(s, vm, cd, job):
    # a plain UPDATE of two columns: the monitor may write the row meanwhile
    s.execute(update(Vm).where(Vm.id == vm.id)
              .values(cdrom_file=cd.file, cdrom_storage_domain_id=cd.storage_domain_id, version=Vm.version + 1)
              .execution_options(synchronize_session=False))
    when = "from its next start; the running VM keeps its CD until then" if vm.status != "down" else \
        "when it starts"
    if cd.file:
        events.add(s, CD_CHANGED, f"VM {vm.name} has CD {cd.file} in its CD-ROM drive {when}.", vm_id=vm.id,
                   user_id=job.owner_id)
    else:
        events.add(s, CD_EJECTED, f"VM {vm.name} has an empty CD-ROM drive {when}.", vm_id=vm.id,
                   user_id=job.owner_id)


def _change_live(ctx, s, vm, cd, job):
    if vm.status not in LIVE:
        raise conflict(f"VM {vm.name} is {vm.status}; current=true changes the CD of a running VM")
    path = isos.path_of(s, cd.storage_domain_id, cd.file)
    kept = configured(vm).file or "an empty drive"
    host, conn, dom = vm_svc._domain(ctx, s, vm)
    timeout = ctx.config.libvirt_timeout
    try:
        if dom is None:
            raise conflict(f"VM {vm.name} is not running on host {host.name}")
        target, interface = _drive_of(vm, virt.with_deadline(lambda: dom.XMLDesc(0), timeout, f"read {vm.name}"))
        xml = domainxml.device_xml(domainxml.disk_element(domainxml.Disk(
            path=path, format="raw", device="cdrom", interface=interface), target))
        # forced: the guest may have locked the tray, and the administrator asked
        virt.with_deadline(lambda: dom.updateDeviceFlags(
            xml, libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE), timeout,
            f"change the CD of {vm.name}")
    except virt.VirtError as e:
        events.add(s, CD_CHANGE_FAILED, f"Failed to change the CD of VM {vm.name} on host {host.name}: {e}.",
                   severity="error", vm_id=vm.id, host_id=host.id, user_id=job.owner_id)
        s.commit()
        raise conflict(f"cannot change the CD of VM {vm.name} on host {host.name}: {e}") from None
    finally:
        conn.close()
    until = f"until it stops; it starts with {kept} again"
    if cd.file:
        events.add(s, CD_CHANGED, f"CD {cd.file} was inserted into running VM {vm.name} on host {host.name} "
                   f"({until}).", vm_id=vm.id, host_id=host.id, user_id=job.owner_id)
    else:
        events.add(s, CD_EJECTED, f"The CD was ejected from running VM {vm.name} on host {host.name} ({until}).",
                   vm_id=vm.id, host_id=host.id, user_id=job.owner_id)


def _drive_of(vm, live_xml) -> tuple[str, str]:
    """(target, interface) of the VM's CD-ROM in its running domain: the
    domain's first CD-ROM drive (domain_of puts it before any other)."""
    drives = domainxml.cdrom_drives(live_xml)
    if not drives:
        raise conflict(f"VM {vm.name} runs without a CD-ROM drive (it started before every VM had one); stop "
                       "and start it to get one")
    target, bus, _file = drives[0]
    interface = next((name for name, (_p, b) in domainxml.BUSES.items() if b == bus), "ide")
    return target, interface


def request_read(ctx, s, vm) -> jobs.Job:
    """The job that reads what the running VM's drive holds (`current=true`)."""
    return jobs.submit(s, jobs.VM_READ_CD, {"vm_id": vm.id}, f"Reading the CD of running VM {vm.name}",
                       ctx.user_id)


def run_read(ctx, s, job):
    vm = vm_svc._vm(s, job)
    if vm.status not in LIVE:
        cd = configured(vm)
        return {"vm_id": vm.id, "file": cd.file, "storage_domain_id": cd.storage_domain_id}
    host, conn, dom = vm_svc._domain(ctx, s, vm)
    try:
        if dom is None:
            raise conflict(f"VM {vm.name} is not running on host {host.name}")
        live = virt.with_deadline(lambda: dom.XMLDesc(0), ctx.config.libvirt_timeout, f"read {vm.name}")
    except virt.VirtError as e:
        raise conflict(f"cannot read the CD of VM {vm.name} on host {host.name}: {e}") from None
    finally:
        conn.close()
    drives = domainxml.cdrom_drives(live)
    path = drives[0][2] if drives else None
    return {"vm_id": vm.id, **_file_of(s, path)}


def _file_of(s, path) -> dict:
    """The ISO image (file name, storage domain) at a path of the hosts."""
    if not path:
        return {"file": "", "storage_domain_id": None}
    folder, name = os.path.split(path)
    sd_id = s.scalar(select(StorageDomain.id).where(StorageDomain.path == folder))
    return {"file": name, "storage_domain_id": sd_id}


def cd_of(job) -> Cd:
    """What a finished change or read job says the drive holds."""
    result = job.result or {}
    return Cd(result.get("file") or "", result.get("storage_domain_id"))
