"""The services a deploy installs (etcd, the HA broker and agent), run by
the host's service manager: systemd on a real host; on a lab host, the
lab's init, which reads the same unit files (see the lab's docs).

Both are driven the same way: the unit file is written to
`/etc/systemd/system`, enabled (a link in `multi-user.target.wants`), and
started; whether it runs is asked of the manager.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time

UNIT_DIR = "/etc/systemd/system"
WANTS_DIR = os.path.join(UNIT_DIR, "multi-user.target.wants")
LAB_UNITS_STATE = "/run/keel/lab-units.json"


class ServiceError(Exception):
    """str() says which unit and why."""


def unit_text(description: str, argv: list[str], *, env: dict[str, str] | None = None,
              after: tuple[str, ...] = (), requires: tuple[str, ...] = (), notify: bool = False,
              restart: str = "always", restart_sec: float = 2, extra_service: tuple[str, ...] = ()) -> str:
    lines = ["[Unit]", f"Description={description}"]
    if requires:
        lines.append("Requires=" + " ".join(requires))
    if after:
        lines.append("After=" + " ".join(after))
    lines += ["", "[Service]", f"Type={'notify' if notify else 'simple'}",
              "ExecStart=" + " ".join(shlex.quote(a) for a in argv)]
    lines += [f"Environment={shlex.quote(f'{k}={v}')}" for k, v in sorted((env or {}).items())]
    lines += [f"Restart={restart}", f"RestartSec={restart_sec:g}", *extra_service,
              "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


class ServiceManager:
    name = "?"

    def write_unit(self, unit: str, text: str) -> str:
        os.makedirs(UNIT_DIR, exist_ok=True)
        path = os.path.join(UNIT_DIR, unit)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        return path

    def enable_start(self, unit: str) -> None:
        raise NotImplementedError

    def stop_disable(self, unit: str) -> None:
        raise NotImplementedError

    def state(self, unit: str) -> tuple[bool, str]:
        """(running, a few words on its state)."""
        raise NotImplementedError

    def failing(self, unit: str) -> str | None:
        """Why a unit keeps exiting (it has been restarted at least twice), or None."""
        raise NotImplementedError

    def remove_unit(self, unit: str) -> None:
        self.stop_disable(unit)
        try:
            os.unlink(os.path.join(UNIT_DIR, unit))
        except FileNotFoundError:
            pass


class Systemd(ServiceManager):
    name = "systemd"

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            cp = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ServiceError(f"systemctl {' '.join(args)}: {e}") from None
        if check and cp.returncode != 0:
            raise ServiceError(f"systemctl {' '.join(args)} failed: "
                               f"{(cp.stderr or cp.stdout).strip().splitlines()[-1:] or cp.returncode}")
        return cp

    def enable_start(self, unit: str) -> None:
        self._ctl("daemon-reload")
        self._ctl("enable", "--now", unit)

    def stop_disable(self, unit: str) -> None:
        self._ctl("disable", "--now", unit, check=False)

    def failing(self, unit: str) -> str | None:
        cp = self._ctl("show", unit, "--property=NRestarts,ActiveState,Result", check=False)
        props = dict(line.partition("=")[::2] for line in cp.stdout.splitlines())
        restarts = int(props.get("NRestarts") or 0)
        if props.get("ActiveState") == "failed" or (restarts >= 2 and props.get("ActiveState") != "active"):
            return f"{props.get('ActiveState')} ({props.get('Result')}, {restarts} restarts)"
        return None

    def state(self, unit: str) -> tuple[bool, str]:
        cp = self._ctl("is-active", unit, check=False)
        word = cp.stdout.strip() or "unknown"
        return word == "active", word


class LabInit(ServiceManager):
    """The lab host's init: it starts enabled units on SIGHUP and writes
    their state to /run/keel/lab-units.json."""
    name = "the lab's init"

    def _reload(self) -> None:
        os.kill(1, signal.SIGHUP)

    def enable_start(self, unit: str) -> None:
        os.makedirs(WANTS_DIR, exist_ok=True)
        link = os.path.join(WANTS_DIR, unit)
        if not os.path.lexists(link):
            os.symlink(os.path.join(UNIT_DIR, unit), link)
        self._reload()

    def stop_disable(self, unit: str) -> None:
        link = os.path.join(WANTS_DIR, unit)
        if not os.path.lexists(link):
            return
        os.unlink(link)
        self._reload()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and unit in self._units():
            time.sleep(0.2)

    @staticmethod
    def _units() -> dict:
        try:
            with open(LAB_UNITS_STATE) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def state(self, unit: str) -> tuple[bool, str]:
        u = self._units().get(unit)
        if not u:
            return False, "not started yet"
        if u.get("active"):
            return True, f"running (pid {u.get('pid')})"
        return False, f"not running ({u.get('last_exit') or 'waiting to start'}, {u.get('restarts', 0)} restarts)"

    def failing(self, unit: str) -> str | None:
        u = self._units().get(unit) or {}
        if not u.get("active") and u.get("last_exit") and int(u.get("restarts") or 0) >= 2:
            return f"{u['last_exit']}, {u['restarts']} restarts"
        return None


def detect() -> ServiceManager:
    """systemd when it is PID 1; the lab's init on a lab host."""
    try:
        with open("/proc/1/cmdline", "rb") as f:
            init = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        init = ""
    if "keel_lab.hostinit" in init:
        return LabInit()
    if os.path.isdir("/run/systemd/system"):
        return Systemd()
    raise ServiceError("this host does not run systemd (PID 1 is "
                       f"{init.split()[0] if init else 'unknown'}); Keel's services need it")
