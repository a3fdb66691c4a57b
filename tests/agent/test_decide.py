"""Unit tests of the pure decision core on hand-built snapshots: the safety
rules each get a case that would fail if the rule were missing."""
from dataclasses import replace

import pytest

from keel_agent.decide import decide
from keel_agent.score import score_constants
from keel_agent.states import (BUSY, CHECK_LEASE, CLAIM, DESTROY_VM, ERROR, LOCK, RELEASE, SHUTDOWN_VM,
                               START_VM, VM_ABSENT, VM_RUNNING, Memory, Outcome, Snapshot, State)
from keel_common.config import PROFILES
from keel_common.keys import EngineClaim, EngineStatus, HostRecord

K = score_constants()
FAST = PROFILES["fast"]
NOW = 1000.0


def rec(hid, score=3400, state="EngineDown", vm="down", ts=NOW, **kw):
    return HostRecord(host_id=hid, hostname=f"host{hid}", timestamp=ts, score=score, state=state,
                      engine=EngineStatus(vm=vm, health="good" if vm == "up" else "bad"),
                      stopped=False, lockspace_held=True, **kw)


def snap(**kw):
    base = dict(now=NOW, host_id=1, timing=FAST, engine_memory_mb=4096, broker_ok=True,
                monitors={"gateway": {"ok": True, "value": 1.0}, "mgmt_network": {"ok": True},
                          "memory": {"value": 16384}, "cpu_load": {"value": 0.1}, "storage": {"ok": True},
                          "engine_health": {"ok": True, "value": {"vm": "down", "health": "bad"}}},
                lockspace_held=True, etcd_ok=True, etcd_last_renewed=NOW - 0.5, etcd_ttl=8,
                hosts={1: rec(1), 2: rec(2)}, owner=None, vm=VM_ABSENT, lease_owners=())
    base.update(kw)
    return Snapshot(**base)


def healthy(s):
    mons = dict(s.monitors, engine_health={"ok": True, "value": {"vm": "up", "health": "good"}})
    return replace(s, monitors=mons)


def kinds(d):
    return [a.kind for a in d.actions]


def mine(since=NOW - 100):
    return EngineClaim(1, "host1", since)


def test_best_host_claims_checks_lease_then_starts_in_that_order():
    d = decide(snap(), Memory(State.EngineDown), K)
    assert d.memory.state == State.EngineStart
    assert kinds(d) == [CLAIM, CHECK_LEASE, START_VM]


def test_score_tie_lowest_host_id_starts_the_other_waits():
    d2 = decide(snap(host_id=2), Memory(State.EngineDown), K)
    assert d2.memory.state == State.EngineDown and kinds(d2) == []
    # ... unless host 1 is clearly worse
    worse = snap(host_id=2, hosts={1: rec(1, score=2000), 2: rec(2)})
    assert decide(worse, Memory(State.EngineDown), K).memory.state == State.EngineStart


def test_no_start_while_another_host_holds_the_claim():
    s = snap(owner=EngineClaim(2, "host2", NOW - 5), hosts={1: rec(1), 2: rec(2, state="EngineStart")})
    d = decide(s, Memory(State.EngineDown), K)
    assert d.memory.state == State.EngineDown and START_VM not in kinds(d)


def test_lock_refusal_is_a_lost_race_not_a_failure():
    m = Memory(State.EngineStart, since=NOW - 1, lease_wait_until=NOW + 60)
    s = snap(outcomes=(Outcome(CLAIM, True), Outcome(CHECK_LEASE, True),
                       Outcome(START_VM, False, LOCK, "Failed to acquire lock: Lease is held by another host")))
    d = decide(s, m, K)
    assert d.memory.state == State.EngineDown and kinds(d) == [RELEASE]
    assert d.memory.failures == ()


def test_failed_start_penalises_and_backs_off():
    m = Memory(State.EngineStart, since=NOW - 1)
    d = decide(snap(outcomes=(Outcome(CLAIM, True), Outcome(CHECK_LEASE, True),
                              Outcome(START_VM, False, ERROR, "qemu died"))), m, K)
    assert d.memory.state == State.EngineDown and kinds(d) == [RELEASE]
    assert len(d.memory.failures) == 1 and d.memory.backoff_until == NOW + 10
    early = decide(snap(now=NOW + 5), d.memory, K)
    assert kinds(early) == [] and early.score == 3000
    late = decide(snap(now=NOW + 11), early.memory, K)
    assert kinds(late) == [CLAIM, CHECK_LEASE, START_VM]


