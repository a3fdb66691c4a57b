"""VM lifecycle. The database holds each VM's configuration; running it
means building a transient libvirt domain from that configuration on the
host the scheduler picks. State transitions that race (two starts, start
versus migrate) are claimed with a conditional UPDATE, so exactly one wins."""
import logging
import random
import re
from datetime import timedelta

import libvirt
from sqlalchemy import select, update
from sqlalchemy.orm.exc import StaleDataError

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import BLANK_TEMPLATE_ID, Cluster, Disk, Host, Network, Nic, StorageDomain, Template, Vm, utcnow
from . import disks as disk_svc
from . import events, hooks, jobs, lookup, scheduler

log = logging.getLogger("keel.engine.vms")
MiB = 2 ** 20
NIC_MODELS = {"virtio": "virtio", "e1000": "e1000", "rtl8139": "rtl8139"}
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
RUNNING = ("up", "powering_up", "powering_down", "paused", "migrating", "reboot_in_progress")


# ---- configuration --------------------------------------------------------
def _cpus(body, default):
    topo = body.sub("cpu").sub("topology")
    if not body.sub("cpu").has("topology"):
        return default
    n = (topo.int("sockets", default=1, minimum=1, maximum=64) * topo.int("cores", default=1, minimum=1, maximum=64)
         * topo.int("threads", default=1, minimum=1, maximum=8))
    if n > 64:
        raise bad_request("cpu.topology: more than 64 virtual CPUs")
    return n


def _priority(body, default):
    # oVirt's scale: 1 low, 50 medium, 100 high
    return body.sub("high_availability").int("priority", default=default, minimum=0, maximum=100)


def _set_lease(s, vm, body):
    """<lease><storage_domain id=.../></lease> sets the VM's lease; an empty <lease/> removes it."""
    ref = body.sub("lease").ref("storage_domain")
    if ref is None:
        if body.has("lease"):
            raise bad_request("lease.storage_domain: give the storage domain (id or name) for the VM's lease, "
                              "or an empty <lease/> to remove it")
        vm.lease_storage_domain_id = None
        return
    vm.lease_storage_domain_id = lookup.resolve(s, StorageDomain, ref, "storage domain",
                                                "lease.storage_domain").id


def add_vm(ctx, s, body):
    name = body.name()
    lookup.unique_name(s, Vm, name, "VM")
    cluster = lookup.resolve(s, Cluster, body.ref("cluster", required=True), "cluster", "cluster")
    template = lookup.resolve(s, Template, body.ref("template") or (BLANK_TEMPLATE_ID, None), "template", "template")
    vm = Vm(name=name, cluster_id=cluster.id, template_id=template.id,
            description=body.str("description", default=""),
            memory=body.int("memory", default=template.memory, minimum=16 * MiB, maximum=2 ** 40),
            cpus=_cpus(body, template.cpus),
            os_type=body.sub("os").str("type", default=template.os_type, maxlen=64),
            high_availability=body.sub("high_availability").bool("enabled", default=False),
            ha_priority=_priority(body, 1))
    _set_lease(s, vm, body)
    s.add(vm)
    s.flush()
    # thin copies: each template disk becomes a qcow2 overlay on the template's volume
    for i, (att, disk, sd) in enumerate(disk_svc.template_disks(s, template.id)):
        new = disk_svc.create_disk(ctx, s, sd, f"{name}_Disk{i + 1}", disk.provisioned_size,
                                   backing=(sd, disk.active_volume))
        disk_svc.attach(s, vm, new, att.interface, att.bootable)
    events.add(s, events.VM_CREATED, f"VM {name} was created from template {template.name}.",
               vm_id=vm.id, cluster_id=cluster.id, template_id=template.id, user_id=ctx.user_id)
    return vm


