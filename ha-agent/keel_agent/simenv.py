"""A deterministic simulated cluster for the decision core.

One `World` holds N hosts, a simulated clock, a simulated etcd (host
leases with TTL, records, the engine claim, maintenance flags), simulated
sanlock (the engine lease, which outlives a dead holder host by
8*io_timeout+60 s) and simulated libvirt (engine VMs that boot, shut down
on ACPI and crash). Each host's agent is the real `Agent` with a
`SimHostEnvironment`. The world checks the safety invariants itself and
records every violation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from keel_common.bmc import FAILED, FENCED, FenceRecord
from keel_common.config import PROFILES, Timing
from keel_common.keys import EngineClaim, EngineStatus, HostRecord

from .agent import Agent
from .states import (BUSY, CHECK_LEASE, CLAIM, DESTROY_VM, ERROR, FENCE_HOST, LOCK, LOST, RELEASE,
                     SHUTDOWN_VM, START_VM, VM_ABSENT, VM_RUNNING, Action, Outcome, Snapshot)

ENGINE_MEMORY_MB = 4096


@dataclass
class SimVm:
    host: int
    booted_at: float
    rogue: bool = False          # started by hand, without the lease
    stop_at: float | None = None  # ACPI shutdown completes at this time
    healthy: bool = True         # the engine application answers its health URL
    seen_with_other: float | None = None  # for the two-engines invariant


@dataclass
class SimHost:
    host_id: int
    powered: bool = True
    network: bool = True         # cut: no etcd, no gateway, no HTTP to/from other hosts
    etcd: bool = True            # etcd alone unreachable
    storage: bool = True
    gateway: bool = True
    mgmt: bool = True
    broker: bool = True          # the broker daemon runs (it renews the etcd lease)
    memory_mb: float = 16384
    cpu_load: float = 0.1
    config_version: int = 1
    local_maintenance: bool = False
    start_failures: int = 0      # the next N starts fail
    agent: Agent | None = None
    generation: int = 1          # sanlock host generation, bumped at power on
    bmc: str = "none"            # none (not configured), ok, unreachable, lying (says off, stays on)
    released: bool = False       # its host lease was released on its behalf (after a fence)
    lockspace_renewed: float = 0.0
    etcd_renewed: float | None = None
    etcd_error: bool = False
    agent_pub: dict = field(default_factory=dict)
    agent_pub_at: float | None = None
    view: dict = field(default_factory=lambda: {"hosts": {}, "owner": None, "gm": False})
    requests: list[str] = field(default_factory=list)

    @property
    def reaches_etcd(self) -> bool:
        return self.powered and self.network and self.etcd and self.broker


class World:
    def __init__(self, n_hosts: int, constants: dict, timing: Timing | None = None,
                 boot_time: float = 5.0, shutdown_time: float = 2.0):
        self.timing = timing or PROFILES["fast"]
        self.k = constants
        self.now = 0.0
        self.boot_time = boot_time
        self.shutdown_time = shutdown_time
        self.acpi_ignored = False
        self.engine_broken = False   # no VM's engine ever answers healthy
        self.allow_late_stop = False  # a scenario may test sanlock alone against a late stop
        self.hosts = {i: SimHost(i) for i in range(1, n_hosts + 1)}
        self.records: dict[int, HostRecord] = {}
        self.owner: EngineClaim | None = None
        self.global_maintenance = False
        self.lease_holder: int | None = None   # host whose VM holds (or held) the engine lease
        self.vms: dict[int, SimVm] = {}
        self.fences: dict[int, FenceRecord] = {}
        self.log: list[str] = []
        self.violations: list[str] = []
        for h in self.hosts.values():
            h.etcd_renewed = self.now
            self.start_agent(h.host_id)

    # ------------------------------------------------------------ helpers
    def emit(self, who: str, level: str, msg: str) -> None:
        prefix = "" if level == "info" else f"{level.upper()} "
        self.log.append(f"{self.now:6.0f} {who}: {prefix}{msg}")

    def violation(self, msg: str) -> None:
        self.violations.append(f"{self.now:.0f}: {msg}")
        self.emit("sim", "error", f"INVARIANT VIOLATED: {msg}")

    def start_agent(self, hid: int) -> None:
        h = self.hosts[hid]
        h.agent = Agent(SimHostEnvironment(self, hid), self.k,
                        lambda level, msg, hid=hid: self.emit(f"host{hid}", level, msg))

    def lease_free_for(self, hid: int) -> tuple[bool, str]:
        """Can host `hid` acquire the engine lease now (sanlock's rules)?"""
        holder = self.lease_holder
        if holder is None or holder == hid:
            return True, ""
        h = self.hosts[holder]
        if holder in self.vms and not self.vms[holder].rogue and not h.released:
            return False, f"host {holder}"
        # The holder died without releasing: free once its host-id lease is
        # dead, or at once when a fencer released that lease on its behalf.
        if h.released or self.now >= h.lockspace_renewed + self.timing.lease_expiry_s:
            return True, ""
        return False, f"host {holder}"

    def kill_vm(self, hid: int, release: bool = True) -> None:
        vm = self.vms.pop(hid, None)
        if (vm is not None and release and self.lease_holder == hid and not vm.rogue
                and self.hosts[hid].storage):
            # The process died with its daemon alive: sanlock frees the lease,
            # if it can still write to the storage.
            self.lease_holder = None

    def health_seen_by(self, hid: int) -> tuple[str, str]:
        """The engine's health URL as probed from host `hid`."""
        me = self.hosts[hid]
        for vm in self.vms.values():
            if self.now < vm.booted_at:
                continue
            there = self.hosts[vm.host]
            if vm.host != hid and not (me.network and there.network):
                continue
            if not vm.healthy or self.engine_broken:
                return "bad", "health URL answered 503"
            return "good", ""
        return "bad", "health URL unreachable"

    def record_of(self, h: SimHost) -> HostRecord:
        fresh = h.agent_pub_at is not None and self.now - h.agent_pub_at <= 3 * self.timing.cycle + 5
        pub = h.agent_pub if fresh else {}
        health, reason = self.health_seen_by(h.host_id)
        up = h.host_id in self.vms
        return HostRecord(
            host_id=h.host_id, hostname=f"host{h.host_id}", timestamp=self.now,
            score=float(pub.get("score", 0)), state=pub.get("state", "AgentStopped"),
            engine=EngineStatus(vm="up" if up else "down", health=health,
                                detail="Up" if up else "Down", reason=reason),
            maintenance=h.local_maintenance, stopped=bool(pub.get("stopped", True)),
            config_version=h.config_version, lockspace_held=h.storage,
            extra=dict(pub.get("extra") or {}))

    # ------------------------------------------------------------ the clock
    def tick(self) -> None:
        """One cycle of simulated time: physics, brokers, then agents in host order."""
        t = self.timing
        for hid, vm in list(self.vms.items()):
            if vm.stop_at is not None and self.now >= vm.stop_at:
                self.emit("sim", "info", f"engine VM on host{hid} powered off (ACPI)")
                self.kill_vm(hid)
        for h in self.hosts.values():
            if not h.powered:
                continue
            if h.released and h.storage:
                # Its next renewal finds the host lease released by another
                # host: sanlock kills the lease holders and the broker joins
                # the lockspace again with a new generation.
                if h.host_id in self.vms:
                    self.emit("sim", "info", f"sanlock on host{h.host_id} found its host lease released: "
                              "killed the engine VM")
                    self.kill_vm(h.host_id, release=False)
                h.released, h.generation = False, h.generation + 1
                if self.lease_holder == h.host_id:
                    self.lease_holder = None   # held under the old generation: void now
            if h.storage:
                h.lockspace_renewed = self.now
            elif hid_vm_killable(self, h):
                # sanlock kills the lease holders after 8 io_timeouts without storage
                self.emit("sim", "info", f"sanlock on host{h.host_id} killed the engine VM "
                          "(lockspace renewal failed)")
                self.kill_vm(h.host_id, release=False)
            if h.reaches_etcd:
                h.etcd_renewed = self.now
                h.etcd_error = False
            else:
                h.etcd_error = True
        self.expire_leases()
        for h in self.hosts.values():
            if h.reaches_etcd:
                self.records[h.host_id] = self.record_of(h)
                h.view = {"hosts": dict(self.records), "owner": self.owner, "gm": self.global_maintenance}
        for hid in sorted(self.hosts):
            h = self.hosts[hid]
            if h.powered and h.agent is not None:
                h.agent.cycle()
        self.check_invariants()
        self.now += t.cycle

    def expire_leases(self) -> None:
        for h in self.hosts.values():
            if h.etcd_renewed is not None and self.now - h.etcd_renewed >= self.timing.etcd_lease_ttl:
                h.etcd_renewed = None
                self.records.pop(h.host_id, None)
                if self.owner is not None and self.owner.host_id == h.host_id:
                    self.emit("sim", "info", f"etcd lease of host{h.host_id} expired: engine claim removed")
                    self.owner = None
            if h.etcd_renewed is None and h.reaches_etcd:
                h.etcd_renewed = self.now  # the broker grants a new lease

    def check_invariants(self) -> None:
        legit = [hid for hid, vm in self.vms.items() if not vm.rogue]
        if len(legit) > 1:
            self.violation(f"two engine VMs started by agents: hosts {legit}")
        if len(self.vms) > 1 and not self.global_maintenance:
            for hid, vm in self.vms.items():
                if vm.rogue:
                    vm.seen_with_other = vm.seen_with_other if vm.seen_with_other is not None else self.now
                    if self.now - vm.seen_with_other > 5 * self.timing.cycle:
                        self.violation(f"second engine VM on host{hid} not resolved")
        for hid in legit:
            h = self.hosts[hid]
            if not self.global_maintenance and h.etcd_renewed is None and not self.allow_late_stop:
                self.violation(f"engine VM on host{hid} still running after its etcd lease expired")


def hid_vm_killable(world: World, h: SimHost) -> bool:
    return (h.host_id in world.vms and world.lease_holder == h.host_id
            and world.now - h.lockspace_renewed >= 8 * world.timing.io_timeout)


class SimHostEnvironment:
    """The Environment of one simulated host (what its broker, libvirt and
    sanlock daemon would answer)."""

    def __init__(self, world: World, host_id: int):
        self.w = world
        self.hid = host_id

    @property
    def h(self) -> SimHost:
        return self.w.hosts[self.hid]

    def observe(self) -> Snapshot:
        w, h = self.w, self.h
        if not h.broker:
            # Only libvirt answers: the agent knows its VM and nothing else.
            return Snapshot(now=w.now, host_id=self.hid, timing=w.timing, engine_memory_mb=ENGINE_MEMORY_MB,
                            config_version=h.config_version, broker_ok=False,
                            vm=VM_RUNNING if self.hid in w.vms else VM_ABSENT)
        health, reason = w.health_seen_by(self.hid)
        up = self.hid in w.vms
        hosts = dict(h.view["hosts"])
        hosts[self.hid] = w.record_of(h)  # the broker answers with our record as of now
        monitors = {
            "gateway": {"ok": h.network and h.gateway, "value": 1.0 if h.network and h.gateway else 0.0},
            "mgmt_network": {"ok": h.mgmt},
            "memory": {"ok": True, "value": h.memory_mb},
            "cpu_load": {"ok": True, "value": h.cpu_load},
            "storage": {"ok": h.storage},
            "engine_health": {"ok": health == "good", "value": {
                "vm": "up" if up else "down", "health": health,
                "detail": "Up" if up else "Down", "reason": reason}},
        }
        owners = None
        delta = {}
        if h.storage:
            free, _ = w.lease_free_for(-1)
            owners = () if free else (w.lease_holder,)
            delta = {o.host_id: (w.now - o.lockspace_renewed, o.generation)
                     for o in w.hosts.values() if not o.released}
        requests, h.requests = tuple(h.requests), []
        return Snapshot(
            now=w.now, host_id=self.hid, timing=w.timing, engine_memory_mb=ENGINE_MEMORY_MB,
            config_version=h.config_version, broker_ok=True, monitors=monitors,
            lockspace_held=h.storage, etcd_ok=not h.etcd_error and h.etcd_renewed is not None,
            etcd_last_renewed=h.etcd_renewed, etcd_ttl=w.timing.etcd_lease_ttl,
            hosts=hosts, owner=h.view["owner"], global_maintenance=h.view["gm"],
            local_maintenance=h.local_maintenance, vm=VM_RUNNING if up else VM_ABSENT,
            lease_owners=owners, requests=requests, delta_leases=delta,
            bmcs=frozenset(o.host_id for o in w.hosts.values() if o.bmc != "none"), fences=dict(w.fences))

    def execute(self, actions: list[Action]) -> tuple[Outcome, ...]:
        done = []
        for a in actions:
            o = self._run(a)
            done.append(o)
            if o.ok and o.kind in (START_VM, SHUTDOWN_VM, DESTROY_VM):
                self.w.emit(f"host{self.hid}", "info", f"{a.kind}: ok")
            if not o.ok:
                break
        return tuple(done)

    def _run(self, a: Action) -> Outcome:
        w, h = self.w, self.h
        if a.kind in (CLAIM, RELEASE) and not h.broker:
            return Outcome(a.kind, False, ERROR, "the HA broker is not running")
        if a.kind == CLAIM:
            if not h.reaches_etcd or h.etcd_renewed is None:
                return Outcome(a.kind, False, ERROR, "etcd unreachable")
            if w.owner is None or (a.target is not None and w.owner.host_id == a.target):
                w.owner = EngineClaim(self.hid, f"host{self.hid}", w.now)
            elif w.owner.host_id != self.hid:
                return Outcome(a.kind, False, LOST, f"owned by host {w.owner.host_id}")
            h.view["owner"] = w.owner
            return Outcome(a.kind, True)
        if a.kind == RELEASE:
            if not h.reaches_etcd:
                return Outcome(a.kind, False, ERROR, "etcd unreachable")
            if w.owner is not None and w.owner.host_id == self.hid:
                w.owner = None
            h.view["owner"] = w.owner
            return Outcome(a.kind, True)
        if a.kind == CHECK_LEASE:
            if not h.storage:
                return Outcome(a.kind, False, ERROR, "sanlock: storage unreachable")
            free, who = w.lease_free_for(self.hid)
            return Outcome(a.kind, True) if free else Outcome(a.kind, False, BUSY, who)
        if a.kind == START_VM:
            if w.owner is None or w.owner.host_id != self.hid:
                w.violation(f"host{self.hid} started the engine VM without holding the claim")
            if self.hid in w.vms:
                return Outcome(a.kind, False, ERROR, "domain already exists")
            if h.start_failures > 0:
                h.start_failures -= 1
                return Outcome(a.kind, False, ERROR, "qemu exited during start (injected)")
            free, who = w.lease_free_for(self.hid)
            if not free or not h.storage:
                return Outcome(a.kind, False, LOCK, f"Failed to acquire lock: Lease is held by {who or 'nobody reachable'}")
            w.lease_holder = self.hid
            w.vms[self.hid] = SimVm(self.hid, booted_at=w.now + w.boot_time)
            return Outcome(a.kind, True)
        if a.kind == SHUTDOWN_VM:
            vm = w.vms.get(self.hid)
            if vm is not None and vm.stop_at is None and not w.acpi_ignored:
                vm.stop_at = w.now + w.shutdown_time
            return Outcome(a.kind, True)
        if a.kind == DESTROY_VM:
            w.kill_vm(self.hid)
            return Outcome(a.kind, True)
        if a.kind == FENCE_HOST:
            return self._fence(a)
        return Outcome(a.kind, False, ERROR, f"unknown action {a.kind}")

    def _fence(self, a: Action) -> Outcome:
        """What the real environment does: power off through the BMC, and only
        once the BMC says off, release the host's host lease; a record either way."""
        w = self.w
        t = w.hosts[a.target]
        me = f"host{self.hid}"
        if t.bmc == "none":
            return Outcome(a.kind, False, ERROR, f"host {a.target} has no BMC")
        w.emit(me, "info", f"fence_host: powering host{a.target} off through its BMC")
        if t.bmc == "unreachable":
            w.fences[a.target] = FenceRecord(a.target, self.hid, FAILED, t.generation, w.now, w.now,
                                             "the BMC did not answer")
            return Outcome(a.kind, False, ERROR, f"host {a.target}: the BMC did not answer")
        if t.bmc == "ok" and t.powered:
            t.powered, t.agent = False, None
            w.kill_vm(a.target, release=False)
        t.released = True
        w.fences[a.target] = FenceRecord(a.target, self.hid, FENCED, t.generation, w.now, w.now,
                                         "power off confirmed by the BMC; host lease released")
        w.emit(me, "info", f"fence_host: host{a.target} off (confirmed by its BMC); its host lease released")
        return Outcome(a.kind, True)

    def publish(self, fields: dict) -> bool:
        w, h = self.w, self.h
        if not h.broker:
            return False
        changed = fields.get("state") != h.agent_pub.get("state")
        h.agent_pub, h.agent_pub_at = dict(fields), w.now
        if changed and h.reaches_etcd:
            # like the broker: a state change is written at once
            w.records[self.hid] = w.record_of(h)
            return True
        return False
