"""The HA agents fence the engine's dead host through its BMC: the engine
runs inside the engine VM and dies with its host, so only the agents can.
The engine that comes back must agree: it never fences a host whose
storage lease still moves, even when that host's BMC lies."""
from __future__ import annotations

import json
import time

import pytest

from keel_lab import hosts, probe
from keel_lab.observer import read_events
from lab_helpers import LabDriver, module_lab, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.lab, pytest.mark.root]


@pytest.fixture(scope="module")
def lab():
    with module_lab("keel-lab-fence-") as driver:
        yield driver


def fences(lab: LabDriver, via: str) -> dict:
    cp = lab.cli("exec", via, "--", "python3", "-c",
                 "import json; from keel_common.brokerclient import BrokerClient; "
                 "from keel_common.config import load_host_config; "
                 "print(json.dumps(BrokerClient(load_host_config().broker_socket).call('status')['fences']))")
    return json.loads(cp.stdout.strip().splitlines()[-1])


def restore(lab: LabDriver) -> str:
    return lab.ensure_healthy()


def other_host(lab: LabDriver, than: str) -> str:
    return next(h.name for h in lab.layout.all_hosts() if h.name != than and hosts.powered_on(h))


def test_every_host_knows_every_bmc_without_its_password(lab):
    engine_host = restore(lab)
    out = lab.he(other_host(lab, engine_host), "--vm-status").stdout
    for h in lab.layout.all_hosts():
        assert f"ipmilan:admin@198.51.100.1:{h.bmc_port}" in out
    assert "keel-lab" not in out          # the lab's BMC password


def test_power_loss_of_the_engine_host_is_fenced_by_an_agent(lab):
    engine_host = restore(lab)
    h = lab.layout.host(engine_host)
    since = time.time()
    lab.cli("power", engine_host, "off")
    new_host = wait_for("the engine up on another host", lambda: (
        (x := lab.single_engine()) and x != engine_host and x), 240)
    # The fence is on record: by the host that started the engine, this episode, done.
    rec = fences(lab, new_host).get(str(h.index))
    assert rec is not None and rec["state"] == "fenced" and rec["started"] >= since - 1, rec
    assert rec["by"] == lab.layout.host(new_host).index
    assert "host lease released" in rec["detail"]
    out = lab.he(new_host, "--vm-status").stdout
    assert f"fenced by host {rec['by']}" in out
    # The engine started on the fence, not on sanlock's expiry of the dead host's lease.
    start = next(e for e in read_events(lab.dir) if e["event"] == "start" and e["t"] >= since)
    assert start["host"] == new_host and start["t"] >= rec["ended"]
    agent_log = open(lab.layout.host(new_host).path("logs", "agent.log")).read()
    assert f"host {h.index} is off (confirmed by its BMC" in agent_log
    v = lab.verdict(since)
    assert v["multiple_engines"] == [] and v["starts_without_lease"] == [], v
    assert lab.cli("power", engine_host, "status").stdout.strip().endswith("off")


def test_without_a_bmc_the_agents_wait_for_sanlock(lab):
    engine_host = restore(lab)
    h = lab.layout.host(engine_host)
    via = other_host(lab, engine_host)
    assert lab.he(via, "--remove-bmc", f"--host-id={h.index}").returncode == 0
    try:
        since = time.time()
        lab.cli("power", engine_host, "off")
        new_host = wait_for("the engine up on another host", lambda: (
            (x := lab.single_engine()) and x != engine_host and x), 300)
        rec = fences(lab, new_host).get(str(h.index))
        assert rec is None or rec["started"] < since, rec      # nobody fenced it this time
        agent_log = open(lab.layout.host(new_host).path("logs", "agent.log")).read()
        assert f"host {h.index} looks dead (no record, storage lease standing still) but has no BMC" in agent_log
        v = lab.verdict(since)
        assert v["multiple_engines"] == [] and v["starts_without_lease"] == [], v
    finally:
        lab.power_on_with_its_bmc(engine_host, via)


def test_a_host_cut_off_from_the_network_is_not_fenced(lab):
    engine_host = restore(lab)
    h = lab.layout.host(engine_host)
    since = time.time()
    lab.cli("partition", engine_host, "--net")
    try:
        new_host = wait_for("the engine up on another host", lambda: (
            (x := [n for n in lab.engine_hosts() if n != engine_host]) and lab.health_ok() and x[0]), 240)
        time.sleep(5)   # a fence would have come by now: the storage lease is still renewed
        rec = fences(lab, new_host).get(str(h.index))
        assert rec is None or rec["started"] < since, rec
        assert hosts.powered_on(h)         # nobody pulled its plug
        assert engine_host not in lab.engine_hosts()   # it stopped its own engine VM
        v = lab.verdict(since)
        assert v["multiple_engines"] == [] and v["starts_without_lease"] == [], v
    finally:
        lab.cli("heal", engine_host)
    wait_for("the healed host's daemons", lambda: all(probe.daemon_pids(h).values()), 120)
    lab.wait_single_engine()
    assert lab.verdict()["ok"]


def test_a_lying_bmc_is_not_believed_while_the_storage_says_alive(lab):
    """The engine host's BMC lies (reports off, powers nothing off) and the host
    is cut off from the network: its storage lease still moves, so no agent
    fences it; it gives the engine up itself, and one engine runs at a time."""
    engine_host = restore(lab)
    h = lab.layout.host(engine_host)
    since = time.time()
    lab.cli("bmc", engine_host, "lie")
    assert lab.cli("power", engine_host, "status").stdout.strip().endswith("off")   # the lie
    lab.cli("partition", engine_host, "--net")
    try:
        new_host = wait_for("the engine up on another host", lambda: (
            (x := [n for n in lab.engine_hosts() if n != engine_host]) and lab.health_ok() and x[0]), 240)
        rec = fences(lab, new_host).get(str(h.index))
        assert rec is None or rec["started"] < since, rec
        assert hosts.powered_on(h)
        v = lab.verdict(since)
        assert v["multiple_engines"] == [] and v["starts_without_lease"] == [], v
    finally:
        lab.cli("heal", engine_host)       # also makes the BMC honest again
    assert lab.cli("power", engine_host, "status").stdout.strip().endswith("on")
    wait_for("the healed host's daemons", lambda: all(probe.daemon_pids(h).values()), 120)
    lab.wait_single_engine()
    assert lab.verdict()["ok"]
