"""Fence agents (passwords encrypted at rest, never returned, options checked
when written), the fence action as a job the engine worker runs through
power management, and what the host monitor tells power management.
In-process app against a real SQLite file and a real (refused) libvirt
connection; the BMC is stood in for by a recorder of the IPMI calls power
management makes (real BMCs are in tests/power)."""
import threading

import pytest
from sqlalchemy import text

from harness.engineapp import admin_headers, assert_another_writer_gets_in, engine_app_with_host
from keel_engine.models import Host, Job
from keel_engine.power import failover as fo
from keel_common.ipmi import IpmiResult
from keel_engine.power.manager import PowerManagement
from keel_engine.services import Context
from keel_engine.services.hosts import fence_agents_for_host
from keel_engine.worker.executors import table
from keel_engine.worker.monitor import Monitor
from keel_engine.worker.runner import JobRunner

API = "/ovirt-engine/api"


class StatusRecorder:
    """Stands in for power management where only the monitor's calls matter."""

    def __init__(self):
        self.changes, self.ha_down = [], []

    def host_status_changed(self, host_id, old, new):
        self.changes.append((host_id, old, new))

    def ha_vm_down(self, vm_id, host_id):
        self.ha_down.append((vm_id, host_id))


@pytest.fixture
def env(tmp_path):
    # 127.0.1.19: nothing listens there, so libvirt refuses at once
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.1.19")
    client = app.test_client()
    return cfg, app, sm, client, admin_headers(app), host_id


def add_agent(client, h, host_id, options="<options><option><name>lanplus</name><value>1</value></option></options>"):
    return client.post(f"{API}/hosts/{host_id}/fenceagents", headers=h, data=(
        "<agent><type>ipmilan</type><address>127.0.2.5</address><port>6230</port><username>admin</username>"
        f"<password>bmc-secret</password><order>1</order>{options}</agent>"))


def confirm_rebooted(sm, client, h, host_id):
    """The host non-responsive, and an administrator's "Confirm host has been rebooted" (a job)."""
    with sm() as s:
        s.get(Host, host_id).status = "non_responsive"
        s.commit()
    r = client.post(f"{API}/hosts/{host_id}/fence?async=true", headers=h,
                    data="<action><fence_type>manual</fence_type></action>")
    assert r.status_code == 202, r.data


def run_jobs(cfg, sm, ipmi_calls, power=None):
    """Run every waiting job as the engine worker would; BMC calls are recorded."""
    ctx = Context(config=cfg, sessionmaker=sm)

    def fake_ipmi(spec, op, deadline):
        ipmi_calls.append((spec.address, spec.port, spec.password, op))
        return IpmiResult(op, True, power="on", message="power is on")
    power = power or PowerManagement(ctx, failover=fo.Failover(ctx, cfg.power, run=fake_ipmi))
    runner = JobRunner(ctx, table(power), threads=1)
    with sm() as s:
        ids = s.scalars(text("SELECT id FROM jobs WHERE claimed_by IS NULL AND kind IS NOT NULL")).all()
    for job_id in ids:
        runner.run_one(job_id)
    runner.shutdown()
    return ids


def test_fence_agent_crud_and_password_never_leaves(env):
    cfg, app, sm, client, h, host_id = env
    r = add_agent(client, h, host_id)
    assert r.status_code == 201, r.data
    assert b"bmc-secret" not in r.data and b"<password>" not in r.data
    agent_id = r.data.decode().split('id="')[1].split('"')[0]
    listed = client.get(f"{API}/hosts/{host_id}/fenceagents", headers=h).data.decode()
    assert "<agents>" in listed and "127.0.2.5" in listed and "bmc-secret" not in listed
    with sm() as s:
        stored = s.execute(text("SELECT password_encrypted FROM fence_agents")).scalar()
        assert "bmc-secret" not in stored
        specs = fence_agents_for_host(s, host_id, cfg)
    assert specs[0]["password"] == "bmc-secret" and specs[0]["port"] == 6230
    assert specs[0]["options"] == {"lanplus": "1"}
    r = client.put(f"{API}/hosts/{host_id}/fenceagents/{agent_id}", headers=h, data="<agent><port>70000</port></agent>")
    assert r.status_code == 400 and b"port: must be at most 65535" in r.data
    assert client.delete(f"{API}/hosts/{host_id}/fenceagents/{agent_id}", headers=h).status_code == 200
    with sm() as s:
        assert fence_agents_for_host(s, host_id, cfg) == []


