"""sanlock's on-disk records, read straight from shared storage: the one
reader every Keel part uses (the engine, which is not a member of the
lockspace and cannot ask a sanlock daemon; the HA agents when they judge a
silent host; the lab's observer).

Hosts' delta leases are judged the way sanlock's own hosts judge each other: a host whose lease timestamp keeps changing is alive (it
still reaches storage, even if its management link is down); a host whose
timestamp stopped changing for ``8 * io_timeout + 60`` seconds (sanlock's
host-dead time) holds no lease any more, so every resource lease it held,
VM leases included, is free.  A clean release writes timestamp 0.

Record layout (sanlock 3.x ``struct leader_record``, little endian, one
512-byte sector per host id): magic u32 @0, version u32 @4, flags u32 @8,
sector size u32 @12, num_hosts u64 @16, max_hosts u64 @24, owner_id u64 @32,
owner_generation u64 @40, lver u64 @48, space_name char[48] @56,
resource_name char[48] @104, timestamp u64 @152, ..., io_timeout u16 @174.
"""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

DELTA_MAGIC = 0x12212010
SECTOR = 512
WATCHDOG_ALLOWANCE = 60     # sanlock's fixed allowance, part of host_dead_seconds


@dataclass(frozen=True)
class DeltaLease:
    host_id: int
    owner_id: int
    generation: int
    timestamp: int
    io_timeout: int
    name: str            # the host name the owner registered (sanlock -e / resource name)

    @property
    def host_dead_seconds(self) -> int:
        return 8 * max(1, self.io_timeout) + WATCHDOG_ALLOWANCE


def silence_limit(io_timeout: float) -> float:
    """How long a host's delta lease must have stood still before it counts
    as not renewing: one renewal period (sanlock renews every 2
    io_timeouts) plus one io_timeout (the longest one renewal's write may
    take), at least 3 s (a loaded machine delays a 1 s-io_timeout renewal
    by seconds). The HA agents and the engine both judge by it."""
    io = max(1.0, float(io_timeout))
    return 2.0 * io + max(io, 3.0)


def read_head(path: str, size: int) -> bytes:
    """The first ``size`` bytes of a lease file, read with O_DIRECT where the
    file system allows it (sanlock writes with O_DIRECT: no stale cache)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    except OSError:
        fd = os.open(path, os.O_RDONLY)   # e.g. tmpfs refuses O_DIRECT
    try:
        buf = mmap.mmap(-1, size)        # page aligned, as O_DIRECT needs
        try:
            n = os.preadv(fd, [buf], 0)
        except OSError:
            os.close(fd)
            fd = os.open(path, os.O_RDONLY)
            n = os.preadv(fd, [buf], 0)
        return bytes(buf[:n])
    finally:
        os.close(fd)


def read_delta_leases(path: str, max_hosts: int = 250) -> dict[int, DeltaLease]:
    """{host id: lease} for every initialised record of the lockspace file."""
    data = read_head(path, max_hosts * SECTOR)
    out = {}
    for i in range(len(data) // SECTOR):
        rec = data[i * SECTOR:(i + 1) * SECTOR]
        magic, = struct.unpack_from("<I", rec, 0)
        if magic != DELTA_MAGIC:
            continue
        owner, gen = struct.unpack_from("<QQ", rec, 32)
        name = rec[104:152].split(b"\0", 1)[0].decode(errors="replace")
        ts, = struct.unpack_from("<Q", rec, 152)
        iot, = struct.unpack_from("<H", rec, 174)
        out[i + 1] = DeltaLease(i + 1, owner, gen, ts, iot, name)
    return out


def cli_path(path: str) -> str:
    """A path as a field of sanlock's command line (`-s`/`-r` separate their
    fields with ':'): its colons escaped, as oVirt's NFS mount points
    (SERVER:_EXPORT) have one."""
    return path.replace(":", "\\:")


class ReleaseError(RuntimeError):
    """`sanlock direct release_id` did not release the host-id lease."""


def release_host_id(lockspace: str, host_id: int, path: str, timeout: float = 60.0) -> None:
    """Release a host's host-id (delta) lease on its behalf, so that every
    lease it held is free at once instead of after sanlock's host-dead time.
    Callers do this ONLY once the host's BMC confirmed it is off: a host that
    still runs finds its lease gone at its next renewal and its sanlock kills
    the lease holders, but until then it may still be writing."""
    try:
        cp = subprocess.run(["sanlock", "direct", "release_id", "-s", f"{lockspace}:{int(host_id)}:{cli_path(path)}:0"],
                            capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"sanlock direct release_id gave no answer within {timeout:g} s") from None
    if cp.returncode != 0 or "done 0" not in cp.stdout:
        raise ReleaseError("sanlock direct release_id failed: "
                           + (cp.stderr.strip() or cp.stdout.strip() or f"exit {cp.returncode}")[:200])


@dataclass
class _Seen:
    timestamp: int
    lo: float | None     # the read before the one that found the last change (None: no change seen)
    hi: float            # the read that found it (or the first read)
    first: float         # our first read of this lease
    last: float          # our latest read


class LockspaceWatcher:
    """Follows each host's delta lease over time (by the host name it registered).

    Only a timestamp change seen between two of our own reads counts as a
    renewal: a single read says nothing about whether the owner is alive.
    """

    def __init__(self, path: str, clock=time.time):
        self.path = path
        self.clock = clock
        # name -> _Seen: a timestamp change found by a read at time `hi`
        # happened after the read before it (`lo`): it can be dated no more
        # precisely than that. After a long gap between reads (the watcher
        # is idle between outages) `lo` is old, so the change proves nothing
        # about the present episode.
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def _observe(self) -> dict[int, DeltaLease] | None:
        """Read every host's delta lease once and note the changes; None: unreadable."""
        try:
            leases = read_delta_leases(self.path)
        except OSError:
            return None                       # storage unreadable from here: unknown
        now = self.clock()
        with self._lock:
            for lease in leases.values():
                prev = self._seen.get(lease.name)
                if prev is None:
                    self._seen[lease.name] = _Seen(lease.timestamp, lo=None, hi=now, first=now, last=now)
                elif prev.timestamp != lease.timestamp:
                    self._seen[lease.name] = _Seen(lease.timestamp, lo=prev.last, hi=now, first=prev.first,
                                                   last=now)
                else:
                    prev.last = now
        return leases

    def _named(self, names) -> DeltaLease | None:
        """The newest lease registered under one of ``names``, after a fresh read."""
        leases = self._observe()
        found = [lease for lease in (leases or {}).values() if lease.name in names]
        return max(found, key=lambda lease: lease.timestamp, default=None)

    def silence(self) -> dict[int, tuple[float, int]]:
        """{host id: (seconds since its delta lease last changed, generation)},
        after a fresh read. The silence is a lower bound: a change is dated by
        the read that found it. A released lease (timestamp 0) is not listed:
        its host left the lockspace. Empty when the storage is unreadable."""
        leases = self._observe()
        now = self.clock()
        with self._lock:
            return {hid: (now - self._seen[lease.name].hi, lease.generation)
                    for hid, lease in (leases or {}).items() if lease.timestamp != 0}

    def renewed_after(self, since: float, *names: str) -> bool | None:
        """True: the host renewed its lease after ``since`` (it reaches storage, it is alive);
        False: its lease has stood still since then, for longer than a renewal period and a
        late write's margin; None: too early to tell."""
        lease = self._named(names)
        if lease is None:
            return None
        if lease.timestamp == 0:
            return False
        seen = self._seen[lease.name]
        if seen.lo is not None and seen.lo >= since:
            return True                        # changed between two reads, both after `since`
        # Unchanged since the read that found its last change for longer than
        # the silence limit. A change found before `since` proves nothing
        # about now, so it only starts the count.
        if self.clock() - seen.hi > silence_limit(lease.io_timeout):
            return False
        return None

    def watch_forever(self, stop: threading.Event, period: float = 1.0) -> None:
        """Read every `period` s until `stop`, in a thread of the caller's:
        a silence is then counted from the read after the last renewal, not
        from the first read of an outage (and a stalled storage blocks only
        this thread)."""
        while not stop.is_set():
            self._observe()
            stop.wait(period)

    def expired(self, *names: str) -> bool:
        """True once sanlock itself would let another host take this host's leases."""
        return self._expired(self._named(names))

    def host_lease_expired(self, host_id: int, generation: int) -> bool:
        """Has the holder of a resource lease, (host id, generation), lost its
        host-id lease, so that sanlock lets another host take the resource?"""
        lease = (self._observe() or {}).get(host_id)
        if lease is not None and generation and lease.generation > generation:
            return True                        # the host joined again since: its old leases are void
        return self._expired(lease)

    def _expired(self, lease: DeltaLease | None) -> bool:
        if lease is None:
            return False
        if lease.timestamp == 0:
            return True                        # released cleanly
        # The last renewal is dated by the read that found it (its upper
        # bound): expiry is never declared early.
        return self.clock() - self._seen[lease.name].hi > lease.host_dead_seconds


