"""Agent order, retries and back-off of the fencing orchestrator (fake BMC runner)."""

import pytest

from keel_common import ipmi
from keel_engine.power.agents import AgentConfigError, make_spec, parse_options
from keel_engine.power.fencing import fence_through_agents

A1 = make_spec("127.0.9.10", "admin", "pw1", order=1)
A2 = make_spec("127.0.9.11", "admin", "pw2", order=2)


class ScriptedBmcs:
    """Answers per agent address from a script of results; records every call."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls = []

    def __call__(self, spec, op, deadline):
        self.calls.append((spec.address, op))
        kind = self.script[spec.address].pop(0)
        if kind == "ok":
            return ipmi.IpmiResult(op, True, power="off" if op == "off" else "on", message="fine")
        return ipmi.IpmiResult(op, False, kind=kind, message=kind)


def run(script, agents=(A2, A1), retries=2):
    bmcs, sleeps, events = ScriptedBmcs(script), [], []
    out = fence_through_agents(list(agents), "off", host="h1", retries=retries, backoff=1.0,
                               run=bmcs, sleep=sleeps.append,
                               emit=lambda sev, msg: events.append((sev, msg)))
    return out, bmcs.calls, sleeps, events


def test_first_agent_in_order_wins():
    out, calls, sleeps, _ = run({"127.0.9.10": ["ok"], "127.0.9.11": ["ok"]})
    assert out.confirmed_off and out.agent == A1.label
    assert calls == [("127.0.9.10", "off")] and sleeps == []


def test_unreachable_is_retried_with_backoff_then_next_agent():
    out, calls, sleeps, events = run({"127.0.9.10": ["unreachable", "timeout", "unreachable"],
                                      "127.0.9.11": ["ok"]})
    assert out.confirmed_off and out.agent == A2.label
    assert [c[0] for c in calls] == ["127.0.9.10"] * 3 + ["127.0.9.11"]
    assert sleeps == [1.0, 2.0]
    assert any("giving up on this agent" in m for _, m in events)


def test_wrong_credentials_are_not_retried():
    out, calls, sleeps, events = run({"127.0.9.10": ["auth"], "127.0.9.11": ["auth"]})
    assert not out.ok and len(out.config_errors) == 2
    assert calls == [("127.0.9.10", "off"), ("127.0.9.11", "off")] and sleeps == []
    assert [sev for sev, _ in events] == ["error", "error"]
    assert all("configuration error" in m for _, m in events)


def test_off_not_confirmed_is_a_failed_fence():
    out, calls, _, _ = run({"127.0.9.10": ["not_confirmed"]}, agents=(A1,))
    assert not out.ok and not out.confirmed_off and calls == [("127.0.9.10", "off")]


def test_no_agents():
    out = fence_through_agents([], "off", host="h1")
    assert not out.ok and "no fence agents" in out.message


def test_passwords_never_in_reprs_or_labels():
    spec = make_spec("127.0.9.10", "admin", "s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(spec) and "s3cr3t-pw" not in spec.label


@pytest.mark.parametrize("kwargs, message", [
    (dict(address=""), "address is empty"),
    (dict(address="bad host!"), "not an IP address or host name"),
    (dict(port="x"), "not a number"),
    (dict(port=70000), "out of range"),
    (dict(username=""), "user name is empty"),
    (dict(password="x" * 21), "longer than 20"),
    (dict(type="drac5"), "not supported"),
    (dict(options="cipher=17"), "only cipher suite 3"),
    (dict(options="lanplus=maybe"), "expected 1 or 0"),
    (dict(options="power_wait=4"), "unknown fence agent option"),
])
def test_bad_agent_config_gives_one_line_error(kwargs, message):
    args = dict(address="127.0.9.10", username="admin", password="pw")
    args.update(kwargs)
    with pytest.raises(AgentConfigError) as err:
        make_spec(**args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_options_forms():
    assert parse_options("lanplus=1, cipher=3") == {"lanplus": True, "cipher": 3}
    assert parse_options("lanplus") == {"lanplus": True}
    assert parse_options([{"name": "privlvl", "value": "operator"}]) == {"privlvl": "operator"}
    assert make_spec("bmc-1.example", "u", "p", options={"privlvl": "operator"}).privlevel == 3


def test_agent_fence_for_picks_a_done_fence_through_this_hosts_bmc_after_it_was_last_seen():
    from keel_common.bmc import FAILED, FENCED, FenceRecord
    from keel_engine.power.policy import agent_fence_for
    mine = {("127.0.2.31", 623)}

    def rec(state=FENCED, ended=200.0, address="127.0.2.31", port=623):
        return FenceRecord(1, 2, state, 1, ended - 1, ended, "", address, port)
    assert agent_fence_for([rec()], mine, last_seen=100.0) == rec()
    assert agent_fence_for([rec(state=FAILED)], mine, 100.0) is None          # not confirmed
    assert agent_fence_for([rec(ended=50.0)], mine, 100.0) is None            # an earlier failure's
    assert agent_fence_for([rec(address="127.0.2.32")], mine, 100.0) is None  # another host's BMC
    assert agent_fence_for([rec(port=624)], mine, 100.0) is None
    assert agent_fence_for([rec(ended=150.0), rec(ended=300.0)], mine, 100.0).ended == 300.0