def test_busy_lease_keeps_claim_and_retries_then_gives_up():
    m = Memory(State.EngineStart, since=NOW - 1, lease_wait_until=NOW + 30)
    busy = (Outcome(CLAIM, True), Outcome(CHECK_LEASE, False, BUSY, "host 2"))
    d = decide(snap(owner=mine(), outcomes=busy), m, K)
    assert d.memory.state == State.EngineStart and kinds(d) == [CLAIM, CHECK_LEASE, START_VM]
    d = decide(snap(now=NOW + 31, owner=mine(), outcomes=busy), d.memory, K)
    assert d.memory.state == State.EngineDown and kinds(d) == [RELEASE]


def test_lease_wait_outlasts_sanlock_expiry():
    d = decide(snap(), Memory(State.EngineDown), K)
    assert d.memory.lease_wait_until - NOW > FAST.lease_expiry_s


def running(**kw):
    base = dict(vm=VM_RUNNING, owner=mine(), lease_owners=(1,),
                hosts={1: rec(1, state="EngineUp", vm="up"), 2: rec(2)})
    base.update(kw)
    return healthy(snap(**base))


def test_etcd_loss_stops_gracefully_then_forces_before_the_ttl():
    last = NOW - 3
    d = decide(running(etcd_ok=False, etcd_last_renewed=last), Memory(State.EngineUp), K)
    assert d.memory.state == State.EngineStop and kinds(d) == [SHUTDOWN_VM]
    assert d.memory.stop_deadline == pytest.approx(last + 0.75 * 8)
    assert d.memory.stop_deadline < last + 8
    d2 = decide(running(now=last + 6, etcd_ok=False, etcd_last_renewed=last), d.memory, K)
    assert d2.memory.state == State.EngineForceStop and kinds(d2) == [DESTROY_VM]


def test_one_missed_renewal_is_tolerated():
    d = decide(running(etcd_ok=False, etcd_last_renewed=NOW - 1), Memory(State.EngineUp), K)
    assert d.memory.state == State.EngineUp and kinds(d) == []


def test_broker_unreachable_uses_last_known_renewal():
    m = Memory(State.EngineUp, last_renewed=NOW - 4)
    s = running(broker_ok=False, etcd_ok=False, etcd_last_renewed=None)
    d = decide(s, m, K)
    assert d.memory.state == State.EngineStop
    assert d.memory.stop_deadline == pytest.approx(NOW - 4 + 6)


def test_a_slow_handover_stop_is_tightened_when_etcd_is_lost():
    prod = PROFILES["production"]
    m = Memory(State.EngineStop, since=NOW - 1, stop_deadline=NOW + 119)
    d = decide(running(timing=prod, etcd_ok=False, etcd_last_renewed=NOW - 10, etcd_ttl=30), m, K)
    assert d.memory.stop_deadline == pytest.approx(NOW - 10 + 22.5)


def test_global_maintenance_never_starts_stops_or_moves():
    m = Memory(State.EngineUp)
    worse_here = running(global_maintenance=True,
                         monitors={"gateway": {"ok": False, "value": 0.0},
                                   "engine_health": {"value": {"health": "bad"}}})
    d = decide(worse_here, m, K)
    assert d.memory.state == State.GlobalMaintenance and kinds(d) == []
    for s in (worse_here, replace(worse_here, vm=VM_ABSENT, owner=None),
              replace(worse_here, etcd_ok=False, etcd_last_renewed=NOW - 7)):
        d = decide(s, d.memory, K)
        assert not {START_VM, SHUTDOWN_VM, DESTROY_VM} & set(kinds(d))


def test_two_engines_the_one_without_the_lease_is_destroyed():
    other_up = {1: rec(1, state="EngineUp", vm="up"), 2: rec(2, state="EngineUp", vm="up")}
    theirs = running(hosts=other_up, lease_owners=(2,))
    d = decide(theirs, Memory(State.EngineUp), K)
    assert d.memory.state == State.EngineForceStop and kinds(d) == [DESTROY_VM]
    assert any(level == "error" and "TWO ENGINE VMs" in msg for level, msg in d.log)
    ours = decide(running(hosts=other_up), Memory(State.EngineUp), K)
    assert ours.memory.state == State.EngineUp and kinds(ours) == []
    assert any(level == "error" for level, _ in ours.log)
    again = decide(running(hosts=other_up), ours.memory, K)
    assert again.log == []  # the alarm is logged once, not every cycle


