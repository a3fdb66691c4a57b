"""Host failure handling end to end in the engine worker: real libvirtd hosts,
real BMCs (ipmi_sim), a real engine database; the monitor's part (marking a
host non_responsive and telling power management) is played by the test,
except where the worker's own monitor runs."""

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from keel_engine import virt
from keel_engine.models import BLANK_TEMPLATE_ID, Event, FenceAgent, Host, Vm, utcnow
from keel_engine.power import failover as fo
from keel_engine.power.manager import PowerManagement
from keel_engine.power.settings import PowerSettings
from keel_engine.services import hosts as host_svc
from keel_engine.services import vms as vm_svc
from keel_engine.worker.executors import table
from keel_engine.worker.runner import JobRunner
from keel_lab.bmc import BmcSimulator

from .enginehosts import (domain_running, engine_state, host_test_marks, load_libvirt_hosts, qemu_pids_of, release_state, reset_hosts,
                          running_hosts, wait_for)

LV = load_libvirt_hosts()
pytestmark = host_test_marks(LV)
ADDRS = ["127.0.2.21", "127.0.2.22", "127.0.2.23"]
MiB = 2 ** 20
FAST = PowerSettings(grace_period=1, fence_retries=1, fence_backoff=0.5, off_deadline=8,
                     status_deadline=8, recheck_interval=0.5, refence_interval=600)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("failover")
    with running_hosts(LV, root, ADDRS, 10) as hosts:
        bmcs = []
        try:
            for i, h in enumerate(hosts):
                bmc = BmcSimulator(f"127.0.2.3{i + 1}", 16331 + i, "admin", "fence-pw",
                                   root / f"bmc{i}", [str(h.program)], name=f"bmc{i}")
                bmcs.append(bmc.start())
            yield hosts, bmcs
        finally:
            for b in bmcs:
                b.stop()


@pytest.fixture
def engine(lab, tmp_path):
    hosts, bmcs = lab
    reset_hosts(hosts)
    state = engine_state(tmp_path, hosts, lambda i: bmcs[i], libvirt_timeout=10)
    state["bmcs"] = bmcs
    yield state
    release_state(state)


def install(state, **kw):
    """The worker's power management, with these settings and probes."""
    f = fo.Failover(state["ctx"], kw.pop("settings", FAST), **kw)
    state["power"] = PowerManagement(state["ctx"], failover=f)
    state["failover"] = f
    return f


def run_job(state, job):
    """Run a recorded job as the engine worker does."""
    runner = JobRunner(state["ctx"], table(state["power"]), threads=1)
    runner.run_one(job.id)
    runner.shutdown()
    with state["ctx"].sessionmaker() as s:
        return s.get(type(job), job.id)


def fence(state, index, fence_type):
    ctx = state["ctx"]
    with ctx.sessionmaker() as s:
        job = host_svc.request_fence(ctx, s, s.get(Host, state["host_ids"][index]), fence_type)
        s.commit()
    return run_job(state, job)


def stop_vm(state, vm_id):
    ctx = state["ctx"]
    with ctx.sessionmaker() as s:
        job = vm_svc.request_stop(ctx, s, s.get(Vm, vm_id))
        s.commit()
    return run_job(state, job)


def start_ha_vm(state, name="ha-vm", host_index=0, ha=True, priority=1):
    ctx = state["ctx"]
    with ctx.sessionmaker() as s:
        vm = Vm(name=name, cluster_id=state["cluster_id"], template_id=BLANK_TEMPLATE_ID,
                memory=64 * MiB, high_availability=ha, ha_priority=priority)
        s.add(vm)
        s.commit()
        vm_svc.start_vm(ctx, s, vm, host=s.get(Host, state["host_ids"][host_index]))
        s.commit()
        return vm.id


