"""Boot the appliance image under qemu on this machine (TCG), the way the HA
agent does: direct kernel boot, the image as the only system disk, the seed
as a second disk. Used by `keel-engine-appliance run`, the boot benchmark
and the tests.

Networking is either qemu's user-mode network (the guest's port 80
forwarded to a 127.0.0.0/8 address here; `restrict=on`, so nothing leaves
qemu) or a tap on a bridge inside a network namespace the caller owns.
The serial console is a pipe: every line is kept with the time it arrived,
counted from qemu's start, and commands can be typed into the root shell.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

HEALTH_PATH = "/ovirt-engine/services/health"
TOKEN_PATH = "/ovirt-engine/sso/oauth/token"
# terminal control sequences (colours, bracketed paste) are dropped from lines
_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Z0-9])")


class VMError(RuntimeError):
    pass


@dataclass(frozen=True)
class UserNet:
    """qemu user-mode networking: the guest sits alone in `guest_net`;
    `host_address:host_port` here reaches its port 80."""
    host_address: str = "127.0.0.1"
    host_port: int = 8080
    guest_net: str = "198.51.100.0/24"
    guest_host: str = "198.51.100.2"          # qemu's side of that network (the gateway)
    guest_address: str = "198.51.100.100"     # where the forward goes (the seed's static address)

    def qemu_args(self) -> list[str]:
        fwd = f"hostfwd=tcp:{self.host_address}:{self.host_port}-{self.guest_address}:80"
        return ["-netdev", f"user,id=n0,restrict=on,net={self.guest_net},host={self.guest_host},{fwd}",
                "-device", "virtio-net-pci,netdev=n0"]

    def base_url(self) -> str:
        return f"http://{self.host_address}:{self.host_port}"

    def wrap(self, cmd: list[str]) -> list[str]:
        return cmd


@dataclass(frozen=True)
class TapNet:
    """A tap device (already on a bridge) inside network namespace `netns`;
    qemu runs in that namespace and the engine is reached at `guest_address`."""
    netns: str
    tap: str
    guest_address: str
    mac: str = "52:54:00:6b:ee:01"

    def qemu_args(self) -> list[str]:
        return ["-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}"]

    def base_url(self) -> str:
        return f"http://{self.guest_address}"

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd]


def qemu_command(kernel: str, initrd: str, cmdline: str, disk: str, disk_format: str,
                 seed: str | None, memory_mb: int, vcpus: int, net, serial: list[str],
                 cpu: str | None = None) -> list[str]:
    """The qemu command line (pure): what the HA agent's domain XML amounts to."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(memory_mb),
           "-smp", str(vcpus), "-display", "none", "-nodefaults", "-no-user-config"]
    if cpu:
        cmd += ["-cpu", cpu]
    cmd += ["-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            "-drive", f"file={disk},format={disk_format},if=virtio,cache=none,aio=threads"]
    if seed:
        cmd += ["-drive", f"file={seed},format=raw,if=virtio,readonly=on"]
    # entropy from the host: the guest's random pool is ready at once
    cmd += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
            "-device", "virtio-rng-pci,rng=rng0"]
    return cmd + net.qemu_args() + serial


