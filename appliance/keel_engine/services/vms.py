"""VMs: configuration (database only) and lifecycle.

Running a VM means building a transient libvirt domain from its
configuration on the host the scheduler picks. A request checks what it can
in the database, claims the VM's state with a conditional UPDATE (so of two
racing requests exactly one wins, and the other gets a 409 at once), and
records a job; the engine worker then does the libvirt part (`run_*`).
"""
from __future__ import annotations

import logging
import random
import re
import socket
from dataclasses import dataclass
from datetime import timedelta

import libvirt
from sqlalchemy import select, update
from sqlalchemy.orm.exc import StaleDataError

from keel_common import domainxml

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import BLANK_TEMPLATE_ID, Cluster, Disk, Host, Network, Nic, StorageDomain, Template, Vm, utcnow
from . import access, events, jobs, lookup, roles, scheduler, vm_init
from . import disks as disk_svc
from .cloud_init import Initialization
from .lookup import Ref

log = logging.getLogger("keel.engine.vms")
MiB = 2 ** 20
MIN_MEMORY, MAX_MEMORY = 16 * MiB, 2 ** 40
MAX_CPUS = 64
NIC_MODELS = ("virtio", "e1000", "rtl8139")
DISK_INTERFACES = ("virtio", "virtio_scsi", "ide", "sata")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
RUNNING = ("up", "powering_up", "powering_down", "paused", "migrating", "reboot_in_progress")
STOPPABLE = ("up", "powering_up", "powering_down", "paused", "unknown", "reboot_in_progress",
             "not_responding", "suspended")


@dataclass(frozen=True)
class VmSpec:
    """A new VM (POST /vms)."""
    name: str
    cluster: Ref
    template: Ref | None = None
    description: str = ""
    memory: int | None = None          # bytes; None: the template's
    cpus: int | None = None            # None: the template's
    os_type: str | None = None
    high_availability: bool = False
    ha_priority: int = 1               # oVirt's scale: 1 low, 50 medium, 100 high
    lease_storage_domain: Ref | None = None
    clone: bool = False                # independent full copies of the template's disks, not thin overlays
    boot: "DirectBoot | None" = None
    initialization: Initialization | None = None   # cloud-init, stored for a later start


@dataclass(frozen=True)
class DirectBoot:
    """oVirt's os.kernel, os.initrd, os.cmdline: a kernel (and initramfs) the
    VM boots directly, files on its host; None leaves a field as it is, ""
    clears it."""
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class VmChanges:
    """An update (PUT /vms/{id}); None leaves a field as it is."""
    name: str | None = None
    description: str | None = None
    memory: int | None = None
    cpus: int | None = None
    os_type: str | None = None
    high_availability: bool | None = None
    ha_priority: int | None = None
    cluster: Ref | None = None
    lease_storage_domain: Ref | None = None
    remove_lease: bool = False
    boot: DirectBoot | None = None
    initialization: Initialization | None = None   # merged into the stored one ("" clears a field)


@dataclass(frozen=True)
class NicSpec:
    name: str
    interface: str = "virtio"
    mac: str | None = None
    network: Ref | None = None         # a vNIC profile's id is its network's id
    plugged: bool = True               # False: configured, not in the VM's domain


@dataclass(frozen=True)
class AttachmentSpec:
    """Attach an existing disk (disk) or a new one (new_disk)."""
    interface: str = "virtio"
    bootable: bool = False
    active: bool = True
    disk: Ref | None = None
    new_disk: disk_svc.DiskSpec | None = None


def _host_path(value, field):
    if value and (not value.startswith("/") or "/../" in value + "/" or any(c in value for c in "\n\r\0")):
        raise bad_request(f"{field}: an absolute path of a file on the hosts, got {value!r}")


def _set_boot(vm, boot: DirectBoot | None):
    if boot is None:
        return
    _host_path(boot.kernel, "os.kernel")
    _host_path(boot.initrd, "os.initrd")
    for name, value in (("kernel_path", boot.kernel), ("initrd_path", boot.initrd), ("kernel_params", boot.cmdline)):
        if value is not None:
            setattr(vm, name, value)
    if vm.initrd_path and not vm.kernel_path:
        raise bad_request("os.initrd: an initramfs needs os.kernel too")
    if vm.kernel_params and not vm.kernel_path:
        raise bad_request("os.cmdline: kernel parameters need os.kernel too")


def check_configuration(memory, cpus):
    """A VM's or a template's memory and CPU count (None: not given)."""
    _check(memory, cpus, None)


def _check(vm_memory, cpus, priority):
    if vm_memory is not None and not MIN_MEMORY <= vm_memory <= MAX_MEMORY:
        raise bad_request(f"memory: must be at least {MIN_MEMORY} and at most {MAX_MEMORY}, got {vm_memory}")
    if cpus is not None and not 1 <= cpus <= MAX_CPUS:
        raise bad_request(f"cpu.topology: 1 to {MAX_CPUS} virtual CPUs, got {cpus}")
    if priority is not None and not 0 <= priority <= 100:
        raise bad_request(f"high_availability.priority: must be from 0 to 100, got {priority}")


