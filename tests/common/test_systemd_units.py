"""The unit files say what the issue asks: notify + watchdog, restart, ordering."""
import configparser
import glob
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "systemd")


def unit(name):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(os.path.join(ROOT, name))
    return cp


@pytest.mark.parametrize("name", ["keel-ha-broker.service", "keel-ha-agent.service"])
def test_ha_units_notify_watchdog_restart(name):
    u = unit(name)
    assert u["Service"]["Type"] == "notify"
    assert int(u["Service"]["WatchdogSec"]) > 0
    assert u["Service"]["Restart"] == "always"
    assert "sanlock.service" in u["Unit"]["After"] and "libvirtd.service" in u["Unit"]["After"]


def test_agent_after_broker_and_keeps_engine_on_stop():
    u = unit("keel-ha-agent.service")
    assert "keel-ha-broker.service" in u["Unit"]["After"]
    assert u["Service"]["KillMode"] == "process"


def test_every_unit_runs_an_installed_console_script():
    import tomllib
    with open(os.path.join(ROOT, "..", "pyproject.toml"), "rb") as f:
        scripts = set(tomllib.load(f)["project"]["scripts"])
    units = glob.glob(os.path.join(ROOT, "*.service"))
    assert units
    for path in units:
        exe = unit(os.path.basename(path))["Service"]["ExecStart"].split()[0]
        assert os.path.basename(exe) in scripts, path
