"""Seams for the power module: fence agents (passwords encrypted at rest,
never returned), the fence action's handler, and the host-status hook the
monitor calls. In-process app and monitor against a real SQLite file and a
real (refused) libvirt connection."""
import pytest
from sqlalchemy import text

from harness.engineapp import engine_app_with_host
from keel_engine.models import Host
from keel_engine.monitor import Monitor
from keel_engine.services import hooks
from keel_engine.services.hosts import fence_agents_for_host

API = "/ovirt-engine/api"


@pytest.fixture
def env(tmp_path, monkeypatch):
    # these tests exercise the seams themselves, without the power module's handlers
    from keel_engine import power_seam
    monkeypatch.setattr(power_seam, "install", lambda ctx: None)
    saved = (list(hooks._status_handlers), hooks._fence_handler)
    hooks._status_handlers[:] = []
    hooks.set_fence_handler(None)
    # 127.0.1.19: nothing listens there, so libvirt refuses at once
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.1.19")
    client = app.test_client()
    tok = client.post("/ovirt-engine/sso/oauth/token", data={"grant_type": "password", "username": "admin@internal",
                                                              "password": "pw12345"}).get_json()["access_token"]
    yield cfg, app, sm, client, {"Authorization": f"Bearer {tok}"}, host_id
    hooks._status_handlers[:] = saved[0]
    hooks.set_fence_handler(saved[1])


def add_agent(client, h, host_id):
    return client.post(f"{API}/hosts/{host_id}/fenceagents", headers=h, data=(
        "<agent><type>ipmilan</type><address>127.0.2.5</address><port>6230</port><username>admin</username>"
        "<password>bmc-secret</password><order>1</order>"
        "<options><option><name>lanplus</name><value>1</value></option></options></agent>"))


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


def test_fence_without_handler_or_agent_is_409(env):
    cfg, app, sm, client, h, host_id = env
    hooks.set_fence_handler(None)
    add_agent(client, h, host_id)
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>status</fence_type></action>")
    assert r.status_code == 409 and b"no power management configured" in r.data


def test_fence_calls_the_registered_handler_with_plain_specs(env):
    cfg, app, sm, client, h, host_id = env
    calls = []

    def handler(ctx, host, action, agents):
        calls.append((host.id, action, agents[0]["password"]))
        return {"status": "complete", "power_management": {"status": "on"}}
    hooks.set_fence_handler(handler)
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>status</fence_type></action>")
    assert r.status_code == 409   # handler present but no agent yet
    add_agent(client, h, host_id)
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>status</fence_type></action>")
    assert r.status_code == 200, r.data
    assert b"<status>on</status>" in r.data
    assert calls == [(host_id, "status", "bmc-secret")]
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>explode</fence_type></action>")
    assert r.status_code == 400


def test_manual_fence_needs_no_agent_but_a_handler(env):
    cfg, app, sm, client, h, host_id = env
    calls = []
    hooks.set_fence_handler(lambda ctx, host, action, agents: calls.append((action, agents)) or
                            {"status": "complete"})
    # "Confirm host has been rebooted" works without power management...
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>manual</fence_type></action>")
    assert r.status_code == 200, r.data
    assert calls == [("manual", [])]
    # ...but every other fence type still needs an agent.
    r = client.post(f"{API}/hosts/{host_id}/fence", headers=h, data="<action><fence_type>stop</fence_type></action>")
    assert r.status_code == 409 and b"add a fence agent" in r.data


def test_monitor_marks_unreachable_host_and_calls_status_hook(env):
    cfg, app, sm, client, h, host_id = env
    seen = []
    hooks.on_host_status_changed(lambda ctx, host, old, new: seen.append((host.id, old, new)))
    mon = Monitor(cfg)
    mon.poll_once()   # one failure is tolerated
    with sm() as s:
        assert s.get(Host, host_id).status == "up"
    mon.poll_once()
    with sm() as s:
        assert s.get(Host, host_id).status == "non_responsive"
    assert seen == [(host_id, "up", "non_responsive")]
    mon.poll_once()   # no change, no second call
    assert len(seen) == 1
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
        mon = Monitor(cfg)   # libvirt_timeout = 3 s
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
    from keel_engine import monitor as monitor_mod
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
    mon = Monitor(cfg)
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
    from keel_engine import monitor as monitor_mod
    from keel_engine.models import Vm
    cfg, app, sm, client, h, host_id = env
    hy = _second_host(sm, host_id, "hy", "127.0.1.18", "up")
    vm_id = _ha_vm(sm, hy)
    with sm() as s:
        s.get(Host, host_id).status = "non_responsive"
        s.commit()
    seen_hook = []
    hooks.on_host_status_changed(lambda ctx, host, old, new: seen_hook.append((host.name, old, new)))
    # hx answers again and (listed last) still runs the VM; hy runs it too.
    monkeypatch.setattr(monitor_mod, "poll_all", lambda hosts, timeout: dict(
        [(hy, (FACTS, {vm_id: "up"})), (host_id, (FACTS, {vm_id: "up"}))]))
    Monitor(cfg).poll_once()
    with sm() as s:
        v = s.get(Vm, vm_id)
        assert (v.status, v.host_id) == ("up", hy)
        assert s.get(Host, host_id).status == "up"
    assert seen_hook == [("hx", "non_responsive", "up")]   # the hook that cleans the stale copy


def test_a_vm_found_on_two_settled_hosts_is_an_alarm_not_an_adoption(env, monkeypatch):
    from keel_engine import monitor as monitor_mod
    from keel_engine.models import Vm
    cfg, app, sm, client, h, host_id = env
    hy = _second_host(sm, host_id, "hy", "127.0.1.18", "up")
    vm_id = _ha_vm(sm, hy)
    monkeypatch.setattr(monitor_mod, "poll_all", lambda hosts, timeout: dict(
        [(hy, (FACTS, {vm_id: "up"})), (host_id, (FACTS, {vm_id: "up"}))]))
    mon = Monitor(cfg)
    mon.poll_once()
    mon.poll_once()
    with sm() as s:
        assert s.get(Vm, vm_id).host_id == hy
    events = client.get(f"{API}/events?search=severity%3Derror", headers=h).data.decode()
    if "runs on host" not in events:   # search by severity may not be supported: list them all
        events = client.get(f"{API}/events", headers=h).data.decode()
    assert events.count("runs on host hx as well as on host hy") == 1
