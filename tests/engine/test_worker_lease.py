"""Exactly one engine worker acts: a second waits while the first renews its
lease; a holder that is surely gone (a dead process, an earlier boot of this
same engine VM) is replaced at once, a holder on another machine only once
its lease is stale."""
import socket
from datetime import timedelta

from keel_engine import db
from keel_engine.models import WorkerLease, utcnow
from keel_engine.worker import lease


def test_the_worker_lease(tmp_path):
    url = f"sqlite:///{tmp_path}/e.db"
    db.upgrade(url)
    sm = db.make_sessionmaker(db.make_engine(url))

    def held_by(owner, renewed_ago=0.0):
        with sm() as s:
            row = s.get(WorkerLease, 1)
            row.owner, row.renewed = owner, utcnow() - timedelta(seconds=renewed_ago)
            s.commit()
    first = lease.owner_name("first")
    assert lease.take(sm, first) and lease.take(sm, first)          # taken, then renewed
    assert not lease.take(sm, lease.owner_name("second"))          # a live holder in this very process
    host = socket.gethostname()
    held_by(f"{host}:{lease._boot_id()}:999999999:x")               # a process that no longer exists
    assert lease.take(sm, lease.owner_name("third"))
    held_by(f"{host}:earlier0:1:x")                                 # the engine VM booted again
    assert lease.take(sm, lease.owner_name("fourth"))
    held_by("another-machine:abcd:1:x")
    assert not lease.take(sm, lease.owner_name("fifth"))
    held_by("another-machine:abcd:1:x", renewed_ago=lease.STALE_AFTER + 1)
    assert lease.take(sm, lease.owner_name("sixth"))
    lease.release(sm, lease.owner_name("sixth"))
    assert lease.take(sm, lease.owner_name("seventh"))             # released: free at once
