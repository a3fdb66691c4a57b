"""Hot-plug: NICs and disks plugged into and out of running VMs, as oVirt does.

A VM's configuration is the database (its domains are transient): a NIC's
`plugged` and a disk attachment's `active` say whether the VM's domain has
the device. On a down VM a change is that column alone, seen at the next
start. On an up VM the request checks what it can and records a job; the
engine worker attaches the device to the running domain
(VIR_DOMAIN_AFFECT_LIVE), or asks the guest to release it and waits until
the live XML no longer has it, and only then sets the column. A device is
described by the builders the domain at start uses (vms.nic_device,
vms.disk_device), so what is plugged live is what the next start has.

One code path for both: a job that finds its VM down makes the change in
the database only. A failure leaves the column as it was (a device is never
half plugged), and a NIC or disk attachment the request added but could not
plug is not kept."""
from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable

import libvirt
from sqlalchemy import select

from keel_common import domainxml

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import Disk, DiskAttachment, Network, Nic, StorageDomain, Vm
from . import access, events, jobs, lookup
from . import disks as disk_svc
from . import vms as vm_svc
from .lookup import Ref

ADD, PLUG, UNPLUG, REMOVE = "add", "plug", "unplug", "remove"
PLUGS = (ADD, PLUG)
# buses on which a running VM (machine type i440fx) cannot take a new disk
NOT_HOT_PLUGGABLE = {
    "ide": "the IDE bus of the VMs' machine type (i440fx) cannot hot-plug devices",
    "sata": "the VMs' machine type (i440fx) has no SATA controller to plug a disk into",
}


# ---- requests ---------------------------------------------------------------------
def runs_live(vm, doing: str) -> bool:
    """True when a device change on `vm` is made live (it is up), False when
    in the database only (it is down); any other state is a 409."""
    if vm.status == "up":
        return True
    if vm.status == "down":
        return False
    raise conflict(f"VM {vm.name} is {vm.status}; {doing} while it is up or down")


def check_pluggable(vm, interface: str, disk, sd, new: bool = False) -> None:
    """A 409 saying why `disk` cannot be plugged into the running `vm` now."""
    why = NOT_HOT_PLUGGABLE.get(interface)
    if why:
        raise conflict(f"interface: VM {vm.name} is up and {why}; use virtio or virtio_scsi, "
                       f"or attach the disk on {interface} while the VM is down")
    if sd.status != "active":
        raise conflict(f"storage domain {sd.name} of disk {disk.name} is {sd.status}; its disks are "
                       "plugged into running VMs while it is active")
    if disk.status != "ok" and not new:
        raise conflict(f"disk {disk.name} is {disk.status}; try again when it is ok")


_NIC_DOING = {ADD: "Plugging new", PLUG: "Plugging in", UNPLUG: "Unplugging", REMOVE: "Unplugging and removing"}


def submit_nic(ctx, s, vm, nic, action: str) -> jobs.Job:
    return jobs.submit(s, jobs.VM_NIC_PLUG, {"vm_id": vm.id, "nic_id": nic.id, "action": action},
                       f"{_NIC_DOING[action]} network interface {nic.name} of VM {vm.name}", ctx.user_id)


def submit_disk(ctx, s, vm, disk, action: str, new: bool = False, delete_disk: bool = False) -> jobs.Job:
    """`new`: the disk's volume is made first; `delete_disk`: the disk goes
    once it is unplugged and detached (a DELETE with detach_only=false)."""
    if disk.status == "locked" and not new:
        raise conflict(f"disk {disk.name} is locked by an operation in progress")
    doing = {ADD: "Creating and plugging in" if new else "Attaching and plugging in", PLUG: "Plugging in",
             UNPLUG: "Unplugging", REMOVE: "Unplugging and detaching"}[action]
    return jobs.submit(s, jobs.VM_DISK_PLUG, {"vm_id": vm.id, "disk_id": disk.id, "action": action, "new": new,
                                              "delete_disk": delete_disk},
                       f"{doing} disk {disk.name} of VM {vm.name}", ctx.user_id)


@dataclass(frozen=True)
class NicChanges:
    """PUT /vms/{id}/nics/{id}; None leaves a field as it is."""
    name: str | None = None
    interface: str | None = None
    mac: str | None = None
    network: Ref | None = None
    plugged: bool | None = None