@pytest.mark.parametrize("name,value,needle", [
    ("passwd", "s3cret", "unknown fence agent option 'passwd'"),
    ("cipher", "1", "only cipher suite 3"),
    ("lanplus", "maybe", "lanplus=maybe: expected 1 or 0"),
])
def test_fence_agent_options_are_checked_when_written(env, name, value, needle):
    """An option fencing would refuse is refused when written: never stored (a
    secret one would sit in clear text and come back in every answer), and
    never left to fail every later fence of the host."""
    cfg, app, sm, client, h, host_id = env
    r = add_agent(client, h, host_id, f"<options><option><name>{name}</name><value>{value}</value></option></options>")
    assert r.status_code == 400 and needle in r.data.decode(), r.data
    with sm() as s:
        assert s.execute(text("SELECT count(*) FROM fence_agents")).scalar() == 0
        if name == "passwd":
            assert value.encode() not in b"".join(str(x).encode() for x in s.execute(text("SELECT * FROM events")))


def test_fence_without_an_agent_is_409_and_records_nothing(env):
    cfg, app, sm, client, h, host_id = env
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>status</fence_type></action>")
    assert r.status_code == 409 and b"no power management configured" in r.data
    with sm() as s:
        assert s.execute(text("SELECT count(*) FROM jobs")).scalar() == 0


def test_fence_is_a_job_the_worker_runs_with_the_decrypted_agent(env):
    cfg, app, sm, client, h, host_id = env
    add_agent(client, h, host_id)
    r = client.post(f"{API}/hosts/{host_id}/fence?async=true", headers=h,
                    data="<action><fence_type>status</fence_type></action>")
    assert r.status_code == 202, r.data
    assert b"<status>pending</status>" in r.data and b"<job " in r.data
    calls = []
    assert len(run_jobs(cfg, sm, calls)) == 1
    assert calls == [("127.0.2.5", 6230, "bmc-secret", "status")]   # the BMC was asked by the worker only
    with sm() as s:
        job = s.scalars(text("SELECT id FROM jobs")).first()
        job = s.get(Job, job)
        assert job.status == "finished" and job.result["power_management"] == {"status": "on"}
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>explode</fence_type></action>")
    assert r.status_code == 400


def test_manual_fence_needs_no_agent_but_a_non_responsive_host(env):
    cfg, app, sm, client, h, host_id = env
    r = client.post(f"{API}/hosts/{host_id}/fence?async=true", headers=h,
                    data="<action><fence_type>manual</fence_type></action>")
    assert r.status_code == 409 and b"only a non-responsive host" in r.data
    # "Confirm host has been rebooted" works without power management...
    confirm_rebooted(sm, client, h, host_id)
    calls = []
    run_jobs(cfg, sm, calls)
    assert calls == []
    with sm() as s:
        host = s.get(Host, host_id)
        fence = s.execute(text("SELECT method, state FROM fences WHERE id = :i"), {"i": host.fence_id}).one()
        assert host.status == "down" and tuple(fence) == ("manual", "confirmed")
    # ...but every other fence type still needs an agent.
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>stop</fence_type></action>")
    assert r.status_code == 409 and b"add a fence agent" in r.data


