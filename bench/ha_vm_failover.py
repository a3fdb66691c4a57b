#!/usr/bin/env python3
"""HA VM failover benchmark on a real lab, through the lab engine's REST API.

For each mode, repeated R times: an HA VM (with its own sanlock lease) runs on a
host that is not running the hosted engine VM; that host loses power
(`keel-lab power HOST off`: every process frozen, then killed); the time until
the engine reports the VM up on another host is measured.
  bmc      the host's BMC is its fence agent: fence, confirm off, release its
           leases, restart
  no-bmc   the host has no fence agent: the VM's lease must expire first
Prints, per mode, the median and max of that time and the engine's events of
the last run in order. Figures, not a test. The lab engine's settings apply
(monitor every 2 s, grace_period 10 s; see docs/lab.md). Run it as root:
    .venv/bin/python bench/ha_vm_failover.py [--repeat 2] [--modes bmc,no-bmc]
It uses the lab in --dir if one is up, else brings one up and down again.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import requests

KEEL_LAB = [sys.executable, "-m", "keel_lab.cli"]
MODES = ("bmc", "no-bmc")


class Api:
    def __init__(self, url: str, user: str, password: str):
        self.url = url
        r = requests.post(url.replace("/api", "/sso/oauth/token"), timeout=30,
                          data={"grant_type": "password", "username": user, "password": password,
                                "scope": "ovirt-app-api"})
        r.raise_for_status()
        self.headers = {"Authorization": f"Bearer {r.json()['access_token']}", "Accept": "application/json"}

    def __call__(self, method: str, path: str, body=None, ok=(200, 201)):
        r = requests.request(method, self.url + path, json=body, headers=self.headers, timeout=120)
        if r.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.text.strip() else {}


def lab_status(lab_dir: str) -> dict:
    out = subprocess.run(KEEL_LAB + ["status", "--json", "--dir", lab_dir], capture_output=True, text=True,
                         timeout=120)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}


def wait(pred, timeout: float, what: str, interval: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def last_event_id(api: Api) -> int:
    evs = api("GET", "/events?max=1").get("event", [])
    return max((int(e["id"]) for e in evs), default=0)


def events_since(api: Api, mark: int) -> list[dict]:
    evs = [e for e in api("GET", "/events").get("event", []) if int(e["id"]) > mark]
    return sorted(evs, key=lambda e: int(e["id"]))


def one_run(api: Api, lab_dir: str, mode: str, n: int, agents: dict) -> tuple[float, list[dict]]:
    st = lab_status(lab_dir)
    hosts = {h["name"]: h["id"] for h in api("GET", "/hosts")["host"]}
    engine_vm_host = st.get("engine", {}).get("host")
    up = {h["name"] for h in api("GET", "/hosts")["host"] if h["status"] == "up"}
    target = next(n for n in sorted(hosts) if n != engine_vm_host and n in up)
    hid = hosts[target]
    for a in api("GET", f"/hosts/{hid}/fenceagents").get("agent", []):
        api("DELETE", f"/hosts/{hid}/fenceagents/{a['id']}")
    if mode == "bmc":
        api("POST", f"/hosts/{hid}/fenceagents", agents[target])
    vm = api("POST", "/vms", {"name": f"bench-ha-{mode}-{n}", "cluster": {"name": "Default"},
                              "memory": 64 * 2 ** 20, "high_availability": {"enabled": True, "priority": 50}})
    api("POST", f"/vms/{vm['id']}/start", {"vm": {"placement_policy": {"hosts": {"host": [{"id": hid}]}}}})
    mark = last_event_id(api)
    t0 = time.monotonic()
    subprocess.run(KEEL_LAB + ["power", target, "off", "--dir", lab_dir], capture_output=True, timeout=120)

    def moved():
        v = api("GET", f"/vms/{vm['id']}")
        return v["status"] == "up" and v.get("host", {}).get("id") not in (None, hid)
    wait(moved, 600, f"{vm['name']} up on another host", 0.25)
    elapsed = time.monotonic() - t0
    evs = events_since(api, mark)
    # clean up: the host back on (the engine sees it up again), the VM removed
    subprocess.run(KEEL_LAB + ["power", target, "on", "--dir", lab_dir], capture_output=True, timeout=120)
    api("POST", f"/vms/{vm['id']}/stop", {})
    api("DELETE", f"/vms/{vm['id']}")
    if mode != "bmc":
        api("POST", f"/hosts/{hid}/fenceagents", agents[target])
    wait(lambda: api("GET", f"/hosts/{hid}")["status"] == "up", 600, f"{target} up again in the engine", 2)
    # libvirt answers a moment before the host's broker has joined the lockspace
    # again; leased VMs can only start there after that
    wait(lambda: in_lockspace(lab_dir, target), 300, f"{target} back in the lockspace", 1)
    return elapsed, evs


def in_lockspace(lab_dir: str, host: str) -> bool:
    from keel_lab.layout import LOCKSPACE
    cp = subprocess.run(KEEL_LAB + ["exec", host, "--dir", lab_dir, "--", "sanlock", "client", "status"],
                        capture_output=True, text=True, timeout=60)
    # "s LOCKSPACE:ID:PATH:OFFSET", with " ADD" appended while it is still being joined
    return any(line.startswith(f"s {LOCKSPACE}:") and not line.rstrip().endswith(("ADD", "REM"))
               for line in cp.stdout.splitlines())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.environ.get("KEEL_LAB_DIR", "/var/lib/keel-lab"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"unknown mode {bad[0]!r} (known: {', '.join(MODES)})", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("the lab needs root", file=sys.stderr)
        return 2
    from keel_lab.layout import BMC_PASSWORD
    own_lab = not lab_status(args.dir)
    if own_lab:
        subprocess.run(KEEL_LAB + ["up", "--hosts", "3", "--engine", "appliance", "--dir", args.dir], check=True, timeout=600)
    try:
        st = lab_status(args.dir)
        e = st["engine"]
        api = Api(e["api_url"], e["admin_user"], e["admin_password"])
        agents = {a["host"]: {"type": a["type"], "address": a["address"], "port": a["port"],
                              "username": a["username"], "password": BMC_PASSWORD,
                              "options": {"option": [{"name": k, "value": v} for k, v in
                                                     (o.split("=", 1) for o in a["options"].split(","))]}}
                  for a in e["fence_agents"]}
        for v in api("GET", "/vms").get("vm", []):     # left by an interrupted run
            if v["name"].startswith("bench-ha-"):
                if v["status"] != "down":
                    api("POST", f"/vms/{v['id']}/stop", {}, ok=(200, 409))
                api("DELETE", f"/vms/{v['id']}", ok=(200, 409))
        results = {}
        for mode in modes:
            for n in range(args.repeat):
                elapsed, evs = one_run(api, args.dir, mode, n, agents)
                print(f"{mode} run {n + 1}: HA VM up on another host {elapsed:.1f} s after the power loss",
                      flush=True)
                results.setdefault(mode, []).append((elapsed, evs))
        print("\nmode     runs  median_s  max_s")
        for mode, runs in results.items():
            times = [t for t, _ in runs]
            print(f"{mode:8} {len(times):4}  {statistics.median(times):8.1f}  {max(times):5.1f}")
        for mode, runs in results.items():
            print(f"\nevents of the last {mode} run:")
            for ev in runs[-1][1]:
                stamp = time.strftime("%H:%M:%S", time.gmtime(int(ev.get("time", 0)) / 1000))
                print(f"  {stamp} {ev.get('code')}: {ev.get('description')}")
        return 0
    finally:
        if own_lab:
            subprocess.run(KEEL_LAB + ["down", "--dir", args.dir], capture_output=True, timeout=300)


if __name__ == "__main__":
    sys.exit(main())
