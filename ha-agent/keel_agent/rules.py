"""The rule of each state. A rule reads the snapshot (through `facts`) and
records the step's outcome on a `_Step`: the next state with its reason,
the actions, and log lines. Pure."""
from __future__ import annotations

from dataclasses import replace

from .facts import (best_other, engine_up_elsewhere, etcd_lost, health, health_reason, outcome,
                    recent_failures, silent_in_etcd)
from .score import backoff_seconds, better_by_margin
from keel_common.bmc import FAILED, FENCED

from .states import (BUSY, CHECK_LEASE, CLAIM, DESTROY_VM, FENCE_HOST, LOCK, LOST, RELEASE, SHUTDOWN_VM,
                     START_SEQUENCE, START_VM, VM_ABSENT, VM_RUNNING, VM_UNKNOWN, Action, Memory, Snapshot, State)

S = State
RUNNING_STATES = (S.EngineStarting, S.EngineUp, S.EngineUpBadHealth)
STOPPING_STATES = (S.EngineStop, S.EngineForceStop)


class _Step:
    """Collects the outcome of one cycle while the rules run."""

    def __init__(self, s: Snapshot, m: Memory, k: dict):
        self.s, self.m, self.k = s, m, k
        self.actions: list[Action] = []
        self.log: list[tuple[str, str]] = []
        self.new_state: State | None = None

    def go(self, state: State, reason: str, *actions: Action, **mem) -> None:
        self.new_state = state
        self.actions.extend(actions)
        if state != self.m.state:
            self.log.append(("info", f"{self.m.state} -> {state}: {reason}"))
            mem.setdefault("note", "")
            mem.setdefault("alarm", "")
        self.m = replace(self.m, state=state,
                         since=self.s.now if state != self.m.state else self.m.since, **mem)

    def stay(self, note: str = "", *actions: Action, **mem) -> None:
        self.new_state = self.m.state
        self.actions.extend(actions)
        if note and note != self.m.note:
            self.log.append(("info", f"{self.m.state}: {note}"))
        self.m = replace(self.m, note=note or self.m.note, **mem)

    def alarm(self, text: str) -> None:
        if text != self.m.alarm:
            self.log.append(("error", text))
            self.m = replace(self.m, alarm=text)


def _start_actions(reason: str) -> tuple[Action, ...]:
    return tuple(Action(kind, reason) for kind in START_SEQUENCE)


def _begin_stop(st: _Step, reason: str, deadline: float | None, after: State = S.EngineDown) -> None:
    s = st.s
    limit = s.now + s.timing.engine_stop_timeout
    deadline = min(limit, deadline) if deadline is not None else limit
    st.go(S.EngineStop, reason, Action(SHUTDOWN_VM, reason),
          stop_deadline=deadline, stop_reason=reason, after_stop=after)


def _fail(st: _Step, backoff: bool = True) -> dict:
    """Remember a failed start or a crash: a score penalty, so that a
    healthier host takes over; after a failed start also a back-off (a
    crash of a running engine is restarted at once, here or elsewhere)."""
    s, m, k = st.s, st.m, st.k
    failures = recent_failures(m, s.now, k) + (s.now,)
    until = s.now + backoff_seconds(len(failures), k) if backoff else m.backoff_until
    return dict(failures=failures, backoff_until=until)


