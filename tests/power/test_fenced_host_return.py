"""A host the engine fenced comes back to 'up' by itself when it answers again
(an admin powered it on by hand), and loses stale copies of VMs restarted
elsewhere; one that stays off stays 'down' quietly; hosts down for other
reasons or in maintenance are left alone. The engine's own Monitor runs in the
loop against real libvirtd hosts on 127.0.4.21/22 and a real BMC (ipmi_sim)."""

import logging
import threading
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import select

from keel_engine.models import Event, Fence, Host
from keel_engine.power import failover as fo
from keel_engine.power.manager import PowerManagement
from keel_engine.power.settings import PowerSettings
from keel_engine.services import hosts as host_svc
from keel_engine.worker import monitor as monitor_mod
from keel_lab.bmc import BmcSimulator

from .enginehosts import (engine_state, host_test_marks, load_libvirt_hosts, qemu_pids_of, release_state, reset_hosts,
                          running_hosts, wait_for)
from .test_failover_engine import events, fence, first, host_row, running_on, start_ha_vm, vm_row

LV = load_libvirt_hosts()
pytestmark = host_test_marks(LV)
ADDRS = ["127.0.4.21", "127.0.4.22"]
BMC_ADDRESS, BMC_PORT = "127.0.4.31", 16431
MiB = 2 ** 20


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("fenced-return")
    # indexes 30/31: migration and display ports apart from the other tests' hosts
    with running_hosts(LV, root, ADDRS, 30) as hosts:
        # only host1 has power management
        bmc = BmcSimulator(BMC_ADDRESS, BMC_PORT, "admin", "fence-pw", root / "bmc",
                           [str(hosts[0].program)], name="bmc-h1").start()
        try:
            yield hosts, bmc
        finally:
            bmc.stop()


@pytest.fixture
def engine(lab, tmp_path):
    hosts, bmc = lab
    reset_hosts(hosts)
    # a healthy host's poll can take 2-3 s on a loaded 2-core box: a shorter
    # deadline makes healthy hosts flap to non_responsive (and get fenced)
    state = engine_state(tmp_path, hosts, lambda i: bmc if i == 0 else None,
                         libvirt_timeout=8, monitor_interval=1.0)
    state["bmc"] = bmc
    yield state
    release_state(state)


def install(state, settings):
    f = fo.Failover(state["ctx"], settings)
    state["power"] = PowerManagement(state["ctx"], failover=f)
    state["failover"] = f
    return f


@pytest.fixture
def polled(monkeypatch):
    """The host ids of every monitor cycle (the real poll_all does the polling)."""
    cycles = []
    real = monitor_mod.poll_all

    def recording(hosts, timeout):
        cycles.append({h.id for h in hosts})
        return real(hosts, timeout)
    monkeypatch.setattr(monitor_mod, "poll_all", recording)
    return cycles


@contextmanager
def running_monitor(state):
    monitor = monitor_mod.Monitor(state["ctx"], state["power"])
    thread = threading.Thread(target=monitor.run_forever, daemon=True)
    thread.start()
    try:
        yield monitor
    finally:
        monitor.stopping.set()
        thread.join(30)
        assert not thread.is_alive()


def status_changes(evs, host_name, after=-1):
    return [d for i, (_c, d) in enumerate(evs) if i > after and d.startswith(f"Host {host_name} status changed")]


def test_fenced_host_that_answers_again_comes_up_and_its_stale_copy_is_destroyed(engine, caplog):
    caplog.set_level(logging.INFO)
    install(engine, PowerSettings(grace_period=3600, recheck_interval=0.5))   # nothing automatic
    vm_id = start_ha_vm(engine, name="ha-stale")
    with running_monitor(engine):
        wait_for(lambda: host_row(engine, 0).status == "up" and vm_row(engine, vm_id).status == "up",
                 30, "the monitor to see host1 and the VM up")
        # host1 is cut off (its guests keep running); the admin wrongly confirms it rebooted
        engine["hosts"][0].freeze()
        wait_for(lambda: host_row(engine, 0).status == "non_responsive", 60, "host1 non_responsive")
        fence(engine, 0, "manual")
        vm = wait_for(lambda: (v := vm_row(engine, vm_id)).status == "up"
                      and v.host_id == engine["host_ids"][1] and v, 60, "the HA VM restarted on host2")
        fenced_at = first(events(engine), fo.EV_MANUAL_FENCE)
        assert host_row(engine, 0).status == "down"
        assert host_row(engine, 0).status_detail.startswith("fenced: reboot confirmed manually")
        assert qemu_pids_of(engine["hosts"][0]), "the stale copy still runs on host1"
        # host1 answers again
        engine["hosts"][0].ensure_up()
        wait_for(lambda: host_row(engine, 0).status == "up", 60, "host1 back up")
        wait_for(lambda: running_on(engine, vm_id) == [1], 30, "the stale copy on host1 destroyed")
        wait_for(lambda: not qemu_pids_of(engine["hosts"][0]), 30, "host1's qemu gone")
        time.sleep(3)   # a few more cycles: nothing moves back, nothing is destroyed twice
    evs = events(engine)
    assert vm_row(engine, vm_id).host_id == vm.host_id and vm_row(engine, vm_id).status == "up"
    assert running_on(engine, vm_id) == [1]
    after = status_changes(evs, "host1", after=fenced_at)
    assert len(after) == 2, after   # non_responsive -> down (the fence), down -> up
    assert "from non_responsive to down" in after[0]
    assert after[1].startswith("Host host1 status changed from down to up: libvirt answers again after the "
                               "host was fenced: reboot confirmed manually")
    stale = first(evs, fo.EV_STALE_VM, "Stale copy of VM ha-stale destroyed on returning host host1")
    assert stale is not None and stale > evs.index((13, after[1]))
    assert not any("found running on host host1" in d for _c, d in evs), "the stale copy was adopted"
    logs = [r.getMessage() for r in caplog.records]
    assert sum("status changed from down to up" in m for m in logs) == 1, "the state change is logged once"
    assert sum(f"event {fo.EV_STALE_VM}:" in m for m in logs) == 1


