"""The broker's etcd session: one etcd lease per host, renewed every cycle,
the host record and the engine claim bound to it. Every call carries a
timeout and fails over between endpoints; nothing here waits on a watch
(etcd3 0.12's watches hang when a connection drops)."""
from __future__ import annotations

import logging
import threading
import time

from keel_common import etcdclient
from keel_common.bmc import BmcError, BmcRecord, FenceRecord
from keel_common.config import EtcdConfig
from keel_common.keys import GLOBAL_MAINTENANCE_ON, EngineClaim, HostRecord, Keys, global_maintenance_on

log = logging.getLogger("keel.broker.etcd")


class EtcdUnavailable(Exception):
    """No endpoint answered within the timeout; str() is for humans."""


def _parsed(items, parse, what: str) -> dict:
    """{host id: record} from (value, key) pairs; a malformed one is skipped, said once per read."""
    out = {}
    for raw, key in items:
        try:
            rec = parse(raw)
        except (ValueError, KeyError, TypeError, BmcError) as e:
            log.warning("ignoring a malformed %s at %s: %s", what, key.decode(), e)
            continue
        out[rec.host_id] = rec
    return out


class EtcdSession:
    def __init__(self, cfg: EtcdConfig, ttl: int, timeout: float):
        self.cfg = cfg
        self.keys = Keys(cfg.prefix)
        self.ttl = ttl
        self.timeout = timeout
        self._endpoint = 0
        self._client = None
        self.lease_id: int | None = None
        self.last_renewed: float | None = None  # wall clock of the last successful renewal
        self.last_error: str | None = None
        self._lock = threading.RLock()  # etcd3's client is not safe across threads for failover

    # -- connection -------------------------------------------------------
    def _make_client(self, url: str):
        return etcdclient.client(self.cfg, url, self.timeout)

    def _call(self, fn):
        """Run fn(client) against the current endpoint, then each other one."""
        with self._lock:
            errors = []
            n = len(self.cfg.endpoints)
            for i in range(n):
                idx = (self._endpoint + i) % n
                url = self.cfg.endpoints[idx]
                try:
                    if self._client is None or idx != self._endpoint:
                        self._close()
                        self._client = self._make_client(url)
                        self._endpoint = idx
                    result = fn(self._client)
                    self.last_error = None
                    return result
                except Exception as e:  # grpc raises many kinds; all mean "not now"
                    errors.append(f"{url}: {e.__class__.__name__}")
                    self._close()
            self.last_error = "etcd unreachable (" + "; ".join(errors) + ")"
            raise EtcdUnavailable(self.last_error)

    def _close(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None

    # -- the lease ----------------------------------------------------------
    def keepalive(self) -> bool:
        """Renew our lease, or grant a new one if it expired. Returns True
        when we hold a live lease afterwards."""
        def renew(c):
            if self.lease_id is not None:
                replies = list(c.refresh_lease(self.lease_id))  # a generator in 0.12
                ttl = replies[0].TTL if replies else 0
                if ttl > 0:
                    return self.lease_id, False
            lease = c.lease(self.ttl)
            return lease.id, True
        try:
            lease_id, new = self._call(renew)
        except EtcdUnavailable:
            return False
        if new:
            if self.lease_id is not None:
                log.warning("etcd lease %x expired; granted a new lease %x (our record and any "
                            "engine claim bound to the old one are gone)", self.lease_id, lease_id)
            else:
                log.info("granted etcd lease %x (ttl %d s)", lease_id, self.ttl)
        self.lease_id = lease_id
        self.last_renewed = time.time()
        return True

    def lease_valid(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.last_renewed is not None and now - self.last_renewed < self.ttl

    def revoke(self) -> None:
        if self.lease_id is None:
            return
        lease_id = self.lease_id
        try:
            self._call(lambda c: c.revoke_lease(lease_id))
        except EtcdUnavailable:
            pass
        self.lease_id = None
        self.last_renewed = None

    # -- records --------------------------------------------------------------
    def put_record(self, record: HostRecord) -> None:
        if self.lease_id is None:
            raise EtcdUnavailable("no etcd lease yet")
        lease_id = self.lease_id
        self._call(lambda c: c.put(self.keys.host(record.host_id), record.to_json(), lease=lease_id))

    def read_cluster(self) -> dict:
        """Everything the agent and the CLI need, in one bounded round trip each."""
        def read(c):
            hosts = {}
            for value, meta in c.get_prefix(self.keys.hosts_prefix):
                try:
                    rec = HostRecord.from_json(value)
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring a malformed host record at %s", meta.key.decode())
                    continue
                hosts[rec.host_id] = rec
            owner_raw, _ = c.get(self.keys.engine_owner)
            gm, _ = c.get(self.keys.global_maintenance)
            ver, _ = c.get(self.keys.shared_config_version)
            bmcs = [(v, m.key) for v, m in c.get_prefix(self.keys.bmc_prefix)]
            fences = [(v, m.key) for v, m in c.get_prefix(self.keys.fences_prefix)]
            return hosts, owner_raw, gm, ver, bmcs, fences
        hosts, owner_raw, gm, ver, bmc_raw, fence_raw = self._call(read)
        owner = None
        if owner_raw:
            try:
                owner = EngineClaim.from_json(owner_raw)
            except (ValueError, KeyError, TypeError):
                log.warning("the engine claim in etcd is malformed; treating it as held by nobody")
        return {"hosts": hosts, "owner": owner, "global_maintenance": global_maintenance_on(gm),
                "shared_config_version": int(ver) if ver else 0,
                "bmcs": _parsed(bmc_raw, BmcRecord.from_json, "BMC record"),
                "fences": _parsed(fence_raw, FenceRecord.from_json, "fence record")}

    # -- hosts' BMCs and the agents' fences -------------------------------------------
    def put_bmc(self, rec: BmcRecord) -> None:
        self._call(lambda c: c.put(self.keys.bmc(rec.host_id), rec.to_json()))

    def delete_bmc(self, host_id: int) -> bool:
        return bool(self._call(lambda c: c.delete(self.keys.bmc(host_id))))

    def get_bmc(self, host_id: int) -> BmcRecord | None:
        raw, _ = self._call(lambda c: c.get(self.keys.bmc(host_id)))
        return BmcRecord.from_json(raw) if raw is not None else None

    def put_fence(self, rec: FenceRecord) -> None:
        # No lease: the record outlives the fencing host, for the engine and for people.
        self._call(lambda c: c.put(self.keys.fence(rec.host_id), rec.to_json()))

    # -- the engine claim --------------------------------------------------------
    def claim(self, host_id: int, hostname: str,
              take_over: int | None = None) -> tuple[bool, EngineClaim | None]:
        """Compare-and-swap: take the claim if nobody holds it, or rebind it
        to our current lease if we already hold it (after a broker restart).
        With `take_over`, also take it from that host if the claim is still
        exactly what it held: its agent judged the host dead and fences it
        now, instead of waiting out its etcd lease's TTL."""
        if self.lease_id is None or not self.lease_valid():
            raise EtcdUnavailable("no live etcd lease: cannot claim the engine")
        key = self.keys.engine_owner
        mine = EngineClaim(host_id, hostname, time.time())
        lease_id = self.lease_id

        def txn(c):
            ok, responses = c.transaction(
                compare=[c.transactions.version(key) == 0],
                success=[c.transactions.put(key, mine.to_json(), lease=lease_id)],
                failure=[c.transactions.get(key)])
            if ok:
                return True, mine
            current_raw = responses[0][0][0] if responses and responses[0] else None
            if current_raw is None:
                return False, None
            current = EngineClaim.from_json(current_raw)
            if take_over is not None and current.host_id == take_over and take_over != host_id:
                taken, _ = c.transaction(
                    compare=[c.transactions.value(key) == current_raw],
                    success=[c.transactions.put(key, mine.to_json(), lease=lease_id)],
                    failure=[])
                if taken:
                    log.warning("took the engine claim over from host %d", take_over)
                    return True, mine
                raw, _ = c.get(key)
                return False, EngineClaim.from_json(raw) if raw is not None else None
            if current.host_id != host_id:
                return False, current
            ok2, _ = c.transaction(
                compare=[c.transactions.value(key) == current_raw],
                success=[c.transactions.put(key, EngineClaim(host_id, hostname, current.since).to_json(),
                                            lease=lease_id)],
                failure=[])
            return ok2, current
        return self._call(txn)

    def release(self, host_id: int) -> bool:
        key = self.keys.engine_owner

        def txn(c):
            raw, _ = c.get(key)
            if raw is None or EngineClaim.from_json(raw).host_id != host_id:
                return False
            ok, _ = c.transaction(compare=[c.transactions.value(key) == raw],
                                  success=[c.transactions.delete(key)], failure=[])
            return ok
        return self._call(txn)

    # -- cluster-wide settings ------------------------------------------------------
    def set_global_maintenance(self, on: bool) -> None:
        key = self.keys.global_maintenance
        self._call(lambda c: c.put(key, GLOBAL_MAINTENANCE_ON) if on else c.delete(key))

    def get_shared_config(self, name: str) -> str | None:
        raw, _ = self._call(lambda c: c.get(self.keys.shared_config(name)))
        return raw.decode() if raw is not None else None

    def set_shared_config(self, name: str, value: str) -> int:
        def txn(c):
            raw, _ = c.get(self.keys.shared_config_version)
            version = (int(raw) if raw else 0) + 1
            c.transaction(compare=[], success=[
                c.transactions.put(self.keys.shared_config(name), value),
                c.transactions.put(self.keys.shared_config_version, str(version))], failure=[])
            return version
        return self._call(txn)

    def delete_record(self, host_id: int) -> bool:
        return bool(self._call(lambda c: c.delete(self.keys.host(host_id))))

    def close(self) -> None:
        with self._lock:
            self._close()