# ---- configuration --------------------------------------------------------
def add_vm(ctx, s, spec: VmSpec) -> tuple[Vm, jobs.Job | None]:
    """The VM row now; its disks (thin overlays on the template's) by a job.
    Until they exist the VM is image_locked, as in oVirt."""
    cluster = lookup.require(s, Cluster, spec.cluster, "cluster", "cluster")
    access.check_ref(ctx, s, "create_vm", cluster, "cluster", spec.cluster)
    template = lookup.resolve(s, Template, spec.template or Ref(id=BLANK_TEMPLATE_ID), "template", "template")
    if template.id != BLANK_TEMPLATE_ID:
        access.check_ref(ctx, s, "create_vm", template, "template", spec.template)
    lookup.unique_name(s, Vm, spec.name, "VM")
    _check(spec.memory, spec.cpus, spec.ha_priority)
    if template.status != "ok":
        raise conflict(f"template {template.name} is {template.status}")
    vm = Vm(name=spec.name, cluster_id=cluster.id, template_id=template.id, description=spec.description,
            memory=spec.memory or template.memory, cpus=spec.cpus or template.cpus,
            os_type=spec.os_type or template.os_type, high_availability=spec.high_availability,
            ha_priority=spec.ha_priority)
    _set_boot(vm, spec.boot)
    if spec.lease_storage_domain:
        sd = lookup.resolve(s, StorageDomain, spec.lease_storage_domain, "storage domain", "lease.storage_domain")
        access.require_visible(ctx, s, sd, "lease.storage_domain", spec.lease_storage_domain)
        vm.lease_storage_domain_id = sd.id
    s.add(vm)
    s.flush()
    vm_init.store(s, vm, spec.initialization)
    job = None
    tdisks = disk_svc.template_disks(s, template.id)
    copies = {}
    for i, (att, disk, sd) in enumerate(tdisks):
        new = disk_svc.new_disk_row(s, sd, f"{spec.name}_Disk{i + 1}", disk.provisioned_size,
                                    backing_volume=None if spec.clone else disk.active_volume)
        if spec.clone:
            copies[new.id] = disk.active_volume
        disk_svc.attach(s, vm, new, att.interface, att.bootable)
    if tdisks:
        vm.status = "image_locked"
        how = "copies of the disks" if spec.clone else "the disks"
        job = jobs.submit(s, jobs.VM_CREATE_DISKS, {"vm_id": vm.id, "copies": copies},
                          f"Creating {how} of VM {spec.name} from template {template.name}", ctx.user_id)
    events.add(s, events.VM_CREATED, f"VM {spec.name} was created from template {template.name}.",
               vm_id=vm.id, cluster_id=cluster.id, template_id=template.id, user_id=ctx.user_id)
    roles.grant_owner(ctx, s, vm)
    return vm, job


def run_create_disks(ctx, s, job):
    vm = s.get(Vm, job.params["vm_id"])
    if vm is None:
        raise conflict("the VM was removed before its disks were created")
    copies = job.params.get("copies") or {}
    try:
        for _att, disk, sd in disk_svc.vm_disks(s, vm.id):
            if disk.status == "locked":
                source = copies.get(disk.id)
                jobs.step(s, job, f"{'Copying' if source else 'Creating'} disk {disk.name} on storage domain "
                                  f"{sd.name}")
                s.commit()
                if source:
                    disk_svc.copy_volume_of(ctx, s, disk, source, user_id=job.owner_id)
                else:
                    disk_svc.create_volume_of(ctx, s, disk)
                s.commit()
    except Exception:
        s.rollback()
        _source_down_again(s, job)
        _remove_rows(ctx, s, s.get(Vm, vm.id), delete_volumes=True)
        events.add(s, events.VM_REMOVED, f"VM {vm.name} was removed: its disks could not be created.",
                   severity="error", user_id=job.owner_id)
        s.commit()
        raise
    vm.status = "down"
    _source_down_again(s, job)
    return {"vm_id": vm.id}


def _source_down_again(s, job):
    """The VM a clone was copied from is free again (claimed while its disks were read)."""
    source = s.get(Vm, job.params["source_vm_id"]) if job.params.get("source_vm_id") else None
    if source is not None and source.status == "image_locked":
        source.status, source.busy_until = "down", None


def clone_vm(ctx, s, source, name: str) -> tuple[Vm, jobs.Job | None]:
    """A new VM with the configuration of a down VM and full, independent
    copies of its disks (made by a job; both VMs are image_locked and the
    new disks locked until it ends). NICs get new MAC addresses; a VM lease
    is not copied."""
    cluster = s.get(Cluster, source.cluster_id)
    access.check(ctx, s, "create_vm", source)
    access.check(ctx, s, "create_vm", cluster)
    if not name:
        raise bad_request("vm.name: the new VM's name is required, e.g. <action><vm><name>copy</name></vm></action>")
    lookup.unique_name(s, Vm, name, "VM")
    if source.status != "down":
        raise conflict(f"VM {source.name} is {source.status}; clone it while it is down")
    vm = Vm(name=name, cluster_id=source.cluster_id, template_id=source.template_id,
            description=source.description, memory=source.memory, cpus=source.cpus, os_type=source.os_type,
            high_availability=source.high_availability, ha_priority=source.ha_priority,
            kernel_path=source.kernel_path, initrd_path=source.initrd_path, kernel_params=source.kernel_params,
            cdrom_file=source.cdrom_file, cdrom_storage_domain_id=source.cdrom_storage_domain_id)
    s.add(vm)
    s.flush()
    vm_init.copy(s, source.id, vm.id)
    for nic in s.scalars(select(Nic).where(Nic.vm_id == source.id).order_by(Nic.name)).all():
        s.add(Nic(vm_id=vm.id, name=nic.name, mac=_new_mac(s), interface=nic.interface,
                  network_id=nic.network_id))
    copies = {}
    for i, (att, disk, sd) in enumerate(disk_svc.vm_disks(s, source.id)):
        new = disk_svc.new_disk_row(s, sd, f"{name}_Disk{i + 1}", disk.provisioned_size,
                                    description=disk.description)
        copies[new.id] = disk.active_volume
        disk_svc.attach(s, vm, new, att.interface, att.bootable, att.active)
        s.flush()
    job = None
    if copies:
        _claim(s, source, ("down",), "image_locked", 3600, verb="clone")
        vm.status = "image_locked"
        job = jobs.submit(s, jobs.VM_CREATE_DISKS, {"vm_id": vm.id, "copies": copies, "source_vm_id": source.id},
                          f"Cloning VM {source.name} as {name}", ctx.user_id)
    events.add(s, events.VM_CREATED, f"VM {name} was created as a clone of VM {source.name}.", vm_id=vm.id,
               cluster_id=vm.cluster_id, template_id=vm.template_id, user_id=ctx.user_id)
    roles.grant_owner(ctx, s, vm)
    return vm, job


