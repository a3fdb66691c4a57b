#!/usr/bin/env python3
"""Failover benchmark on a real lab: how long is the engine gone, per fault?

For each scenario, repeated R times, on the host running the engine VM:
  power-off        the host is powered off through its BMC (IPMI); the other
                   hosts' agents fence it through that BMC and free its lease
  power-off-no-bmc the same with the host's BMC removed first (hosted-engine
                   --remove-bmc): the agents wait for sanlock's expiry
  kill-vm          the engine VM's qemu gets SIGKILL
  kill-agent       the HA agent gets SIGKILL (the engine should not notice)
  net-cut          the host's network link is cut
  local-maint      local maintenance on the host (a planned handover)
and prints the median and max of:
  outage   fault -> the engine's health URL answers OK again from outside
           (0 when it never stopped answering)
  detect   fault -> the first HA state change in any host's etcd record
  lease    fault -> the engine lease confirmed by the next engine start
           (the observer sees it on disk)
plus the observer's violations (must be 0) and the lab's resident memory
per daemon. Figures, not a test: run it by hand (as root):
    .venv/bin/python bench/failover.py [--repeat 3] [--scenarios power-off,kill-vm]
It uses the lab in --dir if one is up, else brings one up and down again.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

from keel_lab import hosts, probe, procs  # noqa: E402
from keel_lab.lab import Lab  # noqa: E402
from keel_lab.layout import HEALTH_URL, LabError, load_state  # noqa: E402
from keel_lab.observer import read_events, verdict  # noqa: E402

SCENARIOS = ("power-off", "power-off-no-bmc", "kill-vm", "kill-agent", "net-cut", "local-maint")
QUIET_WINDOW = 30.0   # kill-agent: how long the engine must keep answering


class Sampler(threading.Thread):
    """Polls the health URL (every 0.2 s) and the HA states (every 0.5 s)."""

    def __init__(self, lab: Lab):
        super().__init__(daemon=True)
        self.lab = lab
        self.layout = lab.layout()
        self.health: list[tuple[float, bool]] = []
        self.states: list[tuple[float, dict]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        next_states = 0.0
        while not self.stop.is_set():
            now = time.time()
            self.health.append((now, probe.http_ok(HEALTH_URL, 0.5)))
            if now >= next_states:
                next_states = now + 0.5
                recs = probe.ha_records(self.layout, timeout=1.0)
                self.states.append((time.time(), {i: r.get("state") for i, r in recs.items() if i}))
            time.sleep(0.2)


def restore(lab: Lab, timeout: float = 300) -> str:
    layout = lab.layout()
    for h in layout.all_hosts():
        lab.heal(h.name)
        if not hosts.powered_on(h):
            lab.power(h.name, "on")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(os.path.exists(h.path("run-keel", "broker.sock")) for h in layout.all_hosts()):
            break
        time.sleep(1)
    for h in layout.all_hosts():
        lab.exec(h.name, ["hosted-engine", "--set-maintenance", "--mode=none"], quiet=True)
    lab.register_bmcs(layout)   # power-off-no-bmc removed one
    while time.monotonic() < deadline:
        running = probe.engine_qemu_pids(layout)
        if len(running) == 1 and probe.http_ok(HEALTH_URL, 2):
            recs = probe.ha_records(layout)
            states = [r.get("state") for i, r in recs.items() if i]
            if len(states) == layout.hosts and all(s in ("EngineUp", "EngineDown") for s in states):
                return next(iter(running))
        time.sleep(1)
    raise LabError("the lab did not return to a healthy state")


def inject(lab: Lab, scenario: str, host: str) -> None:
    if scenario in ("power-off", "power-off-no-bmc"):
        if scenario == "power-off-no-bmc":
            other = next(h for h in lab.layout().all_hosts() if h.name != host)
            lab.exec(other.name, ["hosted-engine", "--remove-bmc", f"--host-id={lab.layout().host(host).index}"],
                     quiet=True)
        lab.power(host, "off")
    elif scenario == "kill-vm":
        lab.kill(host, "engine-vm")
    elif scenario == "kill-agent":
        lab.kill(host, "agent")
    elif scenario == "net-cut":
        lab.partition(host)
    elif scenario == "local-maint":
        lab.exec(host, ["hosted-engine", "--set-maintenance", "--mode=local"], quiet=True)


def measure(lab: Lab, scenario: str, timeout: float) -> dict:
    host = restore(lab)
    time.sleep(3)  # settle: every agent in its steady state
    sampler = Sampler(lab)
    sampler.start()
    time.sleep(1.0)
    before = dict(sampler.states[-1][1]) if sampler.states else {}
    t0 = time.time()
    inject(lab, scenario, host)
    deadline = t0 + timeout
    outage = None
    while time.time() < deadline:
        time.sleep(0.5)
        after = [(t, ok) for t, ok in sampler.health if t >= t0]
        down = next((t for t, ok in after if not ok), None)
        if down is None:
            if scenario == "kill-agent" and time.time() - t0 > QUIET_WINDOW:
                outage = 0.0
                break
            continue
        back = next((t for t, ok in after if ok and t > down), None)
        if back is not None:
            outage = back - t0
            break
    time.sleep(1.0)
    sampler.stop.set()
    sampler.join(5)
    detect = next((t - t0 for t, st in sampler.states if t >= t0 and any(
        st.get(i) != s for i, s in before.items())), None)
    events = [e for e in read_events(lab.dir) if e["t"] >= t0]
    lease = next((e["t"] - t0 for e in events if e["event"] == "lease_confirmed"), None)
    new_host = next((e["host"] for e in events if e["event"] == "start"), None)
    v = verdict(read_events(lab.dir), since=t0)
    return {"scenario": scenario, "host": host, "new_host": new_host, "outage": outage,
            "detect": detect, "lease": lease,
            "violations": len(v["multiple_engines"]) + len(v["starts_without_lease"])}


def fmt(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "    n/a     n/a"
    miss = "" if len(vals) == len(values) else f" ({len(values) - len(vals)} timed out)"
    return f"{statistics.median(vals):7.1f} {max(vals):7.1f}{miss}"


def memory_table(lab: Lab) -> list[str]:
    layout = lab.layout()
    per: dict[str, list[int]] = {}
    for h in layout.all_hosts():
        for name, pid in probe.daemon_pids(h).items():
            if pid:
                per.setdefault(name, []).append(procs.rss_kib(pid))
    for host, pid in probe.engine_qemu_pids(layout).items():
        per.setdefault("engine VM (qemu)", []).append(procs.rss_kib(pid))
    st = load_state(lab.dir) or {}
    if st.get("observer_pid"):
        per["observer"] = [procs.rss_kib(st["observer_pid"])]
    per["BMC (ipmi_sim)"] = [procs.rss_kib(p) for p in (st.get("bmc_pids") or {}).values()]
    eng = (st.get("engine_process") or {}).get("pids") or []
    if eng:  # serve (gunicorn master + workers) and monitor
        per["engine process"] = [sum(procs.rss_kib(p) for p in [pid] + procs.children(pid))
                                 for pid in eng]
    lines = [f"{'daemon':20} {'hosts':>5} {'RSS MiB each (avg)':>19} {'total MiB':>10}"]
    for name, kibs in sorted(per.items()):
        kibs = [k for k in kibs if k]
        if kibs:
            lines.append(f"{name:20} {len(kibs):5} {statistics.mean(kibs) / 1024:19.1f} "
                         f"{sum(kibs) / 1024:10.1f}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description="Keel failover benchmark (prints figures).")
    ap.add_argument("--dir", default=os.environ.get("KEEL_LAB_DIR", "/var/lib/keel-lab"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--timeout", type=float, default=300.0, help="per run (default 300 s)")
    ap.add_argument("--engine", choices=("appliance", "none"), default="appliance",
                    help="a lab brought up here runs the engine appliance in the engine VM (default) "
                         "or a stand-in guest (none)")
    a = ap.parse_args()
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or a.repeat < 1:
        print(f"failover.py: unknown scenario {', '.join(unknown)}; expected some of "
              f"{', '.join(SCENARIOS)}" if unknown else "failover.py: --repeat must be >= 1",
              file=sys.stderr)
        return 2
    return on_lab(a.dir, "failover.py", lambda lab: _run(lab, a, scenarios), a.engine)


def on_lab(lab_dir: str, prog: str, body, engine: str = "appliance") -> int:
    """Run body(lab) on the lab in lab_dir, or on a 3-host lab brought up for
    it (and down afterwards); a lab error is one line and exit 1. engine: the
    lab's engine (`keel-lab up --engine`): the appliance in the engine VM, so
    the outage is the real engine's, from the plug pulled to its API answering."""
    lab = Lab(lab_dir)
    ours = load_state(lab.dir) is None
    try:
        if ours:
            print(f"bringing up a 3-host lab in {lab.dir} (engine: {engine}) ...", flush=True)
            lab.up(3, "fast", timeout=300, engine=engine)
        elif (load_state(lab.dir) or {}).get("engine_process"):
            print("note: this lab runs the engine process, which fences a powered-off host through its "
                  "BMC and frees its leases: the power-off figures are those of an engine running "
                  "outside the failed host, not of a self-hosted engine", flush=True)
        return body(lab)
    except LabError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    finally:
        if ours:
            lab.down()