def test_a_manual_fence_waiting_for_the_hosts_lock_holds_no_database_lock(env):
    # A failover pass holds the host's lock and needs SQLite's write lock to
    # finish: a job waiting for the host's lock with the write lock held
    # would deadlock with it.
    cfg, app, sm, client, h, host_id = env
    confirm_rebooted(sm, client, h, host_id)
    with sm() as s:
        job_id, = s.scalars(text("SELECT id FROM jobs WHERE claimed_by IS NULL AND kind IS NOT NULL")).all()
    ctx = Context(config=cfg, sessionmaker=sm)
    failover = fo.Failover(ctx, cfg.power, run=lambda *a: pytest.fail("a manual fence asks no BMC"))
    runner = JobRunner(ctx, table(PowerManagement(ctx, failover=failover)), threads=1)
    lock, asked = failover.lock(host_id), threading.Event()
    failover.lock = lambda hid: (asked.set(), lock)[1]
    lock.acquire()
    job = threading.Thread(target=runner.run_one, args=(job_id,), daemon=True)
    job.start()
    try:
        assert asked.wait(30), "the job never asked for the host's lock"
        assert_another_writer_gets_in(cfg)
    finally:
        lock.release()
        job.join(60)
        runner.shutdown()
    with sm() as s:
        host = s.get(Host, host_id)
        fence = s.execute(text("SELECT method, state FROM fences WHERE id = :i"), {"i": host.fence_id}).one()
        assert host.status == "down" and tuple(fence) == ("manual", "confirmed")


def test_monitor_marks_unreachable_host_and_tells_power_management(env):
    cfg, app, sm, client, h, host_id = env
    power = StatusRecorder()
    mon = Monitor(Context(config=cfg, sessionmaker=sm), power)
    mon.poll_once()   # one failure is tolerated
    with sm() as s:
        assert s.get(Host, host_id).status == "up"
    mon.poll_once()
    with sm() as s:
        assert s.get(Host, host_id).status == "non_responsive"
    assert power.changes == [(host_id, "up", "non_responsive")]
    mon.poll_once()   # no change, no second call
    assert len(power.changes) == 1
    events = client.get(f"{API}/events?search=host%3Dhx", headers=h).data.decode()
    assert "from up to non_responsive" in events


def test_a_host_that_accepts_but_never_answers_does_not_hang_the_monitor(env):
    """libvirt's handshake to a hung daemon would block forever; the monitor's
    deadline turns it into a failed poll instead."""
    import socket
    import time
    cfg, app, sm, client, h, host_id = env
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.1.18", 16509))
    listener.listen(8)
    try:
        with sm() as s:
            s.get(Host, host_id).libvirt_uri = "qemu+tcp://127.0.1.18/system"
            s.commit()
        mon = Monitor(Context(config=cfg, sessionmaker=sm))   # libvirt_timeout = 3 s
        started = time.monotonic()
        mon.poll_once()
        mon.poll_once()
        assert time.monotonic() - started < 60   # two deadlines, not forever
        with sm() as s:
            host = s.get(Host, host_id)
            assert host.status == "non_responsive"
            assert "no answer within" in host.status_detail
    finally:
        listener.close()


def test_monitor_never_applies_an_observation_older_than_the_row(env, monkeypatch):
    """The poll sees no domain (say, mid-stop), but while it polls an API
    worker changes the VM: the stale observation must not overwrite it."""
    from keel_engine.worker import monitor as monitor_mod
    from keel_engine.models import Template, Vm
    cfg, app, sm, client, h, host_id = env
    with sm() as s:
        cl_id = s.get(Host, host_id).cluster_id
        vm = Vm(name="v1", cluster_id=cl_id, template_id=s.query(Template).first().id, memory=64 << 20,
                status="up", host_id=host_id)
        s.add(vm)
        s.commit()
        vm_id = vm.id

    def poll_all_racing_with_api(hosts, timeout):
        with sm() as s:       # the "API" commits while the monitor is polling
            v = s.get(Vm, vm_id)
            v.status, v.description = "paused", "changed by the API"
            s.commit()
        facts = {"memory_free": 1 << 30, "memory_total": 2 << 30, "cpus": 2, "hostname": "hx", "hvm": True}
        return {h_.id: (facts, {}) for h_ in hosts}   # the host answers: no domains at all

    monkeypatch.setattr(monitor_mod, "poll_all", poll_all_racing_with_api)
    mon = Monitor(Context(config=cfg, sessionmaker=sm))
    mon.poll_once()
    with sm() as s:
        v = s.get(Vm, vm_id)
        assert (v.status, v.host_id) == ("paused", host_id)   # not marked down from the stale poll
    monkeypatch.setattr(monitor_mod, "poll_all", lambda hosts, timeout: {
        h_.id: ({"memory_free": 1 << 30, "memory_total": 2 << 30, "cpus": 2, "hostname": "hx", "hvm": True}, {})
        for h_ in hosts})
    mon.poll_once()           # a fresh observation is applied
    with sm() as s:
        assert s.get(Vm, vm_id).status == "down"