def update_vm(ctx, s, vm, body):
    if body.has("name"):
        name = body.name()
        lookup.unique_name(s, Vm, name, "VM", exclude_id=vm.id)
        if vm.status != "down" and name != vm.name:
            raise conflict(f"VM {vm.name} is {vm.status}; rename it while it is down")
        vm.name = name
    if body.has("description"):
        vm.description = body.str("description")
    if body.has("memory"):
        vm.memory = body.int("memory", minimum=16 * MiB, maximum=2 ** 40)
    if body.sub("cpu").has("topology"):
        vm.cpus = _cpus(body, vm.cpus)
    if body.sub("os").has("type"):
        vm.os_type = body.sub("os").str("type", maxlen=64)
    if body.sub("high_availability").has("enabled"):
        vm.high_availability = body.sub("high_availability").bool("enabled")
    vm.ha_priority = _priority(body, vm.ha_priority)
    if "lease" in body.data:
        if vm.status != "down":
            raise conflict(f"VM {vm.name} is {vm.status}; change its lease while it is down")
        _set_lease(s, vm, body)
    if body.has("cluster"):
        cl = lookup.resolve(s, Cluster, body.ref("cluster"), "cluster", "cluster")
        if cl.id != vm.cluster_id and vm.status != "down":
            raise conflict(f"VM {vm.name} must be down to change its cluster")
        vm.cluster_id = cl.id
    note = " (memory and CPU changes apply at the next start)" if vm.status != "down" else ""
    events.add(s, events.VM_UPDATED, f"VM {vm.name} configuration was updated{note}.", vm_id=vm.id,
               user_id=ctx.user_id)
    return vm


def remove_vm(ctx, s, vm):
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; stop it before removing it")
    for _att, disk, _sd in disk_svc.vm_disks(s, vm.id):
        disk_svc.delete_disk(ctx, s, disk)
    hooks.vm_removed(ctx, s, vm)
    s.delete(vm)
    events.add(s, events.VM_REMOVED, f"VM {vm.name} was removed.", user_id=ctx.user_id)