def _running_checks(st: _Step, live, score: int) -> bool:
    """Checks shared by the states where the VM runs here. True if one fired."""
    s, m, k = st.s, st.m, st.k
    if s.vm != VM_RUNNING:
        if s.vm == VM_UNKNOWN:
            st.stay("cannot read the engine VM's state from libvirt; keeping the current state")
            return True
        st.go(S.EngineUnexpectedlyDown, "the engine VM is no longer running on this host",
              Action(RELEASE, "engine VM gone"), **_fail(st, backoff=m.state == S.EngineStarting))
        return True
    other = engine_up_elsewhere(s, live)
    if other is not None:
        # Sanlock makes this impossible for VMs the agents start; one started
        # by hand without the lease must go at once, not after a graceful stop.
        ours = (s.host_id in s.lease_owners if s.lease_owners is not None
                else s.owner is not None and s.owner.host_id == s.host_id)
        if not ours:
            st.alarm(f"TWO ENGINE VMs RUNNING: here and on host {other.host_id}; this one does not "
                     "hold the engine lease: destroying it")
            st.go(S.EngineForceStop, "two engine VMs found; ours lacks the lease",
                  Action(DESTROY_VM, "two engines, no lease here"), after_stop=S.EngineDown)
            return True
        st.alarm(f"TWO ENGINE VMs RUNNING: here and on host {other.host_id}; this one holds the "
                 "engine lease and stays")
    lost, deadline = etcd_lost(s, m, k)
    if lost:
        _begin_stop(st, "etcd lease not renewed: another host may win the claim; stopping the "
                    "engine VM before the lease expires", deadline)
        return True
    if not s.broker_ok:
        st.stay("HA broker unreachable: keeping the engine VM until the etcd lease deadline")
        return True
    if s.owner is not None and s.owner.host_id != s.host_id:
        _begin_stop(st, f"host {s.owner.host_id} holds the engine claim", None)
        return True
    if s.owner is None:
        st.stay("engine claim missing while the VM runs here; claiming it again",
                Action(CLAIM, "re-claim for the running VM"))
    for req in s.requests:
        st.log.append(("warning", f"request {req} ignored: set global maintenance first, "
                       "otherwise the HA agents restart the engine"))
    return False


def _handover(st: _Step, live, score: int) -> bool:
    """Local maintenance or a clearly better host: stop here so it can start there."""
    s, k = st.s, st.k
    best = best_other(s, live)
    if s.local_maintenance:
        if best is None:
            st.stay("local maintenance requested, but no other host can take the engine; keeping it")
            return True
        _begin_stop(st, f"local maintenance: handing the engine over to host {best.host_id}", None,
                    after=S.LocalMaintenance)
        return True
    if best is not None and better_by_margin(best.score, score, k):
        _begin_stop(st, f"host {best.host_id} scores {best.score:g}, better than our {score} "
                    f"by at least {k['margin']:g}", None)
        return True
    return False


def _adopt_or_down(st: _Step, reason: str) -> None:
    s, m, k = st.s, st.m, st.k
    if s.global_maintenance:
        st.go(S.GlobalMaintenance, "global maintenance is set")
    elif s.vm == VM_RUNNING:
        lost, deadline = etcd_lost(s, m, k)
        if lost:
            _begin_stop(st, "engine VM running here but etcd is unreachable", deadline)
        else:
            st.go(S.EngineUp, f"{reason}: adopting the engine VM running here",
                  Action(CLAIM, "adopt running engine VM"))
    elif s.local_maintenance:
        st.go(S.LocalMaintenance, "local maintenance is set")
    else:
        st.go(S.EngineDown, f"{reason}: the engine VM is not running here")


