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

import libvirt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import object_session

from harness.wait import wait_for

from .enginehosts import domain_running

from keel_engine import db
from keel_engine.config import EngineConfig
from keel_engine.errors import Fault
from keel_engine.models import (BLANK_TEMPLATE_ID, Base, Cluster, DataCenter, Event, FenceAgent,
                                Host, StorageDomain, Template, Vm, utcnow)
from keel_common.domainxml import Lease, domain_xml
from keel_common.sanlock_disk import LockspaceWatcher
from keel_common.sanlock_disk import read_resource_owner as read_owner
from keel_engine.power import failover as fo
from keel_engine.power.manager import PowerManagement
from keel_engine.power.settings import PowerSettings
from keel_engine.services import Context
from keel_engine.services import hosts as host_svc
from keel_engine.services import vms as vm_svc
from keel_engine.services.vm_leases import VmLeases, lease_path

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
        # --no-engine-process: this test's engine must be the only one managing the
        # hosts (the lab's own engine would fence them too, and free their leases)
        subprocess.run(KEEL_LAB + ["up", "--hosts", "3", "--dir", lab_dir, "--timeout", "300",
                                   "--no-engine-process"],
                       check=True, capture_output=True, timeout=480)
        # Nor may the HA agents fence a host that happens to run the engine VM:
        # these tests are about the engine's own fencing, with and without a BMC.
        for hid in (1, 2, 3):
            subprocess.run(KEEL_LAB + ["exec", "host1", "--dir", lab_dir, "--", "hosted-engine",
                                       "--remove-bmc", f"--host-id={hid}"],
                           check=True, capture_output=True, timeout=60)
        yield layout_from_state(lab_dir)
    finally:
        subprocess.run(KEEL_LAB + ["down", "--dir", lab_dir], capture_output=True, timeout=180)
        shutil.rmtree(lab_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(lab, tmp_path_factory):
    from keel_engine.worker.monitor import Monitor
    from keel_lab.layout import BMC_PASSWORD, BMC_USER, BRIDGE_ADDRESS
    tmp = tmp_path_factory.mktemp("lab-engine")
    url = f"sqlite:///{tmp}/engine.db"
    Base.metadata.create_all(db.make_engine(url))
    cfg = EngineConfig(database_url=url, secret_key_file=str(tmp / "fence-key"),
                       monitor_interval=1.0, libvirt_timeout=5.0)
    # as in the engine worker: transactions take SQLite's write lock when they
    # begin (the monitor thread writes beside the test's own sessions)
    ctx = Context(config=cfg, sessionmaker=db.make_sessionmaker(db.make_engine(url), writes=True))
    ids = {}
    with ctx.sessionmaker() as s:
        dc = DataCenter(name="lab")
        s.add(dc)
        s.flush()
        cl = Cluster(name="lab", data_center_id=dc.id)
        # the shared dir as the data center's storage domain: HA VMs get their lease there
        s.add_all([cl, Template(id=BLANK_TEMPLATE_ID, name="Blank"),
                   StorageDomain(name="shared", path=lab.shared, data_center_id=dc.id, status="active")])
        s.flush()
        fernet = host_svc.fernet(cfg)
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
    from keel_lab.layout import LOCKSPACE
    watcher = LockspaceWatcher(lab.lockspace_file)
    leases = VmLeases(LOCKSPACE, watcher)       # the lockspace every lab host joins
    failover = fo.Failover(ctx, PowerSettings(grace_period=2, recheck_interval=1, off_deadline=20),
                           storage_probe=lambda host, since: watcher.renewed_after(since, host.name),
                           lease_probe=lambda vm, host: leases.is_free(vm, object_session(vm)),
                           release_leases=lambda host: leases.release_fenced_host(host.name))
    power = PowerManagement(ctx, failover=failover, leases=leases)
    monitor = Monitor(ctx, power)
    thread = threading.Thread(target=monitor.run_forever, daemon=True)
    thread.start()
    yield {"ctx": ctx, "ids": ids, "lab": lab, "failover": failover, "power": power}
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
        s.commit()
        return vm.id


def run_job(engine, job):
    """Run a recorded job as the engine worker does."""
    from keel_engine.worker.executors import table
    from keel_engine.worker.runner import JobRunner
    runner = JobRunner(engine["ctx"], table(engine["power"]), threads=1)
    runner.run_one(job.id)
    runner.shutdown()
    with engine["ctx"].sessionmaker() as s:
        return s.get(type(job), job.id)


def lease_holder(engine, vm_id):
    """(host id in the lockspace, free?) of the VM's own lease, read from storage."""
    owner = read_owner(lease_path(engine["lab"].shared, vm_id))
    return owner.owner_id, owner.free


def sanlock_resources(engine, host_name):
    cp = subprocess.run(KEEL_LAB + ["exec", host_name, "--dir", engine["lab"].dir, "--",
                                    "sanlock", "client", "status"], capture_output=True, text=True, timeout=60)
    return cp.stdout


def running(engine, vm_id):
    with engine["ctx"].sessionmaker() as s:
        vm = s.get(Vm, vm_id)
        return vm.status == "up" and vm.host_id is not None and vm


def elsewhere(engine, vm_id, failed):
    with engine["ctx"].sessionmaker() as s:
        vm = s.get(Vm, vm_id)
        return vm.status == "up" and vm.host_id not in (None, engine["ids"][failed]) and vm


def events_after(engine, since_id):
    with engine["ctx"].sessionmaker() as s:
        return s.scalars(select(Event).where(Event.id > since_id).order_by(Event.id)).all()


def report(engine, since_id, title, elapsed):
    evs = events_after(engine, since_id)
    print(f"\n{title}: HA VM running elsewhere {elapsed:.1f} s after the power loss; events:")
    for e in evs:
        print(f"  {e.time:%H:%M:%S} {e.code}: {e.description}")
    return [(e.code, e.description) for e in evs]


def last_event_id(engine):
    with engine["ctx"].sessionmaker() as s:
        return s.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0


def test_vm_lease_refuses_a_second_copy_on_another_host(engine):
    """Whatever the engine believes, sanlock lets only one host run a leased VM:
    the same domain, lease included, started by hand on a second host fails."""
    from keel_lab.layout import LOCKSPACE
    lab = engine["lab"]
    vm_id = start_vm(engine, "ha-lab-3", "host3")
    ctx = engine["ctx"]
    with ctx.sessionmaker() as s:
        vm = s.get(Vm, vm_id)
        # the engine itself refuses: the lease is held
        with pytest.raises(Fault, match="is held by host id 3 \\(host3\\)"):
            ctx.leases.lease_for(s, vm)
        # what the engine would have sent to host1, lease included (its display on
        # host1's address); never written: the session ends without a flush
        with s.no_autoflush:
            vm.host_id = engine["ids"]["host1"]
            xml = domain_xml(vm_svc.domain_of(ctx, s, vm, lease=Lease(LOCKSPACE, vm_id, lease_path(lab.shared,
                                                                                                  vm_id), 0)))
        s.rollback()
    assert "<lease>" in xml
    conn = libvirt.open(lab.host("host1").libvirt_uri)
    try:
        with pytest.raises(libvirt.libvirtError) as exc:
            conn.createXML(xml, 0)
        print(f"\nsecond copy refused: {exc.value.get_error_message()}")
        assert "Lease is held by another host" in exc.value.get_error_message()
        assert vm_id not in [d.UUIDString() for d in conn.listAllDomains()]
    finally:
        conn.close()
    assert lease_holder(engine, vm_id) == (lab.host("host3").index, False)
    # live migration hands the lease over: libvirt releases it on the source and
    # the destination's sanlock acquires it
    with ctx.sessionmaker() as s:
        job = vm_svc.request_migrate(ctx, s, s.get(Vm, vm_id), host=s.get(Host, engine["ids"]["host2"]))
        s.commit()
    assert run_job(engine, job).status == "finished"
    assert lease_holder(engine, vm_id) == (lab.host("host2").index, False)
    assert [h.name for h in lab.all_hosts() if domain_running(h.libvirt_uri, vm_id)] == ["host2"]
    with ctx.sessionmaker() as s:       # a clean stop releases the lease on storage
        job = vm_svc.request_stop(ctx, s, s.get(Vm, vm_id))
        s.commit()
    assert run_job(engine, job).status == "finished"
    wait_for(lambda: lease_holder(engine, vm_id)[1], 30, "the lease released after a clean stop")


def test_power_loss_with_bmc(engine):
    from keel_lab import hosts
    lab = engine["lab"]
    vm_id = start_vm(engine, "ha-lab-1", "host1")
    # the VM holds its own lease: on host1's sanlock, under qemu's pid
    assert lease_holder(engine, vm_id) == (lab.host("host1").index, False)
    assert f"{vm_id}:{lease_path(lab.shared, vm_id)}:0" in sanlock_resources(engine, "host1")
    mark = last_event_id(engine)
    t0 = time.monotonic()
    hosts.power_off(lab.host("host1"), "test: power loss")
    vm = wait_for(lambda: elsewhere(engine, vm_id, "host1"), 180, "the HA VM on another host")
    evs = report(engine, mark, "with BMC", time.monotonic() - t0)
    codes = [c for c, _ in evs]
    assert (codes.index(fo.EV_FENCE_START) < codes.index(fo.EV_FENCE_OK) < codes.index(fo.EV_LEASES_RELEASED)
            < codes.index(fo.EV_HA_RESTART))
    assert vm.host_id in (engine["ids"]["host2"], engine["ids"]["host3"])
    new_host = next(h for h in lab.all_hosts() if engine["ids"][h.name] == vm.host_id)
    assert lease_holder(engine, vm_id) == (new_host.index, False)
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
    early = elsewhere(engine, vm_id, "host2")
    if early:
        report(engine, mark, "restarted too early", time.monotonic() - t0)
    assert not early, f"restarted before the host's lease expired: {read_owner(lease_path(lab.shared, vm_id))}"
    vm = wait_for(lambda: elsewhere(engine, vm_id, "host2"), 300, "the HA VM on another host")
    elapsed = time.monotonic() - t0
    evs = report(engine, mark, "without BMC", elapsed)
    assert fo.EV_FENCE_START not in [c for c, _ in evs]
    assert elapsed > 60
    assert vm.host_id in (engine["ids"]["host1"], engine["ids"]["host3"])
    new_host = next(h for h in lab.all_hosts() if engine["ids"][h.name] == vm.host_id)
    assert lease_holder(engine, vm_id) == (new_host.index, False)
    subprocess.run(KEEL_LAB + ["power", "host2", "on", "--dir", lab.dir], capture_output=True, timeout=60)



def host_resets(lab, name) -> int:
    import json
    with open(lab.host(name).daemons_file) as f:
        return json.load(f).get("resets", 0)


def test_host_cut_off_from_storage_loses_its_leased_vm(engine):
    """The isolated host cannot renew its host-id lease: its sanlock kills the
    VM's qemu (the lease holder) before another host could take the lease.
    That is sanlock itself, not the emulated watchdog: the host is not reset."""
    lab = engine["lab"]
    vm_id = start_vm(engine, "ha-lab-4", "host3")
    assert domain_running(lab.host("host3").libvirt_uri, vm_id)
    resets = host_resets(lab, "host3")
    mark = last_event_id(engine)
    t0 = time.monotonic()
    subprocess.run(KEEL_LAB + ["partition", "host3", "--storage", "--dir", lab.dir], check=True,
                   capture_output=True, timeout=60)
    try:
        wait_for(lambda: not domain_running(lab.host("host3").libvirt_uri, vm_id), 60,
                 "host3's sanlock to kill the VM whose lease it can no longer keep",
                 ignore=(libvirt.libvirtError,))
        killed = time.monotonic() - t0
        print(f"\nstorage cut: the leased VM's qemu on host3 was gone {killed:.1f} s later "
              f"(sanlock kills after 8 x io_timeout without renewal; another host may take the "
              f"lease only after 8 x io_timeout + 60 s)")
        assert killed < 8 * 1 + 60, "the VM outlived the time after which another host could start it"
        assert host_resets(lab, "host3") == resets, "the emulated watchdog had to reset the host"
    finally:
        subprocess.run(KEEL_LAB + ["heal", "host3", "--dir", lab.dir], capture_output=True, timeout=60)
    # the engine saw an HA VM die without being asked: it starts it again once the
    # lease is free. (In the lab only the lockspace goes through the host's faulty
    # storage path; the VM lease file does not, so host3's sanlock releases the lease
    # after killing qemu and the restart follows at once. On real shared storage the
    # lease stays held until host3 joins again or passes sanlock's host-dead time.)
    wait_for(lambda: any(e.code == fo.EV_HA_DOWN and "ha-lab-4" in e.description
                         for e in events_after(engine, mark)),
             60, "the engine to see the HA VM go down")

    def restarted():
        vm = running(engine, vm_id)
        where = [h.name for h in lab.all_hosts() if domain_running(h.libvirt_uri, vm_id)] if vm else []
        return vm and where and (vm, where)
    vm, where = wait_for(restarted, 180, "the HA VM running again", ignore=(libvirt.libvirtError,))
    print(f"storage cut: the HA VM ran again {time.monotonic() - t0:.1f} s after the cut")
    assert len(where) == 1 and engine["ids"][where[0]] == vm.host_id
    assert lease_holder(engine, vm_id) == (lab.host(where[0]).index, False)
