"""The hosted engine's HA state as the dashboard shows it: where the engine
VM runs, each host's HA state and score, global maintenance. Read from the
rows the engine worker copies from the hosts' etcd every monitor cycle
(worker/ha_view.py): a web worker never talks to etcd."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from ..models import HaCluster, HaHost, utcnow
from ..timeutil import aware
from . import reads

CLUSTER_ROW = 1     # the one ha_cluster row


@dataclass(frozen=True)
class HaHostRow:
    host_id: int
    hostname: str
    address: str | None
    ha_state: str
    score: int
    engine_vm_running: bool
    engine_health: str | None
    engine_detail: str
    local_maintenance: bool
    agent_stopped: bool
    record_time: datetime
    stale: bool
    age: int            # seconds since its broker wrote it, when the page was made


@dataclass(frozen=True)
class HaOverview:
    configured: bool
    global_maintenance: bool = False
    updated: datetime | None = None     # the engine's last good read of the hosts' etcd
    error: str | None = None            # why the last read failed; None: it did not
    hosts: list[HaHostRow] = field(default_factory=list)
    engine_host: str | None = None      # the host running the engine VM
    # every host whose live record says the engine VM runs there: more than one is an alarm
    engine_hosts: tuple[str, ...] = ()


def overview(db, now: datetime | None = None) -> HaOverview:
    """Two queries; `db` is a connection or a session."""
    cluster = reads.run(db, select(HaCluster.global_maintenance, HaCluster.updated, HaCluster.error)
                        .where(HaCluster.id == CLUSTER_ROW)).first()
    if cluster is None:
        return HaOverview(configured=False)
    now = now or utcnow()
    hosts = []
    for r in reads.run(db, select(*HaHost.__table__.columns).order_by(HaHost.host_id)).mappings():
        when = aware(r["record_time"])
        hosts.append(HaHostRow(**{**r, "record_time": when, "age": max(0, int((now - when).total_seconds()))}))
    engine_hosts = tuple(h.hostname for h in hosts if h.engine_vm_running and not h.stale)
    return HaOverview(configured=True, global_maintenance=cluster.global_maintenance,
                      updated=aware(cluster.updated), error=cluster.error, hosts=hosts,
                      engine_host=engine_hosts[0] if engine_hosts else None, engine_hosts=engine_hosts)