def _engine_down(st: _Step, live, score: int) -> None:
    s, m, k = st.s, st.m, st.k
    if s.local_maintenance:
        return st.go(S.LocalMaintenance, "local maintenance is set")
    if s.vm == VM_RUNNING:
        return st.go(S.EngineUp, "engine VM found running on this host; adopting it",
                     Action(CLAIM, "adopt running engine VM"))
    if s.vm == VM_UNKNOWN:
        return st.stay("cannot read the engine VM's state from libvirt: not starting anything")
    if not s.broker_ok:
        return st.stay("HA broker unreachable: cannot claim the engine")
    lost, _ = etcd_lost(s, m, k)
    if lost:
        return st.stay("etcd unreachable: cannot claim the engine")
    up = engine_up_elsewhere(s, live)
    if s.owner is not None and s.owner.host_id == s.host_id:
        return st.stay("releasing a stale engine claim of ours", Action(RELEASE, "stale claim"))
    if "vm-start" in s.requests and s.owner is None and up is None:
        return st.go(S.EngineStart, "vm-start requested by the administrator",
                     *_start_actions("vm-start request"), lease_wait_until=_lease_wait(s, k), fence_settle_until=None)
    for req in s.requests:
        st.log.append(("warning", f"request {req} ignored: the engine VM is not running here"))
    if s.owner is not None:
        if _take_over(st, live, score):
            return
        rec = live.get(s.owner.host_id)
        if rec is not None and rec.engine.vm == "up":
            return st.stay(f"engine is up on host {rec.host_id}")
        # A fresh claim, or a record saying it is starting: records and the
        # broker's VM monitor lag the claim by up to a cycle or two.
        if (rec is not None and rec.state in (str(S.EngineStart), str(S.EngineStarting))) or \
                s.now - s.owner.since <= 3 * s.timing.cycle:
            return st.stay(f"host {s.owner.host_id} claimed the engine and is starting it")
        if rec is not None and rec.state in (str(S.EngineStop), str(S.EngineForceStop),
                                             str(S.EngineUnexpectedlyDown)):
            return st.stay(f"host {rec.host_id} is stopping the engine and will release the claim")
        why = "its record is stale" if rec is None else f"it reports {rec.state} without the engine VM"
        return st.go(S.EngineMaybeAway, f"host {s.owner.host_id} holds the engine claim but {why}")
    if up is not None:
        return st.stay(f"engine VM reported up on host {up.host_id}")
    if score <= 0:
        return st.stay("engine down, but this host's score is 0")
    if m.backoff_until > s.now:
        return st.stay("engine down; waiting out the start back-off after a failure")
    best = best_other(s, live)
    if best is not None and (best.score, -best.host_id) > (score, -s.host_id):
        return st.stay(f"engine down; host {best.host_id} (score {best.score:g}) is the best host to start it")
    fence, _ = _fence_or_wait(st)
    # The engine lease is already seen held by a dead host: claim (so that no
    # other agent fences too) and fence in this same cycle, not after a busy check.
    actions = (Action(CLAIM, "fence, then start"), fence) if fence is not None else _start_actions("best host")
    st.go(S.EngineStart, f"engine down everywhere and this host is the best (score {score})"
          + (f"; {fence.reason}" if fence is not None else ""),
          *actions, lease_wait_until=_lease_wait(s, k), fence_settle_until=None)


def _take_over(st: _Step, live, score: int) -> bool:
    """The engine claim's holder is dead for sure (both silences, its BMC
    known): the best of the other hosts takes its claim over and fences it
    in the same cycle, instead of waiting for its etcd lease's TTL (60 s in
    production). The claim's compare-and-swap keeps the fencer unique."""
    s, m = st.s, st.m
    hid = s.owner.host_id
    if hid == s.host_id or s.lease_owners is None or \
            hid not in s.lease_owners or score <= 0 or m.backoff_until > s.now or s.vm != VM_ABSENT or \
            not s.broker_ok or etcd_lost(s, m, st.k)[0]:
        return False
    others = {h: r for h, r in live.items() if h != hid}
    best = best_other(s, others)
    if best is not None and (best.score, -best.host_id) > (score, -s.host_id):
        return False
    fence, why = _fence_or_wait(st)
    if fence is None or fence.target != hid:
        # Both silences only have to grow: look again the moment they are
        # long enough, not up to a cycle (10 s in production) later.
        st.m = replace(st.m, fence_check_at=_silences_long_enough_at(s, hid))
        return False
    st.go(S.EngineStart, f"{why}; this host is the best (score {score}) and takes its engine claim over",
          Action(CLAIM, f"take over host {hid}'s claim", target=hid), fence,
          lease_wait_until=_lease_wait(s, st.k), fence_settle_until=None)
    return True


