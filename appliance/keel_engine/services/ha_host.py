"""One engine host's hosted-engine HA record, for its page: the row of
`ha_hosts` (services/ha_view.py) whose host is this one, with the cluster's
global maintenance and the age of the engine's last read of the hosts' etcd.
HA host ids are sanlock host ids, not engine host ids: a record is matched
by the address or name its broker publishes."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .ha_view import HaHostRow, overview

# what the host page tells an administrator to run: Keel's engine has no call
# that sets a host's local maintenance (the HA agent on the host owns it)
LOCAL_MAINTENANCE_ON = "hosted-engine --set-maintenance --mode=local"
LOCAL_MAINTENANCE_OFF = "hosted-engine --set-maintenance --mode=none"


@dataclass(frozen=True)
class HostHa:
    configured: bool                    # the engine is told where the hosts' etcd is
    record: HaHostRow | None = None     # None: this host publishes no HA record
    global_maintenance: bool = False
    updated: datetime | None = None     # the engine's last good read of the hosts' etcd
    error: str | None = None            # why the last read failed; None: it did not
    engine_hosts: tuple[str, ...] = ()  # where live records say the engine VM runs


def _names(host) -> set[str]:
    return {n.lower() for n in (host.address, host.name) if n}


def record_of(records, host) -> HaHostRow | None:
    """The HA record published by `host`: its address first (the broker's
    management address), then its host name; a live record before a stale one."""
    names = _names(host)
    by_address = [r for r in records if r.address and r.address.lower() in names]
    by_name = [r for r in records if r.hostname and r.hostname.lower() in names]
    for found in (by_address, by_name):
        if found:
            return sorted(found, key=lambda r: (r.stale, r.age))[0]
    return None


def host_ha(db, host, now: datetime | None = None) -> HostHa:
    """Two queries; `db` is a connection or a session."""
    ha = overview(db, now)
    if not ha.configured:
        return HostHa(configured=False)
    return HostHa(configured=True, record=record_of(ha.hosts, host), global_maintenance=ha.global_maintenance,
                  updated=ha.updated, error=ha.error, engine_hosts=ha.engine_hosts)
