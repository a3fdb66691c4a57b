"""IPMI operations and fencing against real BMC simulators (ipmi_sim over UDP)."""

import os
import subprocess
import time

import pytest

from keel_common import ipmi
from keel_engine.power.agents import make_spec
from keel_engine.power.fencing import fence_through_agents
from keel_lab.bmc import BmcSimulator, rmcp_ping

from .conftest import needs_ipmi_sim

pytestmark = [needs_ipmi_sim]


def spec_for(bmc, password="s3cret", user="admin", order=1, port=None):
    return make_spec(bmc.address, user, password, port=port or bmc.port, order=order,
                     options="lanplus=1,cipher=3")


def test_round_trips(bmc1):
    bmc, chassis = bmc1
    spec = spec_for(bmc)
    assert ipmi.run_operation(spec, "status").power == "on"
    off = ipmi.run_operation(spec, "off")
    assert off.ok and off.power == "off" and chassis.power() == "off"
    assert ipmi.run_operation(spec, "status").power == "off"
    on = ipmi.run_operation(spec, "on")
    assert on.ok and on.power == "on" and chassis.power() == "on"
    restart = ipmi.run_operation(spec, "restart")
    assert restart.ok and chassis.power() == "on"
    assert "power off confirmed" in restart.message
    test = ipmi.test_agent(spec)
    assert test.ok and test.power == "on" and test.message == "power is on"


def test_off_when_already_off_is_confirmed(bmc1):
    bmc, chassis = bmc1
    chassis.set("off")
    result = ipmi.run_operation(spec_for(bmc), "off")
    assert result.ok and result.power == "off"


@pytest.mark.parametrize("user, password", [("admin", "wrong-pw"), ("nobody", "s3cret")])
def test_bad_credentials_are_auth_errors(bmc1, user, password):
    bmc, chassis = bmc1
    result = ipmi.run_operation(spec_for(bmc, user=user, password=password), "off")
    assert not result.ok and result.kind == ipmi.AUTH
    assert chassis.power() == "on"


@pytest.mark.slow
def test_unreachable_bmc_respects_the_deadline(bmc1):
    # nothing listens on this port: pyghmi would give up after ~5 s on its own
    spec = make_spec("127.0.2.13", "admin", "s3cret", port=16313)
    started = time.monotonic()
    result = ipmi.run_operation(spec, "status", deadline=2.0)
    assert not result.ok and result.kind in (ipmi.TIMEOUT, ipmi.UNREACHABLE)
    assert time.monotonic() - started < 2.0 + 5.0  # deadline plus kill and reap, on a loaded box


@pytest.mark.slow
def test_hung_bmc_is_killed_at_the_deadline(bmc1):
    bmc, chassis = bmc1
    bmc.pause()  # receives packets, never answers: pyghmi alone would hang
    try:
        started = time.monotonic()
        result = ipmi.run_operation(spec_for(bmc), "off", deadline=3.0)
        elapsed = time.monotonic() - started
    finally:
        bmc.resume()
    assert not result.ok and result.kind == ipmi.TIMEOUT
    assert elapsed < 3.0 + 5.0
    assert chassis.power() == "on"


@pytest.mark.slow
def test_bmc_that_never_powers_off_fails_the_fence(bmc1):
    bmc, chassis = bmc1
    chassis.mode("stuck")
    events = []
    out = fence_through_agents([spec_for(bmc)], "off", host="h1", deadline=4.0,
                               emit=lambda sev, msg: events.append((sev, msg)))
    assert not out.ok and not out.confirmed_off and out.power == "on"
    assert out.attempts[-1].result.kind == ipmi.NOT_CONFIRMED
    assert any("still reports on" in m for _, m in events)
    assert chassis.power() == "on"


def test_wrong_password_on_first_agent_then_second_agent_fences(bmc1, bmc2):
    (b1, c1), (b2, c2) = bmc1, bmc2
    events = []
    agents = [spec_for(b1, password="wrong-pw", order=1), spec_for(b2, order=2)]
    out = fence_through_agents(agents, "off", host="h1", backoff=0.1,
                               emit=lambda sev, msg: events.append((sev, msg)))
    assert out.confirmed_off and out.agent == agents[1].label
    assert len(out.attempts) == 2  # the auth failure was not retried
    assert events[0][0] == "error" and "configuration error" in events[0][1]
    assert c1.power() == "on" and c2.power() == "off"


def test_independent_clients_agree(bmc1):
    bmc, chassis = bmc1
    base = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", bmc.address, "-p", str(bmc.port),
            "-U", "admin", "-P", "s3cret", "power"]
    out = subprocess.run(base + ["status"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "is on" in out.stdout
    assert subprocess.run(base + ["off"], capture_output=True, timeout=30).returncode == 0
    assert chassis.power() == "off"
    assert ipmi.run_operation(spec_for(bmc), "status").power == "off"
    fence = ["fence_ipmilan", "--lanplus", "--cipher=3", f"--ip={bmc.address}",
             f"--ipport={bmc.port}", "--username=admin", "--password=s3cret"]
    out = subprocess.run(fence + ["-o", "on"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert chassis.power() == "on"
    out = subprocess.run(fence + ["-o", "status"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "ON" in out.stdout


def test_simulator_lifecycle_and_bad_input(tmp_path):
    with pytest.raises(ValueError, match="password"):
        BmcSimulator("127.0.2.14", 16314, "admin", "has space", tmp_path, ["/bin/true"])
    with pytest.raises(ValueError, match="port"):
        BmcSimulator("127.0.2.14", 0, "admin", "pw", tmp_path, ["/bin/true"])
    from .conftest import make_bmc
    bmc, chassis = make_bmc(tmp_path, "life", "127.0.2.14", 16314)
    bmc.start()
    pid = bmc.pid
    assert rmcp_ping("127.0.2.14", 16314)
    bmc.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not rmcp_ping("127.0.2.14", 16314, timeout=0.5)
