"""Real BMCs for the power tests: OpenIPMI ipmi_sim on 127.0.2.x (the power helper's range)."""

import shutil
from pathlib import Path

import pytest

from keel_lab.bmc import BmcSimulator

# A chassis whose power is a file. 'stuck' in the mode file makes it accept
# power-off without ever going off (a BMC whose relay is broken).
POWER_SCRIPT = """#!/bin/sh
dir=$(dirname "$0")
case "$1" in
get) cat "$dir/power" ;;
set) [ "$(cat "$dir/mode" 2>/dev/null)" = stuck ] && [ "$2" = off ] && exit 0
     echo "$2" > "$dir/power" ;;
*) exit 1 ;;
esac
"""

needs_ipmi_sim = pytest.mark.skipif(shutil.which("ipmi_sim") is None,
                                    reason="ipmi_sim (Debian openipmi) not installed")


class Chassis:
    """The simulated machine behind a BMC: its power is a file the test can read."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.script = root / "power.sh"
        self.script.write_text(POWER_SCRIPT)
        self.script.chmod(0o755)
        self.set("on")
        self.mode("normal")

    def power(self) -> str:
        return (self.root / "power").read_text().strip()

    def set(self, state: str) -> None:
        (self.root / "power").write_text(state + "\n")

    def mode(self, mode: str) -> None:
        (self.root / "mode").write_text(mode + "\n")


def make_bmc(tmp: Path, name: str, address: str, port: int, password="s3cret"):
    chassis = Chassis(tmp / name / "chassis")
    bmc = BmcSimulator(address, port, "admin", password, tmp / name / "bmc",
                       [str(chassis.script)], name=name)
    return bmc, chassis


@pytest.fixture(scope="module")
def bmc_pair(tmp_path_factory):
    """Two running BMCs (two hosts' power), shared by a test module."""
    tmp = tmp_path_factory.mktemp("bmcs")
    b1, c1 = make_bmc(tmp, "bmc1", "127.0.2.11", 16311)
    b2, c2 = make_bmc(tmp, "bmc2", "127.0.2.12", 16312)
    b1.start()
    try:
        b2.start()
    except Exception:
        b1.stop()
        raise
    yield (b1, c1), (b2, c2)
    b1.stop()
    b2.stop()


@pytest.fixture
def bmc1(bmc_pair):
    (bmc, chassis), _ = bmc_pair
    bmc.resume()
    chassis.set("on")
    chassis.mode("normal")
    return bmc, chassis


@pytest.fixture
def bmc2(bmc_pair):
    _, (bmc, chassis) = bmc_pair
    bmc.resume()
    chassis.set("on")
    chassis.mode("normal")
    return bmc, chassis
