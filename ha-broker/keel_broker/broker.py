"""The broker: monitors, this host's etcd session and host-id lease, and the
answers to the agent and the CLI (docs/ha-protocol.md).

The cycle thread does all periodic I/O and keeps a cached view of the
cluster; `status` answers from that cache, so a broker cut off from etcd or
storage still answers at once, and says so."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque

from keel_common.bmc import BmcError, BmcRecord, FenceRecord
from keel_common.config import HostConfig
from keel_common.keys import EngineClaim, EngineStatus, HostRecord
from keel_common.sdnotify import notify

from . import __version__
from .etcdsession import EtcdSession, EtcdUnavailable
from .monitors import Monitor, Result

log = logging.getLogger("keel.broker")

AGENT_ACTIONS = ("vm-start", "vm-shutdown", "vm-poweroff")


class RequestError(Exception):
    """A request the broker refuses; str() goes back to the client."""


def _host_id(req: dict) -> int:
    host_id = req.get("host_id")
    if not isinstance(host_id, int) or isinstance(host_id, bool) or not 1 <= host_id <= 2000:
        raise RequestError("host_id must be an integer from 1 to 2000")
    return host_id


def _record(req: dict, op: str, parse, what: str):
    """The request's `record` object parsed by `parse` (a from_json), or a one-line refusal."""
    rec = req.get("record")
    if not isinstance(rec, dict):
        raise RequestError(f"{op} needs a 'record' object")
    try:
        return parse(json.dumps(rec))
    except (BmcError, KeyError, TypeError, ValueError) as e:
        raise RequestError(f"bad {what}: {e}") from None


