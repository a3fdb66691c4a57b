"""Lab end to end: a lab host running an HA VM loses power; the engine's own
monitor notices, the power module fences it through the lab BMC (or, without
a BMC, waits for the host's sanlock lease to expire) and the HA VM runs on
another lab host.  Prints the measured times and the events, in order."""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from sqlalchemy import select

from harness.wait import wait_for

from keel_engine import db
from keel_engine.config import EngineConfig
from keel_engine.models import (BLANK_TEMPLATE_ID, Base, Cluster, DataCenter, Event, FenceAgent,
                                Host, Template, Vm, utcnow)
from keel_engine.power import failover as fo
from keel_engine.power import handlers
from keel_engine.power.sanlock_leases import LockspaceWatcher
from keel_engine.power.settings import PowerSettings
from keel_engine.services import Context
from keel_engine.services import hosts as host_svc
from keel_engine.services import vms as vm_svc

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.root]
KEEL_LAB = [sys.executable, "-m", "keel_lab.cli"]
MiB = 2 ** 20


def lab_unavailable():
    if os.geteuid() != 0:
        return "the lab needs root"
    if os.path.exists("/run/netns/lab-h1"):
        return "another lab is running on this machine (lab-h1 exists)"
    for tool in ("ipmi_sim", "libvirtd", "sanlock", "etcd", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None




@pytest.fixture(scope="module")
def lab():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    from keel_lab.layout import layout_from_state
    lab_dir = tempfile.mkdtemp(prefix="keel-power-lab-")
    try:
        subprocess.run(KEEL_LAB + ["up", "--hosts", "3", "--dir", lab_dir, "--timeout", "300"],
                       check=True, capture_output=True, timeout=480)
        yield layout_from_state(lab_dir)
    finally:
        subprocess.run(KEEL_LAB + ["down", "--dir", lab_dir], capture_output=True, timeout=180)
        shutil.rmtree(lab_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(lab, tmp_path_factory):
    from keel_engine.monitor import Monitor
    from keel_lab.layout import BMC_PASSWORD, BMC_USER, BRIDGE_ADDRESS
    tmp = tmp_path_factory.mktemp("lab-engine")
    url = f"sqlite:///{tmp}/engine.db"
    Base.metadata.create_all(db.make_engine(url))
    cfg = EngineConfig(database_url=url, secret_key_file=str(tmp / "fence-key"),
                       monitor_interval=1.0, libvirt_timeout=5.0)
    ctx = Context(config=cfg, sessionmaker=db.make_sessionmaker(db.make_engine(url)))
    ids = {}
    with ctx.sessionmaker() as s:
        dc = DataCenter(name="lab")
        s.add(dc)
        s.flush()
        cl = Cluster(name="lab", data_center_id=dc.id)
        s.add_all([cl, Template(id=BLANK_TEMPLATE_ID, name="Blank")])
        s.flush()
        fernet = host_svc._fernet(cfg)
        for h in lab.all_hosts():
            row = Host(name=h.name, hostname=h.name, address=h.address, libvirt_uri=h.libvirt_uri,
                       cluster_id=cl.id, status="up", memory_free=4 * 1024 * MiB,
                       memory_total=4 * 1024 * MiB, last_seen=utcnow())
            s.add(row)
            s.flush()
            s.add(FenceAgent(host_id=row.id, address=BRIDGE_ADDRESS, port=h.bmc_port, username=BMC_USER,
                             password_encrypted=fernet.encrypt(BMC_PASSWORD.encode()).decode(),
                             order=1, options={"lanplus": "1", "cipher": "3"}))
            ids[h.name] = row.id
        s.commit()
    watcher = LockspaceWatcher(lab.lockspace_file)
    failover = fo.Failover(ctx, PowerSettings(grace_period=2, recheck_interval=1, off_deadline=20),
                           storage_probe=lambda host, since: watcher.renewed_after(since, host.name),
                           lease_probe=lambda vm, host: watcher.expired(host.name))
    handlers.install(failover=failover)
    monitor = Monitor(cfg)
    thread = threading.Thread(target=monitor.run_forever, daemon=True)
    thread.start()
    yield {"ctx": ctx, "ids": ids, "lab": lab, "failover": failover}
    monitor.stopping.set()
    failover.stop()
    thread.join(30)


def start_vm(engine, name, host_name):
    ctx = engine["ctx"]
    with ctx.sessionmaker() as s:
        vm = Vm(name=name, cluster_id=s.get(Host, engine["ids"][host_name]).cluster_id,
                template_id=BLANK_TEMPLATE_ID, memory=64 * MiB, high_availability=True)
        s.add(vm)
        s.commit()
        vm_svc.start_vm(ctx, s, vm, host=s.get(Host, engine["ids"][host_name]))
        return vm.id


def elsewhere(engine, vm_id, failed):
    with engine["ctx"].sessionmaker() as s:
        vm = s.get(Vm, vm_id)
        return vm.status == "up" and vm.host_id not in (None, engine["ids"][failed]) and vm


def report(engine, since_id, title, elapsed):
    with engine["ctx"].sessionmaker() as s:
        evs = s.scalars(select(Event).where(Event.id > since_id).order_by(Event.id)).all()
    print(f"\n{title}: HA VM running elsewhere {elapsed:.1f} s after the power loss; events:")
    for e in evs:
        print(f"  {e.time:%H:%M:%S} {e.code}: {e.description}")
    return [(e.code, e.description) for e in evs]


def last_event_id(engine):
    with engine["ctx"].sessionmaker() as s:
        return s.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0


def test_power_loss_with_bmc(engine):
    from keel_lab import hosts
    lab = engine["lab"]
    vm_id = start_vm(engine, "ha-lab-1", "host1")
    mark = last_event_id(engine)
    t0 = time.monotonic()
    hosts.power_off(lab.host("host1"), "test: power loss")
    vm = wait_for(lambda: elsewhere(engine, vm_id, "host1"), 180, "the HA VM on another host")
    evs = report(engine, mark, "with BMC", time.monotonic() - t0)
    codes = [c for c, _ in evs]
    assert codes.index(fo.EV_FENCE_START) < codes.index(fo.EV_FENCE_OK) < codes.index(fo.EV_HA_RESTART)
    assert vm.host_id in (engine["ids"]["host2"], engine["ids"]["host3"])
    subprocess.run(KEEL_LAB + ["power", "host1", "on", "--dir", lab.dir], capture_output=True, timeout=60)


def test_power_loss_without_bmc_waits_for_the_lease(engine):
    from keel_lab import hosts
    lab = engine["lab"]
    with engine["ctx"].sessionmaker() as s:
        for a in s.scalars(select(FenceAgent).where(FenceAgent.host_id == engine["ids"]["host2"])):
            s.delete(a)
        s.commit()
    vm_id = start_vm(engine, "ha-lab-2", "host2")
    mark = last_event_id(engine)
    t0 = time.monotonic()
    hosts.power_off(lab.host("host2"), "test: power loss")
    time.sleep(30)   # well inside sanlock's host-dead time (8 * T + 60 s)
    assert not elsewhere(engine, vm_id, "host2"), "restarted before the host's lease expired"
    vm = wait_for(lambda: elsewhere(engine, vm_id, "host2"), 300, "the HA VM on another host")
    elapsed = time.monotonic() - t0
    evs = report(engine, mark, "without BMC", elapsed)
    assert fo.EV_FENCE_START not in [c for c, _ in evs]
    assert elapsed > 60
    assert vm.host_id in (engine["ids"]["host1"], engine["ids"]["host3"])
    subprocess.run(KEEL_LAB + ["power", "host2", "on", "--dir", lab.dir], capture_output=True, timeout=60)
