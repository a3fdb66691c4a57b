"""Table tests of the pure host-failure policy (no I/O)."""

import pytest

from keel_engine.power.policy import (
    FENCE, FENCE_CONFIRMED, FENCE_FAILED, FENCE_NONE, HOLD_VM, MARK_DOWN, NO_TARGET,
    RESTART_VM, SKIP_FENCING, WAIT, HaVm, HostView, PolicyConfig, Snapshot, decide,
    place_vms, stale_domains)

CFG = PolicyConfig(grace_period=30, max_unresponsive_share=0.5)
NOW = 1000.0


def host(hid, status="up", free=4096, since=None, lease=None, agents=True):
    return HostView(id=hid, name=hid, status=status, cluster_id="c1", free_memory_mb=free,
                    unresponsive_since=since, renews_storage_lease=lease, has_fence_agents=agents)


FAILED = host("h1", "non_responsive", since=NOW - 60)
VMS = (HaVm("v-low", "v-low", 512, priority=1), HaVm("v-high", "v-high", 1024, priority=100))


def snap(failed=FAILED, others=(host("h2"), host("h3")), vms=VMS, fence=FENCE_NONE):
    return Snapshot(now=NOW, host=failed, cluster_hosts=(failed,) + tuple(others),
                    ha_vms=vms, fence_state=fence)


def kinds(actions):
    return [a.kind for a in actions]


@pytest.mark.parametrize("case, s, expected", [
    ("host up: nothing to do",
     snap(failed=host("h1", "up")), []),
    ("inside the grace period: wait, no restart",
     snap(failed=host("h1", "non_responsive", since=NOW - 10)), [WAIT]),
    ("past grace, fence agents, no lease renewal: fence, VMs held",
     snap(), [FENCE, HOLD_VM, HOLD_VM]),
    ("still renews its storage lease: skip fencing, VMs held",
     snap(failed=host("h1", "non_responsive", since=NOW - 60, lease=True)),
     [SKIP_FENCING, HOLD_VM, HOLD_VM]),
    ("no fence agents: skip fencing, VMs held",
     snap(failed=host("h1", "non_responsive", since=NOW - 60, agents=False)),
     [SKIP_FENCING, HOLD_VM, HOLD_VM]),
    ("fence failed: no fence retry, no restart",
     snap(fence=FENCE_FAILED), [HOLD_VM, HOLD_VM]),
    ("fence confirmed: mark down, then restart by priority",
     snap(fence=FENCE_CONFIRMED), [MARK_DOWN, RESTART_VM, RESTART_VM]),
    ("already down after confirmed fence: only restarts",
     snap(failed=host("h1", "down"), fence=FENCE_CONFIRMED), [RESTART_VM, RESTART_VM]),
])
def test_decide_table(case, s, expected):
    assert kinds(decide(s, CFG)) == expected, case


def test_fencing_storm_is_skipped():
    # 2 of 3 hosts non-responsive (67 % > 50 %): a network problem, not host failures
    s = snap(others=(host("h2", "non_responsive", since=NOW - 60), host("h3")))
    actions = decide(s, CFG)
    assert kinds(actions) == [SKIP_FENCING, HOLD_VM, HOLD_VM]
    assert "2 of 3 hosts" in actions[0].reason


def test_share_at_threshold_still_fences():
    # 1 of 2 = 50 %, not more than 50 %: fence
    s = snap(others=(host("h2"),))
    assert kinds(decide(s, CFG))[0] == FENCE


def test_restart_order_is_priority_then_memory():
    actions = decide(snap(fence=FENCE_CONFIRMED), CFG)
    restarts = [a for a in actions if a.kind == RESTART_VM]
    assert [a.vm_id for a in restarts] == ["v-high", "v-low"]
    assert all(a.target_host_id in ("h2", "h3") for a in restarts)


def test_never_restarts_on_the_failed_or_a_non_up_host():
    others = (host("h2", "maintenance", free=100000), host("h3", "non_responsive", free=100000),
              host("h4", free=2048))
    actions = decide(snap(others=others, fence=FENCE_CONFIRMED), PolicyConfig(max_unresponsive_share=1))
    targets = {a.target_host_id for a in actions if a.kind == RESTART_VM}
    assert targets == {"h4"}