# ---- transitions ----------------------------------------------------------
def _claim(s, vm, from_states, to_state, seconds, verb=None, **values):
    """Atomically move vm from one of from_states to to_state, or fail with 409."""
    res = s.execute(update(Vm).where(Vm.id == vm.id, Vm.status.in_(from_states))
                    .values(status=to_state, busy_until=utcnow() + timedelta(seconds=seconds),
                            version=Vm.version + 1, **values)
                    .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        s.rollback()
        s.refresh(vm)
        raise conflict(f"VM {vm.name} is {vm.status}; cannot {verb or to_state.replace('_', ' ')} it now")
    s.commit()
    s.refresh(vm)


def _conn(ctx, host):
    try:
        return virt.connect(host.libvirt_uri, ctx.config.libvirt_timeout)
    except virt.VirtError as e:
        raise conflict(f"host {host.name} does not answer: {e}")


def _bridge_for(ctx, s):
    def bridge(network_name):
        return ctx.config.bridge_map.get(network_name, network_name)
    return bridge


def build_domain_xml(ctx, s, vm, lease=None):
    disk_specs = [(disk_svc.volume_path(sd, disk.active_volume), att.interface, att.bootable)
                  for att, disk, sd in disk_svc.vm_disks(s, vm.id) if att.active]
    nic_specs = []
    for nic in s.scalars(select(Nic).where(Nic.vm_id == vm.id).order_by(Nic.name)):
        net = s.get(Network, nic.network_id) if nic.network_id else None
        nic_specs.append((nic.mac, NIC_MODELS.get(nic.interface, "virtio"), net.name if net else None))
    return virt.domain_xml(vm, disk_specs, nic_specs, _bridge_for(ctx, s), lease=lease)


def _ensure_pools(ctx, s, conn, vm):
    for sd_id in {sd.id for _a, _d, sd in disk_svc.vm_disks(s, vm.id)}:
        virt.ensure_pool(conn, s.get(StorageDomain, sd_id))


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
    text = str(err)
    for needle, meaning in LOCK_ERRORS.items():
        if f"Failed to acquire lock: {needle}" in text:
            return f"{meaning} ({text})"
    return text


def start_vm(ctx, s, vm, host=None):
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; only a down VM can be started")
    # the lease is made ready on storage before the VM is claimed: a failure here
    # (storage unwritable, no lockspace configured, lease held) leaves the VM down, untouched
    lease = hooks.vm_lease(ctx, s, vm)
    tried, last = set(), None
    while True:
        try:
            target = scheduler.pick(s, vm, exclude=tried, required=host)
        except Fault:
            if last is None:
                raise
            raise conflict(f"failed to start VM {vm.name}: {last}") from None
        try:
            return _start_on(ctx, s, vm, target, lease)
        except _HostCannotLease as exc:
            if host is not None:
                raise conflict(f"failed to start VM {vm.name} on host {target.name}: {exc}") from None
            # a host just back from a power cycle answers libvirt before it has
            # joined the lockspace: the next best host may
            tried.add(target.id)
            last = f"host {target.name}: {exc}"


def _start_on(ctx, s, vm, target, lease):
    _claim(s, vm, ("down",), "wait_for_launch", ctx.config.libvirt_timeout * 6, host_id=target.id,
           stop_reason="", verb="start")
    job = jobs.start(s, f"Starting VM {vm.name} on host {target.name}", ctx.user_id)
    s.commit()
    xml = build_domain_xml(ctx, s, vm, lease=lease)
    try:
        conn = _conn(ctx, target)
        try:
            _ensure_pools(ctx, s, conn, vm)
            virt.with_deadline(lambda: conn.createXML(xml, 0), ctx.config.libvirt_timeout * 5,
                               f"start {vm.name} on {target.name}")
        finally:
            conn.close()
    except (virt.VirtError, Fault) as e:
        why = _explain(e)
        vm.status, vm.host_id, vm.busy_until = "down", None, None
        jobs.finish(job, ok=False)
        events.add(s, events.VM_DOWN, f"Failed to start VM {vm.name} on host {target.name}: {why}.",
                   severity="error", vm_id=vm.id, host_id=target.id, user_id=ctx.user_id)
        s.commit()
        if NOT_IN_LOCKSPACE in str(e):
            raise _HostCannotLease(why) from None
        raise conflict(f"failed to start VM {vm.name} on host {target.name}: {why}")
    vm.status, vm.busy_until, vm.start_time = "up", None, utcnow()
    try:
        s.flush()
    except StaleDataError:
        # the start outlived its claim and the monitor already recorded the VM
        # (found running on the target): that record stands
        s.rollback()
        s.refresh(vm)
        if not (vm.host_id == target.id and vm.status in RUNNING):
            jobs.finish(job, ok=False)
            s.commit()
            raise conflict(f"VM {vm.name} changed while it was being started; it is now {vm.status}")
    jobs.finish(job)
    events.add(s, events.VM_UP, f"VM {vm.name} was started on host {target.name}.",
               vm_id=vm.id, host_id=target.id, cluster_id=vm.cluster_id, user_id=ctx.user_id)
    s.commit()
    return vm, job


def _domain(ctx, s, vm):
    host = s.get(Host, vm.host_id) if vm.host_id else None
    if host is None:
        raise conflict(f"VM {vm.name} has no host")
    conn = _conn(ctx, host)
    try:
        dom = virt.with_deadline(lambda: conn.lookupByUUIDString(vm.id), ctx.config.libvirt_timeout,
                                 f"find {vm.name}")
    except virt.VirtError:
        dom = None
    return host, conn, dom


def stop_vm(ctx, s, vm, reason="stopped by user"):
    if vm.status in ("down", "migrating", "wait_for_launch"):
        raise conflict(f"VM {vm.name} is {vm.status}; cannot stop it now")
    _claim(s, vm, ("up", "powering_up", "powering_down", "paused", "unknown", "reboot_in_progress",
                   "not_responding", "suspended"), "powering_down", ctx.config.libvirt_timeout * 3, verb="stop")
    host, conn, dom = _domain(ctx, s, vm)
    try:
        if dom is not None:
            try:
                virt.with_deadline(dom.destroy, ctx.config.libvirt_timeout, f"stop {vm.name}")
            except virt.VirtError as e:
                if "not running" not in str(e) and "no domain" not in str(e):
                    vm.busy_until = None   # the monitor reports the real state again
                    s.commit()
                    raise conflict(f"cannot stop VM {vm.name}: {e}")
    finally:
        conn.close()
    vm.status, vm.host_id, vm.shutdown_deadline, vm.stop_reason = "down", None, None, reason
    vm.busy_until = None
    events.add(s, events.VM_STOPPED, f"VM {vm.name} was powered off on host {host.name} ({reason}).",
               vm_id=vm.id, host_id=host.id, user_id=ctx.user_id)
    return vm


def shutdown_vm(ctx, s, vm):
    if vm.status not in ("up", "powering_up", "reboot_in_progress"):
        raise conflict(f"VM {vm.name} is {vm.status}; only a running VM can be shut down")
    _claim(s, vm, ("up", "powering_up", "reboot_in_progress"), "powering_down", ctx.config.libvirt_timeout * 3,
           verb="shut down")
    host, conn, dom = _domain(ctx, s, vm)
    try:
        if dom is None:
            raise conflict(f"VM {vm.name} is not running on host {host.name}")
        virt.with_deadline(dom.shutdown, ctx.config.libvirt_timeout, f"shutdown {vm.name}")
    except virt.VirtError as e:
        vm.busy_until = None
        s.commit()
        raise conflict(f"cannot shut down VM {vm.name}: {e}")
    finally:
        conn.close()
    vm.status, vm.busy_until = "powering_down", None
    vm.shutdown_deadline = utcnow() + timedelta(seconds=ctx.config.shutdown_timeout)
    events.add(s, events.VM_SHUTDOWN,
               f"Shutdown of VM {vm.name} requested (ACPI); it is powered off if still running "
               f"after {ctx.config.shutdown_timeout:.0f} s.", vm_id=vm.id, host_id=host.id,
               user_id=ctx.user_id)
    return vm


def reboot_vm(ctx, s, vm):
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
               host_id=host.id, user_id=ctx.user_id)
    return vm


