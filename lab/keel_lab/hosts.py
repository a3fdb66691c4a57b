"""Power for simulated hosts: boot = start the host's init in its
namespaces; power off = SIGKILL that init (the plug is pulled: the kernel
kills every process of the host's PID namespace at once).

The BMC simulators call these through `keel_lab.chassis`; nothing else in
the lab powers a host except `up` (first boot) and `down`.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from . import procs
from .layout import HostLayout, LabError, LabLayout, read_json, write_json

log = logging.getLogger("keel_lab.hosts")
INIT_MODULE = "keel_lab.hostinit"


def init_pid(host: HostLayout) -> int | None:
    """The pid (root namespace) of the host's running init, or None."""
    boot = read_json(host.boot_file, {}) or {}
    pid = boot.get("init_pid")
    if pid and procs.alive(pid, INIT_MODULE) and f"--host={host.name}" in procs.cmdline(pid) \
            and host.lab_dir in " ".join(procs.cmdline(pid)):
        return pid
    return None


def powered_on(host: HostLayout) -> bool:
    return init_pid(host) is not None


def storage_mounted(lab: LabLayout, host: HostLayout) -> bool:
    """Whether the host's view of the shared storage is mounted (in its own
    mount namespace, so it is looked up there)."""
    pid = init_pid(host)
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return any(line.split()[4] == lab.storage_view(host) for line in f)
    except OSError:
        return False


def boot(lab: LabLayout, host: HostLayout) -> int:
    """Start the host (returns at once; the host boots in the background)."""
    pid = init_pid(host)
    if pid:
        return pid
    os.makedirs(host.logs, exist_ok=True)
    logf = open(os.path.join(host.logs, "init.log"), "ab")
    try:
        unshare = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "-m", "-p", "-f", "--mount-proc",
             "--propagation", "private", "--kill-child=KILL",
             sys.executable, "-m", INIT_MODULE, f"--dir={lab.dir}", f"--host={host.name}"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            env=dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python"))
    finally:
        logf.close()
    deadline = time.monotonic() + 10
    child = None
    while time.monotonic() < deadline:
        kids = procs.children(unshare.pid)
        if kids and procs.alive(kids[0], INIT_MODULE):
            child = kids[0]
            break
        if unshare.poll() is not None:
            break
        time.sleep(0.01)
    if child is None:
        unshare.kill()
        raise LabError(f"{host.name} did not boot; see {host.logs}/init.log")
    write_json(host.boot_file, {"unshare_pid": unshare.pid, "init_pid": child, "booted": time.time()})
    # The unshare process is reaped by whoever outlives us; do not wait here.
    unshare.returncode = 0
    log.info("%s powered on (init pid %d)", host.name, child)
    return child


def _freeze_namespace(init: int) -> None:
    """SIGSTOP every process in the PID namespace of ``init`` (the host's init)."""
    try:
        ns = os.readlink(f"/proc/{init}/ns/pid")
    except OSError:
        return
    if ns == os.readlink("/proc/self/ns/pid"):
        return            # not a namespace of its own: never stop anything outside the host
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == init:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                os.kill(int(entry), signal.SIGSTOP)
        except OSError:
            continue      # gone meanwhile
    try:
        os.kill(init, signal.SIGSTOP)
    except OSError:
        pass


def power_off(host: HostLayout, reason: str = "power off") -> bool:
    """Pull the plug. True if the host was on."""
    pid = init_pid(host)
    if pid is None:
        return False
    # Everything stops at the same instant, as on a real power loss: frozen first,
    # then killed. Killed one by one, a host's sanlock could outlive its qemu for a
    # moment and release the VM's lease cleanly, which no real power loss does.
    _freeze_namespace(pid)
    procs.kill(pid, signal.SIGKILL, INIT_MODULE)
    if not procs.wait_gone(pid, 10):
        raise LabError(f"{host.name}: init pid {pid} survived SIGKILL")
    boot_info = read_json(host.boot_file, {}) or {}
    procs.wait_gone(boot_info.get("unshare_pid") or 0, 5)
    status = read_json(host.daemons_file, {}) or {}
    status["powered"] = False
    write_json(host.daemons_file, status)
    log.info("%s powered off (%s)", host.name, reason)
    return True