def update_vm(ctx, s, vm, ch: VmChanges) -> Vm:
    access.check(ctx, s, "edit_vm_properties", vm)
    _check(ch.memory, ch.cpus, ch.ha_priority)
    if vm.status == "image_locked":
        raise conflict(f"VM {vm.name} is image_locked; wait until its disks are ready")
    if ch.name is not None and ch.name != vm.name:
        lookup.unique_name(s, Vm, ch.name, "VM", exclude_id=vm.id)
        if vm.status != "down":
            raise conflict(f"VM {vm.name} is {vm.status}; rename it while it is down")
        vm.name = ch.name
    if ch.description is not None:
        vm.description = ch.description
    if ch.memory is not None:
        vm.memory = ch.memory
    if ch.cpus is not None:
        vm.cpus = ch.cpus
    if ch.os_type is not None:
        vm.os_type = ch.os_type
    if ch.boot is not None:
        if vm.status not in ("down", "image_locked"):
            raise conflict(f"VM {vm.name} is {vm.status}; change how it boots while it is down")
        _set_boot(vm, ch.boot)
    vm_init.store(s, vm, ch.initialization)     # any time: a later start uses it
    if ch.high_availability is not None:
        vm.high_availability = ch.high_availability
    if ch.ha_priority is not None:
        vm.ha_priority = ch.ha_priority
    if ch.lease_storage_domain or ch.remove_lease:
        if vm.status != "down":
            raise conflict(f"VM {vm.name} is {vm.status}; change its lease while it is down")
        if ch.remove_lease:
            vm.lease_storage_domain_id = None
        else:
            sd = lookup.resolve(s, StorageDomain, ch.lease_storage_domain, "storage domain", "lease.storage_domain")
            vm.lease_storage_domain_id = access.require_visible(ctx, s, sd, "lease.storage_domain",
                                                                ch.lease_storage_domain).id
    if ch.cluster:
        cl = lookup.resolve(s, Cluster, ch.cluster, "cluster", "cluster")
        if cl.id != vm.cluster_id:
            access.check_ref(ctx, s, "create_vm", cl, "cluster", ch.cluster)
        if cl.id != vm.cluster_id and vm.status != "down":
            raise conflict(f"VM {vm.name} must be down to change its cluster")
        vm.cluster_id = cl.id
    note = " (memory and CPU changes apply at the next start)" if vm.status != "down" else ""
    events.add(s, events.VM_UPDATED, f"VM {vm.name} configuration was updated{note}.", vm_id=vm.id,
               user_id=ctx.user_id)
    return vm


def remove_vm(ctx, s, vm) -> jobs.Job | None:
    """A down VM goes with its disks; deleting volumes and its lease file is
    the worker's (a job), a VM with neither goes at once."""
    access.check(ctx, s, "delete_vm", vm)
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; stop it before removing it")
    # a locked disk is being read or written (copied to a VM made from one of this VM's snapshots)
    busy = [d.name for _a, d, _sd in disk_svc.vm_disks(s, vm.id) if d.status == "locked"]
    if busy:
        raise conflict(f"disk {', '.join(busy)} of VM {vm.name} is locked by an operation in progress; "
                       "remove the VM when it is done")
    if not disk_svc.vm_disks(s, vm.id) and not vm.lease_storage_domain_id and not vm.seed_volume:
        _remove_rows(ctx, s, vm, delete_volumes=False)
        events.add(s, events.VM_REMOVED, f"VM {vm.name} was removed.", user_id=ctx.user_id)
        return None
    _claim(s, vm, ("down",), "image_locked", 3600, verb="remove")
    return jobs.submit(s, jobs.VM_REMOVE, {"vm_id": vm.id}, f"Removing VM {vm.name} and its disks",
                       ctx.user_id)


def run_remove(ctx, s, job):
    vm = s.get(Vm, job.params["vm_id"])
    if vm is None:
        return {}
    name = vm.name
    jobs.step(s, job, f"Removing the disks of VM {name}")
    s.commit()
    with jobs.undo_on_failure(s, Vm, vm.id, jobs.vm_down_again):
        _remove_rows(ctx, s, vm, delete_volumes=True)
    events.add(s, events.VM_REMOVED, f"VM {name} was removed.", user_id=job.owner_id)
    return {}


