"""Read hosts' sanlock delta leases straight from the lockspace on shared storage.

The engine is not a member of the lockspace, so it cannot ask a sanlock
daemon; it reads the on-disk records instead, the way sanlock's own hosts
judge each other: a host whose lease timestamp keeps changing is alive (it
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


def _read(path: str, size: int) -> bytes:
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
    data = _read(path, max_hosts * SECTOR)
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

    def renewed_after(self, since: float, *names: str) -> bool | None:
        """True: the host renewed its lease after ``since`` (it reaches storage, it is alive);
        False: no renewal for three renewal periods since then; None: too early to tell."""
        lease = self._named(names)
        if lease is None:
            return None
        if lease.timestamp == 0:
            return False
        seen = self._seen[lease.name]
        if seen.lo is not None and seen.lo >= since:
            return True                        # changed between two reads, both after `since`
        start = max(seen.first, since)
        # sanlock renews every 2 * io_timeout seconds; allow two missed renewals
        if self.clock() - start > 3 * 2 * max(1, lease.io_timeout):
            return False
        return None

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