def host_fails(state, index=0, freeze=True):
    """The host stops answering; the monitor marks it non_responsive and tells power management."""
    if freeze:
        state["hosts"][index].freeze()
    ctx = state["ctx"]
    with ctx.sessionmaker() as s:
        host = s.get(Host, state["host_ids"][index])
        host.last_seen = utcnow() - timedelta(seconds=5)
        old = host_svc.set_status(s, host, "non_responsive", "test: no answer from libvirt")
        s.commit()
    state["power"].host_status_changed(host.id, old, "non_responsive")
    return host


def events(state):
    with state["ctx"].sessionmaker() as s:
        return [(e.code, e.description) for e in s.scalars(select(Event).order_by(Event.id))]


def first(evs, code, text="", after=-1):
    for i, (c, d) in enumerate(evs):
        if i > after and c == code and text in d:
            return i
    return None


def running_on(state, vm_id, skip=()):
    """Indexes of the hosts whose libvirt runs the VM (frozen hosts in ``skip`` are not asked:
    a stopped libvirtd accepts the connection and never answers)."""
    out = []
    for i, h in enumerate(state["hosts"]):
        if i in skip:
            continue
        try:
            if virt.with_deadline(lambda uri=h.lv.uri: domain_running(uri, vm_id), 15, f"ask host {i}"):
                out.append(i)
        except virt.VirtError:
            pass   # powered off: runs nothing
    return out


def vm_row(state, vm_id):
    with state["ctx"].sessionmaker() as s:
        return s.get(Vm, vm_id)


def host_row(state, index):
    with state["ctx"].sessionmaker() as s:
        return s.get(Host, state["host_ids"][index])


def test_confirmed_fence_then_ha_restart_elsewhere(engine):
    install(engine)
    vm_id = start_ha_vm(engine)
    old_qemu = qemu_pids_of(engine["hosts"][0])
    assert old_qemu, "the HA VM's qemu should run on host1"
    t0 = time.monotonic()
    host_fails(engine)
    vm = wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up" and v.host_id != engine["host_ids"][0] and v,
                  90, "the HA VM to run on another host")
    elapsed = time.monotonic() - t0
    assert vm.host_id in engine["host_ids"][1:]
    assert running_on(engine, vm_id) == [engine["host_ids"].index(vm.host_id)]
    assert not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
                   for p in old_qemu), "the fenced host's qemu must be dead"
    host = host_row(engine, 0)
    assert host.status == "down"
    with engine["ctx"].sessionmaker() as s:
        record = s.get(fo.Fence, host.fence_id)
        assert (record.method, record.state) == ("bmc", "confirmed") and record.agent.endswith(":16331")
    evs = events(engine)
    failed = first(evs, 12, "to non_responsive")
    steps = [failed]
    for code, text in [(fo.EV_FENCE_START, "Fencing host host1"), (fo.EV_FENCE_OK, "confirmed by its BMC"),
                       (None, "status changed from non_responsive to down"),
                       (fo.EV_HA_RESTART, "Restarting HA VM ha-vm"), (32, "VM ha-vm was started")]:
        idx = (first(evs, code, text, after=steps[-1]) if code is not None else
               next((i for i, (_c, d) in enumerate(evs) if i > steps[-1] and text in d), None))
        assert idx is not None, f"no event {text!r} after the previous step: {evs}"
        steps.append(idx)
    print(f"\nhost failure -> HA VM up elsewhere: {elapsed:.1f} s; events:")
    for c, d in evs[failed:]:
        print(f"  {c}: {d}")


def test_ha_vms_restart_in_priority_order(engine):
    install(engine)
    ids = {p: start_ha_vm(engine, name=f"prio-{p}", priority=p) for p in (1, 100, 50)}
    host_fails(engine)
    failed = engine["host_ids"][0]
    for vm_id in ids.values():
        wait_for(lambda v=vm_id: (r := vm_row(engine, v)).status == "up" and r.host_id != failed, 90,
                 "every HA VM up on another host")
    order = [d for c, d in events(engine) if c == fo.EV_HA_RESTART]
    assert [next(p for p in ids if f"prio-{p} " in d) for d in order] == [100, 50, 1], order