def migration_params(dest):
    """Send the memory stream to the address the engine knows the destination
    by. Left alone, libvirt uses the destination's own hostname, which need
    not resolve from the source (it did not in the lab)."""
    if "://" in dest.address:   # a full libvirt URI as address: no plain host to aim at
        return {}
    host = f"[{dest.address}]" if ":" in dest.address else dest.address   # IPv6 literal
    return {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{host}"}


def migrate_vm(ctx, s, vm, host=None, reason="requested by user"):
    if vm.status != "up":
        raise conflict(f"VM {vm.name} is {vm.status}; only an up VM can be migrated")
    source = s.get(Host, vm.host_id)
    dest = scheduler.pick(s, vm, exclude={source.id}, required=host)
    _claim(s, vm, ("up",), "migrating", ctx.config.migration_timeout + 30, verb="migrate")
    job = jobs.start(s, f"Migrating VM {vm.name} from {source.name} to {dest.name}", ctx.user_id)
    events.add(s, events.VM_MIGRATION_START, f"Migration of VM {vm.name} from host {source.name} to "
               f"host {dest.name} started ({reason}).", vm_id=vm.id, host_id=source.id,
               user_id=ctx.user_id)
    s.commit()
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
    if ctx.config.storage_shared_unrecognised:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    try:
        conn = _conn(ctx, source)
        try:
            dom = conn.lookupByUUIDString(vm.id)
            try:
                virt.with_deadline(lambda: dom.migrateToURI3(dest.libvirt_uri, migration_params(dest), flags),
                                   ctx.config.migration_timeout, f"migrate {vm.name}")
            except virt.VirtError:
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass
                raise
        finally:
            conn.close()
    except (virt.VirtError, libvirt.libvirtError, Fault) as e:
        msg = e.get_error_message() if isinstance(e, libvirt.libvirtError) else str(e)
        vm.status, vm.busy_until = "up", None
        jobs.finish(job, ok=False)
        events.add(s, events.VM_MIGRATION_FAILED, f"Migration of VM {vm.name} to host {dest.name} "
                   f"failed: {msg}.", severity="error", vm_id=vm.id, host_id=source.id)
        s.commit()
        raise conflict(f"migration of VM {vm.name} to host {dest.name} failed: {msg}")
    vm.status, vm.busy_until, vm.host_id = "up", None, dest.id
    jobs.finish(job)
    events.add(s, events.VM_MIGRATION_DONE, f"Migration of VM {vm.name} from host {source.name} to "
               f"host {dest.name} completed.", vm_id=vm.id, host_id=dest.id, user_id=ctx.user_id)
    s.commit()
    return vm, job


# ---- nics -------------------------------------------------------------------
def _new_mac(s):
    while True:
        mac = "56:6f:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(4))
        if s.scalar(select(Nic).where(Nic.mac == mac)) is None:
            return mac


def add_nic(ctx, s, vm, body):
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; network interfaces are added while it is down")
    name = body.name()
    if s.scalar(select(Nic).where(Nic.vm_id == vm.id, Nic.name == name)):
        raise conflict(f"VM {vm.name} already has a network interface named {name}")
    mac = body.sub("mac").str("address")
    if mac is not None:
        if not MAC_RE.match(mac):
            raise bad_request(f"mac.address: '{mac}' is not a MAC address")
        mac = mac.lower()
        if s.scalar(select(Nic).where(Nic.mac == mac)):
            raise conflict(f"MAC address {mac} is already in use")
    # a vNIC profile's id is its network's id (one profile per network)
    ref = body.ref("vnic_profile") or body.ref("network")
    net = lookup.resolve(s, Network, ref, "network", "vnic_profile") if ref else None
    nic = Nic(vm_id=vm.id, name=name, mac=mac or _new_mac(s),
              interface=body.str("interface", default="virtio", choices=tuple(NIC_MODELS)),
              network_id=net.id if net else None)
    s.add(nic)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Network interface {name} was added to VM {vm.name}.",
               vm_id=vm.id, user_id=ctx.user_id)
    return nic