def update_nic(ctx, s, vm, nic, ch: NicChanges) -> jobs.Job | None:
    """A new name at once; model, MAC address and network while the guest
    cannot see the NIC (VM down or NIC unplugged); `plugged` plugs or
    unplugs it: on an up VM by a job (returned)."""
    access.check(ctx, s, "configure_vm_network", vm)
    live = runs_live(vm, "network interfaces are changed")
    changes = {}
    if ch.name is not None and ch.name != nic.name:
        if s.scalar(select(Nic).where(Nic.vm_id == vm.id, Nic.name == ch.name, Nic.id != nic.id)):
            raise conflict(f"VM {vm.name} already has a network interface named {ch.name}")
        changes["name"] = ch.name
    if ch.interface is not None and ch.interface != nic.interface:
        if ch.interface not in vm_svc.NIC_MODELS:
            raise bad_request(f"interface: expected one of {', '.join(vm_svc.NIC_MODELS)}, got '{ch.interface}'")
        changes["interface"] = ch.interface
    mac = ch.mac.lower() if ch.mac else None
    if mac is not None and mac != nic.mac:
        if not vm_svc.MAC_RE.match(mac):
            raise bad_request(f"mac.address: '{ch.mac}' is not a MAC address")
        if s.scalar(select(Nic).where(Nic.mac == mac)):
            raise conflict(f"MAC address {mac} is already in use")
        changes["mac"] = mac
    if ch.network is not None:
        net = lookup.resolve(s, Network, ch.network, "network", "vnic_profile")
        if net is not None and net.id != nic.network_id:
            changes["network_id"] = net.id
    device_field = next((k for k in changes if k != "name"), None)
    if device_field and live and nic.plugged:
        field = {"network_id": "vnic_profile", "mac": "mac.address"}.get(device_field, device_field)
        raise conflict(f"{field}: network interface {nic.name} is plugged into running VM {vm.name}; "
                       "unplug it first (plugged=false) or change it while the VM is down")
    if changes:
        old = nic.name
        for key, value in changes.items():
            setattr(nic, key, value)
        events.add(s, events.OBJECT_UPDATED, f"Network interface {old} of VM {vm.name} was updated"
                   f"{f' (now named {nic.name})' if 'name' in changes else ''}.", vm_id=vm.id, user_id=ctx.user_id)
    if ch.plugged is None or ch.plugged == nic.plugged:
        return None
    if live:
        return submit_nic(ctx, s, vm, nic, PLUG if ch.plugged else UNPLUG)
    nic.plugged = ch.plugged
    events.add(s, events.NIC_PLUGGED if ch.plugged else events.NIC_UNPLUGGED,
               f"Network interface {nic.name} of VM {vm.name} was {'plugged in' if ch.plugged else 'unplugged'} "
               "(the VM is down: from its next start).", vm_id=vm.id, user_id=ctx.user_id)
    return None


@dataclass(frozen=True)
class AttachmentChanges:
    """PUT /vms/{id}/diskattachments/{id}; None leaves a field as it is.
    `disk`: the disk as oVirt's clients send it along, which must be the disk
    as it is (a disk itself changes through PUT /disks/{id})."""
    interface: str | None = None
    bootable: bool | None = None
    active: bool | None = None
    disk: disk_svc.DiskChanges | None = None


def update_disk_attachment(ctx, s, vm, att, ch: AttachmentChanges) -> jobs.Job | None:
    """Interface and bootable in the database (the interface while the guest
    cannot see the disk); `active` plugs or unplugs the disk: on an up VM by
    a job (returned)."""
    access.check(ctx, s, "configure_vm_storage", vm)
    disk = s.get(Disk, att.disk_id)
    sd = s.get(StorageDomain, disk.storage_domain_id)
    _same_disk(s, disk, ch.disk)
    live = runs_live(vm, "its disks are changed")
    changed = []
    if ch.interface is not None and ch.interface != att.interface:
        if ch.interface not in vm_svc.DISK_INTERFACES:
            raise bad_request(f"interface: expected one of {', '.join(vm_svc.DISK_INTERFACES)}, "
                              f"got '{ch.interface}'")
        if live and att.active:
            raise conflict(f"interface: disk {disk.name} is plugged into running VM {vm.name}; unplug it "
                           "first (active=false) or change it while the VM is down")
        att.interface = ch.interface
        changed.append(f"interface {ch.interface}")
    if ch.bootable is not None and ch.bootable != att.bootable:
        att.bootable = ch.bootable
        changed.append("bootable" if ch.bootable else "not bootable")
    if changed:
        events.add(s, events.DISK_UPDATED, f"Disk {disk.name} of VM {vm.name} was updated: {', '.join(changed)}"
                   f"{' (from its next start)' if live else ''}.", vm_id=vm.id, user_id=ctx.user_id)
    if ch.active is None or ch.active == att.active:
        return None
    if live:
        if ch.active:
            check_pluggable(vm, att.interface, disk, sd)
        return submit_disk(ctx, s, vm, disk, PLUG if ch.active else UNPLUG)
    att.active = ch.active
    events.add(s, events.DISK_PLUGGED if ch.active else events.DISK_UNPLUGGED,
               f"Disk {disk.name} of VM {vm.name} was {'activated' if ch.active else 'deactivated'} "
               "(the VM is down: from its next start).", vm_id=vm.id, user_id=ctx.user_id)
    return None


