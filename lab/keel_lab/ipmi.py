"""The IPMI client the lab's `power` command uses: ipmitool over RMCP+
(lanplus, cipher suite 3, which ipmi_sim offers), always under a deadline."""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from .layout import LabError


@dataclass(frozen=True)
class BmcAddress:
    address: str
    port: int
    username: str
    password: str


def ipmitool(bmc: BmcAddress, *args: str, timeout: float = 15.0) -> str:
    cmd = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", bmc.address, "-p", str(bmc.port),
           "-U", bmc.username, "-P", bmc.password, "-N", "1", "-R", "3"] + list(args)
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"BMC {bmc.address}:{bmc.port} did not answer within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise LabError("ipmitool not found (install the Debian package 'ipmitool')") from None
    if cp.returncode != 0:
        err = (cp.stderr.strip().splitlines() or [f"exit status {cp.returncode}"])[-1]
        raise LabError(f"BMC {bmc.address}:{bmc.port}: {err}")
    return cp.stdout.strip()


def power_status(bmc: BmcAddress) -> str:
    out = ipmitool(bmc, "chassis", "power", "status")
    # "Chassis Power is on"
    state = out.rsplit(" ", 1)[-1].lower()
    if state not in ("on", "off"):
        raise LabError(f"BMC {bmc.address}:{bmc.port}: unexpected answer {out!r}")
    return state


def set_power(bmc: BmcAddress, state: str, confirm_timeout: float = 20.0) -> str:
    """Power on/off and return only once the BMC confirms the new state."""
    ipmitool(bmc, "chassis", "power", state)
    deadline = time.monotonic() + confirm_timeout
    while True:
        now = power_status(bmc)
        if now == state:
            return now
        if time.monotonic() > deadline:
            raise LabError(f"BMC {bmc.address}:{bmc.port} still reports power {now} "
                           f"{confirm_timeout:.0f} s after `power {state}`")
        time.sleep(0.3)