def _remove_rows(ctx, s, vm, delete_volumes):
    for _att, disk, _sd in disk_svc.vm_disks(s, vm.id):
        if delete_volumes and disk.active_volume and disk.status != "locked":
            disk_svc.delete_volumes_of(ctx, s, disk)
        s.delete(disk)
    if vm.lease_storage_domain_id and ctx.leases is not None:
        ctx.leases.remove(s, vm)
    if delete_volumes and vm.seed_volume:
        vm_init.remove_seed(ctx, s, vm, "the VM is removed")
    s.delete(vm)
    s.flush()


# ---- state claims -----------------------------------------------------------
def _claim(s, vm, from_states, to_state, seconds, verb=None, **values):
    """Atomically move vm from one of from_states to to_state, or fail with 409."""
    res = s.execute(update(Vm).where(Vm.id == vm.id, Vm.status.in_(from_states))
                    .values(status=to_state, busy_until=utcnow() + timedelta(seconds=seconds),
                            version=Vm.version + 1, **values)
                    .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        s.refresh(vm)
        raise conflict(f"VM {vm.name} is {vm.status}; cannot {verb or to_state.replace('_', ' ')} it now")
    s.refresh(vm)


def _vm(s, job) -> Vm:
    vm = s.get(Vm, job.params["vm_id"])
    if vm is None:
        raise conflict("the VM was removed")
    return vm


def _conn(ctx, host):
    try:
        return virt.connect(host.libvirt_uri, ctx.config.libvirt_timeout)
    except virt.VirtError as e:
        raise conflict(f"host {host.name} does not answer: {e}")


def _domain(ctx, s, vm):
    """(host, connection, domain or None) of a VM that runs; ends the session's
    transaction first: none stays open while the engine waits on a host."""
    host = s.get(Host, vm.host_id) if vm.host_id else None
    if host is None:
        raise conflict(f"VM {vm.name} has no host")
    s.commit()
    conn = _conn(ctx, host)
    try:
        dom = virt.with_deadline(lambda: conn.lookupByUUIDString(vm.id), ctx.config.libvirt_timeout,
                                 f"find {vm.name}")
    except virt.VirtError:
        dom = None
    return host, conn, dom


def display_address(host) -> str:
    """The address a VM's display listens on: its host's management address
    (an IP address; a host name is resolved here, as the engine reaches it)."""
    try:
        return domainxml.listen_address(host.address)
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host.address, None, type=socket.SOCK_STREAM)
    except OSError as e:
        raise conflict(f"host {host.name}: cannot resolve {host.address} for the VM's display: {e}") from None
    try:
        return domainxml.listen_address(found[0][4][0])
    except ValueError as e:
        raise conflict(f"host {host.name}: {host.address} cannot take a VM's display: {e}") from None


def domain_of(ctx, s, vm, lease=None) -> domainxml.Domain:
    """What runs on the VM's host (vm.host_id). Its display's password is
    random and told to no one: a console ticket replaces it."""
    disks = tuple(disk_device(att, disk, sd) for att, disk, sd in disk_svc.vm_disks(s, vm.id) if att.active)
    # the VM's CD-ROM (services/cdroms.py), the domain's first CD-ROM drive: a live change finds it so
    cd_sd = s.get(StorageDomain, vm.cdrom_storage_domain_id) if vm.cdrom_file and vm.cdrom_storage_domain_id else None
    disks += (domainxml.Disk(path=disk_svc.volume_path(cd_sd, vm.cdrom_file) if cd_sd else None, format="raw",
                             device="cdrom", interface="ide", optional=True),)
    seed = vm_init.seed_disk(s, vm)     # this boot's cloud-init seed: a second CD-ROM drive
    disks += (seed,) if seed is not None else ()
    nics = [nic_device(ctx, s, nic) for nic in s.scalars(select(Nic).where(Nic.vm_id == vm.id, Nic.plugged)
                                                         .order_by(Nic.name))]
    bootable = any(att.bootable for att, _d, _sd in disk_svc.vm_disks(s, vm.id))
    return domainxml.Domain(name=vm.name, uuid=vm.id, memory_bytes=vm.memory, vcpus=vm.cpus, type="qemu",
                            description=vm.description or "", disks=disks, nics=tuple(nics), lease=lease,
                            boot=None if vm.kernel_path else "hd" if bootable else "network",
                            kernel=vm.kernel_path or None, initrd=vm.initrd_path or None,
                            cmdline=vm.kernel_params or None, guest_agent=True, rng=True,
                            vnc=domainxml.Vnc(listen=display_address(s.get(Host, vm.host_id)),
                                              password=domainxml.new_password()))


def nic_device(ctx, s, nic) -> domainxml.Nic:
    """A NIC as the VM's domain has it: at start, and hot-plugged (services/hotplug.py)."""
    net = s.get(Network, nic.network_id) if nic.network_id else None
    bridge = ctx.config.bridge_map.get(net.name, net.name) if net else None
    return domainxml.Nic(mac=nic.mac, model=nic.interface if nic.interface in NIC_MODELS else "virtio", bridge=bridge)


def disk_device(att, disk, sd) -> domainxml.Disk:
    """A disk as the VM's domain has it: at start, and hot-plugged."""
    return domainxml.Disk(path=disk_svc.volume_path(sd, disk.active_volume), interface=att.interface)


def _storage_domains(s, vm):
    return list({sd.id: sd for _a, _d, sd in disk_svc.vm_disks(s, vm.id)}.values())


# ---- start ---------------------------------------------------------------------
# libvirt's sanlock lock driver reports sanlock's errno; say what it means here
LOCK_ERRORS = {
    "No space left on device": "the host has not joined the sanlock lockspace of VM leases yet "
                               "(its broker joins it at boot)",
    "Lease is held by another host": "the VM's lease is held by another host: a copy of it runs there",
}
NOT_IN_LOCKSPACE = "Failed to acquire lock: No space left on device"


