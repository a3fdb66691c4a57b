"""Fast tests of the unit files a bare host's init runs (keel_lab.units):
the subset of systemd's format it reads, and which units count as enabled."""
from __future__ import annotations

import os

import pytest

from keel_lab import units
from keel_lab.hostinit import Daemon
from keel_lab.units import UnitError, parse_timespan, parse_unit

BROKER = """\
[Unit]
Description=Keel HA broker
After=network-online.target sanlock.service

[Service]
Type=notify
ExecStart=/opt/keel/bin/keel-ha-broker --config /etc/keel/hosted-engine.conf
Environment=PYTHONUNBUFFERED=1 "KEEL_NOTE=two words"
Environment=SANLOCK_RUN_DIR=/run/sanlock
WatchdogSec=60
Restart=always
RestartSec=2
KillMode=mixed
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def test_a_service_unit_gives_argv_environment_and_policies():
    u = parse_unit("keel-ha-broker.service", BROKER)
    assert u.argv({}) == ["/opt/keel/bin/keel-ha-broker", "--config", "/etc/keel/hosted-engine.conf"]
    assert u.env() == {"PYTHONUNBUFFERED": "1", "KEEL_NOTE": "two words", "SANLOCK_RUN_DIR": "/run/sanlock"}
    assert (u.restart, u.restart_sec, u.timeout_stop_sec, u.kill_mode) == ("always", 2.0, 30.0, "mixed")
    assert u.text == BROKER


def test_defaults_are_systemds_but_a_ten_second_stop_timeout():
    u = parse_unit("x.service", "[Service]\nExecStart=/bin/sleep 100\n")
    assert (u.restart, u.restart_sec, u.timeout_stop_sec, u.kill_mode) == ("no", 0.1, 10.0, "control-group")
    assert u.env() == {}


def test_quoting_continuations_comments_and_prefixes():
    text = ("# a comment\n; another\n[Service]\n"
            "ExecStart=-/usr/bin/python3 -c 'import sys; sys.exit(3)' \\\n"
            "    --flag \"a b\"\n")
    assert parse_unit("q.service", text).argv({}) == [
        "/usr/bin/python3", "-c", "import sys; sys.exit(3)", "--flag", "a b"]


def test_variables_in_execstart_come_from_the_environment():
    text = ("[Service]\nEnvironment=ARGS=\"--a 1 --b\" PORT=8080\n"
            "ExecStart=/bin/server $ARGS --port=${PORT} $MISSING x${PORT}y\n")
    u = parse_unit("v.service", text)
    assert u.argv(u.env()) == ["/bin/server", "--a", "1", "--b", "--port=8080", "x8080y"]


def test_empty_assignments_reset_lists_and_the_last_execstart_wins():
    text = ("[Service]\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\n"
            "ExecStart=/bin/one\nExecStart=\nExecStart=/bin/two\n")
    u = parse_unit("r.service", text)
    assert u.env() == {"B": "2"} and u.argv({}) == ["/bin/two"]


def test_environment_files_are_read_at_start_and_win(tmp_path):
    env_file = tmp_path / "defaults"
    env_file.write_text("# comment\nA=from-file\nQUOTED=\"x y\"\n\n")
    text = (f"[Service]\nEnvironment=A=inline B=inline\nEnvironmentFile={env_file}\n"
            f"EnvironmentFile=-{tmp_path / 'missing'}\nExecStart=/bin/true\n")
    u = parse_unit("e.service", text)
    assert u.env() == {"A": "from-file", "B": "inline", "QUOTED": "x y"}
    env_file.write_text("A=changed\n")
    assert u.env()["A"] == "changed"
    strict = parse_unit("s.service", f"[Service]\nEnvironmentFile={tmp_path / 'missing'}\nExecStart=/bin/true\n")
    with pytest.raises(UnitError, match="does not exist"):
        strict.env()


@pytest.mark.parametrize("span,seconds", [
    ("2", 2.0), ("2s", 2.0), ("500ms", 0.5), ("1min 30s", 90.0), ("1.5s", 1.5), ("2min", 120.0),
    ("infinity", float("inf")), (" 3 sec ", 3.0), ("1h", 3600.0),
])
def test_time_spans(span, seconds):
    assert parse_timespan(span) == seconds


@pytest.mark.parametrize("span", ["", "soon", "-1", "5 fortnights", "1s garbage"])
def test_bad_time_spans(span):
    with pytest.raises(UnitError):
        parse_timespan(span)


@pytest.mark.parametrize("text,needle", [
    ("[Service]\nType=simple\n", "has no ExecStart"),
    ("[Unit]\nDescription=x\n", "has no ExecStart"),
    ("[Service]\nExecStart=/bin/x\nRestart=sometimes\n", "Restart=sometimes"),
    ("[Service]\nExecStart=/bin/x\nKillMode=gently\n", "KillMode=gently"),
    ("[Service]\nExecStart=/bin/x\nRestartSec=soon\n", "not a time span"),
    ("[Service]\nExecStart=/bin/x 'unclosed\n", "closing quotation"),
    ("[Service]\nEnvironment=not-an-assignment\nExecStart=/bin/x\n", "is not KEY=VALUE"),
    ("ExecStart=/bin/x\n", "before any [Section]"),
    ("[Service\nExecStart=/bin/x\n", "not a [Section] header"),
    ("[Service]\njust words\n", "is not KEY=VALUE"),
    ("[Service]\nExecStart=@/bin/x x\n", "'@' prefix"),
])
def test_bad_units_are_refused_in_one_line(text, needle):
    with pytest.raises(UnitError) as e:
        parse_unit("bad.service", text)
    assert needle in str(e.value) and str(e.value).startswith("bad.service: ")
    assert "\n" not in str(e.value)


def _unit(tmp_path, name, text, enable=True, link=True):
    (tmp_path / name).write_text(text)
    wants = tmp_path / units.WANTS
    wants.mkdir(exist_ok=True)
    if enable:
        if link:
            os.symlink(str(tmp_path / name), str(wants / name))
        else:
            (wants / name).write_text("")


def test_enabled_units_are_the_wanted_services(tmp_path):
    assert units.load_enabled(str(tmp_path)) == ({}, {})       # no wants dir yet
    _unit(tmp_path, "a.service", "[Service]\nExecStart=/bin/a\n")
    _unit(tmp_path, "b.service", "[Service]\nExecStart=/bin/b\n", link=False)   # a file counts too
    _unit(tmp_path, "c.service", "[Service]\nExecStart=/bin/c\n", enable=False)
    _unit(tmp_path, "d.service", "[Service]\nType=simple\n")
    os.symlink(str(tmp_path / "gone.service"), str(tmp_path / units.WANTS / "gone.service"))
    (tmp_path / units.WANTS / "x.timer").write_text("")
    (tmp_path / units.WANTS / "t@.service").write_text("")
    found, errors = units.load_enabled(str(tmp_path))
    assert sorted(found) == ["a.service", "b.service"]
    assert found["a.service"].argv({}) == ["/bin/a"]
    assert sorted(errors) == ["d.service", "gone.service"]
    assert "has no ExecStart" in errors["d.service"] and "does not exist" in errors["gone.service"]


def test_a_unit_kept_elsewhere_is_found_through_its_link_and_drop_ins_count(tmp_path):
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "v.service").write_text("[Service]\nExecStart=/bin/v\n")
    etc = tmp_path / "etc"
    (etc / units.WANTS).mkdir(parents=True)
    os.symlink(str(vendor / "v.service"), str(etc / units.WANTS / "v.service"))
    (etc / "v.service.d").mkdir()
    (etc / "v.service.d" / "10-restart.conf").write_text("[Service]\nRestart=on-failure\n")
    found, errors = units.load_enabled(str(etc))
    assert errors == {} and found["v.service"].restart == "on-failure"
    assert found["v.service"].argv({}) == ["/bin/v"]


@pytest.mark.parametrize("policy,status,restart", [
    ("on-success", 0, True), ("on-success", 3 << 8, False), ("on-success", 15, True),
    ("on-abort", 3 << 8, False), ("on-abort", 9, True), ("on-abort", 15, False),
    ("on-watchdog", 9, False), ("on-failure", 3 << 8, True), ("always", 15, True),
])
def test_every_restart_policy_follows_systemds_table(policy, status, restart):
    assert Daemon("u.service", ["x"], restart=policy).should_restart(status) is restart