class Broker:
    def __init__(self, cfg: HostConfig, etcd: EtcdSession, lockspace, monitors: list[Monitor],
                 peer_leases=None):
        self.cfg = cfg
        self.etcd = etcd
        self.lockspace = lockspace
        self.peer_leases = peer_leases   # PeerLeases: other hosts' storage leases (None: not read)
        self.monitors = {m.name: m for m in monitors}
        self._lock = threading.Lock()
        self._cluster: dict = {"hosts": {}, "owner": None, "global_maintenance": False,
                               "shared_config_version": 0, "bmcs": {}, "fences": {}}
        self._cluster_ts: float | None = None
        self._agent: dict = {"score": 0.0, "state": "AgentStopped", "engine": EngineStatus().__dict__,
                             "stopped": True, "extra": {}}
        self._agent_ts: float | None = None
        self._requests: deque[dict] = deque(maxlen=16)
        self._record_written = False
        self._etcd_ok: bool | None = None
        self._stop = threading.Event()
        self._started = time.time()
        os.makedirs(cfg.state_dir, exist_ok=True)

    # -- local maintenance: a file, so it survives restarts of both daemons -----
    @property
    def _local_flag(self) -> str:
        return os.path.join(self.cfg.state_dir, "local-maintenance")

    def local_maintenance(self) -> bool:
        return os.path.exists(self._local_flag)

    def _set_local_maintenance(self, on: bool) -> None:
        if on:
            with open(self._local_flag, "w") as f:
                f.write(f"{time.time():.0f}\n")
        elif os.path.exists(self._local_flag):
            os.unlink(self._local_flag)

    # -- the periodic work ---------------------------------------------------------
    def agent_fresh(self) -> bool:
        """The agent published within the last few cycles."""
        with self._lock:
            return self._agent_ts is not None and time.time() - self._agent_ts <= 3 * self.cfg.timing.cycle + 5

    def own_record(self) -> HostRecord:
        agent_fresh = self.agent_fresh()
        with self._lock:
            agent = dict(self._agent)
        engine = self.monitors["engine_health"].result().value if "engine_health" in self.monitors else None
        # The engine status is what this host sees now; the agent's copy may be a cycle old.
        return HostRecord(
            host_id=self.cfg.host_id, hostname=self.cfg.hostname, timestamp=time.time(),
            score=float(agent["score"]) if agent_fresh else 0.0,
            state=agent["state"] if agent_fresh else "AgentStopped",
            engine=EngineStatus.from_dict(engine or agent.get("engine")),
            maintenance=self.local_maintenance(),
            stopped=bool(agent.get("stopped")) or not agent_fresh,
            config_version=self.cfg.config_version, address=self.cfg.address,
            lockspace_held=bool(self.lockspace and self.lockspace.held),
            extra=dict(agent.get("extra") or {}))

    def cycle(self) -> None:
        if self.lockspace is not None:
            self.lockspace.check()
        ok = self.etcd.keepalive()
        if ok:
            try:
                self.etcd.put_record(self.own_record())
                cluster = self.etcd.read_cluster()
                with self._lock:
                    self._cluster = cluster
                    self._cluster_ts = time.time()
                self._release_orphaned_claim(cluster["owner"])
            except EtcdUnavailable:
                ok = False
        if ok != self._etcd_ok:
            if ok:
                log.info("etcd reachable; publishing host %d's record", self.cfg.host_id)
            else:
                log.warning("etcd unreachable: %s", self.etcd.last_error)
            self._etcd_ok = ok

    def _release_orphaned_claim(self, owner) -> None:
        """A claim held for a dead agent while no engine VM runs here would
        keep every other host waiting; a running VM keeps its claim (the
        restarted agent adopts it)."""
        if owner is None or owner.host_id != self.cfg.host_id or self.agent_fresh():
            return
        if self._agent_ts is None and time.time() - self._started < 3 * self.cfg.timing.cycle + 5:
            return  # a freshly started broker: give the agent time to come up
        vm = self.monitors["engine_health"].result().value if "engine_health" in self.monitors else None
        if not vm or vm.get("vm") != "down":
            return
        if self.etcd.release(self.cfg.host_id):
            with self._lock:
                self._cluster = dict(self._cluster, owner=None)
            log.warning("released the engine claim: this host's agent has not reported for several "
                        "cycles and no engine VM runs here")

    def run(self) -> None:
        if self.peer_leases is not None:
            self.peer_leases.start()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.cycle()
            except Exception:
                log.exception("broker cycle failed; continuing")
            notify("WATCHDOG=1")  # only a loop that still cycles keeps systemd's watchdog fed
            self._stop.wait(max(0.0, self.cfg.timing.cycle - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self.peer_leases is not None:
            self.peer_leases.stop()

    # -- requests --------------------------------------------------------------------
    def handle(self, req: dict) -> dict:
        op = req.get("op")
        fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if fn is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        try:
            answer = fn(req)
        except RequestError as e:
            return {"ok": False, "error": str(e)}
        except EtcdUnavailable as e:
            return {"ok": False, "error": str(e)}
        answer["ok"] = True
        return answer

    def op_ping(self, req):
        return {"host_id": self.cfg.host_id, "version": __version__}

    def op_status(self, req):
        now = time.time()
        with self._lock:
            cluster = dict(self._cluster)
            cluster_ts = self._cluster_ts
        hosts = {str(h): r.to_dict() for h, r in cluster["hosts"].items()}
        # Our own record as it is now, even if etcd has not seen it.
        hosts[str(self.cfg.host_id)] = self.own_record().to_dict()
        monitors = {name: m.result().to_dict() for name, m in self.monitors.items()}
        monitors["etcd"] = Result(ok=self.etcd.lease_valid(now), value=self.etcd.lease_id,
                                  detail=self.etcd.last_error or "lease renewed",
                                  ts=self.etcd.last_renewed or 0.0).to_dict()
        owner = cluster["owner"]
        return {
            "host_id": self.cfg.host_id, "hostname": self.cfg.hostname, "now": now,
            "monitors": monitors,
            "lockspace": self.lockspace.to_dict() if self.lockspace else {"held": False, "since": None,
                                                                         "error": "not managed"},
            "etcd": {"ok": self.etcd.lease_valid(now), "lease_id": self.etcd.lease_id,
                     "last_renewed": self.etcd.last_renewed, "ttl": self.etcd.ttl,
                     "error": self.etcd.last_error, "cluster_read_at": cluster_ts},
            "hosts": hosts,
            "owner": owner.__dict__ if isinstance(owner, EngineClaim) else None,
            "global_maintenance": cluster["global_maintenance"],
            "local_maintenance": self.local_maintenance(),
            "shared_config_version": cluster["shared_config_version"],
            # Never a password: the agent that fences asks for one record (`bmc`).
            "bmcs": {str(h): r.public() for h, r in cluster.get("bmcs", {}).items()},
            "fences": {str(h): r.__dict__ for h, r in cluster.get("fences", {}).items()},
            "peer_leases": {str(h): list(v) for h, v in
                            (self.peer_leases.snapshot(now) if self.peer_leases else {}).items()},
            "timing": {"cycle": self.cfg.timing.cycle, "record_stale_after": self.cfg.timing.record_stale_after},
        }

    def op_publish(self, req):
        rec = req.get("record")
        if not isinstance(rec, dict):
            raise RequestError("publish needs a 'record' object")
        try:
            agent = {"score": float(rec.get("score", 0)), "state": str(rec.get("state", "")),
                     "engine": EngineStatus.from_dict(rec.get("engine")).__dict__,
                     "stopped": bool(rec.get("stopped", False)), "extra": dict(rec.get("extra") or {})}
        except (TypeError, ValueError) as e:
            raise RequestError(f"malformed record: {e}") from None
        with self._lock:
            changed = agent["state"] != self._agent.get("state")
            self._agent = agent
            self._agent_ts = time.time()
        written = False
        if changed and self.etcd.lease_valid():
            # A state change is news the other hosts should not wait a cycle for.
            try:
                self.etcd.put_record(self.own_record())
                written = True
            except EtcdUnavailable:
                pass
        return {"written": written}

    def op_claim(self, req):
        take_over = req.get("take_over")
        if take_over is not None and (isinstance(take_over, bool) or not isinstance(take_over, int)):
            raise RequestError("take_over must be a host id")
        won, owner = self.etcd.claim(self.cfg.host_id, self.cfg.hostname, take_over)
        if won:
            with self._lock:
                self._cluster = dict(self._cluster, owner=owner)
        return {"won": won, "owner": owner.__dict__ if owner else None}

    def op_release(self, req):
        released = self.etcd.release(self.cfg.host_id)
        if released:
            with self._lock:
                self._cluster = dict(self._cluster, owner=None)
            log.info("released the engine claim")
        return {"released": released}

    def op_set_maintenance(self, req):
        mode = req.get("mode")
        if mode not in ("global", "local", "none"):
            raise RequestError("mode must be one of: global, local, none")
        if mode == "global":
            self.etcd.set_global_maintenance(True)
            log.info("global maintenance set by the administrator")
        elif mode == "local":
            self._set_local_maintenance(True)
            log.info("local maintenance set on host %d by the administrator", self.cfg.host_id)
        else:
            self.etcd.set_global_maintenance(False)
            self._set_local_maintenance(False)
            log.info("maintenance cleared (global and local on host %d) by the administrator",
                     self.cfg.host_id)
        with self._lock:
            if mode != "local":
                self._cluster = dict(self._cluster, global_maintenance=(mode == "global"))
        return {}

    def op_request(self, req):
        action = req.get("action")
        if action not in AGENT_ACTIONS:
            raise RequestError("action must be one of: " + ", ".join(AGENT_ACTIONS))
        with self._lock:
            self._requests.append({"action": action, "ts": time.time()})
        log.info("request %s queued for the agent", action)
        return {"queued": True}

    def op_take_requests(self, req):
        with self._lock:
            reqs = list(self._requests)
            self._requests.clear()
        return {"requests": reqs}

    def op_get_shared_config(self, req):
        key = req.get("key")
        if not isinstance(key, str) or not key or "/" in key:
            raise RequestError("key must be a non-empty name without '/'")
        return {"value": self.etcd.get_shared_config(key)}

    def op_set_shared_config(self, req):
        key, value = req.get("key"), req.get("value")
        if not isinstance(key, str) or not key or "/" in key:
            raise RequestError("key must be a non-empty name without '/'")
        if not isinstance(value, str):
            raise RequestError("value must be a string")
        version = self.etcd.set_shared_config(key, value)
        log.info("shared config %s set to %r (version %d)", key, value, version)
        return {"version": version}

    def op_set_bmc(self, req):
        bmc = _record(req, "set_bmc", BmcRecord.from_json, "BMC record")
        self.etcd.put_bmc(bmc)
        with self._lock:
            self._cluster = dict(self._cluster, bmcs={**self._cluster.get("bmcs", {}), bmc.host_id: bmc})
        log.info("BMC of host %d set to %s by the administrator", bmc.host_id, bmc.label)
        return {}

    def op_remove_bmc(self, req):
        host_id = _host_id(req)
        removed = self.etcd.delete_bmc(host_id)
        with self._lock:
            bmcs = dict(self._cluster.get("bmcs", {}))
            bmcs.pop(host_id, None)
            self._cluster = dict(self._cluster, bmcs=bmcs)
        if removed:
            log.info("BMC of host %d removed by the administrator: the agents will not fence it", host_id)
        return {"removed": removed}

    def op_bmc(self, req):
        """One host's BMC record with its encrypted password: for the agent that fences it."""
        rec = self.etcd.get_bmc(_host_id(req))
        return {"record": None if rec is None else json.loads(rec.to_json())}

    def op_fence_record(self, req):
        fence = _record(req, "fence_record", FenceRecord.from_json, "fence record")
        self.etcd.put_fence(fence)
        with self._lock:
            self._cluster = dict(self._cluster, fences={**self._cluster.get("fences", {}), fence.host_id: fence})
        return {}

    def op_clean_metadata(self, req):
        host_id = req.get("host_id", self.cfg.host_id)
        if not isinstance(host_id, int) or host_id < 1:
            raise RequestError("host_id must be a positive integer")
        force = bool(req.get("force"))
        with self._lock:
            record = self._cluster["hosts"].get(host_id)
        now = time.time()
        live = record is not None and self.cfg.timing.record_is_live(record.timestamp, now)
        if host_id == self.cfg.host_id and not force:
            raise RequestError("refusing to clean this host's own metadata while its broker runs; "
                               "stop the agent and use --force-cleanup")
        if live and not force:
            raise RequestError(f"host {host_id}'s record is live (updated {now - record.timestamp:.0f} s ago); "
                               "use --force-cleanup to remove it anyway")
        removed = self.etcd.delete_record(host_id)
        log.info("metadata of host %d cleaned by the administrator", host_id)
        return {"removed": removed}

    def op_reinitialize_lockspace(self, req):
        from .lockspace import initialize_storage
        force = bool(req.get("force"))
        with self._lock:
            hosts = dict(self._cluster["hosts"])
            gm = self._cluster["global_maintenance"]
        now = time.time()
        live_others = [h for h, r in hosts.items()
                       if h != self.cfg.host_id and self.cfg.timing.record_is_live(r.timestamp, now)
                       and not r.stopped]
        if not force and not gm:
            raise RequestError("the lockspace can be reinitialized only in global maintenance "
                               "(or with --force)")
        if not force and live_others:
            raise RequestError("agents are running on hosts " + ", ".join(map(str, sorted(live_others)))
                               + "; stop them first (or use --force)")
        initialize_storage(self.cfg, force=True)
        log.warning("lockspace %s reinitialized by the administrator", self.cfg.storage.lockspace)
        return {}
