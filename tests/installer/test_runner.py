"""The deploy's step runner and its record: progress, failures, Ctrl-C."""
import io
import json
import os

import pytest

from keel_installer.record import DeployRecord
from keel_installer.runner import Progress, Step, StepFailed, Stopped, run_steps
from keel_installer.services import unit_text


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def progress():
    clock = Clock()
    return Progress(io.StringIO(), clock=clock, sleep=clock.sleep), clock


def test_steps_are_numbered_named_and_timed():
    p, clock = progress()
    done = []
    steps = [Step("First", lambda pr: clock.sleep(2.5)), Step("Second", lambda pr: pr.note("hello"))]
    run_steps(steps, p, on_done=lambda i, s, t: done.append((i, s.name, t)))
    text = p.out.getvalue()
    assert "[1/2] First" in text and "[2/2] Second" in text
    assert "done in 2.5 s" in text and "      hello" in text
    assert done == [(0, "First", 2.5), (1, "Second", 0.0)]


def test_a_failing_step_stops_the_run_and_names_itself():
    p, _ = progress()
    ran = []

    def fail(pr):
        raise StepFailed("the disk is full", "free some space")
    steps = [Step("One", lambda pr: ran.append(1)), Step("Two", fail), Step("Three", lambda pr: ran.append(3))]
    with pytest.raises(StepFailed) as e:
        run_steps(steps, p)
    assert ran == [1]
    assert e.value.step == "step 2/3 (Two)" and e.value.todo == "free some space"


def test_ctrl_c_in_a_step_is_a_clean_stop_naming_the_step():
    p, _ = progress()

    def interrupted(pr):
        raise KeyboardInterrupt
    with pytest.raises(Stopped, match=r"step 1/1 \(Waiting\)"):
        run_steps([Step("Waiting", interrupted)], p)


def test_a_wait_says_what_it_waits_for_and_fails_with_the_todo():
    p, clock = progress()
    with pytest.raises(StepFailed) as e:
        p.wait("the engine to answer", lambda: False, timeout=30, interval=1, todo="look at the console")
    assert "the engine to answer did not happen within 30 s" == e.value.why
    assert e.value.todo == "look at the console"
    assert "waiting for the engine to answer (10 s of at most 30 s)" in p.out.getvalue()
    assert clock.t == 30


def test_a_wait_returns_the_first_true_result():
    p, clock = progress()
    answers = iter([None, "", "yes"])
    assert p.wait("x", lambda: next(answers), timeout=10) == "yes"
    assert clock.t == 2


def test_record_lists_what_will_be_made_before_it_is_made(tmp_path):
    path = str(tmp_path / "keel" / "deploy.json")
    r = DeployRecord(path=path)
    r.will_make("file", "/etc/keel/hosted-engine.conf")
    r.will_make("file", "/etc/keel/hosted-engine.conf")
    r.step_done("Pre-flight checks")
    again = DeployRecord.load(path)
    assert again.made == [{"kind": "file", "what": "/etc/keel/hosted-engine.conf"}]
    assert again.steps_done == ["Pre-flight checks"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with pytest.raises(AssertionError):
        r.will_make("bogus", "x")


def test_an_unreadable_record_is_one_clear_error(tmp_path):
    path = tmp_path / "deploy.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        DeployRecord.load(str(path))
    assert DeployRecord.load(str(tmp_path / "none.json")) is None


def test_unit_text_quotes_arguments_and_environment():
    text = unit_text("etcd", ["/usr/bin/etcd", "--name", "host 1"], env={"A": "b c"}, restart="on-failure")
    assert "ExecStart=/usr/bin/etcd --name 'host 1'" in text
    assert "Environment='A=b c'" in text and "Restart=on-failure" in text
    assert "WantedBy=multi-user.target" in text