def test_two_engines_with_lease_unknown_the_claim_decides():
    other_up = {1: rec(1, state="EngineUp", vm="up"), 2: rec(2, state="EngineUp", vm="up")}
    d = decide(running(hosts=other_up, lease_owners=None, owner=EngineClaim(2, "host2", NOW)),
               Memory(State.EngineUp), K)
    assert kinds(d) == [DESTROY_VM]


def test_hysteresis_small_drop_stays_large_drop_hands_over():
    cpu = dict(running().monitors, cpu_load={"value": 0.65})
    d = decide(running(monitors=cpu), Memory(State.EngineUp), K)
    assert d.score == 2900 and d.memory.state == State.EngineUp
    gw = dict(running().monitors, gateway={"ok": False, "value": 0.0})
    d = decide(running(monitors=gw), Memory(State.EngineUp), K)
    assert d.memory.state == State.EngineStop and kinds(d) == [SHUTDOWN_VM]


def test_agent_restart_adopts_without_restarting():
    d = decide(running(), Memory(), K)
    assert d.memory.state == State.EngineUp and kinds(d) == [CLAIM]


def test_local_maintenance_hands_over_then_rests():
    d = decide(running(local_maintenance=True), Memory(State.EngineUp), K)
    assert d.memory.state == State.EngineStop and d.score == 0
    d = decide(snap(local_maintenance=True, owner=mine()), d.memory, K)
    assert d.memory.state == State.LocalMaintenance and kinds(d) == [RELEASE]


def test_each_state_change_is_logged_once():
    s = snap(hosts={1: rec(1), 2: rec(2, state="EngineUp", vm="up")}, owner=EngineClaim(2, "host2", NOW))
    first = decide(s, Memory(), K)
    second = decide(s, first.memory, K)
    third = decide(s, second.memory, K)
    assert any("->" in msg for _, msg in first.log)
    assert third.log == []


def test_a_lagging_up_from_a_host_whose_agent_saw_no_vm_is_no_alarm():
    lagging = {1: rec(1, state="EngineStarting", vm="up"), 2: rec(2, state="EngineDown", vm="up")}
    d = decide(running(hosts=lagging), Memory(State.EngineStarting, since=NOW - 2), K)
    assert not [msg for level, msg in d.log if level == "error"] and kinds(d) == []
    assert d.memory.state == State.EngineUp


def test_libvirt_unreadable_starts_nothing():
    d = decide(snap(vm="unknown"), Memory(State.EngineDown), K)
    assert d.memory.state == State.EngineDown and kinds(d) == []


def test_score_is_logged_when_penalties_change_not_at_every_wiggle():
    def at(load, m):
        mons = dict(snap().monitors, cpu_load={"value": load})
        return decide(snap(monitors=mons, hosts={1: rec(1), 2: rec(2, state="EngineUp", vm="up")},
                           owner=EngineClaim(2, "host2", NOW)), m, K)
    d = at(0.6, Memory(State.EngineDown))
    assert ("info", "score 3000 (cpu load 0.60)") in d.log
    d = at(0.62, d.memory)
    assert not [msg for _, msg in d.log if msg.startswith("score")]
    d = at(0.1, d.memory)
    assert ("info", "score 3400") in d.log


def test_broker_unreachable_holds_global_maintenance_and_a_fresh_agent():
    blind = snap(broker_ok=False, etcd_ok=False, etcd_last_renewed=None, vm=VM_RUNNING)
    for state in (State.GlobalMaintenance, State.AgentStarting):
        d = decide(blind, Memory(state, last_renewed=NOW - 7), K)
        assert d.memory.state == state and kinds(d) == []


def test_a_fresh_claim_is_not_mistaken_for_an_absent_engine():
    lagging = {1: rec(1), 2: rec(2, state="EngineDown")}
    fresh = snap(hosts=lagging, owner=EngineClaim(2, "host2", NOW - 1))
    assert decide(fresh, Memory(State.EngineDown), K).memory.state == State.EngineDown
    old = snap(hosts=lagging, owner=EngineClaim(2, "host2", NOW - 30))
    assert decide(old, Memory(State.EngineDown), K).memory.state == State.EngineMaybeAway


# ---- fencing the engine's dead host -------------------------------------------
from keel_agent.states import FENCE_HOST  # noqa: E402
from keel_common.bmc import FAILED, FENCED, FenceRecord  # noqa: E402


def lease_busy_by_3(**kw):
    """Host 1 holds the claim and is starting; host 3 holds the engine lease,
    its record is gone and its storage lease has stood still for 10 s."""
    base = dict(owner=mine(), lease_owners=(3,), hosts={1: rec(1), 2: rec(2)},
                delta_leases={1: (0.5, 1), 2: (0.5, 1), 3: (10.0, 4)}, bmcs=frozenset({1, 2, 3}),
                outcomes=(Outcome(CLAIM, True), Outcome(CHECK_LEASE, False, BUSY, "host 3")))
    base.update(kw)
    return snap(**base)