def _same_disk(s, disk, given: disk_svc.DiskChanges | None) -> None:
    if given is None:
        return
    for field in ("name", "description", "provisioned_size", "format"):
        value = getattr(given, field)
        if value is not None and value != getattr(disk, field):
            raise bad_request(f"disk.{field}: an attachment's update does not change its disk; change disk "
                              f"{disk.name} with PUT /disks/{disk.id}")
    if given.storage_domain is not None:
        sd = lookup.require(s, StorageDomain, given.storage_domain, "storage domain", "disk.storage_domains")
        if sd.id != disk.storage_domain_id:
            raise bad_request(f"disk.storage_domains: disk {disk.name} is on another storage domain; moving a "
                              "disk is not supported yet")


# ---- the engine worker ------------------------------------------------------------------
_VM_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def _vm_lock(vm_id) -> threading.Lock:
    """One device change per VM at a time (in this worker): a disk's name on
    its bus is chosen from what the domain has, so two plugs must not race."""
    with _GUARD:
        return _VM_LOCKS.setdefault(vm_id, threading.Lock())


@dataclass(frozen=True)
class Device:
    what: str                                       # "network interface nic2", for messages
    find: Callable[[str], ET.Element | None]        # the device in a domain's live XML
    element: Callable[[str], ET.Element]            # what to attach, given the live XML
    pools: tuple = ()                               # storage domains the host must have active first


def _locked_change(ctx, s, vm, dev: Device, plug: bool) -> str | None:
    """_change under the VM's lock. The caller has ended its transaction:
    a job waiting for the lock with SQLite's write lock held would deadlock
    with the job holding it, which needs the write lock to say how it ended."""
    with _vm_lock(vm.id):
        return _change(ctx, s, vm, dev, plug)


def _change(ctx, s, vm, dev: Device, plug: bool) -> str | None:
    """Plug `dev` into or out of the running `vm`: the host's name, or None
    when the VM is down (the change is the database's alone). A Fault says
    why it could not; what the domain had already is left as it is."""
    s.refresh(vm)
    if vm.status == "down":
        return None
    if vm.status != "up":
        raise conflict(f"VM {vm.name} is {vm.status}; try again when it is up or down")
    host, conn, dom = vm_svc._domain(ctx, s, vm)
    t = ctx.config.libvirt_timeout
    try:
        if dom is None:
            raise conflict(f"VM {vm.name} is not running on host {host.name}")
        xml = virt.with_deadline(lambda: dom.XMLDesc(0), t, f"read {vm.name}")
        present = dev.find(xml)
        # already as asked (the VM was started since the request, or the guest
        # let go late): nothing to do on the host
        if plug and present is None:
            for sd in dev.pools:
                virt.with_deadline(lambda sd=sd: virt.ensure_pool(conn, sd), t * 3,
                                   f"open storage domain {sd.name}")
            body = domainxml.device_xml(dev.element(xml))
            virt.with_deadline(lambda: dom.attachDeviceFlags(body, libvirt.VIR_DOMAIN_AFFECT_LIVE), t * 3,
                               f"plug {dev.what} into {vm.name}")
        elif not plug and present is not None:
            _unplug(ctx, vm, dom, dev, domainxml.device_xml(present))
    except (virt.VirtError, ValueError) as e:
        raise conflict(f"host {host.name}: {e}")
    finally:
        conn.close()
    return host.name