class _HostCannotLease(Exception):
    """The target cannot take VM leases yet: another host may."""


def _explain(err) -> str:
    text = err.detail if isinstance(err, Fault) else str(err)
    for needle, meaning in LOCK_ERRORS.items():
        if f"Failed to acquire lock: {needle}" in text:
            return f"{meaning} ({text})"
    return text


def request_start(ctx, s, vm, host=None, use_cloud_init=False, initialization: Initialization | None = None
                  ) -> jobs.Job:
    """use_cloud_init, initialization: oVirt's run-once cloud-init (services/vm_init.py)."""
    access.check(ctx, s, "run_vm", vm)
    if host is not None:
        access.require_visible(ctx, s, host, "host")
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; only a down VM can be started")
    if host is not None:
        scheduler.pick(s, vm, required=host)   # a pinned host that cannot take it: say so now
    seed = vm_init.plan_start(ctx, s, vm, use_cloud_init, initialization)
    _claim(s, vm, ("down",), "wait_for_launch", _start_budget(ctx), verb="start", stop_reason="")
    where = f" on host {host.name}" if host else ""
    return jobs.submit(s, jobs.VM_START, {"vm_id": vm.id, "host_id": host.id if host else None, **seed},
                       f"Starting VM {vm.name}{where}{' with cloud-init' if seed else ''}", ctx.user_id)


def _start_budget(ctx):
    return ctx.config.libvirt_timeout * 8 + 60


def run_start(ctx, s, job):
    host = s.get(Host, job.params["host_id"]) if job.params.get("host_id") else None
    vm = _vm(s, job)
    vm, target = start_vm(ctx, s, vm, host, job=job, claimed=True, cloud_init=vm_init.for_job(ctx, s, job))
    return {"vm_id": vm.id, "host_id": target.id}


def start_vm(ctx, s, vm, host=None, job=None, claimed=False, cloud_init: Initialization | None = None):
    """Start a down VM (worker only): lease, host, domain (with a cloud-init
    seed made from `cloud_init`). Returns (vm, host). On failure the VM is
    down again and the Fault says why."""
    if not claimed:
        if vm.status != "down":
            raise conflict(f"VM {vm.name} is {vm.status}; only a down VM can be started")
        _claim(s, vm, ("down",), "wait_for_launch", _start_budget(ctx), verb="start", stop_reason="")
        s.commit()
    vm_id = vm.id
    try:
        return _start(ctx, s, vm, host, job, cloud_init)
    except Fault:
        s.rollback()
        vm = s.get(Vm, vm_id)
        if vm is not None and vm.status == "wait_for_launch":
            vm.status, vm.host_id, vm.busy_until = "down", None, None
            s.commit()
        raise


def _start(ctx, s, vm, host, job, cloud_init=None):
    # the lease is made ready on storage first: a failure here (storage unwritable,
    # no lockspace configured, lease held) leaves the VM down, untouched
    if job is not None:
        jobs.step(s, job, f"Preparing the lease of VM {vm.name}")
    if ctx.leases is None:
        if vm.lease_storage_domain_id:
            raise conflict(f"VM {vm.name} has a lease, but this process cannot handle VM leases")
        lease = None
    else:
        lease = ctx.leases.lease_for(s, vm)
    s.commit()
    tried, last = set(), None
    while True:
        try:
            target = scheduler.pick(s, vm, exclude=tried, required=host)
        except Fault:
            if last is None:
                raise
            raise conflict(f"failed to start VM {vm.name}: {last}") from None
        try:
            return _start_on(ctx, s, vm, target, lease, job, cloud_init), target
        except _HostCannotLease as exc:
            if host is not None:
                raise conflict(f"failed to start VM {vm.name} on host {target.name}: {exc}") from None
            # a host just back from a power cycle answers libvirt before it has
            # joined the lockspace: the next best host may
            tried.add(target.id)
            last = f"host {target.name}: {exc}"


def _start_on(ctx, s, vm, target, lease, job, cloud_init=None):
    vm.host_id, vm.busy_until = target.id, utcnow() + timedelta(seconds=_start_budget(ctx))
    if job is not None:
        jobs.step(s, job, f"Starting VM {vm.name} on host {target.name}")
    s.commit()
    try:
        vm_init.prepare_boot(ctx, s, vm, target, cloud_init)
        xml = domainxml.domain_xml(domain_of(ctx, s, vm, lease))
        pools = _storage_domains(s, vm)
        s.commit()      # no transaction stays open while the host starts the VM
        conn = _conn(ctx, target)
        try:
            for sd in pools:
                virt.ensure_pool(conn, sd)
            virt.with_deadline(lambda: conn.createXML(xml, 0), ctx.config.libvirt_timeout * 5,
                               f"start {vm.name} on {target.name}")
        finally:
            conn.close()
    except (virt.VirtError, Fault) as e:
        why = _explain(e)
        elsewhere = NOT_IN_LOCKSPACE in str(e)
        vm.host_id = None
        if not elsewhere:
            vm.status, vm.busy_until = "down", None
        events.add(s, events.VM_DOWN, f"Failed to start VM {vm.name} on host {target.name}: {why}.",
                   severity="error", vm_id=vm.id, host_id=target.id, user_id=ctx.user_id)
        s.commit()
        if elsewhere:
            raise _HostCannotLease(why) from None
        raise conflict(f"failed to start VM {vm.name} on host {target.name}: {why}")
    vm.status, vm.busy_until, vm.start_time = "up", None, utcnow()
    vm.ha_restart_host_id = None
    try:
        s.flush()
    except StaleDataError:
        # the start outlived its claim and the monitor already recorded the VM
        # (found running on the target): that record stands
        s.rollback()
        s.refresh(vm)
        if not (vm.host_id == target.id and vm.status in RUNNING):
            raise conflict(f"VM {vm.name} changed while it was being started; it is now {vm.status}")
    events.add(s, events.VM_UP, f"VM {vm.name} was started on host {target.name}.",
               vm_id=vm.id, host_id=target.id, cluster_id=vm.cluster_id, user_id=ctx.user_id)
    s.commit()
    return vm