def _silences_long_enough_at(s: Snapshot, hid: int) -> float | None:
    rec, lease = s.hosts.get(hid), s.delta_leases.get(hid)
    if lease is None or hid not in s.bmcs:
        return None
    t = s.timing
    at = max(s.now + t.fence_silence_s - lease[0], rec.timestamp + t.etcd_silence_s if rec is not None else s.now)
    return at if at > s.now else None


def _lease_wait(s: Snapshot, k: dict) -> float:
    # A dead holder's lease frees only after sanlock's expiry: keep the claim that long.
    return s.now + s.timing.lease_expiry_s + 2 * s.timing.cycle + k["lease_wait"]


def _fence_or_wait(st: _Step) -> tuple[Action | None, str]:
    """The engine lease is held by another host. Fence it if it is dead for
    sure (silent in etcd, its delta lease standing still, a BMC to confirm the
    power-off); otherwise say what we wait for. Only the claim holder, or a
    host taking the claim over in the same cycle (a compare-and-swap only
    one wins), gets here, so at most one agent fences at a time."""
    s, k = st.s, st.k
    holders = [h for h in (s.lease_owners or ()) if h != s.host_id]
    if not holders:
        return None, ""   # it looked free when observed: the retry below will tell
    hid = holders[0]
    if not silent_in_etcd(s, hid):
        return None, f"host {hid} is alive and holds the engine lease; waiting for it to release it"
    lease = s.delta_leases.get(hid)
    if lease is None:
        return None, f"host {hid}'s storage lease is released; waiting for sanlock to free the engine lease"
    silence, generation = lease
    if silence < s.timing.fence_silence_s:
        return None, (f"host {hid} is silent in etcd but still renews its storage lease: not fencing it; "
                      "waiting for it to stop the engine VM")
    if hid not in s.bmcs:
        return None, (f"host {hid} looks dead (no record, storage lease standing still) but has no BMC "
                      "configured: waiting for sanlock's expiry of its lease")
    last = s.fences.get(hid)
    if last is not None and last.generation == generation and last.state == FENCED:
        return None, f"host {hid} fenced; waiting for sanlock to see the engine lease free"
    if last is not None and last.generation == generation and last.state == FAILED:
        retry = (last.ended or last.started) + k["fence_retry"]
        if s.now < retry:
            return None, (f"fencing host {hid} failed ({last.detail or 'no detail'}); trying again "
                          f"{k['fence_retry']:g}s after the failure, meanwhile waiting for sanlock's expiry")
    why = (f"host {hid} holds the engine lease, is silent in etcd and its storage lease has stood "
           f"still for {silence:.0f}s: fencing it through its BMC")
    return Action(FENCE_HOST, why, target=hid), why


