"""What to do about a host that stopped answering: pure decisions, no I/O.

The one safety rule everything here serves: a highly available VM is
restarted elsewhere only when it cannot still be running on the failed host,
that is after that host's power-off was confirmed (by a BMC or by an admin
who confirms the host was rebooted), or when the VM's own sanlock lease on
the storage domain has expired.  Every other path waits or skips, with a
reason that ends up in an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# fence states of the failed host, as the failover service tracks them
FENCE_NONE = "none"            # not attempted (yet)
FENCE_CONFIRMED = "confirmed"  # BMC confirmed off, or admin confirmed the reboot
FENCE_FAILED = "failed"        # attempted, power-off not confirmed

# action kinds
WAIT = "wait"
SKIP_FENCING = "skip_fencing"
FENCE = "fence"
MARK_DOWN = "mark_down"
RESTART_VM = "restart_vm"
NO_TARGET = "no_target"
HOLD_VM = "hold_vm"            # HA VM kept waiting: no fence confirmed, lease not expired


@dataclass(frozen=True)
class HostView:
    id: str
    name: str
    status: str                       # the engine's host status: up, non_responsive, down, ...
    cluster_id: str | None = None
    free_memory_mb: int = 0
    unresponsive_since: float | None = None
    renews_storage_lease: bool | None = None   # None: unknown
    has_fence_agents: bool = False
    grace_period: float | None = None  # overrides the config's (a host that is booting)
    liveness_pending: bool = False    # storage lease watched, but too briefly to tell yet


@dataclass(frozen=True)
class HaVm:
    id: str
    name: str
    memory_mb: int
    priority: int = 1                 # higher first (oVirt: low=1, medium=50, high=100)
    lease_expired: bool = False       # its sanlock VM lease is provably free
    released: bool = False            # marked down after its host was confirmed off
    has_lease: bool = True            # holds a VM lease at all (False: only a fence frees it)


@dataclass(frozen=True)
class PolicyConfig:
    grace_period: float = 60.0        # seconds non-responsive before acting
    max_unresponsive_share: float = 0.5   # above this share of the cluster: a network problem
    fencing_enabled: bool = True

    def __post_init__(self):
        if self.grace_period < 0:
            raise ValueError("grace period must not be negative")
        if not 0 < self.max_unresponsive_share <= 1:
            raise ValueError("max unresponsive share must be in (0, 1]")


@dataclass(frozen=True)
class Action:
    kind: str
    reason: str
    vm_id: str | None = None
    target_host_id: str | None = None
    priority: int = 0
    waiting_for: str | None = None     # WAIT: "grace" (the grace period) or "liveness" (its storage lease)


@dataclass(frozen=True)
class Snapshot:
    now: float
    host: HostView                    # the host being judged
    cluster_hosts: tuple[HostView, ...]   # every host of its cluster, itself included
    ha_vms: tuple[HaVm, ...] = ()     # HA VMs the engine believes ran on it
    fence_state: str = FENCE_NONE
    extra: dict = field(default_factory=dict)


def agent_fence_for(records, bmcs, last_seen: float):
    """The HA agents' fence that holds this host down, if any: a completed
    fence ("fenced") through one of this host's own BMCs ((address, port)
    pairs of its fence agents), made after the engine last heard from it, so
    a fence of an earlier failure never counts for this one."""
    matching = [r for r in records if r.state == "fenced" and r.ended is not None and r.ended > last_seen
                and (r.bmc_address, r.bmc_port) in bmcs]
    return max(matching, key=lambda r: r.ended, default=None)


def unresponsive_share(hosts) -> tuple[int, int]:
    """(non-responsive, counted) among hosts that are expected to answer."""
    counted = [h for h in hosts if h.status in ("up", "non_responsive", "connecting")]
    return sum(1 for h in counted if h.status == "non_responsive"), len(counted)


def fencing_skip_reason(snap: Snapshot, cfg: PolicyConfig) -> str | None:
    """Why the host must not be fenced now, or None when fencing is allowed."""
    host = snap.host
    if not cfg.fencing_enabled:
        return "fencing is disabled in the cluster's fencing policy"
    if host.renews_storage_lease:
        return (f"host {host.name} still renews its storage lease: it is alive and only "
                "its management link is down")
    bad, counted = unresponsive_share(snap.cluster_hosts)
    if counted and bad / counted > cfg.max_unresponsive_share:
        return (f"{bad} of {counted} hosts of the cluster are non-responsive "
                f"(more than {cfg.max_unresponsive_share:.0%}): a network problem is likelier "
                "than host failures, so no host is fenced")
    if not host.has_fence_agents:
        return f"host {host.name} has no fence agents configured"
    return None


def place_vms(vms, candidates, failed_host_id: str | None) -> list[Action]:
    """Greedy placement: highest priority first, each on the up host with most free memory."""
    free = {h.id: h.free_memory_mb for h in candidates
            if h.status == "up" and h.id != failed_host_id}
    names = {h.id: h.name for h in candidates}
    actions = []
    for vm in sorted(vms, key=lambda v: (-v.priority, -v.memory_mb, v.name)):
        fitting = [hid for hid, mb in free.items() if mb >= vm.memory_mb]
        if not fitting:
            actions.append(Action(NO_TARGET, vm_id=vm.id,
                                  reason=f"no up host has {vm.memory_mb} MiB free for HA VM {vm.name}"))
            continue
        target = max(fitting, key=lambda hid: (free[hid], hid))
        free[target] -= vm.memory_mb
        actions.append(Action(RESTART_VM, vm_id=vm.id, target_host_id=target, priority=vm.priority,
                              reason=f"restart HA VM {vm.name} (priority {vm.priority}) on {names[target]}"))
    return actions


def decide(snap: Snapshot, cfg: PolicyConfig) -> list[Action]:
    """The next steps for ``snap.host``; an empty list means nothing to do."""
    host = snap.host
    if snap.fence_state == FENCE_CONFIRMED:
        actions = []
        if host.status != "down":
            actions.append(Action(MARK_DOWN, reason=f"power-off of host {host.name} is confirmed"))
        return actions + place_vms(snap.ha_vms, snap.cluster_hosts, host.id)
    # VMs released by an earlier confirmed fence, or whose own lease expired, may move
    free_to_move = [vm for vm in snap.ha_vms if vm.released or vm.lease_expired]
    if host.status != "non_responsive":
        # a host that answers (an HA VM died there) may run it again itself
        return place_vms(free_to_move, snap.cluster_hosts, None if host.status == "up" else host.id)
    grace = cfg.grace_period if host.grace_period is None else host.grace_period
    waited = snap.now - host.unresponsive_since if host.unresponsive_since is not None else 0.0
    if waited < grace:
        return [Action(WAIT, waiting_for="grace", reason=f"host {host.name} non-responsive for {waited:.0f} s, "
                                                         f"grace period is {grace:.0f} s")]
    if host.liveness_pending and not host.renews_storage_lease:
        return [Action(WAIT, waiting_for="liveness",
                       reason=f"watching host {host.name}'s storage lease to tell a dead host "
                              "from one that is only cut off from the engine")]
    actions = []
    skip = fencing_skip_reason(snap, cfg)
    if skip:
        actions.append(Action(SKIP_FENCING, reason=skip))
    elif snap.fence_state == FENCE_NONE:
        actions.append(Action(FENCE, reason=f"host {host.name} non-responsive for {waited:.0f} s "
                                            f"(grace period {cfg.grace_period:.0f} s)"))
    # Without a confirmed fence, only VMs whose own lease has expired may move.
    for vm in snap.ha_vms:
        if vm not in free_to_move:
            why = ("the VM's lease has not expired" if vm.has_lease else
                   "the VM has no lease of its own (only a fence, or an admin confirming the host "
                   "was rebooted, can free it)")
            actions.append(Action(HOLD_VM, vm_id=vm.id,
                                  reason=f"HA VM {vm.name} is not restarted: host {host.name} is not "
                                         f"confirmed off and {why}"))
    return actions + place_vms(free_to_move, snap.cluster_hosts, host.id)


def stale_domains(host_id: str, running_vm_ids, vm_home: dict) -> list[str]:
    """VMs running on a returning host that the engine has since started elsewhere.

    ``vm_home`` maps VM id -> the host id the engine records it on; such VMs
    must be destroyed on ``host_id`` and never reported back as running there.
    """
    return [vm_id for vm_id in running_vm_ids
            if vm_id in vm_home and vm_home[vm_id] not in (None, host_id)]
