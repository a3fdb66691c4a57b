"""Exactly one engine worker acts at a time. The worker holds a lease row in
the database and renews it; a second worker (started by mistake, or a new
engine VM whose predecessor's worker is not quite dead yet) waits until the
lease is stale before it takes over."""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from ..models import WorkerLease, utcnow

log = logging.getLogger("keel.engine.worker")
STALE_AFTER = 30.0   # seconds without renewal before another worker may take over


def take(sessionmaker, owner: str, stale_after: float = STALE_AFTER) -> bool:
    """Take or renew the lease; False while another worker holds a fresh one."""
    now = utcnow()
    with sessionmaker() as s:
        res = s.execute(update(WorkerLease).where(
            WorkerLease.id == 1,
            (WorkerLease.owner == owner) | (WorkerLease.renewed < now - timedelta(seconds=stale_after)))
            .values(owner=owner, renewed=now).execution_options(synchronize_session=False))
        if res.rowcount == 1:
            s.commit()
            return True
        if s.get(WorkerLease, 1) is not None:
            return False
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