def _engine_start(st: _Step, live, score: int) -> None:
    s, m = st.s, st.m
    if s.vm == VM_RUNNING:
        return st.go(S.EngineStarting, "engine VM started; waiting for the engine to become healthy",
                     lease_wait_until=None, fence_settle_until=None)
    fence = outcome(s, FENCE_HOST)
    if fence is not None and fence.ok:
        # A host whose BMC said "off" while it still ran finds its host lease
        # released at its next renewal, and its sanlock kills the engine VM
        # there: wait one renewal period before starting.
        # Counted from the end of the fence (its record), not from this cycle.
        ended = max((r.ended for r in s.fences.values() if r.by == s.host_id and r.state == FENCED
                     and r.ended is not None and r.ended <= s.now), default=s.now)
        until = ended + 2 * s.timing.io_timeout
        if s.now >= until:
            return st.stay("", *_start_actions("after the fence"))
        return st.stay("the dead host is fenced; waiting one storage renewal period before starting",
                       fence_settle_until=until)
    if m.fence_settle_until is not None:
        if s.now < m.fence_settle_until:
            return st.stay()
        return st.stay("", *_start_actions("after the fence"), fence_settle_until=None)
    if fence is not None:
        # The failure is logged by the agent; the fence record says when to retry.
        return st.stay("", *_start_actions("retry: the fence failed"))
    claim, lease, start = (outcome(s, CLAIM), outcome(s, CHECK_LEASE), outcome(s, START_VM))
    if claim is not None and not claim.ok:
        who = f"host {s.owner.host_id}" if s.owner else "another host"
        reason = f"lost the engine claim to {who}" if claim.code == LOST else f"claim failed: {claim.detail}"
        return st.go(S.EngineDown, reason, lease_wait_until=None)
    if lease is not None and not lease.ok and lease.code == BUSY:
        if m.lease_wait_until is not None and s.now < m.lease_wait_until:
            fence_action, note = _fence_or_wait(st)
            if fence_action is not None:
                return st.stay(note, fence_action)
            return st.stay(f"engine lease held by {lease.detail}; keeping the claim: {note}" if note else "",
                           *_start_actions("retry: lease was busy"))
        return st.go(S.EngineDown, f"engine lease still held by {lease.detail}; giving up the claim",
                     Action(RELEASE, "lease never freed"), lease_wait_until=None)
    if start is not None and not start.ok and start.code == LOCK:
        return st.go(S.EngineDown, f"lost the lease race: {start.detail}",
                     Action(RELEASE, "lease race lost"), lease_wait_until=None)
    if start is None and (lease is None or lease.ok):
        # Nothing was attempted (e.g. the broker did not answer): no penalty.
        return st.go(S.EngineDown, "engine start did not complete; re-evaluating",
                     Action(RELEASE, "start incomplete"), lease_wait_until=None)
    if start is not None and not start.ok:
        detail = start.detail
    elif lease is not None and not lease.ok:
        detail = lease.detail
    else:
        detail = "the VM was not running after the start"
    mem = _fail(st)
    st.go(S.EngineDown, f"engine VM start failed ({detail}); retry after {mem['backoff_until'] - s.now:g}s",
          Action(RELEASE, "start failed"), lease_wait_until=None, **mem)


def _engine_starting(st: _Step, live, score: int) -> None:
    s = st.s
    if _running_checks(st, live, score):
        return
    if health(s) == "good":
        return st.go(S.EngineUp, "engine health is good")
    if s.now - st.m.since >= s.timing.engine_start_timeout:
        return st.go(S.EngineForceStop, f"engine not healthy {s.timing.engine_start_timeout:g}s after start",
                     Action(DESTROY_VM, "start timeout"), after_stop=S.EngineDown, **_fail(st))
    st.stay()


def _engine_up(st: _Step, live, score: int) -> None:
    s = st.s
    if _running_checks(st, live, score):
        return
    if health(s) != "good":
        return st.go(S.EngineUpBadHealth, f"engine health is {health(s)}: {health_reason(s) or 'no detail'}")
    if _handover(st, live, score):
        return
    st.stay()


def _engine_up_bad(st: _Step, live, score: int) -> None:
    s = st.s
    if _running_checks(st, live, score):
        return
    if health(s) == "good":
        return st.go(S.EngineUp, "engine health is good again")
    if s.now - st.m.since >= s.timing.engine_bad_health_timeout:
        st.m = replace(st.m, **_fail(st))
        return _begin_stop(st, f"engine unhealthy for {s.timing.engine_bad_health_timeout:g}s", None)
    if _handover(st, live, score):
        return
    st.stay()


def _maybe_away(st: _Step, live, score: int) -> None:
    s = st.s
    if s.vm == VM_RUNNING:
        return st.go(S.EngineUp, "engine VM found running on this host; adopting it",
                     Action(CLAIM, "adopt running engine VM"))
    if s.local_maintenance:
        return st.go(S.LocalMaintenance, "local maintenance is set")
    if s.owner is None:
        return st.go(S.EngineDown, "the engine claim was released or expired")
    if _take_over(st, live, score):
        return
    rec = live.get(s.owner.host_id)
    if rec is not None and rec.engine.vm == "up":
        return st.go(S.EngineDown, f"engine is up on host {rec.host_id}")
    st.stay()


