"""A VM's cloud-init: its stored configuration, what a start gives the guest,
and the NoCloud seed of one boot.

The seed is an ISO image (volume id `cidata`) that the engine worker writes,
when a start needs one, as a raw volume of a storage domain (the first
disk's, or for a VM without disks an active data domain of its data
center) through the target host's libvirt: the engine itself may run where
the storage is not mounted. The VM's `seed_volume` records it before it is
written, so nothing on storage is ever unknown to the database; `domain_of`
attaches it as a read-only IDE CD-ROM. Whichever way a boot ends (stop,
shutdown, the guest powering off, a failed start, an engine that died
meanwhile), the VM is down with a seed recorded: the worker's seed reaper
(`sweep`) deletes it then. A start first deletes a seed an earlier boot left.

The root password is in the database (the seed needs it) and, as a SHA-512
crypt hash, in the seed; never in a job's parameters, an event or a log
line. A run-once configuration travels from the request to the worker in
the start job encrypted with the engine's key and leaves the job as soon as
the worker has read it."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import uuid

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from keel_common import domainxml

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import Cluster, StorageDomain, Vm, VmInitialization
from . import cloud_init, hosts
from . import disks as disk_svc
from .cloud_init import Initialization

log = logging.getLogger("keel.engine.cloud_init")
TOOL_DEADLINE = 60.0           # seconds for genisoimage (or openssl) on a loaded engine
ENDED = ("down", "image_locked")   # no boot is using a seed recorded on a VM in these states


# ---- the stored configuration ---------------------------------------------------
def stored(s, vm_id) -> Initialization | None:
    row = s.get(VmInitialization, vm_id)
    return None if row is None else cloud_init.from_dict(row)


def store(s, vm, change: Initialization | None, where="initialization") -> None:
    """Merge `change` into the VM's configuration (the fields it gives; a
    field given empty is cleared), checked whole; a configuration left
    empty is removed. Used by the next start that initializes the guest."""
    if change is None:
        return
    current = stored(s, vm.id) or Initialization()
    new = current.merged(change)
    cloud_init.check(new, where)
    row = s.get(VmInitialization, vm.id)
    if new.is_empty():
        if row is not None:
            s.delete(row)
        return
    if row is None:
        row = VmInitialization(vm_id=vm.id)
        s.add(row)
    for key, value in cloud_init.to_dict(new).items():
        setattr(row, key, value)


def copy(s, source_id, vm_id) -> None:
    """A clone gets its source's configuration."""
    init = stored(s, source_id)
    if init is not None:
        s.add(VmInitialization(vm_id=vm_id, **cloud_init.to_dict(init)))


# ---- a start ------------------------------------------------------------------------
def plan_start(ctx, s, vm, use_cloud_init: bool, run_once: Initialization | None) -> dict:
    """What a start job needs to know about cloud-init ({} for nothing);
    refuses (400, 409) before anything changes."""
    if run_once is not None:
        cloud_init.check(run_once, "vm.initialization")
    chosen = cloud_init.for_start(use_cloud_init, run_once, stored(s, vm.id), vm.start_time is not None)
    if chosen is None:
        if use_cloud_init:
            raise bad_request(f"use_cloud_init: VM {vm.name} has no cloud-init configuration; give one in "
                              "vm.initialization, or store one on the VM (initialization)")
        return {}
    how, init = chosen
    seed_domain(s, vm)      # nowhere to put the seed: say so now, not from the job
    if how == "run_once":
        return {"cloud_init": how, "initialization": _seal(ctx, init)}
    return {"cloud_init": how}


def for_job(ctx, s, job) -> Initialization | None:
    """The configuration a start job gives the guest (worker). A run-once
    one is read once and dropped from the job at once."""
    how = job.params.get("cloud_init")
    if how == "run_once":
        token = job.params.get("initialization")
        job.params = {k: v for k, v in job.params.items() if k != "initialization"}
        s.commit()
        try:
            if not token:
                raise conflict("this start's cloud-init configuration was already used; start the VM again")
            return _unseal(ctx, token)
        except Fault:
            vm = s.get(Vm, job.params["vm_id"])
            if vm is not None and vm.status == "wait_for_launch":   # the start ends here: free the VM now
                vm.status, vm.busy_until = "down", None
                s.commit()
            raise
    if how == "stored":
        return stored(s, job.params["vm_id"])
    return None


def _seal(ctx, init: Initialization) -> str:
    return hosts.fernet(ctx.config).encrypt(json.dumps(cloud_init.to_dict(init)).encode()).decode()


def _unseal(ctx, token: str) -> Initialization:
    from cryptography.fernet import InvalidToken
    try:
        return cloud_init.from_dict(json.loads(hosts.fernet(ctx.config).decrypt(token.encode())))
    except (InvalidToken, ValueError):
        raise conflict("this start's cloud-init configuration cannot be read (the engine's key changed "
                       "since it was given); start the VM again") from None


def seed_domain(s, vm) -> StorageDomain:
    """Where the VM's seed goes: its first disk's storage domain, or (no
    disks) the first active data storage domain of its data center."""
    atts = disk_svc.vm_disks(s, vm.id)
    if atts:
        sd = atts[0][2]
        if sd.status != "active":
            raise conflict(f"storage domain {sd.name} of VM {vm.name}'s first disk is {sd.status}; the "
                           "cloud-init seed is written there")
        return sd
    dc_id = s.get(Cluster, vm.cluster_id).data_center_id
    sd = s.scalars(select(StorageDomain).where(StorageDomain.data_center_id == dc_id,
                                               StorageDomain.status == "active", StorageDomain.type == "data")
                   .order_by(StorageDomain.name)).first()
    if sd is None:
        raise conflict(f"VM {vm.name} has no disk and its data center has no active data storage domain for "
                       "its cloud-init seed; attach and activate one")
    return sd


