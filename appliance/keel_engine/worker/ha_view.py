"""The hosted engine's HA state as data, for the dashboard: every monitor
cycle the engine worker reads what the HA agents publish in the hosts' etcd
(each host's record and the global maintenance flag: what `hosted-engine
--vm-status` shows) and copies it into `ha_hosts` and `ha_cluster`. Web
workers read those rows (services/ha_view.py), never etcd.

The read has a hard deadline (the etcd client's timeout holds per call and
per endpoint, not for the whole read), and no transaction is open while it
runs. A failed read leaves the rows of the last good one, with its time, and
records why in `ha_cluster.error`; the log says so once per change, not every
cycle."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from sqlalchemy import delete, select

from keel_common.bounded import BoundedCaller

from ..models import HaCluster, HaHost
from ..services import hosts as host_svc
from ..services.ha_view import CLUSTER_ROW

log = logging.getLogger("keel.engine.ha")
# Each etcd call (one member): a member on a dead host must leave time for the next.
CALL_TIMEOUT = 2.0
# The whole read: the monitor's cycle waits for it, so it is kept short.
READ_DEADLINE = 4.0


def read_etcd(etcd):
    # imported here: grpc and pure-Python protobuf take long to load, and only the worker reads etcd
    from keel_common.etcdclient import read_ha_records
    return read_ha_records(etcd, CALL_TIMEOUT)


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def copy_record(row: HaHost, rec, stale: bool) -> None:
    """One host record (keel_common.keys.HostRecord) into its row. Raises
    ValueError or OverflowError for a timestamp or score no number can be."""
    row.record_time = _time(rec.timestamp)
    row.score = int(rec.score)
    row.hostname = rec.hostname[:255]
    row.address = rec.address[:255] or None
    row.ha_state = rec.state[:64]
    row.engine_vm_running = rec.engine.vm == "up"
    row.engine_health = rec.engine.health[:16]
    row.engine_detail = ": ".join(part for part in (rec.engine.detail, rec.engine.reason) if part)
    row.local_maintenance = rec.maintenance
    row.agent_stopped = rec.stopped
    row.stale = stale


class HaView:
    """Called by the monitor once a cycle (`refresh`); keeps what it last
    logged, so that each change is said once."""

    def __init__(self, ctx, read=read_etcd, clock=time.time, deadline: float = READ_DEADLINE):
        self.ctx = ctx
        self.read = read            # read(EtcdConfig) -> keel_common.etcdclient.HaRecords
        self.clock = clock
        self.deadline = deadline
        self.caller = BoundedCaller("the hosts' etcd")
        self._said: dict[str, object] = {}

    def _news(self, what: str, value) -> bool:
        """Whether `what` changed since it was last said (the first value is news)."""
        if what in self._said and self._said[what] == value:
            return False
        self._said[what] = value
        return True

    def refresh(self) -> None:
        """One read of the hosts' etcd into the rows. Never raises: the
        monitor's cycle goes on whatever happens here."""
        try:
            self._refresh()
        except Exception:   # the database was away: the next cycle tries again
            log.exception("updating the hosted engine's HA state failed")

    def _refresh(self) -> None:
        config = self.ctx.config
        etcd = None
        if config.ha_etcd_configured:
            with self.ctx.sessionmaker() as s:
                etcd = host_svc.hosts_etcd(s, config)
        if etcd is None:
            self._not_configured()
            return
        if self._news("configured", True):
            log.info("reading the HA agents' records from the hosts' etcd every monitor cycle (%s)",
                     ", ".join(etcd.endpoints))
        try:
            got = self.caller.call(self.deadline, self.read, etcd)
        except Exception as exc:    # unreachable, too slow, refused: all are "not read this cycle"
            self._failed(str(exc) or exc.__class__.__name__)
            return
        self._store(got)

    def _not_configured(self) -> None:
        if not self._news("configured", False):
            return
        # rows of an earlier configuration would show a cluster nobody reads any more
        with self.ctx.sessionmaker() as s:
            s.execute(delete(HaHost))
            s.execute(delete(HaCluster))
            s.commit()
        log.info("the engine is told of no etcd of the hosts ([ha] etcd_endpoints or etcd_endpoint_template "
                 "with hosts): the dashboard shows no HA state")

    def _cluster(self, s) -> HaCluster:
        cluster = s.get(HaCluster, CLUSTER_ROW)
        if cluster is None:
            cluster = HaCluster(id=CLUSTER_ROW, global_maintenance=False)
            s.add(cluster)
        return cluster

    def _failed(self, error: str) -> None:
        with self.ctx.sessionmaker() as s:
            cluster = self._cluster(s)
            cluster.error = error
            updated = cluster.updated
            s.commit()
        if self._news("error", error):
            since = f"those read at {updated:%H:%M:%S} UTC" if updated is not None else "none yet"
            log.warning("cannot read the HA agents' records from the hosts' etcd: %s; the dashboard shows %s",
                        error, since)

    def _store(self, got) -> None:
        now = self.clock()
        timing = self.ctx.config.ha_timing
        malformed = list(got.malformed)
        with self.ctx.sessionmaker() as s:
            cluster = self._cluster(s)
            rows = {row.host_id: row for row in s.scalars(select(HaHost))}
            for host_id, rec in sorted(got.hosts.items()):
                row = rows.pop(host_id, None)
                fresh = row is None
                if fresh:
                    row = HaHost(host_id=host_id)
                try:
                    copy_record(row, rec, stale=not timing.record_is_live(rec.timestamp, now))
                except (ValueError, OverflowError, OSError):
                    malformed.append(f"host {host_id}")
                    if not fresh:
                        s.delete(row)
                    continue
                if fresh:
                    s.add(row)
            for row in rows.values():     # its record is gone from etcd: its host's lease expired
                s.delete(row)
            cluster.global_maintenance = got.global_maintenance
            cluster.updated = _time(now)
            cluster.error = None
            s.commit()
        self._say_read(got.global_maintenance, malformed)

    def _say_read(self, global_maintenance: bool, malformed: list[str]) -> None:
        """What a good read changed, in the log."""
        had_error = self._said.get("error")
        if self._news("error", None) and had_error is not None:
            log.info("reading the HA agents' records from the hosts' etcd again")
        first = "global_maintenance" not in self._said
        if self._news("global_maintenance", global_maintenance) and (global_maintenance or not first):
            if global_maintenance:
                log.warning("the hosts' HA cluster is in global maintenance: the HA agents neither start, "
                            "stop nor move the engine VM")
            else:
                log.info("the hosts' HA cluster is out of global maintenance")
        if self._news("malformed", tuple(malformed)) and malformed:
            log.warning("ignoring HA records that cannot be read: %s", ", ".join(malformed))
