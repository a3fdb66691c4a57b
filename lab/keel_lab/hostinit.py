"""The init of one simulated host (PID 1 of its PID namespace).

Started by the lab as
    ip netns exec lab-hN unshare -m -p -f --mount-proc --propagation private \
        --kill-child=KILL python -m keel_lab.hostinit --dir DIR --host hostN
it bind-mounts the host's own directories over the system paths, then starts
and supervises the host's daemons the way their systemd units would (same
restart policies). Killing this process is pulling the host's plug: the
kernel kills every process of the PID namespace at once.

Bare hosts (`keel-lab up --engine bare`) run only the storage view, sanlock
and libvirtd; whatever an installer enables runs as systemd would run it,
in the subset `keel_lab.units` reads:
- a unit is `/etc/systemd/system/NAME.service`, enabled while
  `/etc/systemd/system/multi-user.target.wants/NAME.service` exists (inside
  the host, `/etc/systemd/system` is the host's own `etc-systemd` dir);
- the init reads the enabled units at boot and on SIGHUP (`kill -HUP 1`,
  the installer's "systemctl daemon-reload; systemctl enable --now"): a
  newly enabled unit starts once the sanlock socket exists and the shared
  storage is mounted; a unit no longer enabled is stopped: SIGTERM, then
  SIGKILL after TimeoutStopSec (its process group plays its cgroup:
  control-group signals the group, mixed sends SIGTERM to the main process
  and SIGKILL to the group, process and none signal the main process
  only); a unit whose file changed is stopped, then started again. Restart= and RestartSec= apply as in systemd (no start
  rate limit). The units of services the init runs itself
  (sanlock.service, libvirtd.service) are never started twice: they report
  the init's own daemon;
- units run with the init's environment (PATH with the lab's venv first, as
  `keel-lab exec` has it) plus the unit's, in /, their output in the host's
  `logs/NAME.service.log`;
- after every change the init writes `/run/keel/lab-units.json`
  atomically: {"NAME.service": {"pid": int|null, "active": bool,
  "restarts": int, "last_exit": str|null, "started": float|null}}, with
  pids as seen inside the host; a unit file that cannot run shows there
  with "pid": null, "active": false and the reason in "last_exit".

It also plays the hardware watchdog that wdmd would arm on a real host:
when the sanlock daemon dies, or the host's lockspace renewal has failed
while lease holders are still alive, the whole host is reset (every process
killed at once, then a fresh boot), well before another host could take the
lease. Without this the lab would produce split-brains real hosts cannot.
"""
from __future__ import annotations

import argparse
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

from . import units
from .hostfiles import BIND_MOUNTS, RUNTIME_DIRS
from .storagefault import is_mounted
from .layout import LOCKSPACE, HostLayout, LabLayout, layout_from_state, write_json

log = logging.getLogger("keel_lab.hostinit")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEMD_DIR = os.path.join(REPO_ROOT, "systemd")
TICK = 0.2
VENV_BIN = os.path.dirname(sys.executable)   # what `keel-lab exec` puts first in PATH
SANLOCK_SOCKET = "/run/sanlock/sanlock.sock"
UNITS_FILE = "/run/keel/lab-units.json"
# Units of the services the init runs itself: enabling them starts nothing more.
BUILTIN_UNITS = {"sanlock.service": "sanlock", "libvirtd.service": "libvirtd"}


