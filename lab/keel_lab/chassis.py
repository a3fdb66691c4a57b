"""Chassis power control behind each simulated BMC.

`ipmi_sim` runs this (through the control script keel_lab.bmc writes) as
    python -m keel_lab.chassis --dir DIR HOST get       -> prints on|off
    python -m keel_lab.chassis --dir DIR HOST set on|off
It must answer within about a second: `set on` starts the host's init and
returns while the host boots.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import hosts
from .layout import LabError, layout_from_state


def argv(lab_dir: str, host_name: str) -> list[str]:
    return [sys.executable, "-m", "keel_lab.chassis", "--dir", lab_dir, host_name]


def main(args: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="keel_lab.chassis")
    ap.add_argument("--dir", required=True)
    ap.add_argument("host")
    ap.add_argument("op", choices=["get", "set"])
    ap.add_argument("state", nargs="?", choices=["on", "off"])
    a = ap.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        filename=os.path.join(a.dir, "chassis.log"))
    try:
        lab = layout_from_state(a.dir)
        host = lab.host(a.host)
        lies = os.path.exists(host.bmc_lie_file)
        if a.op == "get":
            print("off" if lies or not hosts.powered_on(host) else "on")
        elif a.state == "on":
            hosts.boot(lab, host)
        elif a.state == "off" and lies:
            logging.getLogger("keel_lab.chassis").warning("%s: power off via BMC ignored (the BMC lies)",
                                                          host.name)
        elif a.state == "off":
            hosts.power_off(host, "chassis power off via BMC")
        else:
            ap.error("set needs on or off")
    except LabError as e:
        logging.getLogger("keel_lab.chassis").error("%s", e)
        print(f"keel_lab.chassis: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