def test_fenced_host_that_stays_off_stays_down_quietly_until_powered_on(engine, polled, caplog):
    caplog.set_level(logging.INFO)
    install(engine, PowerSettings(grace_period=1, fence_retries=1, fence_backoff=0.5, off_deadline=8,
                                  status_deadline=8, recheck_interval=0.5, refence_interval=600))
    host1 = engine["host_ids"][0]
    with running_monitor(engine) as monitor:
        wait_for(lambda: host_row(engine, 0).status == "up", 30, "the monitor to see host1 up")
        engine["hosts"][0].freeze()
        wait_for(lambda: (h := host_row(engine, 0)).status == "down"
                 and h.status_detail.startswith("fenced: power-off confirmed by BMC"), 90,
                 "host1 fenced through its BMC")
        assert engine["bmc"].address in host_row(engine, 0).status_detail
        engine["failover"].wait_idle(30)
        quiet_from = len(events(engine)) - 1
        start = len(polled)
        # the monitor keeps polling the powered-off host, every few cycles
        wait_for(lambda: sum(host1 in c for c in polled[start:]) >= 3, 60, "three polls of fenced host1")
        evs = events(engine)
        assert evs[quiet_from + 1:] == [], "a fenced host that does not answer writes no events"
        assert host_row(engine, 0).status == "down" and host1 not in monitor.failures
        cycles = polled[start:]
        assert len(cycles) / sum(host1 in c for c in cycles) >= 2, "polled every few cycles, not every one"
        # the admin powers host1 on by hand (not through the engine)
        engine["hosts"][0].ensure_up()
        wait_for(lambda: host_row(engine, 0).status == "up", 60, "host1 back up")
    evs = events(engine)[quiet_from + 1:]
    assert [c for c, _d in evs] == [13], evs
    assert evs[0][1].startswith("Host host1 status changed from down to up: libvirt answers again after the "
                                "host was fenced: power-off confirmed by BMC")
    assert first(events(engine), fo.EV_FENCE_START, after=quiet_from) is None
    logs = [r.getMessage() for r in caplog.records]
    assert sum("host host1 is down (fenced: power-off confirmed" in m and "polling it every" in m
               for m in logs) == 1
    assert sum("status changed from down to up" in m for m in logs) == 1
    assert not any("host1 status changed from down to non_responsive" in m for m in logs)


def test_maintenance_and_other_down_hosts_are_left_alone(engine, polled):
    install(engine, PowerSettings())
    ctx = engine["ctx"]
    with ctx.sessionmaker() as s:
        h1, h2 = (s.get(Host, i) for i in engine["host_ids"])
        host_svc.set_status(s, h1, "maintenance", "requested by user, 0 VM(s) to migrate")
        host_svc.set_status(s, h2, "down", "stopped by the administrator")
        # a fenced host that nothing answers for (nothing listens at 127.0.4.29)
        hz = Host(name="hz", address="127.0.4.29", libvirt_uri="qemu+tcp://127.0.4.29/system",
                  cluster_id=engine["cluster_id"], status="down",
                  status_detail="fenced: power-off confirmed by BMC ipmilan:admin@127.0.4.39:623")
        s.add(hz)
        s.flush()
        record = Fence(host_id=hz.id, method="bmc", state="confirmed", agent="ipmilan:admin@127.0.4.39:623")
        s.add(record)
        s.flush()
        hz.fence_id = record.id
        s.commit()
        hz_id = hz.id
    before = len(events(engine))
    with running_monitor(engine) as monitor:
        wait_for(lambda: sum(hz_id in c for c in polled) >= 2, 60, "two polls of the fenced host")
    assert not any(set(engine["host_ids"]) & c for c in polled), "maintenance/down hosts are not polled"
    assert host_row(engine, 0).status == "maintenance"
    assert (host_row(engine, 1).status, host_row(engine, 1).status_detail) == ("down", "stopped by the administrator")
    with ctx.sessionmaker() as s:
        assert s.get(Host, hz_id).status == "down"
        assert s.scalars(select(Event).order_by(Event.id)).all()[before:] == []
    assert hz_id not in monitor.failures