def prepare_boot(ctx, s, vm, target, init: Initialization | None) -> None:
    """Before a boot's domain is made (worker): a seed an earlier boot left
    goes; with a configuration, this boot's seed is written through the
    target host and recorded on the VM (domain_of attaches it)."""
    if vm.seed_volume:
        remove_seed(ctx, s, vm, "a new boot of the VM begins", host=target)
    if init is None:
        return
    sd = seed_domain(s, vm)
    iso = make_iso(cloud_init.seed_files(vm.id, vm.name, init, _hash(init.root_password)))
    vm.seed_volume, vm.seed_storage_domain_id = f"{vm.id}.{uuid.uuid4().hex[:8]}.cloud-init-seed", sd.id
    s.commit()      # recorded before it exists: if anything below fails, the reaper still finds it
    with disk_svc.pool_for(ctx, s, sd, host=target) as pool:
        virt.upload_volume(pool, vm.seed_volume, iso, ctx.config.libvirt_timeout * 3)
    log.info("VM %s: cloud-init seed %s (%d bytes) written to storage domain %s through host %s",
             vm.name, vm.seed_volume, len(iso), sd.name, target.name)


def seed_disk(s, vm) -> domainxml.Disk | None:
    """The boot's seed as the domain's read-only IDE CD-ROM."""
    sd = s.get(StorageDomain, vm.seed_storage_domain_id) if vm.seed_volume else None
    if sd is None:
        return None
    return domainxml.Disk(path=disk_svc.volume_path(sd, vm.seed_volume), format="raw", interface="ide",
                          device="cdrom", readonly=True)


# ---- the seed's end -------------------------------------------------------------------
def remove_seed(ctx, s, vm, reason, host=None) -> None:
    """Delete the VM's seed volume (through `host`, else any up host of its
    data center), then forget it; commits."""
    sd = s.get(StorageDomain, vm.seed_storage_domain_id) if vm.seed_storage_domain_id else None
    name = vm.seed_volume
    if sd is not None:
        with disk_svc.pool_for(ctx, s, sd, host=host) as pool:
            virt.with_deadline(lambda: virt.delete_volume(pool, name), ctx.config.libvirt_timeout,
                               f"delete volume {name}")
    vm.seed_volume, vm.seed_storage_domain_id = "", None
    s.commit()
    log.info("VM %s: cloud-init seed %s removed from storage domain %s (%s)", vm.name, name,
             sd.name if sd is not None else "?", reason)


def sweep(ctx, failing: set) -> int:
    """The seed reaper's round (engine worker): the seed of every VM that
    is not running any more is deleted. `failing`: ids of VMs whose seed
    could not be deleted yet, so that is logged once, not every round.
    Returns how many went."""
    with ctx.sessionmaker() as s:
        ids = s.scalars(select(Vm.id).where(Vm.seed_volume != "", Vm.status.in_(ENDED))).all()
    failing &= set(ids)
    removed = 0
    for vm_id in ids:
        with ctx.sessionmaker() as s:
            vm = s.get(Vm, vm_id)
            if vm is None or not vm.seed_volume or vm.status not in ENDED:
                continue
            try:
                remove_seed(ctx, s, vm, f"the VM is {vm.status}")
                failing.discard(vm_id)
                removed += 1
            except StaleDataError:
                s.rollback()     # the VM changed meanwhile (a start): the next round looks again
            except Fault as f:
                s.rollback()
                if vm_id not in failing:
                    failing.add(vm_id)
                    log.warning("VM %s: its cloud-init seed %s cannot be removed yet (%s); trying again "
                                "every %.0f s", vm.name, vm.seed_volume, f.detail, ctx.config.monitor_interval)
    return removed


# ---- tools ----------------------------------------------------------------------------
def make_iso(files: dict, deadline: float = TOOL_DEADLINE) -> bytes:
    """A NoCloud seed: an ISO 9660 image (Joliet, Rock Ridge) labelled cidata
    holding `files` ({name: text}), made by genisoimage in a private
    temporary directory. Errors name the tool's complaint, never the contents."""
    with tempfile.TemporaryDirectory(prefix="keel-seed-") as tmp:
        for name, text in files.items():
            fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        out = os.path.join(tmp, "seed.iso")
        _run(["genisoimage", "-quiet", "-output", out, "-volid", "cidata", "-joliet", "-rock",
              "-input-charset", "utf-8", *sorted(files)], cwd=tmp, deadline=deadline)
        with open(out, "rb") as f:
            return f.read()


def _hash(password: str | None) -> str | None:
    """SHA-512 crypt(3) hash of the password, by openssl (the password goes
    through its standard input, never its command line)."""
    if not password:
        return None
    hashed = _run(["openssl", "passwd", "-6", "-stdin"], stdin=password + "\n").strip()
    if not cloud_init.PASSWORD_HASH.fullmatch(hashed):
        raise conflict("cannot make the cloud-init seed: openssl passwd did not print a password hash")
    return hashed


def _run(argv, cwd=None, stdin=None, deadline=TOOL_DEADLINE) -> str:
    tool = argv[0]
    try:
        done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=deadline)
    except FileNotFoundError:
        raise conflict(f"cannot make the cloud-init seed: {tool} is not installed on the engine") from None
    except subprocess.TimeoutExpired:
        raise conflict(f"cannot make the cloud-init seed: {tool} did not finish within {deadline:.0f} s") from None
    if done.returncode != 0:
        complaint = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
        raise conflict(f"cannot make the cloud-init seed: {tool} failed (exit {done.returncode}): {complaint}")
    return done.stdout