# ---- stop, shutdown, reboot ------------------------------------------------------
def request_stop(ctx, s, vm, reason="stopped by user") -> jobs.Job:
    access.check(ctx, s, "stop_vm", vm)
    if vm.status in ("down", "migrating", "wait_for_launch", "image_locked"):
        raise conflict(f"VM {vm.name} is {vm.status}; cannot stop it now")
    _claim(s, vm, STOPPABLE, "powering_down", ctx.config.libvirt_timeout * 3 + 60, verb="stop")
    return jobs.submit(s, jobs.VM_STOP, {"vm_id": vm.id, "reason": reason}, f"Stopping VM {vm.name}",
                       ctx.user_id)


def run_stop(ctx, s, job):
    vm = _vm(s, job)
    host, conn, dom = _domain(ctx, s, vm)
    try:
        if dom is not None:
            try:
                virt.with_deadline(dom.destroy, ctx.config.libvirt_timeout, f"stop {vm.name}")
            except virt.VirtError as e:
                if not virt.is_error(e, libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_DOMAIN):
                    vm.busy_until = None   # the monitor reports the real state again
                    s.commit()
                    raise conflict(f"cannot stop VM {vm.name}: {e}")
    finally:
        conn.close()
    reason = job.params.get("reason") or "stopped by user"
    vm.status, vm.host_id, vm.shutdown_deadline, vm.stop_reason = "down", None, None, reason
    vm.busy_until, vm.ha_restart_host_id = None, None
    events.add(s, events.VM_STOPPED, f"VM {vm.name} was powered off on host {host.name} ({reason}).",
               vm_id=vm.id, host_id=host.id, user_id=job.owner_id)
    return {"vm_id": vm.id}


def request_shutdown(ctx, s, vm) -> jobs.Job:
    access.check(ctx, s, "shut_down_vm", vm)
    if vm.status not in ("up", "powering_up", "reboot_in_progress"):
        raise conflict(f"VM {vm.name} is {vm.status}; only a running VM can be shut down")
    _claim(s, vm, ("up", "powering_up", "reboot_in_progress"), "powering_down",
           ctx.config.libvirt_timeout * 3 + 60, verb="shut down")
    return jobs.submit(s, jobs.VM_SHUTDOWN, {"vm_id": vm.id}, f"Shutting down VM {vm.name}", ctx.user_id)


def run_shutdown(ctx, s, job):
    vm = _vm(s, job)
    host, conn, dom = _domain(ctx, s, vm)
    try:
        if dom is None:
            raise conflict(f"VM {vm.name} is not running on host {host.name}")
        virt.with_deadline(dom.shutdown, ctx.config.libvirt_timeout, f"shutdown {vm.name}")
    except (virt.VirtError, Fault) as e:
        vm.busy_until = None
        s.commit()
        raise conflict(f"cannot shut down VM {vm.name}: {e}") if isinstance(e, virt.VirtError) else e
    finally:
        conn.close()
    vm.busy_until = None
    vm.shutdown_deadline = utcnow() + timedelta(seconds=ctx.config.shutdown_timeout)
    events.add(s, events.VM_SHUTDOWN,
               f"Shutdown of VM {vm.name} requested (ACPI); it is powered off if still running "
               f"after {ctx.config.shutdown_timeout:.0f} s.", vm_id=vm.id, host_id=host.id,
               user_id=job.owner_id)
    return {"vm_id": vm.id}


def request_reboot(ctx, s, vm) -> jobs.Job:
    access.check(ctx, s, "reboot_vm", vm)
    if vm.status != "up":
        raise conflict(f"VM {vm.name} is {vm.status}; only an up VM can be rebooted")
    return jobs.submit(s, jobs.VM_REBOOT, {"vm_id": vm.id}, f"Rebooting VM {vm.name}", ctx.user_id)


def run_reboot(ctx, s, job):
    vm = _vm(s, job)
    if vm.status != "up":
        raise conflict(f"VM {vm.name} is {vm.status}; only an up VM can be rebooted")
    host, conn, dom = _domain(ctx, s, vm)
    try:
        if dom is None:
            raise conflict(f"VM {vm.name} is not running on host {host.name}")
        virt.with_deadline(lambda: dom.reboot(0), ctx.config.libvirt_timeout, f"reboot {vm.name}")
    except virt.VirtError as e:
        raise conflict(f"cannot reboot VM {vm.name}: {e}")
    finally:
        conn.close()
    events.add(s, events.VM_REBOOT, f"Reboot of VM {vm.name} was requested (ACPI).", vm_id=vm.id,
               host_id=host.id, user_id=job.owner_id)
    return {"vm_id": vm.id}


