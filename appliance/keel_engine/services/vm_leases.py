"""VM leases: each HA VM holds its own sanlock lease while it runs.

The lease is a sanlock resource (key = the VM's id) in the lockspace every
host joins (the hosts' ``[storage] lockspace``, ``hosted-engine`` by
default), kept in ``<storage domain>/.keel-leases/<vm id>.lease``. libvirt's
sanlock lock driver acquires it before qemu starts and sanlock holds it for
qemu's lifetime, so:

- no second host can start the VM while the first one's copy runs: its
  acquire fails while the owner renews its host-id lease;
- a host cut off from the storage cannot renew, and its sanlock kills the
  VM before the lease can pass to another host;
- without a confirmed fence the engine restarts the VM elsewhere only once
  the lease is free: released, or its owner's host-id lease expired.

The engine worker initialises lease files itself (``sanlock direct init``,
no daemon needed), so it must see the storage domain's path. The on-disk
records are read with keel_common.sanlock_disk.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import subprocess

from sqlalchemy import select

from keel_common.domainxml import Lease
from keel_common.sanlock_disk import (LockspaceWatcher, ReleaseError, cli_path, read_delta_leases,
                                      read_resource_owner, release_host_id)

from ..errors import conflict
from ..models import Cluster, Disk, DiskAttachment, StorageDomain
from . import events

log = logging.getLogger("keel.engine.leases")
LEASE_DIR = ".keel-leases"
LEASE_SIZE = 1024 * 1024          # one sanlock lease at the default 1 MiB alignment
EV_VM_LEASE = 9024


class VmLeaseError(Exception):
    pass


def lease_path(sd_path: str, vm_id: str) -> str:
    return os.path.join(sd_path, LEASE_DIR, f"{vm_id}.lease")


def init_lease(lockspace: str, key: str, path: str, timeout: float = 30.0) -> None:
    """Create and initialise the lease file (idempotent: an existing one is kept)."""
    if os.path.exists(path):
        return
    for name, value in (("lockspace", lockspace), ("lease key", key)):
        if ":" in value:   # sanlock's resource syntax separates fields with ':' (a path's are escaped)
            raise VmLeaseError(f"{name} {value!r} must not contain ':'")
    if len(lockspace.encode()) > 48 or len(key.encode()) > 48:
        raise VmLeaseError("sanlock names are at most 48 bytes")
    directory = os.path.dirname(path)
    tmp = f"{path}.init-{os.getpid()}"
    try:
        os.makedirs(directory, exist_ok=True)
        with open(tmp, "wb") as f:
            f.truncate(LEASE_SIZE)
        cp = subprocess.run(["sanlock", "direct", "init", "-r", f"{lockspace}:{key}:{cli_path(tmp)}:0"],
                            capture_output=True, text=True, timeout=timeout)
        if cp.returncode != 0 or "init done 0" not in cp.stdout:
            raise VmLeaseError("sanlock direct init failed: "
                               + (cp.stderr.strip() or cp.stdout.strip() or f"exit {cp.returncode}")[:200])
        _give_to_sanlock(directory, tmp)
        os.rename(tmp, path)        # a lease file exists only once it is initialised
    except FileNotFoundError as exc:
        raise VmLeaseError("the sanlock command is not installed" if exc.filename == "sanlock"
                           else f"{exc.filename}: no such file or directory") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VmLeaseError(f"cannot create {path}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _give_to_sanlock(directory: str, path: str) -> None:
    """The hosts' sanlock daemons open lease files as their user sanlock.
    That user's ids are the ones owning the storage domain's directory (the
    deploy hands it to them, as oVirt's domains belong to vdsm:kvm): the
    engine VM's own sanlock user may have other ids, and over NFS only the
    numbers count. A domain owned by root (a local directory) falls back to
    this machine's sanlock user."""
    st = os.stat(os.path.dirname(os.path.abspath(directory)))
    uid, gid = st.st_uid, st.st_gid
    if uid == 0:
        try:
            uid, gid = pwd.getpwnam("sanlock").pw_uid, grp.getgrnam("sanlock").gr_gid
        except KeyError:
            return                  # no sanlock user here: the hosts' admins own it
    for p, mode in ((directory, 0o775), (path, 0o660)):
        if os.geteuid() == 0:
            os.chown(p, uid, gid)
        os.chmod(p, mode)


class VmLeases:
    """The HA VMs' sanlock leases, as the engine worker handles them."""

    def __init__(self, lockspace: str, watcher: LockspaceWatcher | None = None):
        self.lockspace = lockspace       # '' = VM leases disabled
        self.watcher = watcher           # LockspaceWatcher of that lockspace, or None

    @classmethod
    def from_settings(cls, power) -> "VmLeases":
        watcher = LockspaceWatcher(power.lockspace_path) if power.lockspace_path else None
        return cls(power.vm_lease_lockspace, watcher)

    @property
    def enabled(self) -> bool:
        return bool(self.lockspace)

    # ---- starting and removing VMs ---------------------------------------
    def lease_for(self, s, vm) -> Lease | None:
        """The lease the VM's domain must hold, ready on storage; None: no lease.
        May raise a Fault (storage unwritable, lease held elsewhere)."""
        if not vm.lease_storage_domain_id and vm.high_availability and self.enabled:
            sd = self._default_domain(s, vm)
            if sd is not None:
                vm.lease_storage_domain_id = sd.id
                events.add(s, EV_VM_LEASE, f"HA VM {vm.name} gets its own lease on storage domain {sd.name}: "
                           "no two hosts can run it at once.", vm_id=vm.id, storage_domain_id=sd.id)
        if not vm.lease_storage_domain_id:
            return None
        sd = s.get(StorageDomain, vm.lease_storage_domain_id)
        if not self.enabled:
            raise conflict(f"VM {vm.name} has a lease on storage domain {sd.name}, but VM leases are not "
                           "enabled in this engine (vm_lease_lockspace in the [power] config)")
        spec = Lease(self.lockspace, vm.id, lease_path(sd.path, vm.id))
        try:
            init_lease(spec.lockspace, spec.key, spec.path)
        except VmLeaseError as exc:
            raise conflict(f"cannot prepare the lease of VM {vm.name} on storage domain {sd.name}: {exc}") from None
        # A lease still held by a host that stopped renewing would make the target's
        # sanlock wait, inside libvirtd, for that host's death (minutes), and the
        # target would stop answering meanwhile: refuse now, with the reason.
        if not self.is_free(vm, s):
            owner = read_resource_owner(spec.path)
            holder = f"host id {owner.owner_id}" if owner else "an unknown host"
            name = self.host_name(owner.owner_id) if owner else None
            raise conflict(f"the lease of VM {vm.name} is held by {holder}"
                           f"{f' ({name})' if name else ''}: the VM runs there, or that host has not been "
                           "confirmed off and its sanlock lease has not expired yet")
        return spec

    def remove(self, s, vm) -> None:
        sd = s.get(StorageDomain, vm.lease_storage_domain_id)
        if sd is None:
            return
        try:
            os.unlink(lease_path(sd.path, vm.id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the lease file of VM %s: %s", vm.name, exc)

    @staticmethod
    def _default_domain(s, vm):
        """The storage domain of the VM's first disk, else its data center's first one."""
        row = s.execute(select(StorageDomain).join(Disk, Disk.storage_domain_id == StorageDomain.id)
                        .join(DiskAttachment, DiskAttachment.disk_id == Disk.id)
                        .where(DiskAttachment.vm_id == vm.id)
                        .order_by(DiskAttachment.bootable.desc(), DiskAttachment.position)).scalars().first()
        if row is not None:
            return row
        cluster = s.get(Cluster, vm.cluster_id)
        return s.scalars(select(StorageDomain).where(StorageDomain.data_center_id == cluster.data_center_id,
                                                     StorageDomain.status == "active")
                         .order_by(StorageDomain.name)).first()

    # ---- failover -------------------------------------------------------
    def host_name(self, host_id: int) -> str | None:
        if self.watcher is None:
            return None
        try:
            lease = read_delta_leases(self.watcher.path).get(host_id)
        except OSError:
            return None
        return lease.name if lease else None

    def release_fenced_host(self, *names: str) -> int | None:
        """Release a host's host-id lease on its behalf, ONLY once its BMC confirmed it
        is off: its sanlock is dead, so nothing renews or holds anything any more, and
        the leases it held (its VMs') are free at once instead of after sanlock's
        host-dead time. Returns the host id released, None if there was nothing to do."""
        if not self.enabled or self.watcher is None:
            return None
        leases = read_delta_leases(self.watcher.path)
        found = [lease for lease in leases.values() if lease.name in names and lease.timestamp != 0]
        if not found:
            return None
        lease = max(found, key=lambda d: d.timestamp)
        try:
            release_host_id(self.lockspace, lease.host_id, self.watcher.path)
        except ReleaseError as e:
            raise VmLeaseError(str(e)) from None
        return lease.host_id

    def is_free(self, vm, s) -> bool | None:
        """Is the VM's own lease free, so that another host may take it?
        None: the VM has no lease (the caller falls back to the host's lease)."""
        if not (self.enabled and vm.lease_storage_domain_id):
            return None
        sd = s.get(StorageDomain, vm.lease_storage_domain_id)
        owner = read_resource_owner(lease_path(sd.path, vm.id)) if sd is not None else None
        if owner is None:
            return False          # unreadable: never guess that it is free
        if owner.free:
            return True           # released (or never held)
        if self.watcher is None:
            return False
        return self.watcher.host_lease_expired(owner.owner_id, owner.generation)