def test_memory_is_honoured():
    vms = (HaVm("big", "big", 3000, priority=50), HaVm("mid", "mid", 2000, priority=10),
           HaVm("small", "small", 500, priority=1))
    actions = place_vms(vms, (host("h2", free=3500), host("h3", free=2100)), "h1")
    by_vm = {a.vm_id: a for a in actions}
    assert by_vm["big"].kind == RESTART_VM and by_vm["big"].target_host_id == "h2"
    assert by_vm["mid"].kind == RESTART_VM and by_vm["mid"].target_host_id == "h3"
    assert by_vm["small"].kind == RESTART_VM and by_vm["small"].target_host_id == "h2"
    tight = place_vms(vms, (host("h2", free=1000),), "h1")
    assert [a.kind for a in tight] == [NO_TARGET, NO_TARGET, RESTART_VM]


def test_lease_expired_vm_restarts_without_any_fence():
    vms = (HaVm("leased", "leased", 512, lease_expired=True), HaVm("held", "held", 512))
    s = snap(failed=host("h1", "non_responsive", since=NOW - 60, agents=False), vms=vms)
    actions = decide(s, CFG)
    assert kinds(actions) == [SKIP_FENCING, HOLD_VM, RESTART_VM]
    assert actions[1].vm_id == "held" and actions[2].vm_id == "leased"


@pytest.mark.parametrize("fence", [FENCE_NONE, FENCE_FAILED])
@pytest.mark.parametrize("failed", [
    host("h1", "non_responsive", since=NOW - 5),
    host("h1", "non_responsive", since=NOW - 600),
    host("h1", "non_responsive", since=NOW - 600, lease=True),
    host("h1", "non_responsive", since=NOW - 600, agents=False),
])
def test_no_restart_without_confirmed_fence_or_expired_lease(fence, failed):
    actions = decide(snap(failed=failed, fence=fence), CFG)
    assert RESTART_VM not in kinds(actions)
    assert MARK_DOWN not in kinds(actions)


def test_stale_domains_on_returning_host():
    home = {"a": "h2", "b": "h1", "c": None}
    assert stale_domains("h1", ["a", "b", "c", "unknown"], home) == ["a"]


def test_bad_policy_config_is_rejected():
    with pytest.raises(ValueError):
        PolicyConfig(max_unresponsive_share=0)
    with pytest.raises(ValueError):
        PolicyConfig(grace_period=-1)


def test_released_vms_restart_even_when_the_host_is_no_longer_non_responsive():
    # fenced earlier (marked down, VMs released), then powered on again ('connecting')
    vms = (HaVm("r", "r", 512, released=True), HaVm("on-host", "on-host", 512))
    s = snap(failed=host("h1", "connecting"), vms=vms)
    actions = decide(s, CFG)
    assert [(a.kind, a.vm_id) for a in actions] == [(RESTART_VM, "r")]


def test_booting_host_gets_its_own_grace_period():
    booting = HostView(id="h1", name="h1", status="non_responsive", cluster_id="c1",
                       unresponsive_since=NOW - 120, has_fence_agents=True, grace_period=600)
    assert kinds(decide(snap(failed=booting), CFG)) == [WAIT]


def test_no_fence_while_the_storage_lease_cannot_be_judged_yet():
    pending = HostView(id="h1", name="h1", status="non_responsive", cluster_id="c1",
                       unresponsive_since=NOW - 120, has_fence_agents=True, liveness_pending=True)
    actions = decide(snap(failed=pending), CFG)
    assert kinds(actions) == [WAIT] and "storage lease" in actions[0].reason


def test_an_ha_vm_that_died_on_an_up_host_may_restart_there():
    """A single-host cluster: the host answers, the VM died there; no other host."""
    died = HaVm("v", "v", 512, released=True)
    up = host("h1", "up")
    actions = decide(Snapshot(now=NOW, host=up, cluster_hosts=(up,), ha_vms=(died,),
                              fence_state=FENCE_NONE), CFG)
    assert kinds(actions) == [RESTART_VM] and actions[0].target_host_id == "h1"
    # a failed host is never a target for its own VMs
    down = host("h1", "down")
    actions = decide(Snapshot(now=NOW, host=down, cluster_hosts=(down,), ha_vms=(died,),
                              fence_state=FENCE_NONE), CFG)
    assert kinds(actions) == [NO_TARGET]
