"""The real environment: the broker (for etcd, monitors and maintenance
flags), libvirt (the engine VM on this host) and sanlock (the engine lease).

The agent never talks to etcd itself. Every call is bounded: the broker
client has a timeout, libvirt and sanlock answer locally. Failures become
Outcomes (one line for the log), never exceptions out of a cycle."""
from __future__ import annotations

import json
import logging
import os
import time

from keel_common import ipmi, libvirt_states
from keel_common.bmc import BmcCredentials, BmcRecord, ClusterKey, FenceRecord
from keel_common.bounded import BoundedCaller, CallTimeout
from keel_common.brokerclient import BrokerClient, BrokerError
from keel_common.config import HostConfig
from keel_common.keys import EngineClaim, HostRecord
from keel_common.sanlock_disk import read_delta_leases, release_host_id

from .domainxml import engine_domain_xml
from .fence import FenceSteps, PowerOff, fence_host
from .states import (BUSY, CHECK_LEASE, CLAIM, DESTROY_VM, ERROR, FENCE_HOST, LOCK, LOST, RELEASE,
                     SHUTDOWN_VM, START_VM, VM_ABSENT, VM_RUNNING, VM_UNKNOWN, Action, Outcome, Snapshot)

log = logging.getLogger("keel-ha-agent")

# libvirt has no call timeouts of its own (see bounded.py). A start may take
# long the first time libvirtd probes qemu; a query should never.
LIBVIRT_QUERY_TIMEOUT = 5.0
LIBVIRT_STOP_TIMEOUT = 15.0
LIBVIRT_START_TIMEOUT = 60.0
# A BMC's power-off (pyghmi in a child process, killed at the deadline) and
# the release of the dead host's lease; the agent's cycle waits for both.
BMC_OFF_DEADLINE = 20.0


def _import_libvirt():
    import libvirt  # python3-libvirt (system site packages)
    # libvirt prints every error to stderr by default; we report them ourselves.
    libvirt.registerErrorHandler(lambda *_: None, None)
    return libvirt


def _actions(queued) -> tuple[str, ...]:
    """The broker queues requests as {"action": "vm-start", "ts": ...}."""
    out = []
    for r in queued or ():
        action = r.get("action") if isinstance(r, dict) else r
        if isinstance(action, str):
            out.append(action)
    return tuple(out)


class LeaseReader:
    """Who holds the engine lease, through this host's sanlock daemon."""

    def __init__(self, cfg: HostConfig):
        self.cfg = cfg
        self.caller = BoundedCaller("sanlock")
        # sanlock reads the lease from storage: allow it a couple of io_timeouts.
        self.timeout = max(5.0, 2.0 * cfg.timing.io_timeout)
        if cfg.storage.sanlock_run_dir:
            # libsanlock finds its daemon through this variable at each call.
            os.environ["SANLOCK_RUN_DIR"] = cfg.storage.sanlock_run_dir

    def live_owners(self) -> tuple[int, ...]:
        return self.caller.call(self.timeout, self._live_owners)

    def _live_owners(self) -> tuple[int, ...]:
        """Host ids whose hold on the lease is still valid. An owner whose
        host sanlock reports dead or free (or re-joined with a new
        generation) no longer blocks an acquire."""
        import sanlock
        st = self.cfg.storage
        owners = sanlock.read_resource_owners(st.lockspace.encode(), st.lease_name.encode(),
                                              [(st.lease_path, 0)])
        # The daemon's view of other hosts is as old as its last renewal (up
        # to 2 io_timeouts): a host lease just released by a fence is read
        # from the disk, as sanlock's own acquire does.
        on_disk = read_delta_leases(st.lockspace_path) if owners and st.lockspace_path else {}
        live = []
        for owner in owners:
            hid = int(owner["host_id"])
            disk = on_disk.get(hid)
            if disk is not None and (disk.timestamp == 0 or disk.generation != owner.get("generation")):
                continue
            try:
                hosts = sanlock.get_hosts(st.lockspace.encode(), hid)
            except sanlock.SanlockException:
                hosts = []
            status = hosts[0] if hosts else None
            if status is not None and (status["flags"] in (sanlock.HOST_DEAD, sanlock.HOST_FREE)
                                       or status.get("generation") != owner.get("generation")):
                continue
            live.append(hid)
        return tuple(sorted(live))