def _second_host(sm, host_id, name, address, status):
    with sm() as s:
        h2 = Host(name=name, address=address, libvirt_uri=f"qemu+tcp://{address}/system",
                  cluster_id=s.get(Host, host_id).cluster_id, status=status)
        s.add(h2)
        s.commit()
        return h2.id


def _ha_vm(sm, host_id, name="ha1"):
    from keel_engine.models import Template, Vm
    with sm() as s:
        vm = Vm(name=name, cluster_id=s.get(Host, host_id).cluster_id, template_id=s.query(Template).first().id,
                memory=64 << 20, status="up", host_id=host_id, high_availability=True)
        s.add(vm)
        s.commit()
        return vm.id


FACTS = {"memory_free": 1 << 30, "memory_total": 2 << 30, "cpus": 2, "hostname": "h", "hvm": True}


def test_a_returning_host_never_takes_over_a_vm_restarted_elsewhere(env, monkeypatch):
    """hx was fenced and its HA VM restarted on hy; hx comes back still
    running its old copy. The record must stay on hy (the status hook then
    destroys the stale copy), never follow the copy to hx."""
    from keel_engine.worker import monitor as monitor_mod
    from keel_engine.models import Vm
    cfg, app, sm, client, h, host_id = env
    hy = _second_host(sm, host_id, "hy", "127.0.1.18", "up")
    vm_id = _ha_vm(sm, hy)
    with sm() as s:
        s.get(Host, host_id).status = "non_responsive"
        s.commit()
    power = StatusRecorder()
    # hx answers again and (listed last) still runs the VM; hy runs it too.
    monkeypatch.setattr(monitor_mod, "poll_all", lambda hosts, timeout: dict(
        [(hy, (FACTS, {vm_id: "up"})), (host_id, (FACTS, {vm_id: "up"}))]))
    Monitor(Context(config=cfg, sessionmaker=sm), power).poll_once()
    with sm() as s:
        v = s.get(Vm, vm_id)
        assert (v.status, v.host_id) == ("up", hy)
        assert s.get(Host, host_id).status == "up"
    assert power.changes == [(host_id, "non_responsive", "up")]   # power management cleans the stale copy


def test_a_vm_found_on_two_settled_hosts_is_an_alarm_not_an_adoption(env, monkeypatch):
    from keel_engine.worker import monitor as monitor_mod
    from keel_engine.models import Vm
    cfg, app, sm, client, h, host_id = env
    hy = _second_host(sm, host_id, "hy", "127.0.1.18", "up")
    vm_id = _ha_vm(sm, hy)
    monkeypatch.setattr(monitor_mod, "poll_all", lambda hosts, timeout: dict(
        [(hy, (FACTS, {vm_id: "up"})), (host_id, (FACTS, {vm_id: "up"}))]))
    mon = Monitor(Context(config=cfg, sessionmaker=sm))
    mon.poll_once()
    mon.poll_once()
    with sm() as s:
        assert s.get(Vm, vm_id).host_id == hy
    events = client.get(f"{API}/events?search=severity%3Derror", headers=h).data.decode()
    if "runs on host" not in events:   # search by severity may not be supported: list them all
        events = client.get(f"{API}/events", headers=h).data.decode()
    assert events.count("runs on host hx as well as on host hy") == 1
