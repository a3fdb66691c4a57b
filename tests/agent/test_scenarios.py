"""Every folder under tests/scenarios/ is one scenario: its `cmds` run in the
simulator with the real decision core, and the produced log must equal the
checked-in `expected.log`. The simulator's own invariant checks (never two
engines started, never a start without the claim, no engine left running past
its host's etcd lease) must hold in every scenario.

Regenerate the golden logs after a reviewed behaviour change with
    KEEL_REGEN_SCENARIOS=1 .venv/bin/python -m pytest tests/agent/test_scenarios.py
and review the diff: a golden log showing two engines is a bug, not a golden.
"""
import os
import pathlib

import pytest

from keel_agent.sim import run_scenario

ROOT = pathlib.Path(__file__).resolve().parents[1] / "scenarios"
SCENARIOS = sorted(p.name for p in ROOT.iterdir() if (p / "cmds").is_file())


def test_there_are_enough_scenarios():
    assert len(SCENARIOS) >= 25


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name):
    folder = ROOT / name
    log, violations = run_scenario(str(folder))
    assert violations == [], f"{name}: invariant violated: {violations}"
    text = "\n".join(log) + "\n"
    expected = folder / "expected.log"
    if os.environ.get("KEEL_REGEN_SCENARIOS") == "1":
        expected.write_text(text)
    assert expected.is_file(), f"{name}: no expected.log (run with KEEL_REGEN_SCENARIOS=1 and review it)"
    assert text == expected.read_text(), f"{name}: log differs from expected.log"


def test_every_state_is_visited_by_some_scenario():
    from keel_agent.states import State
    logs = "".join((ROOT / name / "expected.log").read_text() for name in SCENARIOS
                   if (ROOT / name / "expected.log").is_file())
    missing = [s.value for s in State if f"-> {s.value}:" not in logs and f"{s.value} ->" not in logs]
    assert missing == []
