"""The init of one simulated host (PID 1 of its PID namespace).

Started by the lab as
    ip netns exec lab-hN unshare -m -p -f --mount-proc --propagation private \
        --kill-child=KILL python -m keel_lab.hostinit --dir DIR --host hostN
it bind-mounts the host's own directories over the system paths, then starts
and supervises the host's daemons the way their systemd units would (same
restart policies). Killing this process is pulling the host's plug: the
kernel kills every process of the PID namespace at once.

It also plays the hardware watchdog that wdmd would arm on a real host:
when the sanlock daemon dies, or the host's lockspace renewal has failed
while lease holders are still alive, the whole host is reset (every process
killed at once, then a fresh boot), well before another host could take the
lease. Without this the lab would produce split-brains real hosts cannot.
"""
from __future__ import annotations

import argparse
import configparser
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from keel_common.config import PROFILES

from .hostfiles import BIND_MOUNTS, RUNTIME_DIRS
from .storagefault import is_mounted
from .layout import LOCKSPACE, HostLayout, LabLayout, layout_from_state, write_json

log = logging.getLogger("keel_lab.hostinit")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEMD_DIR = os.path.join(REPO_ROOT, "systemd")
TICK = 0.2


@dataclass
class Daemon:
    name: str
    argv: list[str]
    restart: str = "no"           # systemd Restart=: no, on-failure, on-abnormal, always
    restart_sec: float = 0.1      # systemd RestartSec= (default 100 ms)
    env: dict[str, str] = field(default_factory=dict)
    ready: callable = None        # start only once this returns True (unit ordering)
    pid: int | None = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    last_exit: str = ""

    def should_restart(self, status: int) -> bool:
        """systemd's table: exit code != 0 is a failure, a signal is abnormal
        (and a failure); SIGKILL/SIGSEGV etc. restart under both."""
        if self.restart == "always":
            return True
        if os.WIFSIGNALED(status):
            return self.restart in ("on-failure", "on-abnormal") and \
                os.WTERMSIG(status) not in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)
        if self.restart == "on-failure":
            return os.WEXITSTATUS(status) != 0
        return False


def unit_policy(unit: str, default: tuple[str, float]) -> tuple[str, float]:
    """Restart=/RestartSec= from the project's unit file, when it exists."""
    path = os.path.join(SYSTEMD_DIR, unit)
    if not os.path.exists(path):
        return default
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        cp.read(path)
        restart = cp.get("Service", "Restart", fallback=default[0]).strip()
        sec = cp.get("Service", "RestartSec", fallback=str(default[1])).strip().rstrip("s")
        return restart, float(sec)
    except (configparser.Error, ValueError):
        return default


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


