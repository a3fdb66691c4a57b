"""The engine as a process on the lab network: a developer's switch
(`keel-lab up --engine process`) for fast engine work; the lab's default
engine is the appliance inside the engine VM (`appliance.py`).

The lab runs the engine
application (`keel-engine serve` and `keel-engine worker`) in its own
namespace `lab-engine` at http://198.51.100.5:8080, registers the Default
data center and cluster, the hosts and the shared storage domain
(`keel-engine init-cluster`, idempotent) with every host's BMC as its fence
agent, and reports its API URL and admin credentials. When keel_engine is
not installed the lab runs without it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time

from keel_common import ini

from . import net, nfs, probe, procs
from .appliance import STORAGE_DOMAIN, engine_settings, fence_agents
from .layout import (BMC_PASSWORD, BRIDGE, BRIDGE_ADDRESS, ENGINE_NETNS,
                     ENGINE_PROCESS_ADDRESS, ENGINE_PROCESS_PORT, LabError, LabLayout, write_private)

log = logging.getLogger("keel_lab.engine")
OUTER_VETH = "lab-engine-o"
BASE_URL = f"http://{ENGINE_PROCESS_ADDRESS}:{ENGINE_PROCESS_PORT}"
ADMIN_USER = "admin@internal"


def available() -> bool:
    return importlib.util.find_spec("keel_engine.cli") is not None and \
        shutil.which("keel-engine", path=os.path.dirname(sys.executable)) is not None


def _ensure_netns() -> None:
    if not net.netns_exists(ENGINE_NETNS):
        subprocess.run(["ip", "netns", "add", ENGINE_NETNS], check=True)
    if not net.link_exists(OUTER_VETH):
        subprocess.run(["ip", "-n", ENGINE_NETNS, "link", "del", "eth0"], capture_output=True)
        subprocess.run(["ip", "link", "add", OUTER_VETH, "type", "veth", "peer", "name", "eth0",
                        "netns", ENGINE_NETNS], check=True)
    cmds = [["ip", "link", "set", OUTER_VETH, "master", BRIDGE], ["ip", "link", "set", OUTER_VETH, "up"],
            ["ip", "-n", ENGINE_NETNS, "link", "set", "lo", "up"],
            ["ip", "-n", ENGINE_NETNS, "link", "set", "eth0", "up"]]
    for c in cmds:
        subprocess.run(c, check=True, capture_output=True)
    addrs = subprocess.run(["ip", "-n", ENGINE_NETNS, "-4", "-o", "addr", "show", "dev", "eth0"],
                           capture_output=True, text=True).stdout
    if f"{ENGINE_PROCESS_ADDRESS}/24" not in addrs:
        subprocess.run(["ip", "-n", ENGINE_NETNS, "addr", "add", f"{ENGINE_PROCESS_ADDRESS}/24",
                        "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", ENGINE_NETNS, "route", "add", "default", "via", BRIDGE_ADDRESS],
                       capture_output=True)


def _config(lab: LabLayout, password: str) -> str:
    d = os.path.join(lab.dir, "engine")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "engine.conf")
    text = ini.render({"database": {"url": f"sqlite:///{d}/engine.db"},
                       "engine": {"listen": f"{ENGINE_PROCESS_ADDRESS}:{ENGINE_PROCESS_PORT}",
                                  "admin_password": password, "secret_key_file": f"{d}/fence.key"},
                       **engine_settings(lab)})
    return write_private(path, "# keel-lab: the engine as a process on the lab network\n" + text)


def _bmc_password_file(lab: LabLayout) -> str:
    # init-cluster reads passwords from a file: never in argv (ps shows argv)
    return write_private(os.path.join(lab.dir, "engine", "bmc-password"), BMC_PASSWORD + "\n")


def start(lab: LabLayout, state: dict, timeout: float = 90.0) -> dict:
    """Start (or keep) the engine process; returns the state entry to record."""
    info = dict(state.get("engine_process") or {})
    pids = [p for p in info.get("pids", []) if procs.alive(p, "keel-engine")]
    if info and len(pids) == 2 and probe.http_ok(BASE_URL + "/ovirt-engine/services/health", 2):
        return info
    for p in pids:
        procs.kill(p, marker="keel-engine")
    password = info.get("admin_password") or secrets.token_urlsafe(12)
    conf = _config(lab, password)
    pw_file = _bmc_password_file(lab)
    agents = fence_agents(lab)
    _ensure_netns()
    exe = os.path.join(os.path.dirname(sys.executable), "keel-engine")
    logdir = os.path.join(lab.dir, "engine")
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    for step in (["db-upgrade"],
                 ["init-cluster", "--data-center", "Default", "--cluster", "Default",
                  *[a for h in lab.all_hosts() for a in ("--host", f"{h.name}={h.address}")],
                  "--storage", f"{STORAGE_DOMAIN}={nfs.EXPORT}",
                  *[x for a in agents for x in (
                      "--fence-agent", f"{a['host']}={a['type']},address={a['address']},port={a['port']},"
                                       f"username={a['username']},password_file={pw_file},{a['options']}")]]):
        cp = subprocess.run([exe, "--config", conf] + step, capture_output=True, text=True,
                            timeout=120, env=env)
        if cp.returncode != 0:
            raise LabError(f"keel-engine {step[0]} failed: "
                           + ((cp.stderr.strip().splitlines() or ['?'])[-1]))
    new_pids = []
    for cmd in ("serve", "worker"):
        logf = open(os.path.join(logdir, f"{cmd}.log"), "ab")
        try:
            p = subprocess.Popen(["ip", "netns", "exec", ENGINE_NETNS, exe, "--config", conf, cmd],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                 start_new_session=True, env=env)
        finally:
            logf.close()
        p.returncode = 0  # outlives us
        new_pids.append(p.pid)
    info = {"pids": new_pids, "api_url": BASE_URL + "/ovirt-engine/api", "admin_user": ADMIN_USER,
            "admin_password": password, "config": conf,
            "fence_agents": agents}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe.http_ok(BASE_URL + "/ovirt-engine/services/health", 2):
            log.info("engine process answering at %s", BASE_URL)
            return info
        if not all(procs.alive(p) for p in new_pids):
            break
        time.sleep(0.5)
    info["error"] = f"the engine process did not answer at {BASE_URL} (see {logdir}/serve.log)"
    return info