# ---- migration ---------------------------------------------------------------
def migration_params(dest):
    """Send the memory stream to the address the engine knows the destination
    by. Left alone, libvirt uses the destination's own hostname, which need
    not resolve from the source (it did not in the lab)."""
    host = f"[{dest.address}]" if ":" in dest.address else dest.address   # IPv6 literal
    return {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{host}"}


def request_migrate(ctx, s, vm, host=None, reason="requested by user", owner_id=None) -> jobs.Job:
    access.check(ctx, s, "migrate_vm", vm)
    if host is not None:
        access.require_visible(ctx, s, host, "host")
    if vm.status != "up":
        raise conflict(f"VM {vm.name} is {vm.status}; only an up VM can be migrated")
    dest = scheduler.pick(s, vm, exclude={vm.host_id}, required=host)
    source = s.get(Host, vm.host_id)
    _claim(s, vm, ("up",), "migrating", ctx.config.migration_timeout + 60, verb="migrate")
    events.add(s, events.VM_MIGRATION_START, f"Migration of VM {vm.name} from host {source.name} to "
               f"host {dest.name} started ({reason}).", vm_id=vm.id, host_id=source.id,
               user_id=owner_id or ctx.user_id)
    return jobs.submit(s, jobs.VM_MIGRATE, {"vm_id": vm.id, "host_id": dest.id},
                       f"Migrating VM {vm.name} from {source.name} to {dest.name}", owner_id or ctx.user_id)


def run_migrate(ctx, s, job):
    vm = _vm(s, job)
    dest = s.get(Host, job.params["host_id"])
    jobs.step(s, job, f"Live migration of VM {vm.name} to host {dest.name}")
    s.commit()
    _migrate(ctx, s, vm, dest, job.owner_id)
    return {"vm_id": vm.id, "host_id": dest.id}


def _migrate(ctx, s, vm, dest, owner_id):
    """Live-migrate a VM already claimed 'migrating' (worker)."""
    source = s.get(Host, vm.host_id)
    s.commit()      # no transaction stays open during the migration
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
    if ctx.config.storage_shared_unrecognised:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    try:
        conn = _conn(ctx, source)
        try:
            dom = virt.with_deadline(lambda: conn.lookupByUUIDString(vm.id), ctx.config.libvirt_timeout,
                                     f"find {vm.name}")
            params = migration_params(dest)
            # the display moves to the destination's address; with its password
            # (the secure XML), else the destination would show it without one
            live = virt.with_deadline(
                lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE),
                ctx.config.libvirt_timeout, f"read {vm.name}")
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = domainxml.with_vnc_listen(live, display_address(dest))
            try:
                virt.with_deadline(lambda: dom.migrateToURI3(dest.libvirt_uri, params, flags),
                                   ctx.config.migration_timeout, f"migrate {vm.name}")
            except virt.VirtError:
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass
                raise
        finally:
            conn.close()
    except (virt.VirtError, Fault) as e:
        msg = e.detail if isinstance(e, Fault) else str(e)
        vm.status, vm.busy_until = "up", None
        events.add(s, events.VM_MIGRATION_FAILED, f"Migration of VM {vm.name} to host {dest.name} "
                   f"failed: {msg}.", severity="error", vm_id=vm.id, host_id=source.id, user_id=owner_id)
        s.commit()
        raise conflict(f"migration of VM {vm.name} to host {dest.name} failed: {msg}")
    vm.status, vm.busy_until, vm.host_id = "up", None, dest.id
    events.add(s, events.VM_MIGRATION_DONE, f"Migration of VM {vm.name} from host {source.name} to "
               f"host {dest.name} completed.", vm_id=vm.id, host_id=dest.id, user_id=owner_id)
    s.commit()


def run_evacuate(ctx, s, job):
    """Maintenance: migrate every VM off the host, one at a time; the host is in
    maintenance once none is left, or back up (with the reason) if one cannot move."""
    host = s.get(Host, job.params["host_id"])
    if host is None or host.status != "preparing_for_maintenance":
        return {}
    reason = f"host {host.name} is going into maintenance"
    for vm in s.scalars(select(Vm).where(Vm.host_id == host.id).order_by(Vm.name)).all():
        if vm.status != "up":
            continue
        jobs.step(s, job, f"Migrating VM {vm.name}")
        try:
            dest = scheduler.pick(s, vm, exclude={host.id})
            _claim(s, vm, ("up",), "migrating", ctx.config.migration_timeout + 60, verb="migrate")
            events.add(s, events.VM_MIGRATION_START, f"Migration of VM {vm.name} from host {host.name} to "
                       f"host {dest.name} started ({reason}).", vm_id=vm.id, host_id=host.id,
                       user_id=job.owner_id)
            s.commit()
            _migrate(ctx, s, vm, dest, job.owner_id)
        except Fault as f:
            s.rollback()
            host = s.get(Host, job.params["host_id"])
            host.maintenance_requested = False
            from .hosts import set_status
            set_status(s, host, "up", f"maintenance failed: VM {vm.name} could not migrate: {f.detail}")
            events.add(s, events.HOST_MAINTENANCE_FAILED,
                       f"Host {host.name} could not enter maintenance: {f.detail}.", severity="error",
                       host_id=host.id, user_id=job.owner_id)
            s.commit()
            raise
    s.refresh(host)
    left = s.scalars(select(Vm).where(Vm.host_id == host.id, Vm.status != "down")).all()
    if left:
        raise conflict(f"host {host.name} still runs {', '.join(v.name for v in left)}")
    from .hosts import set_status
    set_status(s, host, "maintenance", "all VMs migrated away")
    return {"host_id": host.id}


