"""Cluster use over time: the engine worker records what the host monitor
last saw (record, prune), the dashboard reads it back as series (series).

A sample is one row per cluster, all rows of a sample with the same time:
the CPUs and memory of the cluster's hosts that are up (memory used is what
the hosts report: total less free), and the virtual CPUs and memory its
running VMs are given. The engine has no host CPU load, so CPU use is the
virtual CPUs of running VMs against the host CPUs (over 100 %: overcommitted).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from ..models import Host, UsageSample, Vm, utcnow
from . import reads

KEEP = timedelta(hours=24)
# the VM states whose CPUs and memory count as in use (the dashboard's bars too)
RUNNING = ("up", "powering_up", "migrating", "paused")
# a day of samples a minute apart is 1,440; a chart a few hundred pixels wide
# shows no more points than this (and the newest sample)
MAX_POINTS = 240


def record(s, now: datetime | None = None) -> int:
    """One sample of every cluster with a host (of any status) or a running
    VM; returns how many rows were written. Three statements whatever the
    inventory: two sums grouped by cluster, one insert."""
    now = now or utcnow()
    hosts = {r.cluster_id: r for r in s.execute(
        select(Host.cluster_id,
               func.count(Host.id).filter(Host.status == "up").label("up"),
               func.coalesce(func.sum(Host.cpus).filter(Host.status == "up"), 0).label("cpus"),
               func.coalesce(func.sum(Host.memory_total).filter(Host.status == "up"), 0).label("total"),
               func.coalesce(func.sum(Host.memory_free).filter(Host.status == "up"), 0).label("free"))
        .group_by(Host.cluster_id))}
    vms = {r.cluster_id: r for r in s.execute(
        select(Vm.cluster_id, func.coalesce(func.sum(Vm.cpus), 0).label("cpus"),
               func.coalesce(func.sum(Vm.memory), 0).label("memory"))
        .where(Vm.status.in_(RUNNING)).group_by(Vm.cluster_id))}
    rows = []
    for cluster_id in sorted(set(hosts) | set(vms)):
        h, v = hosts.get(cluster_id), vms.get(cluster_id)
        rows.append({"cluster_id": cluster_id, "sampled_at": now,
                     "hosts_up": h.up if h else 0, "host_cpus": int(h.cpus) if h else 0,
                     "vm_cpus": int(v.cpus) if v else 0,
                     "memory_total": int(h.total) if h else 0,
                     "memory_used": max(0, int(h.total) - int(h.free)) if h else 0,
                     "vm_memory": int(v.memory) if v else 0})
    if rows:
        s.execute(insert(UsageSample), rows)
    return len(rows)


def prune(s, now: datetime | None = None) -> int:
    """Delete samples older than KEEP; returns how many went."""
    res = s.execute(delete(UsageSample).where(UsageSample.sampled_at < (now or utcnow()) - KEEP)
                    .execution_options(synchronize_session=False))
    return res.rowcount or 0


@dataclass(frozen=True)
class Point:
    """The whole engine's use at one moment, or the busiest and quietest of a
    stretch of samples ending then (percentages; CPU: virtual CPUs of running
    VMs per host CPU, memory: used of total)."""
    at: datetime
    cpu: float
    memory: float
    cpu_low: float
    memory_low: float


def series(db, max_points: int = MAX_POINTS) -> list[Point]:
    """The whole engine's use in the day up to its newest sample (every
    cluster's samples added up), oldest first. More samples than max_points
    are cut into max_points stretches, each one point with its highest and
    lowest use (a peak stays visible); the newest sample is always a point
    of its own, so the last point is the latest use.

    Samples change once a minute, pages are read far more often: a series is
    kept until a newer sample exists (per database), so a read is one small
    statement (the newest sample's time), and two when a new sample came."""
    newest = reads.run(db, select(func.max(UsageSample.sampled_at))).scalar()
    if newest is None:
        return []
    key = (str(_bind(db).url), newest, max_points)
    cached = _last
    if cached is not None and cached[0] == key:
        return cached[1]
    rows = reads.run(db, select(
        UsageSample.sampled_at, func.sum(UsageSample.host_cpus), func.sum(UsageSample.vm_cpus),
        func.sum(UsageSample.memory_total), func.sum(UsageSample.memory_used))
        .where(UsageSample.sampled_at > newest - KEEP).group_by(UsageSample.sampled_at)
        .order_by(UsageSample.sampled_at)).all()
    samples = [(r[0], _percent(r[2], r[1]), _percent(r[4], r[3])) for r in rows]
    points = _stretches(samples, max_points)
    _remember(key, points)
    return points


_last = None     # (key, points) of the last series read in this process


def _remember(key, points):
    global _last
    _last = (key, points)


def _bind(db):
    return db.get_bind() if isinstance(db, Session) else db.engine


def _percent(part, whole) -> float:
    return 100.0 * float(part or 0) / float(whole) if whole else 0.0


def _stretches(samples, max_points) -> list[Point]:
    if len(samples) <= max_points + 1:
        return [Point(at, cpu, memory, cpu, memory) for at, cpu, memory in samples]
    body, size = samples[:-1], (len(samples) - 1) / max_points
    points = []
    for i in range(max_points):
        part = body[int(i * size):int((i + 1) * size)]
        cpus, memories = [s[1] for s in part], [s[2] for s in part]
        points.append(Point(part[-1][0], max(cpus), max(memories), min(cpus), min(memories)))
    at, cpu, memory = samples[-1]
    return points + [Point(at, cpu, memory, cpu, memory)]