def test_bmc_that_never_powers_off_means_no_restart(engine):
    engine["hosts"][0].mode("stuck")
    install(engine)
    vm_id = start_ha_vm(engine)
    host_fails(engine)
    wait_for(lambda: first(events(engine), fo.EV_FENCE_FAILED) is not None, 60, "the fence-failed event")
    time.sleep(2)  # a few more passes: nothing may move
    vm = vm_row(engine, vm_id)
    assert vm.host_id == engine["host_ids"][0] and host_row(engine, 0).status == "non_responsive"
    assert first(events(engine), fo.EV_HA_RESTART) is None
    assert running_on(engine, vm_id, skip=(0,)) == []
    assert qemu_pids_of(engine["hosts"][0]), "the VM still runs on the host that was not fenced"
    assert "still reports on" in events(engine)[first(events(engine), fo.EV_FENCE_AGENT, "still reports")][1]


def test_host_still_renewing_storage_lease_is_not_fenced(engine):
    install(engine, storage_probe=lambda host, since: True)
    vm_id = start_ha_vm(engine)
    host_fails(engine)
    wait_for(lambda: first(events(engine), fo.EV_FENCE_SKIPPED, "storage lease") is not None, 30,
             "the skip event")
    time.sleep(1.5)
    assert first(events(engine), fo.EV_FENCE_START) is None
    assert vm_row(engine, vm_id).host_id == engine["host_ids"][0]
    assert qemu_pids_of(engine["hosts"][0])


def test_fencing_storm_is_avoided(engine):
    install(engine)
    vm_id = start_ha_vm(engine)
    with engine["ctx"].sessionmaker() as s:   # host2 is non-responsive too: 2 of 3
        host_svc.set_status(s, s.get(Host, engine["host_ids"][1]), "non_responsive", "test")
        s.commit()
    host_fails(engine)
    wait_for(lambda: first(events(engine), fo.EV_FENCE_SKIPPED, "2 of 3 hosts") is not None, 30,
             "the storm-skip event")
    time.sleep(1.5)
    assert first(events(engine), fo.EV_FENCE_START) is None
    assert vm_row(engine, vm_id).host_id == engine["host_ids"][0]


def test_manual_fence_and_returning_host_does_not_resurrect(engine):
    f = install(engine, settings=PowerSettings(grace_period=3600, recheck_interval=0.5))
    vm_id = start_ha_vm(engine)
    host = host_fails(engine)   # long grace: nothing automatic happens
    time.sleep(1)
    assert first(events(engine), fo.EV_FENCE_START) is None
    assert fence(engine, 0, "manual").status == "finished"
    vm = wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up" and v.host_id != engine["host_ids"][0] and v,
                  60, "the HA VM to run on another host")
    # the admin was wrong: host1 was only cut off, its copy still runs; it comes back
    engine["hosts"][0].ensure_up()
    assert 0 in running_on(engine, vm_id)
    with engine["ctx"].sessionmaker() as s:
        h = s.get(Host, engine["host_ids"][0])
        old = host_svc.set_status(s, h, "up", "test: answers again")
        s.commit()
    engine["power"].host_status_changed(h.id, old, "up")
    assert running_on(engine, vm_id) == [engine["host_ids"].index(vm.host_id)]
    assert first(events(engine), fo.EV_STALE_VM) is not None
    assert first(events(engine), fo.EV_MANUAL_FENCE) < first(events(engine), fo.EV_HA_RESTART)
    f.stop()


