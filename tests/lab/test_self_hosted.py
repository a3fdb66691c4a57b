"""Self-hosted for real: the engine runs inside the engine VM, its data on
the VM's disk on the shared storage, and it survives the loss of its host
with nothing it acknowledged lost.

Objects are created through the unmodified oVirt SDK; an answer from the
API is an acknowledgement, and every acknowledged object must be there
after the engine comes back on another host. Then the engine itself fences
the dead host (or adopts the HA agents' fence) and restarts its HA VM.
"""
from __future__ import annotations

import time
import uuid

import pytest

from keel_lab.appliance import Api, register
from keel_lab.layout import ENGINE_VM_ADDRESS, NFS_EXPORT, NFS_SERVER
from lab_helpers import module_lab, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.root]


@pytest.fixture(scope="module")
def lab():
    with module_lab("keel-lab-sh-") as driver:
        yield driver


@pytest.fixture(autouse=True)
def engine_journal_on_failure(request, lab):
    """A failed scenario shows the engine's own log (inside the VM) with its error."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        cp = lab.cli("journal", "--", "-u", "keel-engine", "-u", "keel-engine-worker", "-n", "150", check=False)
        print("--- the engine VM's journal ---\n" + cp.stdout[-20000:] + cp.stderr[-2000:])


def api_of(lab) -> Api:
    eng = lab.status()["engine"]
    return Api(eng["admin_user"], eng["admin_password"])


def answering(lab):
    """An Api once the engine answers a signed-in call, else None."""
    try:
        api = api_of(lab)
        api.call("GET", "/hosts")
        return api
    except Exception:      # noqa: BLE001 - any failure means "not yet"
        return None


def sdk(lab):
    import ovirtsdk4
    eng = lab.status()["engine"]
    return ovirtsdk4.Connection(url=eng["api_url"], username=eng["admin_user"],
                                password=eng["admin_password"], timeout=120)


def acknowledged_objects(lab, tag: str) -> dict:
    """A network, a VM and an event through the SDK; what the engine acknowledged."""
    from ovirtsdk4 import types
    conn = sdk(lab)
    try:
        system = conn.system_service()
        net = system.networks_service().add(types.Network(
            name=f"net-{tag}", data_center=types.DataCenter(name="Default")))
        vm = system.vms_service().add(types.Vm(
            name=f"vm-{tag}", cluster=types.Cluster(name="Default"), template=types.Template(name="Blank"),
            memory=64 * 2 ** 20))
        ev = system.events_service().add(types.Event(
            description=f"acknowledged before the fault {tag}", severity=types.LogSeverity.NORMAL,
            origin="keel-lab-test", custom_id=int(time.time()) % 2 ** 31))
        return {"network": net.id, "vm": vm.id, "event": ev.description}
    finally:
        conn.close()


def assert_all_there(api: Api, acked: list[dict]) -> None:
    nets = {n["id"] for n in api.call("GET", "/networks").get("network", [])}
    vms = {v["id"] for v in api.call("GET", "/vms").get("vm", [])}
    events = {e.get("description") for e in api.call("GET", "/events?max=500").get("event", [])}
    for a in acked:
        assert a["network"] in nets, a
        assert a["vm"] in vms, a
        assert a["event"] in events, a


def ha_vm_on(api: Api, host_name: str, tag: str) -> str:
    hosts = {h["name"]: h["id"] for h in api.call("GET", "/hosts")["host"]}
    vm = api.call("POST", "/vms", {"name": f"ha-{tag}", "cluster": {"name": "Default"}, "memory": 64 * 2 ** 20,
                                   "high_availability": {"enabled": True, "priority": 50}})
    api.call("POST", f"/vms/{vm['id']}/start",
             {"vm": {"placement_policy": {"hosts": {"host": [{"id": hosts[host_name]}]}}}})
    wait_for(f"HA VM ha-{tag} up on {host_name}", lambda: (lambda v: v["status"] == "up" and
             v.get("host", {}).get("id") == hosts[host_name])(api.call("GET", f"/vms/{vm['id']}")), 180)
    return vm["id"]


def power_off_until_the_engine_is_back(lab, engine_host: str, acked: list[dict], timeout: float):
    """Pull the engine host's plug; the engine answers again on another host
    with every acknowledged object. -> (Api, seconds of outage)"""
    lab.cli("power", engine_host, "off")
    t0 = time.monotonic()
    api = wait_for("the engine API on another host", lambda: answering(lab), timeout, 1)
    outage = time.monotonic() - t0
    assert lab.single_engine() != engine_host
    assert_all_there(api, acked)
    return api, outage


def back_to_healthy(lab, host: str) -> None:
    lab.ensure_healthy()
    api = wait_for("the engine API", lambda: answering(lab), 300, 2)
    wait_for(f"the engine to see {host} up again",
             lambda: {h["name"]: h["status"] for h in api.call("GET", "/hosts")["host"]}.get(host) == "up", 300, 2)
    lab.ensure_healthy()


def test_the_engine_runs_inside_the_engine_vm(lab):
    eng = lab.status()["engine"]
    assert eng["engine_mode"] == "appliance"
    assert eng["api_url"] == f"http://{ENGINE_VM_ADDRESS}/ovirt-engine/api"
    assert "engine_process" not in eng
    api = api_of(lab)
    assert sorted((h["name"], h["status"]) for h in api.call("GET", "/hosts")["host"]) == [
        ("host1", "up"), ("host2", "up"), ("host3", "up")]
    sd = api.find("storagedomains", "shared")
    assert sd["status"] == "active" and sd["storage"] == {"type": "nfs", "address": NFS_SERVER, "path": NFS_EXPORT}


def test_hosted_engine_console_is_a_root_shell_inside_the_appliance(lab):
    """`hosted-engine --console` on the engine's host, as oVirt has it: the
    appliance's serial console, logged in as root; the engine's units run."""
    import pexpect
    from lab_helpers import KEEL_LAB
    engine_host = lab.single_engine()
    child = pexpect.spawn(KEEL_LAB[0], KEEL_LAB[1:] + ["exec", "--dir", lab.dir, engine_host, "--",
                                                       "hosted-engine", "--console"],
                          encoding="utf-8", timeout=90, dimensions=(40, 200))
    try:
        child.expect("Connected to domain")
        child.send("\r")
        child.expect("root@engine")
        child.sendline("systemctl is-active keel-engine keel-engine-worker; echo console-$((6*7))")
        child.expect("console-42")
        assert child.before.count("active") >= 2 and "inactive" not in child.before, child.before
        child.sendcontrol("]")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    other = next(h.name for h in lab.layout.all_hosts() if h.name != engine_host)
    cp = lab.he(other, "--console")
    assert cp.returncode == 1 and "does not run on this host" in cp.stderr


def test_acknowledged_objects_survive_the_engine_hosts_power_loss_and_the_engine_restarts_its_ha_vm(lab):
    engine_host = lab.single_engine()
    api = api_of(lab)
    tag = uuid.uuid4().hex[:6]
    acked = [acknowledged_objects(lab, tag)]
    ha_vm = ha_vm_on(api, engine_host, tag)
    acked.append(acknowledged_objects(lab, tag + "b"))     # the last answer before the plug is pulled
    api, outage = power_off_until_the_engine_is_back(lab, engine_host, acked, 300)
    # the dead host is fenced (by the agents, adopted by the engine) and its HA VM restarted elsewhere
    hosts = {h["name"]: h["id"] for h in api.call("GET", "/hosts")["host"]}
    wait_for(f"{engine_host} down (fenced) in the engine",
             lambda: api.call("GET", f"/hosts/{hosts[engine_host]}")["status"] == "down", 180, 2)
    wait_for("the HA VM up on another host", lambda: (lambda v: v["status"] == "up" and v.get("host", {}).get(
        "id") not in (None, hosts[engine_host]))(api.call("GET", f"/vms/{ha_vm}")), 300, 2)
    events = [e["description"] for e in api.call("GET", "/events?max=100").get("event", [])]
    assert any(f"Host {engine_host} was fenced" in e for e in events), events[:20]
    print(f"engine outage after the power loss of {engine_host}: {outage:.1f} s")
    api.call("POST", f"/vms/{ha_vm}/stop", {})
    back_to_healthy(lab, engine_host)
    assert lab.verdict()["ok"], lab.verdict()


def test_without_any_bmc_the_engine_comes_back_and_restarts_the_dead_hosts_ha_vm_on_lease_expiry(lab):
    """Neither the HA agents nor the engine can power the engine's host off:
    the engine comes back once sanlock lets the engine lease go, and then
    restarts the dead host's HA VM because its VM lease expired; it never
    waits for a fence that cannot come, and nobody claims one."""
    engine_host = lab.single_engine()
    h = lab.layout.host(engine_host)
    via = next(x.name for x in lab.layout.all_hosts() if x.name != engine_host)
    api = api_of(lab)
    host_id = api.find("hosts", engine_host)["id"]
    for agent in api.call("GET", f"/hosts/{host_id}/fenceagents").get("agent", []):
        api.call("DELETE", f"/hosts/{host_id}/fenceagents/{agent['id']}")
    assert lab.he(via, "--remove-bmc", f"--host-id={h.index}").returncode == 0
    tag = uuid.uuid4().hex[:6]
    acked = [acknowledged_objects(lab, tag)]
    ha_vm = ha_vm_on(api, engine_host, tag)
    acked.append(acknowledged_objects(lab, tag + "b"))
    try:
        api, outage = power_off_until_the_engine_is_back(lab, engine_host, acked, 420)
        wait_for("the HA VM up on another host", lambda: (lambda v: v["status"] == "up" and v.get("host", {}).get(
            "id") not in (None, host_id))(api.call("GET", f"/vms/{ha_vm}")), 300, 2)
        events = [e["description"] for e in api.call("GET", "/events?max=200").get("event", [])]
        assert any(f"Restarting HA VM ha-{tag}" in e for e in events), events[:20]
        assert not any(f"Host {engine_host} was fenced" in e or f"Host {engine_host} is powered off" in e
                       for e in events), events[:20]
        assert api.call("GET", f"/hosts/{host_id}")["status"] != "down"   # not confirmed off: not 'down'
        print(f"engine outage after the power loss of {engine_host} without a BMC: {outage:.1f} s")
        api.call("POST", f"/vms/{ha_vm}/stop", {})
    finally:
        lab.power_on_with_its_bmc(engine_host, via)
    register(lab.layout, lab.status()["engine"]["admin_password"], timeout=300)   # the fence agent again
    back_to_healthy(lab, engine_host)
    assert lab.verdict()["ok"], lab.verdict()


def test_acknowledged_objects_survive_a_killed_engine_vm(lab):
    engine_host = lab.single_engine()
    acked = [acknowledged_objects(lab, uuid.uuid4().hex[:6])]
    lab.cli("kill", engine_host, "engine-vm")
    api = wait_for("the engine API again", lambda: answering(lab), 300, 1)
    assert_all_there(api, acked)
    lab.ensure_healthy()


def test_acknowledged_objects_survive_a_local_maintenance_handover(lab):
    engine_host = lab.single_engine()
    acked = [acknowledged_objects(lab, uuid.uuid4().hex[:6])]
    lab.he(engine_host, "--set-maintenance", "--mode=local")
    try:
        wait_for("the engine on another host", lambda: lab.status()["engine"]["running_on"] not in (
            [], [engine_host]) and len(lab.status()["engine"]["running_on"]) == 1, 300, 1)
        api = wait_for("the engine API again", lambda: answering(lab), 300, 1)
        assert_all_there(api, acked)
    finally:
        lab.he(engine_host, "--set-maintenance", "--mode=none")
    lab.ensure_healthy()
    assert lab.verdict()["ok"], lab.verdict()