def _run(lab: Lab, a, scenarios: list[str]) -> int:
    results: dict[str, list[dict]] = {}
    for s in scenarios:
        for i in range(a.repeat):
            r = measure(lab, s, a.timeout)
            results.setdefault(s, []).append(r)
            print(f"  {s} #{i + 1}: {r['host']} -> {r['new_host'] or r['host']}: "
                  f"outage {r['outage'] if r['outage'] is None else round(r['outage'], 1)} s, "
                  f"detect {None if r['detect'] is None else round(r['detect'], 1)} s, "
                  f"lease {None if r['lease'] is None else round(r['lease'], 1)} s, "
                  f"violations {r['violations']}", flush=True)
    restore(lab)
    print(f"\nfailover, {a.repeat} run(s) each, profile {lab.layout().profile} "
          f"(seconds: median max)")
    print(f"{'scenario':12} {'outage':>15} {'detect':>15} {'lease re-taken':>15} {'violations':>10}")
    for s, rs in results.items():
        print(f"{s:12} {fmt([r['outage'] for r in rs]):>15} {fmt([r['detect'] for r in rs]):>15} "
              f"{fmt([r['lease'] for r in rs]):>15} {sum(r['violations'] for r in rs):10}")
    print("\nresident memory")
    print("\n".join(memory_table(lab)))
    return 1 if any(r["violations"] for rs in results.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