def test_manual_fence_waits_for_a_held_vm_lease(engine):
    """'Confirm host has been rebooted' marks the VMs down, but a VM whose lease is
    still held is started elsewhere only once the lease is free: starting it into
    the lease would stall the target host inside sanlock."""
    free = {"value": False}
    f = install(engine, settings=PowerSettings(grace_period=3600, recheck_interval=0.5),
                lease_probe=lambda vm, host: free["value"])
    vm_id = start_ha_vm(engine)
    host_fails(engine)
    fence(engine, 0, "manual")
    wait_for(lambda: first(events(engine), fo.EV_LEASE_WAIT) is not None, 30, "the lease wait event")
    time.sleep(1.5)
    assert vm_row(engine, vm_id).status == "down", "restarted while its lease was held"
    assert first(events(engine), fo.EV_HA_RESTART) is None
    free["value"] = True
    wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up" and v.host_id != engine["host_ids"][0] and v,
             60, "the HA VM restart once its lease is free")
    f.stop()


def test_lease_expiry_path_without_bmc(engine):
    with engine["ctx"].sessionmaker() as s:   # host1 has no power management at all
        for a in s.scalars(select(FenceAgent).where(FenceAgent.host_id == engine["host_ids"][0])):
            s.delete(a)
        s.commit()
    expired = {"value": False}
    install(engine, lease_probe=lambda vm, host: expired["value"])
    vm_id = start_ha_vm(engine)
    engine["hosts"][0].freeze()
    # the host is dead for real: its VM is gone, but the engine cannot know that
    for p in qemu_pids_of(engine["hosts"][0]):
        os.kill(p, 9)
    host_fails(engine, freeze=False)
    wait_for(lambda: first(events(engine), fo.EV_HA_HELD) is not None, 30, "the held event")
    time.sleep(1.5)
    assert vm_row(engine, vm_id).host_id == engine["host_ids"][0], "no restart before the lease expired"
    expired["value"] = True
    wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up" and v.host_id != engine["host_ids"][0] and v,
                  60, "the HA VM restart after its lease expired")
    assert first(events(engine), fo.EV_FENCE_START) is None
    assert "no fence agents" in events(engine)[first(events(engine), fo.EV_FENCE_SKIPPED)][1]


def test_api_fence_status_stop_start(engine):
    f = install(engine)
    assert fence(engine, 2, "status").result["power_management"]["status"] == "on"
    out = fence(engine, 2, "stop")
    assert out.status == "finished" and out.result["power_management"]["status"] == "off"
    assert host_row(engine, 2).status == "down"
    assert fence(engine, 2, "status").result["power_management"]["status"] == "off"
    f.wait_idle(10)


def test_a_host_in_maintenance_restarted_by_power_management_comes_back_in_maintenance(engine):
    """Only the administrator ends maintenance (oVirt's and Proxmox's rule): a
    host put into maintenance, then restarted through its BMC, answers again
    and is in maintenance, not up."""
    from keel_engine.worker.monitor import Monitor
    install(engine)
    ctx = engine["ctx"]
    with ctx.sessionmaker() as s:
        host_svc.deactivate(ctx, s, s.get(Host, engine["host_ids"][2]))
        s.commit()
    assert host_row(engine, 2).status == "maintenance"
    assert fence(engine, 2, "restart").status == "finished"
    engine["hosts"][2].ensure_up()
    ctx.config.monitor_interval, ctx.config.libvirt_timeout = 1.0, 5.0
    monitor = Monitor(ctx, engine["power"])
    monitor.fenced_poll_every = 1
    for _ in range(30):
        monitor.poll_once()
        if host_row(engine, 2).status not in ("down", "connecting"):
            break
        time.sleep(1)
    assert host_row(engine, 2).status == "maintenance"
    assert host_row(engine, 2).fence_id is None


