"""Scenario runner for the decision core.

    python -m keel_agent.sim tests/scenarios/NAME          # print the log
    python -m keel_agent.sim tests/scenarios/NAME --write  # (re)write expected.log

A scenario folder holds `cmds`: `hosts N`, optional `score KEY VALUE` and
`sim boot_time|shutdown_time SECONDS` / `sim allow_late_stop 1` lines, then timed commands `@T cmd`
and finally `@T end`. `timing KEY VALUE` overrides the fast profile. Commands (hostN is host1, host2, ...):

    engine-running hostN        (at @0 only) the engine already runs there, claimed
    power hostN off|on          network hostN off|on   etcd hostN off|on
    storage hostN off|on        gateway hostN off|on   mgmt hostN off|on
    broker hostN off|on         (the broker daemon dies: no etcd renewals, no status)
    memory hostN MIB            cpu hostN LOAD         config-version hostN N
    maintenance global|none     maintenance local|none hostN
    engine-crash                engine-health good|bad  acpi obey|ignore
    engine-broken on|off        (no engine VM, current or new, ever gets healthy)
    kill-agent hostN            start-agent hostN      start-fail hostN COUNT
    rogue-start hostN           request hostN vm-start|vm-shutdown|vm-poweroff
    bmc hostN none|ok|unreachable|lying   (lying: reports "off" while the host runs on)

The run fails (exit 1) when the world saw an invariant violated.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, fields, replace

from keel_common.config import PROFILES, Timing

from keel_common.keys import EngineClaim

from .score import ScoreConfigError, score_constants
from .simenv import SimVm, World


class ScenarioError(Exception):
    pass


TIMING_FIELDS = {f.name for f in fields(Timing)} - {"profile"}


@dataclass
class Scenario:
    hosts: int
    score: dict
    sim: dict
    timing: dict
    commands: list[tuple[float, int, list[str]]]  # (time, line number, words)
    end: float


def parse_scenario(text: str, name: str = "cmds") -> Scenario:
    hosts, score, sim, timing, commands, end = None, {}, {}, {}, [], None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        where = f"{name}:{no}"
        try:
            if words[0] == "hosts":
                hosts = int(words[1])
            elif words[0] == "score":
                score[words[1]] = float(words[2])
            elif words[0] == "sim":
                sim[words[1]] = float(words[2])
            elif words[0] == "timing":
                if words[1] not in TIMING_FIELDS:
                    raise ScenarioError(f"{where}: unknown timing {words[1]!r}")
                timing[words[1]] = float(words[2])
            elif words[0].startswith("@"):
                t = float(words[0][1:])
                if words[1:] == ["end"]:
                    end = t
                else:
                    commands.append((t, no, words[1:]))
            else:
                raise ScenarioError(f"{where}: unknown line {line!r}")
        except (IndexError, ValueError):
            raise ScenarioError(f"{where}: cannot parse {line!r}") from None
    if not hosts or hosts < 1:
        raise ScenarioError(f"{name}: missing 'hosts N'")
    if end is None:
        raise ScenarioError(f"{name}: missing '@T end'")
    return Scenario(hosts, score, sim, timing, sorted(commands, key=lambda c: (c[0], c[1])), end)


def _host(w: World, word: str, where: str) -> int:
    if word.startswith("host") and word[4:].isdigit() and int(word[4:]) in w.hosts:
        return int(word[4:])
    raise ScenarioError(f"{where}: no such host {word!r}")


def _onoff(word: str, where: str) -> bool:
    if word not in ("on", "off"):
        raise ScenarioError(f"{where}: expected on or off, got {word!r}")
    return word == "on"


def apply_command(w: World, words: list[str], where: str) -> None:
    cmd, args = words[0], words[1:]
    need = {"engine-running": 1, "power": 2, "network": 2, "etcd": 2, "storage": 2, "gateway": 2,
            "mgmt": 2, "broker": 2, "memory": 2, "cpu": 2, "config-version": 2, "engine-crash": 0,
            "engine-health": 1, "engine-broken": 1, "acpi": 1, "kill-agent": 1, "start-agent": 1, "start-fail": 2,
            "rogue-start": 1, "request": 2, "bmc": 2}
    if cmd == "maintenance":
        if not args:
            raise ScenarioError(f"{where}: maintenance needs a mode")
    elif cmd not in need:
        raise ScenarioError(f"{where}: unknown command {cmd!r}")
    elif len(args) != need[cmd]:
        raise ScenarioError(f"{where}: {cmd} takes {need[cmd]} argument(s)")
    w.emit("sim", "info", " ".join(words))
    if cmd == "engine-crash":
        for hid, vm in list(w.vms.items()):
            if not vm.rogue:
                w.kill_vm(hid)
    elif cmd == "engine-health":
        for vm in w.vms.values():
            vm.healthy = args[0] == "good"
    elif cmd == "engine-broken":
        w.engine_broken = args[0] == "on"
    elif cmd == "acpi":
        w.acpi_ignored = args[0] == "ignore"
    elif cmd == "maintenance":
        mode = args[0]
        if mode == "global":
            w.global_maintenance = True
        elif mode == "local":
            w.hosts[_host(w, args[1], where)].local_maintenance = True
        elif mode == "none" and len(args) == 2:
            w.hosts[_host(w, args[1], where)].local_maintenance = False
        elif mode == "none":
            w.global_maintenance = False
            for h in w.hosts.values():
                h.local_maintenance = False
        else:
            raise ScenarioError(f"{where}: unknown maintenance mode {mode!r}")
    else:
        h = w.hosts[_host(w, args[0], where)]
        _host_command(w, h, cmd, args[1:], where)


def _host_command(w: World, h, cmd: str, args: list[str], where: str) -> None:
    hid = h.host_id
    if cmd == "engine-running":
        w.vms[hid] = SimVm(hid, booted_at=w.now)
        w.lease_holder = hid
        w.owner = EngineClaim(hid, f"host{hid}", w.now)
    elif cmd == "power":
        on = _onoff(args[0], where)
        if on and not h.powered:
            h.powered, h.generation, h.released = True, h.generation + 1, False
            if w.lease_holder == hid and hid not in w.vms:
                w.lease_holder = None  # a new host generation frees the old lease
            h.lockspace_renewed = w.now
            h.agent_pub, h.agent_pub_at = {}, None
            w.start_agent(hid)
        elif not on and h.powered:
            h.powered, h.agent = False, None
            w.kill_vm(hid, release=False)
    elif cmd in ("network", "etcd", "storage", "gateway", "mgmt", "broker"):
        setattr(h, cmd, _onoff(args[0], where))
    elif cmd in ("memory", "cpu", "config-version", "start-fail"):
        try:
            value = float(args[0])
        except ValueError:
            raise ScenarioError(f"{where}: {cmd} needs a number") from None
        attr = {"memory": "memory_mb", "cpu": "cpu_load", "config-version": "config_version",
                "start-fail": "start_failures"}[cmd]
        setattr(h, attr, value if cmd in ("memory", "cpu") else int(value))
    elif cmd == "kill-agent":
        h.agent = None
    elif cmd == "start-agent":
        w.start_agent(hid)
    elif cmd == "bmc":
        if args[0] not in ("none", "ok", "unreachable", "lying"):
            raise ScenarioError(f"{where}: bmc takes none, ok, unreachable or lying")
        h.bmc = args[0]
    elif cmd == "rogue-start":
        w.vms[hid] = SimVm(hid, booted_at=w.now + w.boot_time, rogue=True)
    elif cmd == "request":
        if args[0] not in ("vm-start", "vm-shutdown", "vm-poweroff"):
            raise ScenarioError(f"{where}: unknown request {args[0]!r}")
        h.requests.append(args[0])


def run_scenario(folder: str) -> tuple[list[str], list[str]]:
    path = os.path.join(folder, "cmds")
    try:
        with open(path, encoding="utf-8") as f:
            sc = parse_scenario(f.read(), path)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    try:
        k = score_constants(sc.score)
    except ScoreConfigError as e:
        raise ScenarioError(f"{path}: {e}") from None
    timing = replace(PROFILES["fast"], **{key: (int(v) if key in ("etcd_lease_ttl", "io_timeout") else v)
                                          for key, v in sc.timing.items()})
    w = World(sc.hosts, k, timing=timing, boot_time=sc.sim.get("boot_time", 5.0),
              shutdown_time=sc.sim.get("shutdown_time", 2.0))
    w.allow_late_stop = bool(sc.sim.get("allow_late_stop", 0))
    pending = list(sc.commands)
    while w.now <= sc.end:
        while pending and pending[0][0] <= w.now:
            t, no, words = pending.pop(0)
            apply_command(w, words, f"{path}:{no}")
        w.tick()
    w.now = sc.end
    running = ", ".join(f"host{h}" + (" (rogue)" if vm.rogue else "") for h, vm in sorted(w.vms.items()))
    w.emit("sim", "info", f"end: engine VM running on {running or 'no host'}"
           + (f"; claim held by host{w.owner.host_id}" if w.owner else "; no claim"))
    return w.log, w.violations


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m keel_agent.sim",
                                description="Run an HA agent scenario in the simulator and print its log.")
    p.add_argument("scenario", help="scenario folder (holding a 'cmds' file)")
    p.add_argument("--write", action="store_true", help="write the log to expected.log in the folder")
    args = p.parse_args(argv)
    try:
        log, violations = run_scenario(args.scenario)
    except ScenarioError as e:
        print(f"sim: error: {e}", file=sys.stderr)
        return 1
    text = "\n".join(log) + "\n"
    if args.write:
        with open(os.path.join(args.scenario, "expected.log"), "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)
    if violations:
        print(f"sim: {len(violations)} invariant violation(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