class HostInit:
    def __init__(self, lab: LabLayout, host: HostLayout):
        self.lab = lab
        self.host = host
        self.timing = PROFILES[lab.profile]
        self.daemons: list[Daemon] = []
        self.resets = 0
        self.boots = 0
        self.stopping = False
        self.reset_reason: str | None = None
        self.renewal_failed_since: float | None = None

    # -- boot ------------------------------------------------------------
    def mount_all(self) -> None:
        for d in RUNTIME_DIRS:
            path = self.host.path(d)
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path, exist_ok=True)
        for src, target in BIND_MOUNTS.items():
            os.makedirs(target, exist_ok=True)
            subprocess.run(["mount", "--bind", self.host.path(src), target], check=True)
        os.chmod("/run/sanlock", 0o775)

    def build_daemons(self) -> list[Daemon]:
        h, venv_bin = self.host, os.path.dirname(sys.executable)
        py_env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "PYTHONUNBUFFERED": "1",
                  "SANLOCK_RUN_DIR": "/run/sanlock", "KEEL_CONFIG": "/etc/keel/hosted-engine.conf"}
        storage_ready = lambda: is_mounted(h.storage_mount)  # noqa: E731
        ds = [Daemon("storage", [sys.executable, "-m", "keel_lab.storagefault",
                                 "--source", self.lab.shared, "--mountpoint", h.storage_mount,
                                 "--fault-file", h.storage_fault_file],
                     # The host's NFS-like client to the shared dir (see storagefault).
                     restart="always", restart_sec=0.5),
              Daemon("sanlock", ["sanlock", "daemon", "-w", "0", "-l", "0", "-D", "-L", "-1",
                                 "-S", "-1", "-e", h.name],
                     restart="no",  # sanlock.service has no Restart=; death = watchdog reset
                     env={"LD_PRELOAD": self.lab.shim, "SANLOCK_RUN_DIR": "/run/sanlock"}),
              Daemon("libvirtd", ["libvirtd", "--listen", "-p", "/run/libvirt/libvirtd.pid"],
                     restart="on-failure", restart_sec=0.1,
                     ready=lambda: os.path.exists("/run/sanlock/sanlock.sock"))]
        if h.etcd_member:
            cluster = ",".join(f"{m.name}={m.etcd_peer_url}" for m in self.lab.etcd_hosts)
            ds.append(Daemon("etcd", [
                "etcd", "--name", h.name, "--data-dir", h.path("etcd"),
                "--listen-client-urls", f"{h.etcd_client_url},http://127.0.0.1:2379",
                "--advertise-client-urls", h.etcd_client_url,
                "--listen-peer-urls", h.etcd_peer_url,
                "--initial-advertise-peer-urls", h.etcd_peer_url,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "keel-lab",
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--logger", "zap", "--log-level", "warn"],
                restart="on-abnormal", restart_sec=0.1))
        for unit, module, name in (("keel-ha-broker.service", "keel_broker", "broker"),
                                   ("keel-ha-agent.service", "keel_agent", "agent")):
            if importlib.util.find_spec(f"{module}.daemon") is None:
                log.info("%s not installed (%s.daemon missing); not starting it", name, module)
                continue
            script = os.path.join(venv_bin, f"keel-ha-{name}")
            argv = [script] if os.path.exists(script) else \
                [sys.executable, "-c", f"from {module}.daemon import main; main()"]
            restart, sec = unit_policy(unit, ("always", 2.0))
            ready = (lambda: os.path.exists("/run/sanlock/sanlock.sock") and storage_ready()) \
                if name == "broker" else (lambda: os.path.exists("/run/keel/broker.sock"))
            ds.append(Daemon(name, argv + ["--config", "/etc/keel/hosted-engine.conf"],
                             restart=restart, restart_sec=sec, env=py_env, ready=ready))
        return ds

    def boot(self) -> None:
        self.boots += 1
        log.info("%s booting (boot %d)", self.host.name, self.boots)
        self.daemons = self.build_daemons()
        self.renewal_failed_since = None
        self.write_status()

    def start(self, d: Daemon) -> None:
        logf = open(os.path.join(self.host.logs, f"{d.name}.log"), "ab")
        logf.write(f"--- {time.strftime('%F %T')} {self.host.name}: starting {d.name}\n".encode())
        logf.flush()
        try:
            proc = subprocess.Popen(d.argv, env=dict(os.environ, **d.env), stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT, cwd="/")
        except OSError as e:
            log.error("%s: cannot start %s: %s", self.host.name, d.name, e)
            d.next_start = time.monotonic() + max(d.restart_sec, 1.0)
            return
        finally:
            logf.close()
        d.pid, d.started = proc.pid, time.time()
        # Popen objects are dropped: PID 1 reaps every child itself below.
        proc.returncode = 0
        log.info("%s: started %s (pid %d)", self.host.name, d.name, d.pid)
        self.write_status()

    # -- supervision -----------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for d in self.daemons:
                if d.pid == pid:
                    self.exited(d, status)

    def exited(self, d: Daemon, status: int) -> None:
        d.pid = None
        d.last_exit = _exit_text(status)
        if self.stopping:
            return
        if d.name == "sanlock":
            self.reset_reason = f"sanlock daemon {d.last_exit} (emulated watchdog fires)"
            return
        if d.should_restart(status):
            d.restarts += 1
            d.next_start = time.monotonic() + d.restart_sec
            log.info("%s: %s %s; restarting in %.1f s (Restart=%s)", self.host.name, d.name,
                     d.last_exit, d.restart_sec, d.restart)
        else:
            d.next_start = float("inf")
            log.warning("%s: %s %s; not restarting (Restart=%s)", self.host.name, d.name,
                        d.last_exit, d.restart)
        self.write_status()

    def check_watchdog(self) -> None:
        """Reset the host when its lockspace renewal failed and the lease
        holders outlived it, as wdmd's watchdog would."""
        sanlock = next((d for d in self.daemons if d.name == "sanlock"), None)
        if sanlock is None or sanlock.pid is None:
            return
        failing = lockspace_renewal_failing()
        now = time.monotonic()
        if not failing:
            self.renewal_failed_since = None
            return
        if self.renewal_failed_since is None:
            self.renewal_failed_since = now
            log.warning("%s: lockspace %s renewal failing", self.host.name, LOCKSPACE)
        # sanlock kills holders ~8 io_timeouts after the last good renewal; the
        # hardware watchdog would fire 60 s after that at the latest. Fire well
        # before another host could take the lease (8T + 60 s after the last
        # good renewal), so give holders 20 s to go.
        if now - self.renewal_failed_since > 20 and lease_holders_alive():
            self.reset_reason = ("lockspace renewal failed and lease holders are still alive "
                                 "(emulated watchdog fires)")

    def reset(self) -> None:
        log.warning("%s: RESET: %s", self.host.name, self.reset_reason)
        self.resets += 1
        self.reset_reason = None
        self.stopping = True
        os.kill(-1, signal.SIGKILL)  # from PID 1: every other process of the host
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.reap()
            if not [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]:
                break
            time.sleep(0.05)
        self.stopping = False
        for d in RUNTIME_DIRS:  # /run is empty after a reboot
            for entry in os.listdir(BIND_MOUNTS[d]):
                p = os.path.join(BIND_MOUNTS[d], entry)
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) and not os.path.islink(p) \
                    else os.unlink(p)
        time.sleep(1.0)  # the reboot itself
        self.boot()

    def shutdown(self, *_):
        """SIGTERM: stop the host in order (HA daemons first, sanlock last)."""
        if self.stopping:
            return
        self.stopping = True
        log.info("%s: shutting down", self.host.name)
        for d in reversed(self.daemons):
            if d.pid:
                try:
                    if d.name == "sanlock":
                        subprocess.run(["sanlock", "client", "shutdown", "-f", "1"],
                                       env=dict(os.environ, SANLOCK_RUN_DIR="/run/sanlock"),
                                       capture_output=True, timeout=5)
                    else:
                        os.kill(d.pid, signal.SIGTERM)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(d.pid for d in self.daemons):
            self.reap()
            time.sleep(0.1)
        os.kill(-1, signal.SIGKILL)
        self.write_status(powered=False)
        sys.exit(0)

    def write_status(self, powered: bool = True) -> None:
        write_json(self.host.daemons_file, {
            "host": self.host.name, "powered": powered, "boots": self.boots, "resets": self.resets,
            "updated": time.time(),
            "daemons": {d.name: {"pid": d.pid, "started": d.started, "restarts": d.restarts,
                                 "restart": d.restart, "last_exit": d.last_exit}
                        for d in self.daemons}})

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.shutdown)
        self.mount_all()
        self.boot()
        next_watchdog = 0.0
        while True:
            self.reap()
            if self.reset_reason:
                self.reset()
                continue
            now = time.monotonic()
            for d in self.daemons:
                if d.pid is None and now >= d.next_start and (d.ready is None or d.ready()):
                    self.start(d)
            if now >= next_watchdog:
                next_watchdog = now + 2.0  # wdmd checks every 10 s; 2 s is plenty
                self.check_watchdog()
            time.sleep(TICK)