# ---- resource leases (paxos) -------------------------------------------------
# Leader record of a resource (``struct leader_record``, first sector):
# magic u32 @0 (0x06152010), owner_id u64 @32, owner_generation u64 @40,
# lver u64 @48, space_name @56, resource_name @104, timestamp u64 @152.
# Sector 1 is the request record; host id N's ballot (``struct
# paxos_dblock``) is sector N + 1: mbal, bal, inp (owner id), inp2
# (generation), inp3 (timestamp), lver (u64 each), checksum u32 @48, flags
# u32 @52 with 0x1 = released (a clean release marks the owner's ballot, not
# the leader).
PAXOS_MAGIC = 0x06152010
DBLOCK_RELEASED = 0x1


@dataclass(frozen=True)
class LeaseOwner:
    owner_id: int          # the owner's host id in the lockspace (0: never acquired)
    generation: int
    timestamp: int         # 0: released (older sanlock)
    released: bool = False  # the owner's ballot says it released this very acquisition

    @property
    def free(self) -> bool:
        return self.owner_id == 0 or self.timestamp == 0 or self.released


def read_resource_owner(path: str) -> LeaseOwner | None:
    """A resource lease's current owner from its leader record; None if
    unreadable or not a lease."""
    try:
        data = read_head(path, SECTOR * 2)
    except OSError:
        return None
    if len(data) < 2 * SECTOR or struct.unpack_from("<I", data, 0)[0] != PAXOS_MAGIC:
        return None
    owner, gen = struct.unpack_from("<QQ", data, 32)
    ts, = struct.unpack_from("<Q", data, 152)
    released = False
    if 0 < owner <= 2000:
        try:
            ballot = read_head(path, SECTOR * (owner + 2))[SECTOR * (owner + 1):]
        except OSError:
            ballot = b""
        if len(ballot) >= 56:
            inp, inp2, inp3 = struct.unpack_from("<QQQ", ballot, 16)
            flags, = struct.unpack_from("<I", ballot, 52)
            # only a release of this very acquisition (same owner, generation, time) counts
            released = bool(flags & DBLOCK_RELEASED) and (inp, inp2, inp3) == (owner, gen, ts)
    return LeaseOwner(owner, gen, ts, released)
