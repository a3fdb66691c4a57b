"""Facts the rules read from a snapshot: liveness of host records, the
engine's health, this host's score, whether the etcd lease is lost (and the
deadline for the stop), the best other host. Pure."""
from __future__ import annotations

from keel_common.keys import HostRecord

from .score import ScoreInput, compute_score
from .states import VM_RUNNING, Memory, Snapshot, State

S = State


def live_records(s: Snapshot) -> dict[int, HostRecord]:
    return {hid: r for hid, r in s.hosts.items()
            if s.timing.record_is_live(r.timestamp, s.now) and not r.stopped}


def silent_in_etcd(s: Snapshot, host_id: int) -> bool:
    """The host's broker has not published for `etcd_silence_s` (or its
    record is gone): one of the two silences before a fence. Shorter than
    `record_stale_after` in production on purpose: the storage lease's
    silence, checked too, is what tells a dead host from a cut-off one."""
    rec = s.hosts.get(host_id)
    return rec is None or s.now - rec.timestamp >= s.timing.etcd_silence_s


def health(s: Snapshot) -> str:
    value = (s.monitors.get("engine_health") or {}).get("value") or {}
    return value.get("health", "unknown") if isinstance(value, dict) else "unknown"


def health_reason(s: Snapshot) -> str:
    value = (s.monitors.get("engine_health") or {}).get("value") or {}
    return (value.get("reason") or value.get("detail") or "") if isinstance(value, dict) else ""


def monitor_number(s: Snapshot, name: str) -> float | None:
    """A numeric monitor value, or None when missing or not a number
    (a monitor that timed out: unknown, so no penalty either way)."""
    v = (s.monitors.get(name) or {}).get("value")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def gateway_fraction(s: Snapshot) -> float:
    gw = s.monitors.get("gateway")
    if gw is None:
        return 1.0
    frac = monitor_number(s, "gateway")
    return frac if frac is not None else (1.0 if gw.get("ok") else 0.0)


def monitor_ok(s: Snapshot, name: str, default: bool = False) -> bool:
    mon = s.monitors.get(name)
    return default if mon is None else bool(mon.get("ok"))


def recent_failures(m: Memory, now: float, k: dict) -> tuple[float, ...]:
    return tuple(t for t in m.failures if now - t < k["start_failure_forget"])


def score(s: Snapshot, m: Memory, k: dict, live: dict[int, HostRecord]) -> tuple[int, list[str]]:
    if not s.broker_ok:
        return 0, ["HA broker unreachable: no monitor results"]
    newest = max([r.config_version for hid, r in live.items() if hid != s.host_id], default=0)
    inp = ScoreInput(
        gateway_fraction=gateway_fraction(s),
        mgmt_network_ok=monitor_ok(s, "mgmt_network", True),
        free_memory_mb=monitor_number(s, "memory"),
        engine_memory_mb=s.engine_memory_mb,
        cpu_load=monitor_number(s, "cpu_load"),
        engine_runs_here=s.vm == VM_RUNNING,
        config_stale=s.config_version < newest,
        recent_failures=len(recent_failures(m, s.now, k)),
        storage_ok=monitor_ok(s, "storage", True),
        lockspace_held=s.lockspace_held,
        local_maintenance=s.local_maintenance,
    )
    return compute_score(inp, k)


def etcd_lost(s: Snapshot, m: Memory, k: dict) -> tuple[bool, float | None]:
    """(lost, force-stop deadline). A failed keepalive is tolerated for a
    quarter of the TTL; after that the claim must be treated as gone and
    the VM stopped before the lease can expire (DESIGN: losing etcd is
    losing the claim)."""
    ttl = s.etcd_ttl or s.timing.etcd_lease_ttl
    last = s.etcd_last_renewed if s.etcd_last_renewed is not None else m.last_renewed
    if s.broker_ok and s.etcd_ok:
        return False, None
    if last is None:
        return True, s.now + min(s.timing.engine_stop_timeout, ttl * k["etcd_force_fraction"])
    if s.now - last < ttl * k["etcd_grace_fraction"]:
        return False, None  # one missed renewal is not yet a lost lease
    return True, last + ttl * k["etcd_force_fraction"]


def eligible(r: HostRecord, now: float) -> bool:
    backoff = float((r.extra or {}).get("backoff_until", 0) or 0)
    return r.score > 0 and not r.maintenance and r.lockspace_held and backoff <= now


def best_other(s: Snapshot, live: dict[int, HostRecord]) -> HostRecord | None:
    cands = [r for hid, r in live.items() if hid != s.host_id and eligible(r, s.now)]
    return max(cands, key=lambda r: (r.score, -r.host_id), default=None)


# States whose agent saw no VM on its host: a record saying "up" there is the
# broker's monitor lagging by up to a cycle (e.g. right after a handover).
_NO_VM_STATES = (str(S.EngineDown), str(S.EngineUnexpectedlyDown))


def engine_up_elsewhere(s: Snapshot, live: dict[int, HostRecord]) -> HostRecord | None:
    for hid in sorted(live):
        rec = live[hid]
        if hid != s.host_id and rec.engine.vm == "up" and rec.state not in _NO_VM_STATES:
            return rec
    return None


def outcome(s: Snapshot, kind: str):
    for o in s.outcomes:
        if o.kind == kind:
            return o
    return None