def remove_nic(ctx, s, vm, nic):
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; network interfaces are removed while it is down")
    s.delete(nic)
    events.add(s, events.OBJECT_REMOVED, f"Network interface {nic.name} was removed from VM {vm.name}.",
               vm_id=vm.id, user_id=ctx.user_id)


# ---- disk attachments ---------------------------------------------------------
def add_disk_attachment(ctx, s, vm, body):
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; disks are attached while it is down")
    interface = body.str("interface", default="virtio", choices=("virtio", "virtio_scsi", "ide", "sata"))
    bootable = body.bool("bootable", default=False)
    active = body.bool("active", default=True)
    d = body.sub("disk")
    if d.data.get("id") and not d.has("provisioned_size"):
        disk = lookup.resolve(s, Disk, (d.data["id"], None), "disk", "disk")
        if disk.template_id:
            raise conflict(f"disk {disk.name} belongs to a template")
    else:
        n = len(disk_svc.vm_disks(s, vm.id)) + 1
        disk = disk_svc.disk_from_body(ctx, s, d, f"{vm.name}_Disk{n}")
    att = disk_svc.attach(s, vm, disk, interface, bootable, active)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Disk {disk.name} was attached to VM {vm.name}.", vm_id=vm.id,
               user_id=ctx.user_id)
    return att


def remove_disk_attachment(ctx, s, vm, att, detach_only=True):
    if vm.status != "down":
        raise conflict(f"VM {vm.name} is {vm.status}; disks are detached while it is down")
    disk = s.get(Disk, att.disk_id)
    s.delete(att)
    s.flush()
    if not detach_only:
        disk_svc.delete_disk(ctx, s, disk)
    events.add(s, events.OBJECT_REMOVED, f"Disk {disk.name} was detached from VM {vm.name}.",
               vm_id=vm.id, user_id=ctx.user_id)
