"""The simulator's own safety checks must catch a broken agent: each test
breaks one rule on purpose and expects the violation."""
import subprocess
import sys

import pytest

import keel_agent.rules as rules_mod
from keel_agent.score import score_constants
from keel_agent.sim import ScenarioError, parse_scenario, run_scenario
from keel_agent.simenv import SimVm, World
from keel_agent.states import START_VM, Action


def scenario(tmp_path, text):
    (tmp_path / "cmds").write_text(text)
    return str(tmp_path)


def test_engine_kept_past_the_etcd_lease_is_caught(tmp_path):
    # Forcing the stop only after the lease TTL is exactly the bug DESIGN warns about.
    folder = scenario(tmp_path, "hosts 2\nscore etcd_force_fraction 1.5\ntiming engine_stop_timeout 30\n"
                                "@0 engine-running host1\n@0 acpi ignore\n@10 etcd host1 off\n@30 end\n")
    _, violations = run_scenario(folder)
    assert any("after its etcd lease expired" in v for v in violations)


def test_start_without_claim_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(rules_mod, "_start_actions", lambda reason: (Action(START_VM, reason),))
    _, violations = run_scenario(scenario(tmp_path, "hosts 2\n@10 end\n"))
    assert any("without holding the claim" in v for v in violations)


def test_two_agent_started_engines_are_caught():
    w = World(2, score_constants())
    w.vms = {1: SimVm(1, 0), 2: SimVm(2, 0)}
    w.check_invariants()
    assert any("two engine VMs" in v for v in w.violations)


def test_unresolved_second_engine_is_caught():
    w = World(2, score_constants())
    for h in w.hosts.values():
        h.agent = None  # nobody resolves it
    w.vms = {1: SimVm(1, 0), 2: SimVm(2, 0, rogue=True)}
    for _ in range(8):
        w.tick()
    assert any("not resolved" in v for v in w.violations)


@pytest.mark.parametrize("text, message", [
    ("@5 end\n", "missing 'hosts N'"),
    ("hosts 2\n", "missing '@T end'"),
    ("hosts two\n@1 end\n", "cannot parse"),
    ("hosts 2\nfrobnicate\n@1 end\n", "unknown line"),
])
def test_bad_scenario_files_give_one_line_errors(text, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text)


def test_runner_cli_reports_bad_commands_in_one_line(tmp_path):
    folder = scenario(tmp_path, "hosts 2\n@1 power host9 off\n@5 end\n")
    out = subprocess.run([sys.executable, "-m", "keel_agent.sim", folder], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no such host 'host9'" in out.stderr
