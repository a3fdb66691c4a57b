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
from contextlib import contextmanager
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




@contextmanager
def running_hosts(lv, root: Path, addresses, first_index: int):
    """libvirtd test hosts on ``addresses``; ``first_index`` keeps their migration
    and display ports apart from other modules' hosts."""
    hosts = [TestHost(lv, root / f"h{i}", a, first_index + i) for i, a in enumerate(addresses)]
    try:
        for h in hosts:
            h.lv.start()
        for h in hosts:
            h.lv.wait_ready()
            (h.root / "host.pid").write_text(str(h.lv.proc.pid))
        yield hosts
    finally:
        for h in hosts:
            h.shutdown()


def reset_hosts(hosts) -> None:
    """Every host up, answering, and running no domain (a previous test may have
    frozen or powered one off)."""
    import libvirt
    for h in hosts:
        h.mode("normal")
        h.ensure_up()
        conn = libvirt.open(h.lv.uri)
        for dom in conn.listAllDomains():
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass   # already gone (killed by a previous test's power-off)
        conn.close()


def engine_state(tmp_path: Path, hosts, bmc_for, **config):
    """An engine database with one data center, cluster and Blank template, the
    hosts up, and a fence agent (password ``fence-pw``) for each host index that
    ``bmc_for(index)`` gives a BMC. Returns the state dict the power tests share."""
    from keel_engine import db
    from keel_engine.config import EngineConfig
    from keel_engine.models import (BLANK_TEMPLATE_ID, Base, Cluster, DataCenter, FenceAgent, Host,
                                    Template, utcnow)
    from keel_engine.services import Context
    from keel_engine.services import hosts as host_svc
    import libvirt
    url = f"sqlite:///{tmp_path}/engine.db"
    Base.metadata.create_all(db.make_engine(url))
    cfg = EngineConfig(database_url=url, secret_key_file=str(tmp_path / "fence-key"),
                       libvirt_uri_template="qemu+tcp://{address}/system", **config)
    # as in the engine worker: transactions take the write lock when they begin
    ctx = Context(config=cfg, sessionmaker=db.make_sessionmaker(db.make_engine(url), writes=True))
    with ctx.sessionmaker() as s:
        dc = DataCenter(name="dc")
        s.add(dc)
        s.flush()
        cl = Cluster(name="cl", data_center_id=dc.id)
        s.add(cl)
        s.add(Template(id=BLANK_TEMPLATE_ID, name="Blank"))
        s.flush()
        fernet = host_svc.fernet(cfg)
        ids = []
        for i, h in enumerate(hosts):
            conn = libvirt.open(h.lv.uri)
            free = conn.getFreeMemory()
            conn.close()
            row = Host(name=f"host{i + 1}", address=h.address, libvirt_uri=h.lv.uri, cluster_id=cl.id,
                       status="up", memory_total=free, memory_free=free, last_seen=utcnow())
            s.add(row)
            s.flush()
            bmc = bmc_for(i)
            if bmc is not None:
                s.add(FenceAgent(host_id=row.id, address=bmc.address, port=bmc.port, username="admin",
                                 order=1, options={"lanplus": "1", "cipher": "3"},
                                 password_encrypted=fernet.encrypt(b"fence-pw").decode()))
            ids.append(row.id)
        s.commit()
    return {"ctx": ctx, "hosts": hosts, "host_ids": ids, "cluster_id": cl.id}


def release_state(state) -> None:
    """End the test's failover and leave no frozen libvirtd behind."""
    if state.get("failover"):
        state["failover"].stop()
    for h in state["hosts"]:
        try:
            os.kill(h.lv.proc.pid, signal.SIGCONT)
        except (ProcessLookupError, AttributeError):
            pass


def host_test_marks(lv) -> list:
    """pytest marks of a module that runs libvirtd hosts and BMCs."""
    import shutil
    import pytest
    return [pytest.mark.slow, pytest.mark.root,
            pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount namespaces)"),
            pytest.mark.skipif(lv is None, reason="tests/engine/libvirt_hosts.py not present"),
            pytest.mark.skipif(shutil.which("ipmi_sim") is None or shutil.which("libvirtd") is None,
                               reason="needs ipmi_sim and libvirtd")]


def domain_running(uri: str, vm_id: str) -> bool:
    """Does the libvirt at ``uri`` run the VM right now?"""
    import libvirt
    conn = libvirt.open(uri)
    try:
        return conn.lookupByUUIDString(vm_id).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()