def starting():
    return Memory(State.EngineStart, since=NOW - 2, lease_wait_until=NOW + 60)


def test_dead_engine_host_with_a_bmc_is_fenced_alone_first():
    d = decide(lease_busy_by_3(), starting(), K)
    assert [(a.kind, a.target) for a in d.actions] == [(FENCE_HOST, 3)]


@pytest.mark.parametrize("change, why", [
    (dict(hosts={1: rec(1), 2: rec(2), 3: rec(3)}), "is alive"),                  # a live record
    (dict(delta_leases={3: (FAST.fence_silence_s - 1, 4)}), "still renews"),    # storage lease renewed
    (dict(bmcs=frozenset({1, 2})), "no BMC"),                                     # nothing to fence with
    (dict(fences={3: FenceRecord(3, 1, FENCED, 4, NOW - 3, NOW - 2)}), "fenced"),  # done already
    (dict(fences={3: FenceRecord(3, 1, FAILED, 4, NOW - 3, NOW - 2, "BMC timeout")}), "failed"),
    (dict(delta_leases={}), "released"),                                          # lease already released
])
def test_no_fence_unless_every_condition_holds(change, why):
    d = decide(lease_busy_by_3(**change), starting(), K)
    assert FENCE_HOST not in kinds(d)
    assert kinds(d) == [CLAIM, CHECK_LEASE, START_VM]      # it keeps waiting for the lease
    assert any(why in msg for _, msg in d.log)


def test_a_failed_fence_is_retried_after_fence_retry_seconds():
    old = FenceRecord(3, 1, FAILED, 4, NOW - 30, NOW - K["fence_retry"] - 1, "BMC timeout")
    d = decide(lease_busy_by_3(fences={3: old}), starting(), K)
    assert [a.kind for a in d.actions] == [FENCE_HOST]


def test_a_fence_of_an_earlier_generation_does_not_count():
    old = FenceRecord(3, 1, FENCED, 2, NOW - 300, NOW - 299)
    d = decide(lease_busy_by_3(fences={3: old}), starting(), K)
    assert [a.kind for a in d.actions] == [FENCE_HOST]


def test_after_the_fence_no_start_for_one_renewal_period():
    done = lease_busy_by_3(outcomes=(Outcome(FENCE_HOST, True, detail="host 3"),))
    d = decide(done, starting(), K)
    assert d.actions == [] and d.memory.fence_settle_until == NOW + 2 * FAST.io_timeout
    later = decide(replace(done, now=NOW + 1, outcomes=()), d.memory, K)
    assert later.actions == []
    after = decide(replace(done, now=NOW + 2 * FAST.io_timeout, outcomes=()), later.memory, K)
    assert kinds(after) == [CLAIM, CHECK_LEASE, START_VM]


def test_a_failed_fence_keeps_the_claim_and_tries_the_lease_again():
    failed = lease_busy_by_3(outcomes=(Outcome(FENCE_HOST, False, ERROR, "host 3: not confirmed"),))
    d = decide(failed, starting(), K)
    assert d.memory.state == State.EngineStart and kinds(d) == [CLAIM, CHECK_LEASE, START_VM]
    assert RELEASE not in kinds(d)


def test_only_the_claim_holder_fences():
    # Every other state leaves a dead host alone: they do not hold the claim.
    for state in (State.EngineDown, State.EngineMaybeAway):
        other = lease_busy_by_3(owner=EngineClaim(2, "host2", NOW - 5), outcomes=())
        assert FENCE_HOST not in kinds(decide(other, Memory(state), K))


# ---- taking a dead engine host's claim over ---------------------------------------
PRODUCTION = PROFILES["production"]


def claim_held_by_dead_3(**kw):
    """Host 3 holds the engine claim and the engine lease; its record is 10 s
    old and its storage lease has stood still for 10 s. We are host 1."""
    base = dict(owner=EngineClaim(3, "host3", NOW - 100), lease_owners=(3,),
                hosts={1: rec(1), 2: rec(2, score=3000), 3: rec(3, state="EngineUp", vm="up", ts=NOW - 10)},
                delta_leases={1: (0.5, 1), 2: (0.5, 1), 3: (10.0, 4)}, bmcs=frozenset({1, 2, 3}))
    base.update(kw)
    return snap(**base)