def _unexpectedly_down(st: _Step, live, score: int) -> None:
    _adopt_or_down(st, "claim released")


def _stopping(st: _Step, live, score: int) -> None:
    s, m = st.s, st.m
    after = m.after_stop or S.EngineDown
    if s.vm != VM_RUNNING and s.vm != VM_UNKNOWN:
        return st.go(after, "engine VM stopped; releasing the claim",
                     Action(RELEASE, "engine VM stopped"), stop_deadline=None)
    lost, deadline = etcd_lost(s, m, st.k)
    if lost and deadline is not None and (m.stop_deadline is None or deadline < m.stop_deadline):
        # A stop begun for another reason must still end before the etcd lease does.
        st.log.append(("warning", "etcd lease not renewed during the stop: forcing it by "
                       f"+{deadline - s.now:g}s"))
        st.m = m = replace(m, stop_deadline=deadline)
    if m.state == S.EngineStop:
        if m.stop_deadline is not None and s.now >= m.stop_deadline:
            return st.go(S.EngineForceStop, "graceful shutdown did not finish in time; destroying",
                         Action(DESTROY_VM, "graceful stop timed out"))
        return st.stay()
    st.stay("", Action(DESTROY_VM, "still running"))


def _global_maintenance(st: _Step, live, score: int) -> None:
    s = st.s
    if not s.global_maintenance:
        return st.go(S.ReInitialize, "global maintenance cleared")
    actions = []
    for req in s.requests:
        if req == "vm-start":
            if s.vm == VM_RUNNING or engine_up_elsewhere(s, live) or \
                    (s.owner is not None and s.owner.host_id != s.host_id):
                st.log.append(("warning", "request vm-start ignored: the engine VM is already running"))
            else:
                st.log.append(("info", "vm-start requested: starting the engine VM here"))
                actions.extend(_start_actions("vm-start request"))
        elif req in ("vm-shutdown", "vm-poweroff"):
            if s.vm != VM_RUNNING:
                st.log.append(("warning", f"request {req} ignored: the engine VM is not running here"))
            else:
                st.log.append(("info", f"{req} requested: stopping the engine VM"))
                actions.append(Action(SHUTDOWN_VM if req == "vm-shutdown" else DESTROY_VM, req))
    if not actions:
        if s.vm != VM_RUNNING and s.owner is not None and s.owner.host_id == s.host_id:
            actions.append(Action(RELEASE, "engine VM not running here"))
        elif s.vm == VM_RUNNING and s.owner is None and s.etcd_ok:
            actions.append(Action(CLAIM, "engine VM running here"))
    st.stay("", *actions)


def _local_maintenance(st: _Step, live, score: int) -> None:
    s = st.s
    if not s.local_maintenance:
        return st.go(S.ReInitialize, "local maintenance cleared")
    if s.vm == VM_RUNNING:
        return st.stay("the engine VM runs here during local maintenance (started by hand?)")
    for req in s.requests:
        st.log.append(("warning", f"request {req} ignored: this host is in local maintenance"))
    st.stay()


RULES = {
    S.AgentStarting: lambda st, live, score: _adopt_or_down(st, "agent started"),
    S.ReInitialize: lambda st, live, score: _adopt_or_down(st, "re-initialized"),
    S.EngineDown: _engine_down,
    S.EngineStart: _engine_start,
    S.EngineStarting: _engine_starting,
    S.EngineUp: _engine_up,
    S.EngineUpBadHealth: _engine_up_bad,
    S.EngineMaybeAway: _maybe_away,
    S.EngineUnexpectedlyDown: _unexpectedly_down,
    S.EngineStop: _stopping,
    S.EngineForceStop: _stopping,
    S.GlobalMaintenance: _global_maintenance,
    S.LocalMaintenance: _local_maintenance,
}