class RealEnvironment:
    def __init__(self, cfg: HostConfig, broker: BrokerClient | None = None, leases: LeaseReader | None = None):
        self.cfg = cfg
        timeout = min(10.0, max(2.0, 2 * cfg.timing.cycle))
        self.broker = broker or BrokerClient(cfg.broker_socket, timeout=timeout)
        self.leases = leases or LeaseReader(cfg)
        self.libvirt = _import_libvirt()
        self.virt = BoundedCaller("libvirt")
        self.storage = BoundedCaller("shared storage")
        self._conn = None

    # ------------------------------------------------------------ libvirt
    def _connection(self):
        if self._conn is not None:
            try:
                if self._conn.isAlive():
                    return self._conn
            except self.libvirt.libvirtError:
                pass
            self._conn = None
        self._conn = self.libvirt.open(self.cfg.engine.libvirt_uri)
        return self._conn

    def _domain(self):
        try:
            return self._connection().lookupByName(self.cfg.engine.name)
        except self.libvirt.libvirtError as e:
            if e.get_error_code() == self.libvirt.VIR_ERR_NO_DOMAIN:
                return None
            self._conn = None
            raise

    def _state_code(self):
        dom = self._domain()
        return None if dom is None else dom.state()[0]

    def vm_state(self) -> str:
        try:
            state = self.virt.call(LIBVIRT_QUERY_TIMEOUT, self._state_code)
        except (self.libvirt.libvirtError, CallTimeout) as e:
            log.debug("libvirt: %s", e)
            return VM_UNKNOWN
        if state is None:
            return VM_ABSENT
        # running, paused, blocked, shutting down: qemu still holds the lease
        return VM_RUNNING if libvirt_states.qemu_runs(state) else VM_ABSENT

    # ------------------------------------------------------------ observe
    def observe(self) -> Snapshot:
        cfg = self.cfg
        base = dict(host_id=cfg.host_id, timing=cfg.timing, engine_memory_mb=cfg.engine.memory_mb,
                    config_version=cfg.config_version, vm=self.vm_state())
        try:
            st = self.broker.call("status")
            requests = _actions(self.broker.call("take_requests").get("requests"))
        except BrokerError as e:
            log.debug("broker: %s", e)
            return Snapshot(now=time.time(), broker_ok=False, **base)
        try:
            owners = self.leases.live_owners()
        except Exception as e:  # sanlock daemon down, storage gone: unknown, not fatal
            log.debug("sanlock: %s", e)
            owners = None
        etcd = st.get("etcd") or {}
        hosts = {}
        for hid, rec in (st.get("hosts") or {}).items():
            try:
                hosts[int(hid)] = HostRecord.from_json(json.dumps(rec))
            except (KeyError, ValueError, TypeError):
                log.debug("ignoring malformed host record %s", hid)
        owner = st.get("owner")
        try:
            claim = EngineClaim.from_json(json.dumps(owner)) if owner else None
        except (KeyError, ValueError, TypeError):
            claim = None
        fences = {}
        for hid, rec in (st.get("fences") or {}).items():
            try:
                fences[int(hid)] = FenceRecord.from_json(json.dumps(rec))
            except (KeyError, ValueError, TypeError):
                log.debug("ignoring malformed fence record %s", hid)
        peer_leases = {}
        for hid, value in (st.get("peer_leases") or {}).items():
            try:
                peer_leases[int(hid)] = (float(value[0]), int(value[1]))
            except (IndexError, ValueError, TypeError):
                log.debug("ignoring malformed lease reading %s", hid)
        return Snapshot(
            now=float(st.get("now") or time.time()), broker_ok=True,
            monitors=st.get("monitors") or {},
            lockspace_held=bool((st.get("lockspace") or {}).get("held")),
            # "ok" only says the lease has not expired yet; an error says the
            # last renewal failed, which is what the agent must react to.
            etcd_ok=bool(etcd.get("ok")) and not etcd.get("error"),
            etcd_last_renewed=etcd.get("last_renewed"),
            etcd_ttl=etcd.get("ttl"),
            hosts=hosts, owner=claim,
            global_maintenance=bool(st.get("global_maintenance")),
            local_maintenance=bool(st.get("local_maintenance")),
            lease_owners=owners, requests=requests, delta_leases=peer_leases,
            bmcs=frozenset(int(h) for h in (st.get("bmcs") or {})), fences=fences, **base)

    # ------------------------------------------------------------ act
    def execute(self, actions: list[Action]) -> tuple[Outcome, ...]:
        done = []
        for action in actions:
            outcome = self._run(action)
            done.append(outcome)
            if not outcome.ok:
                break
        return tuple(done)

    def _run(self, action: Action) -> Outcome:
        kind = action.kind
        try:
            if kind == CLAIM:
                ans = (self.broker.call("claim") if action.target is None
                       else self.broker.call("claim", take_over=int(action.target)))
                if ans.get("won"):
                    return Outcome(kind, True)
                owner = ans.get("owner") or {}
                return Outcome(kind, False, LOST, f"owned by host {owner.get('host_id', '?')}")
            if kind == RELEASE:
                self.broker.call("release")
                return Outcome(kind, True)
            if kind == CHECK_LEASE:
                owners = [h for h in self.leases.live_owners() if h != self.cfg.host_id]
                if owners:
                    return Outcome(kind, False, BUSY, "host " + ",".join(map(str, owners)))
                return Outcome(kind, True)
            if kind == START_VM:
                xml = engine_domain_xml(self.cfg)
                self.virt.call(LIBVIRT_START_TIMEOUT, lambda: self._connection().createXML(xml, 0))
                return Outcome(kind, True)
            if kind == FENCE_HOST:
                return fence_host(self.cfg.host_id, int(action.target), action.reason, self._fence_steps())
            if kind in (SHUTDOWN_VM, DESTROY_VM):
                if not self.virt.call(LIBVIRT_STOP_TIMEOUT, self._stop, kind == DESTROY_VM):
                    return Outcome(kind, True, detail="not running")
                return Outcome(kind, True)
        except (BrokerError, CallTimeout) as e:
            return Outcome(kind, False, ERROR, str(e))
        except self.libvirt.libvirtError as e:
            msg = str(e).splitlines()[0] if str(e) else "libvirt error"
            code = LOCK if "Failed to acquire lock" in msg else ERROR
            return Outcome(kind, False, code, msg)
        except Exception as e:  # sanlock errors and the like: one line, not a crash
            return Outcome(kind, False, ERROR, f"{e.__class__.__name__}: {e}")
        return Outcome(kind, False, ERROR, f"unknown action {kind}")

    # ------------------------------------------------------------ fencing
    def _fence_steps(self) -> FenceSteps:
        st = self.cfg.storage
        storage_timeout = max(5.0, 4.0 * self.cfg.timing.io_timeout)

        def generation(target: int) -> int:
            leases = self.storage.call(storage_timeout, read_delta_leases, st.lockspace_path)
            if target not in leases:
                raise RuntimeError(f"no storage lease of host {target} in {st.lockspace_path}")
            return leases[target].generation

        def bmc(target: int) -> BmcCredentials:
            raw = self.broker.call("bmc", host_id=target).get("record")
            if raw is None:
                raise RuntimeError("no BMC configured any more")
            return ClusterKey(self.cfg.cluster_key_file).credentials(BmcRecord.from_json(json.dumps(raw)))

        def power_off(creds: BmcCredentials) -> PowerOff:
            res = ipmi.run_operation(creds, "off", deadline=BMC_OFF_DEADLINE)
            # ok means the worker saw "off" reported after the command; check the state too.
            return PowerOff(res.ok and res.power == "off", f"{creds.label}: {res.describe()}")

        def release(target: int) -> None:
            release_host_id(st.lockspace, target, st.lockspace_path, timeout=storage_timeout)

        def record(rec: FenceRecord) -> None:
            self.broker.call("fence_record", record=rec.__dict__)

        return FenceSteps(generation=generation, bmc=bmc, power_off=power_off, release_lease=release,
                          record=record, clock=time.time)

    def _stop(self, force: bool) -> bool:
        dom = self._domain()
        if dom is None:
            return False
        dom.destroy() if force else dom.shutdown()
        return True

    def publish(self, fields: dict) -> bool:
        try:
            return bool(self.broker.call("publish", record=fields).get("written"))
        except BrokerError as e:
            log.debug("publish: %s", e)
            return False
