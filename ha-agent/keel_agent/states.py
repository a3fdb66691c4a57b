"""The vocabulary of the decision core: states, what the agent sees each
cycle (Snapshot), what it remembers between cycles (Memory), what it asks
the environment to do (Action) and what came of it (Outcome). Pure data."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from keel_common.bmc import FenceRecord
from keel_common.config import Timing
from keel_common.keys import EngineClaim, HostRecord


class State(str, enum.Enum):
    AgentStarting = "AgentStarting"          # first cycle after the agent started
    ReInitialize = "ReInitialize"            # re-evaluate from scratch (after maintenance)
    EngineDown = "EngineDown"                # not running here; may start it if best
    EngineStart = "EngineStart"              # claiming + starting the VM here
    EngineStarting = "EngineStarting"        # VM running here, engine not healthy yet
    EngineUp = "EngineUp"                    # VM running here and healthy
    EngineUpBadHealth = "EngineUpBadHealth"  # VM running here, health check failing
    EngineMaybeAway = "EngineMaybeAway"      # another host claims it but does not show it up
    EngineUnexpectedlyDown = "EngineUnexpectedlyDown"  # VM vanished here without our stop
    EngineStop = "EngineStop"                # graceful (ACPI) shutdown in progress
    EngineForceStop = "EngineForceStop"      # destroy in progress
    GlobalMaintenance = "GlobalMaintenance"  # agents do not touch the engine VM
    LocalMaintenance = "LocalMaintenance"    # this host takes no part (score 0)

    def __str__(self) -> str:
        return self.value


# Local VM states as the environment reports them (libvirt on this host).
VM_RUNNING = "running"   # domain exists and is running (or paused: it still holds the lease)
VM_ABSENT = "absent"     # no domain / shut off
VM_UNKNOWN = "unknown"   # libvirt unreachable

# Action kinds. The environment runs a cycle's actions in order and stops at
# the first failure, so [claim, check_lease, start_vm] never starts without both.
CLAIM, RELEASE, CHECK_LEASE, START_VM, SHUTDOWN_VM, DESTROY_VM = (
    "claim", "release", "check_lease", "start_vm", "shutdown_vm", "destroy_vm")
# Power a dead engine host off through its BMC and, once the BMC confirms it
# is off, release its sanlock host lease (so the engine lease it held is free
# now, not after sanlock's host-dead time). Only the engine claim's holder
# fences: the claim makes the fencer unique. A claim with a target takes the
# claim over from that (dead) host, so the fence need not wait for its etcd
# lease to expire; of two agents trying, one wins the compare-and-swap.
FENCE_HOST = "fence_host"
START_SEQUENCE = (CLAIM, CHECK_LEASE, START_VM)

# Outcome codes beyond ok.
LOST = "lost"          # claim: another host owns it
BUSY = "busy"          # check_lease: the engine lease is held by a live host
LOCK = "lock"          # start_vm: libvirt/sanlock refused the lease (lost race)
ERROR = "error"        # anything else


@dataclass(frozen=True)
class Action:
    kind: str
    reason: str = ""
    target: int | None = None        # the host a fence_host acts on, or whose claim a claim takes over


@dataclass(frozen=True)
class Outcome:
    kind: str
    ok: bool
    code: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Snapshot:
    now: float                       # the broker's (or simulator's) clock
    host_id: int
    timing: Timing
    engine_memory_mb: float
    config_version: int = 1
    broker_ok: bool = True
    monitors: dict = field(default_factory=dict)   # name -> {"ok", "value"}
    lockspace_held: bool = False
    etcd_ok: bool = False
    etcd_last_renewed: float | None = None
    etcd_ttl: float | None = None
    hosts: dict[int, HostRecord] = field(default_factory=dict)
    owner: EngineClaim | None = None
    global_maintenance: bool = False
    local_maintenance: bool = False
    vm: str = VM_UNKNOWN             # this host's engine VM, from libvirt
    lease_owners: tuple[int, ...] | None = None  # hosts holding the engine lease; None: unknown
    requests: tuple[str, ...] = ()   # CLI requests: vm-start / vm-shutdown / vm-poweroff
    outcomes: tuple[Outcome, ...] = ()  # what came of the previous cycle's actions
    # host id -> (seconds its delta lease has stood still, its sanlock generation),
    # read from the shared storage; hosts that released their lease are absent
    delta_leases: dict[int, tuple[float, int]] = field(default_factory=dict)
    bmcs: frozenset[int] = frozenset()   # hosts whose BMC every agent can use
    fences: dict[int, FenceRecord] = field(default_factory=dict)  # last fence of each host


@dataclass(frozen=True)
class Memory:
    """What the agent carries from one cycle to the next (lost on restart,
    on purpose: a restarted agent re-derives everything and adopts)."""
    state: State = State.AgentStarting
    since: float = 0.0
    failures: tuple[float, ...] = ()      # times of failed starts / crashes
    backoff_until: float = 0.0
    stop_deadline: float | None = None    # when a graceful stop turns forced
    stop_reason: str = ""
    after_stop: State | None = None       # where a stop ends (EngineDown / LocalMaintenance)
    lease_wait_until: float | None = None
    fence_settle_until: float | None = None  # after our fence: no start before this
    fence_check_at: float | None = None   # when a dead claim holder's silences will be long enough
    last_renewed: float | None = None     # last etcd renewal seen (survives a broker outage)
    note: str = ""                        # last "waiting" note logged (log once)
    score_note: str | None = None         # penalties of the last score logged
    alarm: str = ""                       # last alarm logged


@dataclass
class Decision:
    memory: Memory
    actions: list[Action]
    log: list[tuple[str, str]]            # (level, message)
    score: int
    publish: dict                         # the record fields for the broker's publish