def test_the_engine_monitor_drives_the_failover(engine):
    """No test stand-in for the monitor: the engine's own Monitor notices the frozen host."""
    from keel_engine.worker.monitor import Monitor
    install(engine)
    vm_id = start_ha_vm(engine, name="ha-monitored")
    cfg = engine["ctx"].config
    cfg.monitor_interval, cfg.libvirt_timeout = 1.0, 3.0
    monitor = Monitor(engine["ctx"], engine["power"])
    thread = threading.Thread(target=monitor.run_forever, daemon=True)
    thread.start()
    try:
        wait_for(lambda: host_row(engine, 0).status == "up" and vm_row(engine, vm_id).status == "up",
                 30, "the monitor to see host1 and the VM up")
        t0 = time.monotonic()
        engine["hosts"][0].freeze()
        vm = wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up"
                      and v.host_id not in (None, engine["host_ids"][0]) and v,
                      120, "the HA VM to run on another host")
        print(f"\nfrozen host -> HA VM up elsewhere, monitor in the loop: {time.monotonic() - t0:.1f} s")
        assert host_row(engine, 0).status == "down"
        time.sleep(3)   # a few monitor cycles: the VM stays where it was restarted
        assert vm_row(engine, vm_id).host_id == vm.host_id
        assert running_on(engine, vm_id, skip=(0,)) == [engine["host_ids"].index(vm.host_id)]
    finally:
        monitor.stopping.set()
        thread.join(30)


def qemu_pid(host, vm_name):
    pidfile = host.root / "libvirt" / "run" / "qemu" / f"{vm_name}.pid"
    return int(pidfile.read_text())


def test_ha_vm_that_dies_is_restarted_unless_stopped_through_the_engine(engine, monkeypatch):
    """Proxmox-style: an HA VM that goes down without the engine asking is started
    again; one stopped through the engine, or not HA, stays down; one that keeps
    dying is given up on after MAX_RESTARTS."""
    from keel_engine.worker.monitor import Monitor
    install(engine)
    engine["power"].max_restarts = 1
    ids = {name: start_ha_vm(engine, name=name, ha=name != "plain") for name in ("crashy", "plain", "stopped")}
    cfg = engine["ctx"].config
    cfg.monitor_interval, cfg.libvirt_timeout = 1.0, 8.0
    monitor = Monitor(engine["ctx"], engine["power"])
    thread = threading.Thread(target=monitor.run_forever, daemon=True)
    thread.start()
    ctx, host1 = engine["ctx"], engine["hosts"][0]
    try:
        wait_for(lambda: all(vm_row(engine, i).status == "up" for i in ids.values()), 30, "every VM up")
        stop_vm(engine, ids["stopped"])
        for name in ("crashy", "plain"):
            os.kill(qemu_pid(host1, name), signal.SIGKILL)
        down = wait_for(lambda: first(events(engine), fo.EV_HA_DOWN, "HA VM crashy went down"), 30,
                        "the monitor to see the HA VM die")
        wait_for(lambda: first(events(engine), fo.EV_HA_RESTART, "HA VM crashy", after=down), 60,
                 "the HA VM's restart")
        vm = wait_for(lambda: (v := vm_row(engine, ids["crashy"])).status == "up" and v, 60,
                      "the HA VM up again")
        time.sleep(3)     # a few monitor cycles
        assert vm_row(engine, ids["plain"]).status == "down"
        assert vm_row(engine, ids["stopped"]).status == "down"
        assert first(events(engine), fo.EV_HA_DOWN, "HA VM stopped") is None
        # it dies again at once: given up, with an error
        host = engine["hosts"][engine["host_ids"].index(vm.host_id)]
        os.kill(qemu_pid(host, "crashy"), signal.SIGKILL)
        wait_for(lambda: first(events(engine), fo.EV_HA_RESTART_FAILED, "went down 2 times") is not None, 30,
                 "the engine to give up on the VM")
        time.sleep(3)
        assert vm_row(engine, ids["crashy"]).status == "down"
    finally:
        monitor.stopping.set()
        thread.join(30)