@pytest.mark.parametrize("state", [State.EngineDown, State.EngineMaybeAway])
def test_the_best_host_takes_a_dead_holders_claim_over_and_fences_it_in_one_cycle(state):
    d = decide(claim_held_by_dead_3(), Memory(state), K)
    assert d.memory.state == State.EngineStart
    assert [(a.kind, a.target) for a in d.actions] == [(CLAIM, 3), (FENCE_HOST, 3)]


def test_in_production_the_claim_is_taken_over_before_the_record_is_stale():
    # 35 s of silence: live for record_stale_after (60 s), but past etcd_silence_s (25 s)
    # and fence_silence_s (30 s)
    assert PRODUCTION.fence_silence_s == 30 and PRODUCTION.etcd_silence_s == 25
    assert PRODUCTION.record_stale_after == 60
    s = claim_held_by_dead_3(timing=PRODUCTION, etcd_ttl=60,
                             hosts={1: rec(1), 3: rec(3, state="EngineUp", vm="up", ts=NOW - 35)},
                             delta_leases={1: (5.0, 1), 3: (35.0, 4)})
    d = decide(s, Memory(State.EngineDown), K)
    assert [(a.kind, a.target) for a in d.actions] == [(CLAIM, 3), (FENCE_HOST, 3)]
    young = replace(s, hosts={1: rec(1), 3: rec(3, state="EngineUp", vm="up", ts=NOW - 20)})
    assert kinds(decide(young, Memory(State.EngineDown), K)) == []


@pytest.mark.parametrize("change", [
    dict(hosts={1: rec(1), 3: rec(3, state="EngineUp", vm="up", ts=NOW - 1)}),   # its broker publishes
    dict(delta_leases={3: (FAST.fence_silence_s - 1, 4)}),                       # it renews its storage lease
    dict(bmcs=frozenset({1, 2})),                                                # no BMC to confirm the power-off
    dict(lease_owners=(2,)),                                                     # the lease is not the claim holder's
    dict(lease_owners=None),                                                     # the lease cannot be read
    dict(hosts={1: rec(1), 2: rec(2, score=3400)}, host_id=2),                   # host 1 is as good and has the lower id
    dict(fences={3: FenceRecord(3, 2, FENCED, 4, NOW - 3, NOW - 2)}),            # fenced already by another host
    dict(monitors={}, broker_ok=False),                                          # no broker to claim through
])
def test_no_take_over_unless_every_condition_holds(change):
    base = claim_held_by_dead_3()
    if change.get("host_id") == 2:
        change = dict(change, hosts={1: rec(1), 2: rec(2), 3: base.hosts[3]})
    d = decide(replace(base, **change), Memory(State.EngineMaybeAway), K)
    assert CLAIM not in kinds(d) and FENCE_HOST not in kinds(d)


def test_a_take_over_in_back_off_or_at_score_zero_waits():
    d = decide(claim_held_by_dead_3(), Memory(State.EngineDown, backoff_until=NOW + 5), K)
    assert kinds(d) == []
    d = decide(claim_held_by_dead_3(local_maintenance=False, lockspace_held=False), Memory(State.EngineDown), K)
    assert kinds(d) == []


def test_a_lost_take_over_race_goes_back_down_without_fencing():
    # the environment stops at the failed claim: the fence after it never runs
    lost = claim_held_by_dead_3(owner=EngineClaim(2, "host2", NOW), outcomes=(Outcome(CLAIM, False, "lost", "owned by host 2"),))
    d = decide(lost, Memory(State.EngineStart, since=NOW - 1, lease_wait_until=NOW + 60), K)
    assert d.memory.state == State.EngineDown and FENCE_HOST not in kinds(d)


def test_the_agent_looks_again_the_moment_both_silences_are_long_enough():
    s = claim_held_by_dead_3(timing=PRODUCTION, etcd_ttl=60,
                             hosts={1: rec(1), 3: rec(3, state="EngineUp", vm="up", ts=NOW - 12)},
                             delta_leases={1: (5.0, 1), 3: (20.0, 4)})
    d = decide(s, Memory(State.EngineDown), K)
    assert kinds(d) == [] and d.memory.fence_check_at == NOW + 13      # the record's 25 s silence
    later = decide(replace(s, now=NOW + 1, hosts={1: rec(1)}), d.memory, K)   # record gone
    assert later.memory.fence_check_at == NOW + 1 + 10                  # the storage lease's
    plain = decide(snap(), Memory(State.EngineDown), K)
    assert plain.memory.fence_check_at is None