# ---- nics -------------------------------------------------------------------
def _new_mac(s):
    while True:
        mac = "56:6f:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(4))
        if s.scalar(select(Nic).where(Nic.mac == mac)) is None:
            return mac


def add_nic(ctx, s, vm, spec: NicSpec) -> tuple[Nic, jobs.Job | None]:
    """The NIC row; on an up VM a job plugs it in (services/hotplug.py), and
    until then it shows unplugged."""
    from . import hotplug   # it builds on this module
    access.check(ctx, s, "configure_vm_network", vm)
    live = hotplug.runs_live(vm, "network interfaces are added") and spec.plugged
    if spec.interface not in NIC_MODELS:
        raise bad_request(f"interface: expected one of {', '.join(NIC_MODELS)}, got '{spec.interface}'")
    if s.scalar(select(Nic).where(Nic.vm_id == vm.id, Nic.name == spec.name)):
        raise conflict(f"VM {vm.name} already has a network interface named {spec.name}")
    mac = spec.mac.lower() if spec.mac else None
    if mac is not None:
        if not MAC_RE.match(mac):
            raise bad_request(f"mac.address: '{spec.mac}' is not a MAC address")
        if s.scalar(select(Nic).where(Nic.mac == mac)):
            raise conflict(f"MAC address {mac} is already in use")
    net = lookup.resolve(s, Network, spec.network, "network", "vnic_profile")
    nic = Nic(vm_id=vm.id, name=spec.name, mac=mac or _new_mac(s), interface=spec.interface,
              network_id=net.id if net else None, plugged=spec.plugged and not live)
    s.add(nic)
    s.flush()
    if live:
        return nic, hotplug.submit_nic(ctx, s, vm, nic, hotplug.ADD)
    events.add(s, events.OBJECT_ADDED, f"Network interface {spec.name} was added to VM {vm.name}"
               f"{'' if spec.plugged else ' (unplugged)'}.", vm_id=vm.id, user_id=ctx.user_id)
    return nic, None


def remove_nic(ctx, s, vm, nic) -> jobs.Job | None:
    """At once, or on an up VM with the NIC plugged in by a job that unplugs it first."""
    from . import hotplug   # it builds on this module
    access.check(ctx, s, "configure_vm_network", vm)
    if hotplug.runs_live(vm, "network interfaces are removed") and nic.plugged:
        return hotplug.submit_nic(ctx, s, vm, nic, hotplug.REMOVE)
    s.delete(nic)
    events.add(s, events.OBJECT_REMOVED, f"Network interface {nic.name} was removed from VM {vm.name}.",
               vm_id=vm.id, user_id=ctx.user_id)
    return None


# ---- disk attachments ---------------------------------------------------------
def add_disk_attachment(ctx, s, vm, spec: AttachmentSpec):
    """Returns (attachment, job creating the new disk's volume or None). On an
    up VM an active attachment is plugged in by a job (which makes a new
    disk's volume first); until then it shows inactive."""
    from . import hotplug   # it builds on this module
    access.check(ctx, s, "configure_vm_storage", vm)
    live = hotplug.runs_live(vm, "disks are attached") and spec.active
    if spec.interface not in DISK_INTERFACES:
        raise bad_request(f"interface: expected one of {', '.join(DISK_INTERFACES)}, got '{spec.interface}'")
    job = None
    if spec.new_disk is None:
        disk = lookup.require(s, Disk, spec.disk, "disk", "disk")
        access.check_ref(ctx, s, "attach_disk", disk, "disk", spec.disk)
        if disk.template_id:
            raise conflict(f"disk {disk.name} belongs to a template")
    else:
        n = len(disk_svc.vm_disks(s, vm.id)) + 1
        if live:
            disk = disk_svc.new_disk(ctx, s, spec.new_disk, default_name=f"{vm.name}_Disk{n}")
        else:
            disk, job = disk_svc.add_disk(ctx, s, spec.new_disk, default_name=f"{vm.name}_Disk{n}")
    if live:
        hotplug.check_pluggable(vm, spec.interface, disk, s.get(StorageDomain, disk.storage_domain_id),
                                new=spec.new_disk is not None)
    att = disk_svc.attach(s, vm, disk, spec.interface, spec.bootable, spec.active and not live)
    s.flush()
    if live:
        return att, hotplug.submit_disk(ctx, s, vm, disk, hotplug.ADD, new=spec.new_disk is not None)
    events.add(s, events.OBJECT_ADDED, f"Disk {disk.name} was attached to VM {vm.name}.", vm_id=vm.id,
               user_id=ctx.user_id)
    return att, job


def remove_disk_attachment(ctx, s, vm, att, detach_only=True) -> jobs.Job | None:
    """At once, or on an up VM with the disk plugged in by a job that unplugs it first."""
    from . import hotplug   # it builds on this module
    access.check(ctx, s, "configure_vm_storage", vm)
    live = hotplug.runs_live(vm, "disks are detached") and att.active
    disk = s.get(Disk, att.disk_id)
    if not detach_only:
        access.check(ctx, s, "delete_disk", disk)   # while it is still the VM's
    if live:
        return hotplug.submit_disk(ctx, s, vm, disk, hotplug.REMOVE, delete_disk=not detach_only)
    s.delete(att)
    s.flush()
    events.add(s, events.OBJECT_REMOVED, f"Disk {disk.name} was detached from VM {vm.name}.",
               vm_id=vm.id, user_id=ctx.user_id)
    if not detach_only:
        return disk_svc.request_remove(ctx, s, disk)
    return None
