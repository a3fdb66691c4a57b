"""Driving a real lab from tests: the keel-lab CLI, waits and restore steps.

Each scenario leaves the lab healthy (engine up on exactly one host, every
host powered, nothing partitioned) for the next one. Waits poll with generous
deadlines: this machine has 2 cores and may be loaded.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from keel_lab import hosts, net, probe, procs
from keel_lab.layout import BRIDGE, HEALTH_URL, LabLayout
from keel_lab.observer import read_events, verdict

KEEL_LAB = [sys.executable, "-m", "keel_lab.cli"]
NEEDED = ("ip", "unshare", "nsenter", "sanlock", "libvirtd", "etcd", "ipmi_sim", "ipmitool",
          "qemu-system-x86_64", "cc")


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing:
        return "missing tools: " + ", ".join(missing)
    if os.path.exists("/run/netns/lab-h1"):
        return "another lab is running on this machine (lab-h1 exists)"
    return None


@contextlib.contextmanager
def module_lab(prefix: str, *up_args: str, env: dict | None = None, hosts: int = 3):
    """A lab (3 hosts unless told; the engine appliance, set up by the lab,
    unless told) for one test module (skipped where a lab cannot run), down
    afterwards; `driver.up_output` is what `up` printed."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    if "--engine" not in up_args and "--no-engine-process" not in up_args:
        up_args = ("--engine", "appliance") + up_args    # the lab's own set-up, not the installer's
    lab_dir = tempfile.mkdtemp(prefix=prefix)
    driver = LabDriver(lab_dir)
    try:
        cp = driver.cli("up", "--hosts", str(hosts), *up_args, "--timeout", "300", timeout=420, env=env)
        driver.up_output = cp.stdout
        yield driver
    finally:
        subprocess.run(KEEL_LAB + ["down", "--dir", lab_dir], capture_output=True, timeout=120)
        shutil.rmtree(lab_dir, ignore_errors=True)


def wait_for(what: str, predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def wait_daemons_back(lab, host, what: str, timeout: float) -> None:
    """Until all six daemons of `host` (a HostLayout) run again. A host silent
    on the storage while it restarts them (a watchdog reset, a storage cut)
    may be fenced meanwhile, by the agents or the engine, and a fenced host
    stays off: it is powered on, as its administrator would."""
    def back():
        if not hosts.powered_on(host):
            lab.cli("power", host.name, "on")
        d = probe.daemon_pids(host)
        return len(d) == 6 and all(d.values())
    wait_for(what, back, timeout)


class LabDriver:
    def __init__(self, lab_dir: str):
        self.dir = lab_dir
        self.up_output = ""

    @property
    def layout(self) -> LabLayout:
        from keel_lab.layout import layout_from_state
        return layout_from_state(self.dir)

    def cli(self, *args: str, check: bool = True, timeout: float = 120,
            env: dict | None = None) -> subprocess.CompletedProcess:
        argv = list(args)
        # --dir goes before `--` (exec's command follows it).
        cut = argv.index("--") if "--" in argv else len(argv)
        argv[cut:cut] = ["--dir", self.dir]
        cp = subprocess.run(KEEL_LAB + argv, capture_output=True, text=True, timeout=timeout, env=env)
        if check and cp.returncode != 0:
            raise AssertionError(f"keel-lab {' '.join(args)} failed ({cp.returncode}): "
                                 f"{cp.stderr.strip()} {cp.stdout.strip()[-500:]}")
        return cp

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def engine_hosts(self) -> dict[str, int]:
        return probe.engine_qemu_pids(self.layout)

    def health_ok(self) -> bool:
        return probe.http_ok(HEALTH_URL, 2.0)

    def single_engine(self) -> str | None:
        running = self.engine_hosts()
        if len(running) == 1 and self.health_ok():
            return next(iter(running))
        return None

    def wait_single_engine(self, timeout: float = 180) -> str:
        return wait_for("the engine up and healthy on exactly one host", self.single_engine, timeout)

    def verdict(self, since: float = 0.0) -> dict:
        return verdict(read_events(self.dir), since)

    def he(self, host: str, *args: str) -> subprocess.CompletedProcess:
        return self.cli("exec", host, "--", "hosted-engine", *args, check=False)

    def power_on_with_its_bmc(self, host: str, via: str) -> None:
        """Power a host back on and give the HA agents its BMC again (after a
        test that removed it with `hosted-engine --remove-bmc`)."""
        h = self.layout.host(host)
        self.cli("power", host, "on", check=False)
        wait_for("the powered-on host's broker", lambda: os.path.exists(h.path("run-keel", "broker.sock")), 120)
        self.cli("exec", via, "--", "hosted-engine", "--set-bmc", f"--host-id={h.index}",
                 "--bmc-address=198.51.100.1", f"--bmc-port={h.bmc_port}", "--bmc-user=admin",
                 f"--bmc-password-file={os.path.join(self.dir, 'bmc-password')}")

    def down_leaves_nothing(self) -> None:
        """`keel-lab down`, then check that nothing of the lab is left: no
        namespace, link, process (recorded or in a host's namespace), mount
        or state dir; and that a second `down` is harmless."""
        lab_layout = self.layout
        inodes = [net.netns_inode(h.netns) for h in lab_layout.all_hosts()]
        with open(os.path.join(self.dir, "lab.json")) as f:
            state = json.load(f)
        recorded = [state["observer_pid"], state.get("nfs_pid")] + list(state["bmc_pids"].values())
        recorded += [(json.load(open(h.boot_file)) if os.path.exists(h.boot_file) else {}).get("init_pid")
                     for h in lab_layout.all_hosts()]
        cp = subprocess.run(KEEL_LAB + ["down", "--dir", self.dir], capture_output=True, text=True,
                            timeout=120)
        assert cp.returncode == 0, cp.stderr
        assert not any(os.path.exists(f"/run/netns/{h.netns}") for h in lab_layout.all_hosts())
        assert not net.link_exists(BRIDGE)
        assert not any(net.link_exists(h.outer_veth) for h in lab_layout.all_hosts())
        assert not any(procs.alive(p) for p in recorded if p)
        assert all(procs.pids_in_netns(i) == [] for i in inodes if i)
        with open("/proc/self/mountinfo") as f:
            assert self.dir not in f.read()
        assert not os.path.exists(self.dir)
        assert probe.engine_qemu_pids(lab_layout) == {}
        # down again is harmless
        cp = subprocess.run(KEEL_LAB + ["down", "--dir", self.dir], capture_output=True, text=True,
                            timeout=60)
        assert cp.returncode == 0

    def ensure_healthy(self, timeout: float = 240) -> str:
        """Restore: every host powered and connected, maintenance off, engine up once."""
        lab = self.layout
        for h in lab.all_hosts():
            self.cli("heal", h.name, check=False)
            if not hosts.powered_on(h):
                self.cli("power", h.name, "on")
        wait_for("every host's broker socket", lambda: all(
            os.path.exists(h.path("run-keel", "broker.sock")) for h in lab.all_hosts()), 120)
        self.he("host1", "--set-maintenance", "--mode=none")
        for h in lab.all_hosts():
            self.he(h.name, "--set-maintenance", "--mode=none")
        return self.wait_single_engine(timeout)