@dataclass
class Daemon:
    name: str
    argv: list[str]
    restart: str = "no"           # systemd Restart=: no, on-failure, on-abnormal, always
    restart_sec: float = 0.1      # systemd RestartSec= (default 100 ms)
    env: dict[str, str] = field(default_factory=dict)
    ready: callable = None        # start only once this returns True (unit ordering)
    unit: units.Unit | None = None  # a unit an installer enabled (argv and env come from it)
    pid: int | None = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    last_exit: str = ""
    kill_at: float = float("inf")  # while stopping: when SIGKILL follows SIGTERM

    def should_restart(self, status: int) -> bool:
        """systemd's table: exit code != 0 is a failure, a signal is abnormal
        (and a failure) unless it is a clean one (SIGTERM, SIGINT, SIGHUP,
        SIGPIPE: a clean exit); SIGKILL/SIGSEGV etc. restart under both;
        on-abort restarts on an unclean signal only, on-success on a clean
        exit only. No watchdog here: on-watchdog never restarts."""
        if self.restart == "always":
            return True
        clean_signal = os.WIFSIGNALED(status) and \
            os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)
        if os.WIFSIGNALED(status) and not clean_signal:
            return self.restart in ("on-failure", "on-abnormal", "on-abort")
        clean = clean_signal or os.WEXITSTATUS(status) == 0
        return self.restart == ("on-success" if clean else "on-failure")

    @property
    def group_term(self) -> bool:
        """Whether SIGTERM reaches its whole process group (a unit's cgroup here)."""
        return self.unit is not None and self.unit.kill_mode == "control-group"

    @property
    def group_kill(self) -> bool:
        """Whether SIGKILL reaches its whole process group."""
        return self.unit is not None and self.unit.kill_mode in ("control-group", "mixed")

    def send(self, sig: int, group: bool = False) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig) if group else os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def unit_policy(unit: str, default: tuple[str, float]) -> tuple[str, float]:
    """Restart=/RestartSec= from the project's unit file, when it exists."""
    path = os.path.join(SYSTEMD_DIR, unit)
    try:
        with open(path, encoding="utf-8") as f:
            service = dict(units.parse_sections(f.read()).get("Service", []))
        sec = service.get("RestartSec")
        return service.get("Restart", default[0]), units.parse_timespan(sec) if sec else default[1]
    except (OSError, units.UnitError):
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
        self.storage = lab.storage_view(host)
        self.daemons: list[Daemon] = []
        self.retiring: list[Daemon] = []      # units being stopped (disabled or changed)
        self.unit_errors: dict[str, str] = {}  # enabled units that cannot run, and why
        self.resets = 0
        self.boots = 0
        self.stopping = False
        self.reload_requested = False
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

    def storage_ready(self) -> bool:
        return is_mounted(self.storage)

    def build_daemons(self) -> list[Daemon]:
        h, venv_bin = self.host, VENV_BIN
        py_env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "PYTHONUNBUFFERED": "1",
                  "SANLOCK_RUN_DIR": "/run/sanlock", "KEEL_CONFIG": "/etc/keel/hosted-engine.conf"}
        ds = [Daemon("storage", [sys.executable, "-m", "keel_lab.storagefault",
                                 "--source", self.lab.shared, "--mountpoint", self.storage,
                                 "--fault-file", h.storage_fault_file],
                     # The host's NFS-like client to the shared dir (see storagefault).
                     restart="always", restart_sec=0.5),
              Daemon("sanlock", ["sanlock", "daemon", "-w", "0", "-l", "0", "-D", "-L", "-1",
                                 "-S", "-1", "-e", h.name],
                     restart="no",  # sanlock.service has no Restart=; death = watchdog reset
                     env={"LD_PRELOAD": self.lab.shim, "SANLOCK_RUN_DIR": "/run/sanlock"}),
              Daemon("libvirtd", ["libvirtd", "--listen", "-p", "/run/libvirt/libvirtd.pid"],
                     restart="on-failure", restart_sec=0.1,
                     ready=lambda: os.path.exists(SANLOCK_SOCKET))]
        if self.lab.bare:
            return ds     # the rest is the installer's (units)
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
            ready = (lambda: os.path.exists(SANLOCK_SOCKET) and self.storage_ready()) \
                if name == "broker" else (lambda: os.path.exists("/run/keel/broker.sock"))
            ds.append(Daemon(name, argv + ["--config", "/etc/keel/hosted-engine.conf"],
                             restart=restart, restart_sec=sec, env=py_env, ready=ready))
        return ds

    def boot(self) -> None:
        self.boots += 1
        log.info("%s booting (boot %d)", self.host.name, self.boots)
        self.daemons = self.build_daemons()
        self.retiring = []
        self.renewal_failed_since = None
        self.reload_units()

    def start(self, d: Daemon) -> None:
        logf = open(os.path.join(self.host.logs, f"{d.name}.log"), "ab")
        logf.write(f"--- {time.strftime('%F %T')} {self.host.name}: starting {d.name}\n".encode())
        logf.flush()
        try:
            argv, env = d.argv, dict(os.environ, **d.env)
            if d.unit is not None:     # the environment files and $VARs, as of this start
                env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
                env.update(d.unit.env())
                argv = d.unit.argv(env)
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, cwd="/",
                                    # a unit's process group plays its cgroup
                                    start_new_session=d.unit is not None)
        except (OSError, units.UnitError) as e:
            why = f"{e.filename or argv[0]}: {e.strerror}" if isinstance(e, OSError) and e.strerror \
                else str(e)
            logf.write(f"cannot start {d.name}: {why}\n".encode())
            log.error("%s: cannot start %s: %s", self.host.name, d.name, why)
            if d.unit is None:
                d.next_start = time.monotonic() + max(d.restart_sec, 1.0)
            else:          # as systemd's 203/EXEC: a failure, restarted as Restart= says
                self.exited(d, 203 << 8)
                d.last_exit = f"cannot start: {why}"
                self.write_status()
            return
        finally:
            logf.close()
        d.pid, d.started = proc.pid, time.time()
        # Popen objects are dropped: PID 1 reaps every child itself below.
        proc.returncode = 0
        log.info("%s: started %s (pid %d)", self.host.name, d.name, d.pid)
        self.write_status()

    # -- units (what an installer enabled) -------------------------------
    def reload_units(self) -> None:
        """Compare the enabled units with the running ones, as `systemctl
        daemon-reload` followed by enabling or disabling them would."""
        found, self.unit_errors = units.load_enabled()
        for name in BUILTIN_UNITS:
            found.pop(name, None)
            self.unit_errors.pop(name, None)
        running = {d.name: d for d in self.daemons if d.unit is not None}
        for name, d in running.items():
            new = found.get(name)
            if new is not None and new.text == d.unit.text:
                found.pop(name)          # unchanged: keeps running
                continue
            log.info("%s: %s %s; stopping it", self.host.name, name,
                     "changed" if new is not None else "is no longer enabled")
            self.retire(d)
        for name, unit in found.items():
            old = next((r for r in self.retiring if r.name == name), None)
            self.daemons.append(Daemon(
                name, list(unit.exec_start), restart=unit.restart, restart_sec=unit.restart_sec,
                unit=unit, ready=lambda old=old: (old is None or old.pid is None) and
                os.path.exists(SANLOCK_SOCKET) and self.storage_ready()))
            log.info("%s: %s enabled", self.host.name, name)
        self.write_status()

    def retire(self, d: Daemon) -> None:
        """Stop a unit: SIGTERM now, SIGKILL after its TimeoutStopSec."""
        self.daemons.remove(d)
        if d.pid is None:
            return
        d.send(signal.SIGTERM, group=d.group_term)
        d.kill_at = time.monotonic() + d.unit.timeout_stop_sec
        self.retiring.append(d)

    def check_retiring(self) -> None:
        now = time.monotonic()
        for d in list(self.retiring):
            if d.pid is None:
                self.retiring.remove(d)
                log.info("%s: %s stopped (%s)", self.host.name, d.name, d.last_exit)
                self.write_status()
            elif now >= d.kill_at:
                log.warning("%s: %s did not stop within %.0f s; SIGKILL", self.host.name, d.name,
                            d.unit.timeout_stop_sec)
                d.send(signal.SIGKILL, group=d.group_kill)
                d.kill_at = float("inf")

    def units_status(self) -> dict:
        def entry(d: Daemon) -> dict:
            return {"pid": d.pid, "active": d.pid is not None, "restarts": d.restarts,
                    "last_exit": d.last_exit or None, "started": d.started or None}
        out = {name: {"pid": None, "active": False, "restarts": 0, "last_exit": why, "started": None}
               for name, why in self.unit_errors.items()}
        out.update({d.name: entry(d) for d in self.daemons if d.unit is not None})
        # a unit on its way out is still running until it has exited
        out.update({d.name: entry(d) for d in self.retiring if d.pid is not None})
        for unit, name in BUILTIN_UNITS.items():
            if os.path.lexists(os.path.join(units.UNIT_DIR, units.WANTS, unit)):
                builtin = next((d for d in self.daemons if d.name == name), None)
                if builtin is not None:
                    out[unit] = entry(builtin)
        return out

    # -- supervision -----------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for d in self.daemons + self.retiring:
                if d.pid == pid:
                    self.exited(d, status)

    def exited(self, d: Daemon, status: int) -> None:
        if d.group_kill and d.pid is not None:
            d.send(signal.SIGKILL, group=True)   # what the main process left behind
        d.pid = None
        d.last_exit = _exit_text(status)
        if self.stopping or d in self.retiring:
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
        """SIGTERM: stop the host in order (units and HA daemons first, sanlock last)."""
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
                        d.send(signal.SIGTERM, group=d.group_term)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(d.pid for d in self.daemons + self.retiring):
            self.reap()
            time.sleep(0.1)
        os.kill(-1, signal.SIGKILL)
        self.write_status(powered=False)
        sys.exit(0)

    def request_reload(self, *_):
        """SIGHUP: read the enabled units again (in the main loop, not here)."""
        self.reload_requested = True

    def write_status(self, powered: bool = True) -> None:
        write_json(self.host.daemons_file, {
            "host": self.host.name, "powered": powered, "boots": self.boots, "resets": self.resets,
            "updated": time.time(),
            "daemons": {d.name: {"pid": d.pid, "started": d.started, "restarts": d.restarts,
                                 "restart": d.restart, "last_exit": d.last_exit}
                        for d in self.daemons}})
        if powered:
            write_json(UNITS_FILE, self.units_status())

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.shutdown)
        signal.signal(signal.SIGHUP, self.request_reload)
        self.mount_all()
        self.boot()
        next_watchdog = 0.0
        while True:
            self.reap()
            if self.reset_reason:
                self.reset()
                continue
            if self.reload_requested:
                self.reload_requested = False
                log.info("%s: SIGHUP: reading the enabled units again", self.host.name)
                self.reload_units()
            self.check_retiring()
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
