"""Exactly one engine worker acts at a time. The worker holds a lease row in
the database and renews it; a second worker (started by mistake, or a new
engine VM whose predecessor's worker is not quite dead yet) waits until the
lease is stale before it takes over."""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from ..models import WorkerLease, utcnow

log = logging.getLogger("keel.engine.worker")
STALE_AFTER = 30.0   # seconds without renewal before another worker may take over


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "-"


def owner_name(suffix: str = "") -> str:
    """host:boot:pid[:suffix]: enough to tell, on this machine, that an owner is gone."""
    return f"{socket.gethostname()}:{_boot_id()}:{os.getpid()}" + (f":{suffix}" if suffix else "")


def gone(owner: str) -> bool:
    """An owner on this machine that cannot be running any more: an earlier boot
    (the engine VM restarted, possibly on another host), or a dead process."""
    parts = owner.split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname():
        return False
    if parts[1] != _boot_id():
        return True
    return parts[2].isdigit() and not os.path.exists(f"/proc/{parts[2]}")


def take(sessionmaker, owner: str, stale_after: float = STALE_AFTER) -> bool:
    """Take or renew the lease; False while another live worker holds it."""
    now = utcnow()
    with sessionmaker() as s:
        res = s.execute(update(WorkerLease).where(
            WorkerLease.id == 1,
            (WorkerLease.owner == owner) | (WorkerLease.renewed < now - timedelta(seconds=stale_after)))
            .values(owner=owner, renewed=now).execution_options(synchronize_session=False))
        if res.rowcount == 1:
            s.commit()
            return True
        current = s.get(WorkerLease, 1)
        if current is not None:
            if not gone(current.owner):
                return False
            # its holder is gone for sure: no need to wait for the lease to go stale
            log.info("taking the worker lease of %s, which is no longer running", current.owner)
            res = s.execute(update(WorkerLease).where(WorkerLease.id == 1, WorkerLease.owner == current.owner)
                            .values(owner=owner, renewed=now).execution_options(synchronize_session=False))
            s.commit()
            return res.rowcount == 1
        s.add(WorkerLease(id=1, owner=owner, renewed=now))
        try:
            s.commit()
            return True
        except IntegrityError:    # another worker inserted it first
            s.rollback()
            return False


def release(sessionmaker, owner: str) -> None:
    with sessionmaker() as s:
        s.execute(update(WorkerLease).where(WorkerLease.id == 1, WorkerLease.owner == owner)
                  .values(renewed=utcnow() - timedelta(days=1)).execution_options(synchronize_session=False))
        s.commit()
