"""The broker against real etcd and real sanlock daemons."""
import threading
import time

import pytest

from harness.wait import wait_for
from keel_common.brokerclient import BrokerError

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_both_hosts_publish_live_records_and_hold_their_host_id(cluster):
    b1, b2 = cluster["brokers"]
    for b in (b1, b2):
        # The host-id lease takes a few io_timeouts to acquire.
        wait_for(lambda: b.client.call("status")["lockspace"]["held"], 60, "host-id lease")
    status = wait_for(lambda: (lambda s: s if {"1", "2"} <= set(s["hosts"]) else None)(b1.client.call("status")),
                      30, "both records")
    for hid in ("1", "2"):
        rec = status["hosts"][hid]
        assert status["now"] - rec["timestamp"] < status["timing"]["record_stale_after"]
        assert rec["hostname"] == f"host{hid}"
    assert status["monitors"]["storage"]["ok"], status["monitors"]["storage"]
    assert status["monitors"]["gateway"]["ok"], status["monitors"]["gateway"]
    assert status["monitors"]["engine_health"]["value"]["vm"] == "down"  # no engine VM in test:///default
    assert status["etcd"]["ok"]


def test_only_one_of_two_racing_hosts_wins_the_claim(cluster):
    b1, b2 = cluster["brokers"]
    for b in (b1, b2):
        b.client.call("release")
    results = {}
    barrier = threading.Barrier(2)

    def race(b):
        barrier.wait()
        results[b.cfg.host_id] = b.client.call("claim")["won"]
    threads = [threading.Thread(target=race, args=(b,)) for b in (b1, b2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [False, True], results
    winner = b1 if results[1] else b2
    loser = b2 if results[1] else b1
    # Claiming again is idempotent for the winner and still refused for the loser.
    assert winner.client.call("claim")["won"] is True
    answer = loser.client.call("claim")
    assert answer["won"] is False and answer["owner"]["host_id"] == winner.cfg.host_id
    assert winner.client.call("release")["released"] is True
    assert loser.client.call("claim")["won"] is True
    assert loser.client.call("release")["released"] is True


def test_a_claim_is_taken_over_only_from_the_named_holder(cluster):
    b1, b2 = cluster["brokers"]
    for b in (b1, b2):
        b.client.call("release")
    assert b1.client.call("claim")["won"] is True
    # naming another holder takes nothing
    answer = b2.client.call("claim", take_over=3)
    assert answer["won"] is False and answer["owner"]["host_id"] == 1
    answer = b2.client.call("claim", take_over=1)
    assert answer["won"] is True and answer["owner"]["host_id"] == 2
    # the former holder neither keeps it nor gets it back by re-claiming
    assert b1.client.call("claim")["won"] is False
    assert b1.client.call("release")["released"] is False
    with pytest.raises(BrokerError):
        b2.client.call("claim", take_over="1")
    assert b2.client.call("release")["released"] is True


def test_claim_vanishes_with_a_dead_brokers_lease(cluster):
    b1, b2 = cluster["brokers"]
    b2.client.call("release")
    assert b1.client.call("claim")["won"] is True
    b1.kill()  # its etcd lease is no longer renewed
    try:
        ttl = b2.cfg.timing.etcd_lease_ttl
        assert b2.client.call("claim")["won"] is False  # still held right after the kill
        wait_for(lambda: b2.client.call("claim")["won"], ttl + 15, "claim after the owner's lease expired")
        b2.client.call("release")
    finally:
        b1.start()
    # The restarted broker's host id is still held by its sanlock daemon: no re-join wait.
    wait_for(lambda: b1.client.call("status")["lockspace"]["held"], 30, "host-id lease after restart")


def test_claim_of_a_silent_agent_without_engine_vm_is_released(cluster):
    b1, b2 = cluster["brokers"]
    b2.client.call("release")
    assert b1.client.call("claim")["won"] is True
    b1.agent_alive.clear()
    try:
        # No engine VM runs on host1 and its agent stopped reporting: the
        # claim must not keep host2 waiting until someone cleans up by hand.
        wait_for(lambda: b1.client.call("status")["owner"] is None, 30, "orphaned claim released")
        assert b2.client.call("claim")["won"] is True
    finally:
        b1.agent_alive.set()
        b2.client.call("release")


def test_maintenance_modes_and_local_survives_restart(cluster):
    b1, b2 = cluster["brokers"]
    b1.client.call("set_maintenance", mode="global")
    wait_for(lambda: b2.client.call("status")["global_maintenance"], 10, "global maintenance seen by host2")
    b2.client.call("set_maintenance", mode="local")
    b2.stop()
    b2.start()
    assert b2.client.call("status")["local_maintenance"] is True
    wait_for(lambda: b1.client.call("status")["hosts"]["2"]["maintenance"], 10, "host2 record shows maintenance")
    b2.client.call("set_maintenance", mode="none")
    st = wait_for(lambda: (lambda s: s if not s["global_maintenance"] else None)(b1.client.call("status")),
                  10, "global maintenance cleared")
    assert b2.client.call("status")["local_maintenance"] is False
    assert st["global_maintenance"] is False


def test_shared_config_round_trip(cluster):
    b1, b2 = cluster["brokers"]
    v = b1.client.call("set_shared_config", key="notify.smtp", value="mail.example.test")["version"]
    assert b2.client.call("get_shared_config", key="notify.smtp")["value"] == "mail.example.test"
    assert b2.client.call("set_shared_config", key="notify.smtp", value="x")["version"] == v + 1
    with pytest.raises(BrokerError, match="key must be a non-empty name"):
        b1.client.call("get_shared_config", key="a/b")


def test_bad_requests_get_clear_errors(cluster):
    b1 = cluster["brokers"][0]
    with pytest.raises(BrokerError, match="unknown op 'explode'"):
        b1.client.call("explode")
    with pytest.raises(BrokerError, match="mode must be one of: global, local, none"):
        b1.client.call("set_maintenance", mode="sideways")
    with pytest.raises(BrokerError, match="action must be one of"):
        b1.client.call("request", action="vm-explode")
    with pytest.raises(BrokerError, match="publish needs a 'record' object"):
        b1.client.call("publish", record=[1])


def test_agent_requests_are_queued_once(cluster):
    b1 = cluster["brokers"][0]
    b1.client.call("take_requests")
    b1.client.call("request", action="vm-shutdown")
    assert [r["action"] for r in b1.client.call("take_requests")["requests"]] == ["vm-shutdown"]
    assert b1.client.call("take_requests")["requests"] == []


def test_broker_answers_at_once_while_etcd_is_frozen(cluster):
    b1 = cluster["brokers"][0]
    etcd = cluster["etcd"]
    etcd.pause()
    try:
        st = wait_for(lambda: (lambda s: s if not s["etcd"]["ok"] else None)(b1.client.call("status")),
                      b1.cfg.timing.etcd_lease_ttl + 20, "etcd reported down")
        started = time.monotonic()
        st = b1.client.call("status")
        assert time.monotonic() - started < 3  # answered from the cache, not blocked on etcd
        assert "etcd unreachable" in (st["etcd"]["error"] or "")
        with pytest.raises(BrokerError, match="etcd"):
            b1.client.call("claim")
    finally:
        etcd.resume()
    wait_for(lambda: b1.client.call("status")["etcd"]["ok"], 30, "etcd back")
