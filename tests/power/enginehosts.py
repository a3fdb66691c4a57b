"""Engine-side fixtures for the failover tests: real libvirtd 'hosts' on 127.0.2.x,
a real engine database, and a BMC per host whose chassis power kills the host.

A host is a private libvirtd in its own mount namespace (the engine helper's
``tests/engine/libvirt_hosts.py``); powering it off SIGKILLs every process
in that mount namespace (libvirtd and its qemu guests), as a power cut would.
"""

import importlib.util
import os
import signal
import sys

from harness.wait import wait_for  # noqa: F401  (the power tests import it from here)
from pathlib import Path

POWER_PROGRAM = """#!{python}
# Chassis power of a test host: 'on' while its libvirtd lives.
import os, signal, sys
root = {root!r}

def pid():
    try:
        return int(open(os.path.join(root, "host.pid")).read())
    except (OSError, ValueError):
        return None

def alive(p):
    try:
        return p is not None and open(f"/proc/{{p}}/stat").read().split()[2] != "Z"
    except OSError:
        return False

def members(p):
    # the daemon's mount namespace, plus its qemu guests (libvirt gives each
    # guest a private mount namespace, so they are found by their pid files)
    ns = os.readlink(f"/proc/{{p}}/ns/mnt")
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink(f"/proc/{{d}}/ns/mnt") == ns:
                    yield int(d)
            except OSError:
                pass
    qdir = os.path.join(root, "libvirt", "run", "qemu")
    for name in os.listdir(qdir) if os.path.isdir(qdir) else []:
        if name.endswith(".pid"):
            try:
                yield int(open(os.path.join(qdir, name)).read())
            except (OSError, ValueError):
                pass

mode = open(os.path.join(root, "mode")).read().strip() if os.path.exists(os.path.join(root, "mode")) else "normal"
if sys.argv[1] == "get":
    print("on" if alive(pid()) else "off")
elif sys.argv[1:] == ["set", "off"]:
    if mode == "stuck":
        sys.exit(0)          # accepts the command, never powers off
    p = pid()
    if alive(p):
        for m in list(members(p)):
            try:
                os.kill(m, signal.SIGKILL)
            except ProcessLookupError:
                pass
elif sys.argv[1:] == ["set", "on"]:
    sys.exit(0 if alive(pid()) else 1)   # the test boots hosts itself
else:
    sys.exit(1)
"""


def load_libvirt_hosts():
    """The engine helper's libvirtd harness, or None when it is not there."""
    path = Path(__file__).resolve().parents[1] / "engine" / "libvirt_hosts.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("power_tests_libvirt_hosts", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TestHost:
    __test__ = False  # a fixture helper, not a test class

    def __init__(self, lvmod, root: Path, address: str, index: int):
        self.root = root
        self.lv = lvmod.LibvirtHost(str(root / "libvirt"), address, index)
        prepare = self.lv._prepare

        def prepare_with_own_display_ports():
            # these daemons share one network namespace: without distinct VNC
            # port ranges two of them hand out 5900 and the second guest fails
            prepare()
            with open(os.path.join(self.lv.root, "etc", "qemu.conf"), "a") as f:
                base = 6000 + 50 * index
                f.write(f"remote_display_port_min = {base}\nremote_display_port_max = {base + 49}\n")
        self.lv._prepare = prepare_with_own_display_ports
        self.address = address
        self.program = root / "power.py"
        root.mkdir(parents=True, exist_ok=True)
        self.program.write_text(POWER_PROGRAM.format(python=sys.executable, root=str(root)))
        self.program.chmod(0o755)
        self.mode("normal")

    def boot(self):
        self.lv.start()
        self.lv.wait_ready()
        (self.root / "host.pid").write_text(str(self.lv.proc.pid))

    def ensure_up(self):
        if self.lv.proc is None or self.lv.proc.poll() is not None:
            self.lv.proc = None
            self.boot()
        else:
            os.kill(self.lv.proc.pid, signal.SIGCONT)

    def mode(self, mode):
        (self.root / "mode").write_text(mode)

    def freeze(self):
        """The host stops answering the engine, its guests keep running."""
        os.kill(self.lv.proc.pid, signal.SIGSTOP)

    def shutdown(self):
        if self.lv.proc is not None:
            try:
                os.kill(self.lv.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            if self.lv.proc.poll() is None:
                self.lv.stop()
            else:
                self.lv.proc = None


def qemu_pids_of(host: "TestHost"):
    """Live qemu processes of the host's guests (from libvirt's pid files)."""
    qdir = host.root / "libvirt" / "run" / "qemu"
    out = []
    for pidfile in qdir.glob("*.pid") if qdir.is_dir() else []:
        try:
            pid = int(pidfile.read_text())
            stat = open(f"/proc/{pid}/stat").read()
        except (OSError, ValueError):
            continue
        if "qemu" in stat.split()[1] and stat.split()[2] != "Z":
            out.append(pid)
    return out