def test_failover_reads_no_message(engine):
    """Every text written for people (events, a host's status detail, a VM's stop
    reason, a fence's outcome) is replaced by a hash as it is stored: the fence
    and the pending restart are columns, so the HA VM is still restarted."""
    import hashlib
    from sqlalchemy import event as sa_event
    texts = ("description", "status_detail", "stop_reason", "outcome", "reason")

    def garble(session, _ctx, _instances):
        for obj in list(session.new) + list(session.dirty):
            for attr in texts:
                value = obj.__dict__.get(attr)
                if isinstance(value, str) and value and not value.startswith("#"):
                    setattr(obj, attr, "#" + hashlib.sha1(value.encode()).hexdigest()[:10])
    sa_event.listen(engine["ctx"].sessionmaker, "before_flush", garble)
    try:
        install(engine)
        vm_id = start_ha_vm(engine, name="ha-garbled")
        host_fails(engine)
        vm = wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up" and v.host_id != engine["host_ids"][0]
                      and v, 90, "the HA VM to run on another host")
        assert running_on(engine, vm_id) == [engine["host_ids"].index(vm.host_id)]
        assert all(d.startswith("#") for _c, d in events(engine)), "every message was garbled"
        assert host_row(engine, 0).status_detail.startswith("#")
    finally:
        sa_event.remove(engine["ctx"].sessionmaker, "before_flush", garble)


def agent_powers_off(state, index):
    """What an HA agent does to the engine's dead host: a BMC power-off, confirmed."""
    from keel_common import ipmi
    from keel_common.bmc import BmcCredentials
    bmc = state["bmcs"][index]
    res = ipmi.run_operation(BmcCredentials(bmc.address, bmc.port, "admin", "fence-pw"), "off", deadline=20)
    assert res.ok and res.power == "off", res.describe()
    return bmc


def test_a_fence_by_the_ha_agents_is_adopted_not_repeated(engine):
    """The engine ran on host1 and died with it; an agent fenced host1 through
    its BMC. The engine, back, takes that fence as its own: no second power-off,
    no grace period, the HA VM restarted at once."""
    from keel_common.bmc import FENCED, FenceRecord
    slow = PowerSettings(grace_period=300, fence_retries=1, fence_backoff=0.5, off_deadline=8,
                         status_deadline=8, recheck_interval=0.5, refence_interval=600)
    vm_id = start_ha_vm(engine)
    bmc = agent_powers_off(engine, 0)
    now = time.time()
    rec = FenceRecord(host_id=1, by=2, state=FENCED, generation=3, started=now - 1, ended=now,
                      detail="power off confirmed by the BMC; host lease released",
                      bmc_address=bmc.address, bmc_port=bmc.port)
    install(engine, settings=slow, agent_fences=lambda s: {1: rec})
    host_fails(engine, freeze=False)
    vm = wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up" and v.host_id != engine["host_ids"][0] and v,
                  90, "the HA VM to run on another host (well inside the 300 s grace period)")
    evs = events(engine)
    assert first(evs, fo.EV_FENCE_START) is None, "the engine fenced the host a second time"
    assert first(evs, fo.EV_AGENT_FENCE, "fenced by the HA agent of host 2") is not None
    host = host_row(engine, 0)
    assert host.status == "down"
    with engine["ctx"].sessionmaker() as s:
        record = s.get(fo.Fence, host.fence_id)
        assert (record.state, record.requested_by) == ("confirmed", "the HA agent of host 2")
    assert running_on(engine, vm_id, skip=(0,)) == [engine["host_ids"].index(vm.host_id)]


def test_an_agent_fence_of_an_earlier_failure_does_not_count(engine):
    from keel_common.bmc import FENCED, FenceRecord
    bmc = engine["bmcs"][0]
    old = time.time() - 3600
    rec = FenceRecord(host_id=1, by=2, state=FENCED, generation=1, started=old - 1, ended=old,
                      bmc_address=bmc.address, bmc_port=bmc.port)
    install(engine, agent_fences=lambda s: {1: rec})
    start_ha_vm(engine)
    host_fails(engine)
    wait_for(lambda: first(events(engine), fo.EV_FENCE_OK) is not None, 60, "the engine's own fence")
    assert first(events(engine), fo.EV_AGENT_FENCE) is None