def _unplug(ctx, vm, dom, dev: Device, body: str) -> None:
    """Ask the guest to release the device, then wait until the live XML no
    longer has it: a PCI unplug completes only when the guest agrees."""
    t, budget = ctx.config.libvirt_timeout, ctx.config.unplug_timeout
    end = time.monotonic() + budget
    # libvirt waits a few seconds for the guest itself, then returns with the request pending
    virt.with_deadline(lambda: dom.detachDeviceFlags(body, libvirt.VIR_DOMAIN_AFFECT_LIVE), t * 3,
                       f"unplug {dev.what} from {vm.name}")
    while dev.find(virt.with_deadline(lambda: dom.XMLDesc(0), t, f"read {vm.name}")) is not None:
        if time.monotonic() >= end:
            raise conflict(f"the guest did not release {dev.what} within {budget:.0f} s (a guest must agree "
                           "to an unplug: is its operating system up, with ACPI hot-plug?)")
        time.sleep(0.5)


def _where(host) -> str:
    return f"on host {host}" if host else "(the VM is down: from its next start)"


def run_nic(ctx, s, job):
    p = job.params
    action, plug = p["action"], p["action"] in PLUGS
    vm, nic = s.get(Vm, p["vm_id"]), s.get(Nic, p["nic_id"])
    if vm is None or nic is None or nic.vm_id != vm.id:
        raise conflict("the VM or its network interface was removed meanwhile")
    vm_id, nic_id, name, mac = vm.id, nic.id, nic.name, nic.mac
    element = domainxml.nic_element(vm_svc.nic_device(ctx, s, nic))
    dev = Device(f"network interface {name}", lambda xml: domainxml.find_interface(xml, mac), lambda _xml: element)
    jobs.step(s, job, f"{_NIC_DOING[action]} network interface {name} of VM {vm.name}")
    s.commit()      # see _locked_change
    try:
        host = _locked_change(ctx, s, vm, dev, plug)
    except Exception as e:
        s.rollback()
        _failed(e, _nic_failed(s, job, action, vm_id, nic_id, e))
    vm, nic = s.get(Vm, vm_id), s.get(Nic, nic_id)
    if vm is None or nic is None:
        raise conflict("the VM or its network interface was removed meanwhile")
    if action == REMOVE:
        s.delete(nic)
        done = f"removed from VM {vm.name}" + (f" once unplugged on host {host}" if host else " (it is down)")
    else:
        nic.plugged = plug
        done = {ADD: "added to VM {} and plugged in {}", PLUG: "plugged into VM {} {}",
                UNPLUG: "unplugged from VM {} {}"}[action].format(vm.name, _where(host))
    events.add(s, events.NIC_PLUGGED if plug else events.NIC_UNPLUGGED, f"Network interface {name} was {done}.",
               vm_id=vm_id, host_id=vm.host_id if host else None, user_id=job.owner_id)
    return {"vm_id": vm_id, "nic_id": nic_id}


def _failed(error, message):
    """The job's fault: what failed and what is left (a bug stays itself, for the log)."""
    if isinstance(error, Fault) and message:
        raise conflict(message) from None
    raise error


def _nic_failed(s, job, action, vm_id, nic_id, error) -> str | None:
    """Undo what the request added; one event says what failed and what is
    left, and so does the message returned."""
    vm, nic = s.get(Vm, vm_id), s.get(Nic, nic_id)
    if vm is None or nic is None:
        return None
    plug = action in PLUGS
    if action == ADD:
        s.delete(nic)
        left = "it was not added"
    else:
        left = {PLUG: "it stays unplugged", UNPLUG: "it stays plugged in",
                REMOVE: "it stays plugged in and is not removed"}[action]
    why = error.detail if isinstance(error, Fault) else f"{type(error).__name__}: {error}"
    verb = f"plug network interface {nic.name} into" if plug else f"unplug network interface {nic.name} from"
    events.add(s, events.NIC_PLUG_FAILED if plug else events.NIC_UNPLUG_FAILED,
               f"Failed to {verb} VM {vm.name}: {why}; {left}.", severity="error", vm_id=vm_id,
               user_id=job.owner_id)
    s.commit()
    return f"cannot {verb} VM {vm.name}: {why}; {left}"