class ApplianceVM:
    def __init__(self, image, disk: str, seed: str | None = None, memory_mb: int = 1024,
                 vcpus: int = 2, net=None, console_log: str | None = None, cpu: str | None = None):
        self.image, self.disk, self.seed, self.cpu = image, disk, seed, cpu
        self.memory_mb, self.vcpus = memory_mb, vcpus
        self.net = net or UserNet()
        self.console_log = console_log
        self.qmp_path = disk + ".qmp"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.lines: list[tuple[float, str]] = []      # (seconds since qemu started, line)
        self._partial = ""
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle

    def ensure_disk(self) -> None:
        """The VM writes to its own qcow2 overlay; the built image stays pristine."""
        if not os.path.exists(self.disk):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", self.image.disk,
                            "-F", self.image.disk_format, self.disk], check=True, capture_output=True)

    def command(self, serial: list[str]) -> list[str]:
        return self.net.wrap(qemu_command(self.image.kernel, self.image.initrd, self.image.cmdline,
                                          self.disk, "qcow2", self.seed, self.memory_mb, self.vcpus,
                                          self.net, serial, self.cpu))

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise VMError("the VM is already running")
        self.ensure_disk()
        with self._cond:
            self.lines, self._partial = [], ""
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        cmd = self.command(["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
                            "-qmp", f"unix:{self.qmp_path},server=on,wait=off"])
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read_console, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read_console(self, proc) -> None:
        log = open(self.console_log, "a") if self.console_log else None
        try:
            while True:
                chunk = proc.stdout.read1(4096)
                if not chunk:
                    break
                now = time.monotonic() - self.started_at
                text = chunk.decode(errors="replace").replace("\r", "")
                if log:
                    log.write(text)
                    log.flush()
                with self._cond:
                    self._partial += text
                    *done, self._partial = self._partial.split("\n")
                    self.lines.extend((now, _ESCAPES.sub("", ln)) for ln in done)
                    self._cond.notify_all()
        finally:
            if log:
                log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Power off at once (what a failover does to the old engine VM)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self._reader:
            self._reader.join(timeout=5)

    def powerdown(self) -> None:
        """Press the ACPI power button, as libvirt's graceful shutdown (the
        HA agent's) does; wait_exit() tells when the guest is off."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.qmp_path)
            f = s.makefile("rw")
            f.readline()                                   # qemu's greeting
            for command in ("qmp_capabilities", "system_powerdown"):
                f.write(json.dumps({"execute": command}) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "error" in reply:
                        raise VMError(f"qmp {command}: {reply['error'].get('desc')}")
                    if "return" in reply:
                        break

    def reboot(self, timeout: float) -> None:
        """A clean reboot from inside the guest; back when the console logs in again."""
        with self._cond:
            since = len(self.lines)
        self.proc.stdin.write(b"systemctl reboot\n")
        self.proc.stdin.flush()
        self.wait_console(r"login: root \(automatic login\)", timeout, since)

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def run_interactive(self) -> int:
        self.ensure_disk()
        print("console on this terminal; leave with Ctrl-a x", flush=True)
        cmd = self.command(["-serial", "mon:stdio"])
        return subprocess.call(cmd)

    # -------------------------------------------------------------- console

    def console_text(self) -> str:
        with self._cond:
            return "\n".join(ln for _, ln in self.lines) + "\n" + self._partial

    def wait_console(self, pattern: str, timeout: float, since: int = 0,
                     partial: bool = False) -> tuple[float, str]:
        """The first console line from index `since` matching `pattern`: (time, line);
        with `partial`, the line still being written counts too (a prompt)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            i = since
            while True:
                while i < len(self.lines):
                    t, ln = self.lines[i]
                    if rx.search(ln):
                        return t, ln
                    i += 1
                if partial and rx.search(_ESCAPES.sub("", self._partial)):
                    return time.monotonic() - self.started_at, self._partial
                left = deadline - time.monotonic()
                if left <= 0 or not self.running():
                    raise VMError(f"no console line matching {pattern!r} within {timeout:.0f}s")
                self._cond.wait(min(left, 1.0))

    def shell(self, command: str, timeout: float = 60) -> str:
        """Run a command in the root shell on the serial console; its output."""
        marker = f"__keel_done_{time.monotonic_ns()}__"
        with self._cond:
            since = len(self.lines)
        # the marker is split in the echoed command line, whole only in the output
        half = len(marker) // 2
        line = f"{command}; echo '{marker[:half]}''{marker[half:]}'\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        self.wait_console("^" + re.escape(marker) + "$", timeout, since)
        with self._cond:
            out = [ln for _, ln in self.lines[since:]]
        end = out.index(marker)
        echoed = max((i for i, ln in enumerate(out[:end]) if marker[:half] in ln), default=-1)
        return "\n".join(out[echoed + 1:end])

    def wait_shell(self, timeout: float) -> None:
        """Until the autologin root shell answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.shell("true", timeout=min(10.0, max(1.0, deadline - time.monotonic())))
                return
            except VMError:
                if time.monotonic() > deadline:
                    raise VMError(f"no root shell on the serial console within {timeout:.0f}s") from None
                self.proc.stdin.write(b"\n")
                self.proc.stdin.flush()

    # -------------------------------------------------------------- the API

    def http(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None,
             timeout: float = 10) -> tuple[int, bytes]:
        url = self.net.base_url() + path
        headers = headers or {}
        if isinstance(self.net, UserNet):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()
        cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--max-time", str(timeout)]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        if data is not None:
            cmd += ["--data-binary", "@-"]
        out = subprocess.run(self.net.wrap(cmd + [url]), input=data, capture_output=True, check=False)
        if out.returncode != 0:
            raise OSError(f"curl: {out.stderr.decode(errors='replace').strip()}")
        body, _, code = out.stdout.rpartition(b"\n")
        return int(code), body

    def wait_health(self, timeout: float, interval: float = 0.25) -> float:
        """Seconds from qemu's start to the first 200 of the health URL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise VMError("qemu exited before the engine answered")
            try:
                status, body = self.http("GET", HEALTH_PATH, timeout=3)
                if status == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(interval)
        raise VMError(f"the health URL did not answer 200 within {timeout:.0f}s")

    def token(self, password: str, user: str = "admin@internal") -> str | None:
        body = urllib.parse.urlencode({"grant_type": "password", "username": user, "password": password,
                                       "scope": "ovirt-app-api"}).encode()
        status, out = self.http("POST", TOKEN_PATH, body,
                                {"Content-Type": "application/x-www-form-urlencoded",
                                 "Accept": "application/json"})
        if status != 200:
            return None
        return json.loads(out).get("access_token")

    def wait_token(self, password: str, timeout: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                tok = self.token(password)
                if tok:
                    return time.monotonic() - self.started_at, tok
            except OSError:
                pass
            time.sleep(0.25)
        raise VMError(f"no token for admin@internal within {timeout:.0f}s")


def have_qemu() -> bool:
    return shutil.which("qemu-system-x86_64") is not None