def lockspace_renewal_failing() -> bool:
    """True when this host's sanlock says its hosted-engine lockspace renewal
    has failed (`sanlock client status -D`: renew_fail or space_dead set).
    renewal_last_result alone is not enough: a renewal hung on storage never
    completes, so the last *completed* result stays good."""
    try:
        out = subprocess.run(["sanlock", "client", "status", "-D"], capture_output=True, text=True,
                             timeout=3, env=dict(os.environ, SANLOCK_RUN_DIR="/run/sanlock")).stdout
    except subprocess.TimeoutExpired:
        return False
    in_ls = False
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            in_ls = line.startswith(f"s {LOCKSPACE}:")
            continue
        key, _, value = line.strip().partition("=")
        if in_ls and key in ("renew_fail", "space_dead") and value not in ("", "0"):
            return True
    return False


def lease_holders_alive() -> bool:
    """Any process still holding a lease of the lockspace: what wdmd's watchdog
    checks. A qemu without a lease (a VM with no sanlock lease) does not count."""
    try:
        cp = subprocess.run(["sanlock", "client", "status"], capture_output=True, text=True, timeout=5,
                            env=dict(os.environ, SANLOCK_RUN_DIR="/run/sanlock"))
    except (OSError, subprocess.TimeoutExpired):
        cp = None
    if cp is None or cp.returncode != 0:
        return any_qemu_alive()          # sanlock cannot tell: assume the worst
    for line in cp.stdout.splitlines():
        # "r LOCKSPACE:RESOURCE:PATH:OFFSET:LVER p PID"
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "r" and parts[1].startswith(f"{LOCKSPACE}:") and parts[-2] == "p":
            if parts[-1].isdigit() and os.path.exists(f"/proc/{parts[-1]}"):
                return True
    return False


def any_qemu_alive() -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("qemu-system"):
                        return True
            except OSError:
                continue
    return False


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="keel_lab.hostinit", description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.getpid() != 1:
        sys.exit("keel_lab.hostinit must run as PID 1 of a new PID namespace (the lab starts it)")
    lab = layout_from_state(args.dir)
    # Everything on this host (libvirt's sanlock lock driver above all) must
    # talk to this host's sanlock daemon, whatever the environment `keel-lab`
    # was started from: a stray SANLOCK_RUN_DIR once sent libvirtd to a
    # daemon that was gone, and no engine VM could start.
    os.environ["SANLOCK_RUN_DIR"] = "/run/sanlock"
    HostInit(lab, lab.host(args.host)).run()


if __name__ == "__main__":
    main()