def run_disk(ctx, s, job):
    p = job.params
    action, plug = p["action"], p["action"] in PLUGS
    vm, disk = s.get(Vm, p["vm_id"]), s.get(Disk, p["disk_id"])
    att = s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == p["disk_id"]))
    if vm is None or disk is None or att is None or att.vm_id != vm.id:
        raise conflict("the VM, the disk or its attachment was removed meanwhile")
    vm_id, disk_id, name = vm.id, disk.id, disk.name
    sd = s.get(StorageDomain, disk.storage_domain_id)
    try:
        if p.get("new") and disk.status == "locked":
            jobs.step(s, job, f"Creating disk {name} on storage domain {sd.name}")
            disk_svc.create_volume_of(ctx, s, disk)
            s.commit()
        path = disk_svc.volume_path(sd, disk.active_volume)
        device = vm_svc.disk_device(att, disk, sd)
        chosen = {}

        def element(xml):
            chosen["target"] = domainxml.free_target(xml, device.interface)
            return domainxml.disk_element(device, chosen["target"])
        dev = Device(f"disk {name}", lambda xml: domainxml.find_disk(xml, path), element, pools=(sd,))
        jobs.step(s, job, f"{'Plugging' if plug else 'Unplugging'} disk {name} {'into' if plug else 'from'} "
                          f"VM {vm.name}")
        s.commit()      # see _locked_change
        host = _locked_change(ctx, s, vm, dev, plug)
    except Exception as e:
        s.rollback()
        _failed(e, _disk_failed(ctx, s, job, vm_id, disk_id, e))
    vm, disk = s.get(Vm, vm_id), s.get(Disk, disk_id)
    att = s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == disk_id))
    if vm is None or disk is None or att is None:
        raise conflict("the VM, the disk or its attachment was removed meanwhile")
    result = {"vm_id": vm_id, "disk_id": disk_id}
    as_ = f" as {chosen['target']}" if chosen.get("target") else ""
    if action == REMOVE:
        s.delete(att)
        done = f"detached from VM {vm.name}" + (f" once unplugged on host {host}" if host else " (it is down)")
    else:
        att.active = plug
        done = {ADD: "attached to VM {} and plugged in {}", PLUG: "plugged into VM {} {}",
                UNPLUG: "unplugged from VM {} {}"}[action].format(vm.name, _where(host)) + (as_ if plug else "")
    events.add(s, events.DISK_PLUGGED if plug else events.DISK_UNPLUGGED, f"Disk {name} was {done}.",
               vm_id=vm_id, host_id=vm.host_id if host else None, storage_domain_id=disk.storage_domain_id,
               user_id=job.owner_id)
    if action == REMOVE and p.get("delete_disk"):
        s.flush()
        result["disk_removal_job_id"] = disk_svc.request_remove(ctx, s, disk).id
    return result


def _disk_failed(ctx, s, job, vm_id, disk_id, error) -> str | None:
    """Undo what the request added (a new disk goes with its volume); one
    event says what failed and what is left, and so does the message returned."""
    p = job.params
    action, plug = p["action"], p["action"] in PLUGS
    vm, disk = s.get(Vm, vm_id), s.get(Disk, disk_id)
    if vm is None or disk is None:
        return None
    name, vm_name = disk.name, vm.name
    why = error.detail if isinstance(error, Fault) else f"{type(error).__name__}: {error}"
    left = {PLUG: "it stays inactive", UNPLUG: "it stays plugged in",
            REMOVE: "it stays attached and plugged in"}.get(action)
    if action == ADD:
        att = s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == disk_id))
        if att is not None:
            s.delete(att)
        left = "it was not attached"
        if p.get("new"):
            left = _drop_new_disk(ctx, s, disk)
    verb = f"plug disk {name} into" if plug else f"unplug disk {name} from"
    events.add(s, events.DISK_PLUG_FAILED if plug else events.DISK_UNPLUG_FAILED,
               f"Failed to {verb} VM {vm_name}: {why}; {left}.", severity="error", vm_id=vm_id,
               user_id=job.owner_id)
    s.commit()
    return f"cannot {verb} VM {vm_name}: {why}; {left}"


def _drop_new_disk(ctx, s, disk) -> str:
    """The disk a failed hot-plug made: its volume and row go (what is left, said)."""
    disk_id = disk.id
    if disk.status == "ok":
        s.flush()
        try:
            disk_svc.delete_volumes_of(ctx, s, disk)
        except Fault as f:
            s.rollback()
            disk = s.get(Disk, disk_id)
            att = s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == disk_id))
            if att is not None:
                s.delete(att)
            return f"the new disk is left unattached ({f.detail})"
    s.delete(s.get(Disk, disk_id))
    return "the new disk was removed"
