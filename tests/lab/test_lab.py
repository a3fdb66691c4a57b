"""End-to-end scenarios on one real 3-host lab (module-scoped, see conftest).

Real parts throughout: network namespaces, sanlock daemons, libvirtd, an
etcd cluster, ipmi_sim BMCs, the HA broker and agent, and a qemu (TCG)
engine VM. "Never two engines" is judged by the lab's invariant observer.
The scenarios run in file order and each restores a healthy lab.
"""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time

import pytest

from keel_lab import hosts, net, probe, procs
from keel_lab.observer import read_events
from keel_lab.layout import BMC_PASSWORD, BMC_USER, BRIDGE_ADDRESS, HEALTH_URL

from lab_helpers import wait_daemons_back, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.root]


def test_up_brings_engine_up_on_exactly_one_host(lab):
    engine_host = lab.wait_single_engine(120)
    st = lab.status()
    assert [h["name"] for h in st["hosts"]] == ["host1", "host2", "host3"]
    assert [h["name"] for h in st["hosts"] if h["engine_running"]] == [engine_host]
    assert st["engine"]["host"] == engine_host
    assert st["engine"]["health_url"] == HEALTH_URL
    assert len(st["etcd"]["endpoints"]) == 3
    assert all(m["healthy"] for m in st["etcd"]["members"])
    for h in st["hosts"]:
        assert h["power"] == "on"
        assert h["daemons"] == {"storage": True, "sanlock": True, "libvirtd": True, "etcd": True,
                                "broker": True, "agent": True}
        assert h["bmc"]["address"] == BRIDGE_ADDRESS and h["bmc"]["username"] == BMC_USER
    # The observer saw that start, with the lease on disk naming that host.
    events = read_events(lab.dir)
    confirmed = [e for e in events if e["event"] == "lease_confirmed" and e["host"] == engine_host]
    assert confirmed and confirmed[-1]["xml_lease"] is True
    assert lab.verdict()["ok"]


def _settled_engine(lab) -> dict[str, int]:
    """The engine's {host: qemu pid} once it is healthy on one host and the
    same qemu is still there a few seconds later (the lab may still be
    settling after the previous test)."""
    def settled():
        first = lab.engine_hosts()
        if len(first) != 1 or not lab.health_ok():
            return None
        time.sleep(3)
        return first if lab.engine_hosts() == first else None
    return wait_for("the engine settled on one host", settled, 180)


def test_up_twice_keeps_the_first_lab(lab):
    before = _settled_engine(lab)
    inits = {h.name: hosts.init_pid(h) for h in lab.layout.all_hosts()}
    cp = lab.cli("up", "--hosts", "3", "--engine", "appliance", timeout=300)
    assert "engine VM: running on" in cp.stdout
    assert lab.engine_hosts() == before
    assert {h.name: hosts.init_pid(h) for h in lab.layout.all_hosts()} == inits
    bad = lab.cli("up", "--hosts", "2", "--engine", "appliance", check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "already exists" in bad.stderr


def test_hosts_are_real_and_reachable(lab):
    """Host namespaces, libvirtd over TCP (as the engine reaches it), the
    engine's health URL from another host, every BMC over IPMI, and the
    engine process: every host up, its BMC as its fence agent, status "on"."""
    import libvirt
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    for h in lab.layout.all_hosts():
        conn = libvirt.open(h.libvirt_tcp_uri)
        try:
            names = [d.name() for d in conn.listAllDomains()]
        finally:
            conn.close()
        assert (h.name == engine_host) == ("HostedEngine" in names)
    other = next(h for h in lab.layout.all_hosts() if h.name != engine_host)
    cp = subprocess.run(["ip", "netns", "exec", other.netns, "python3", "-c",
                         f"import urllib.request as u; print(u.urlopen({HEALTH_URL!r}, timeout=5).status)"],
                        capture_output=True, text=True, timeout=30)
    assert cp.stdout.strip() == "200", cp.stderr
    for h in lab.layout.all_hosts():
        # An independent IPMI client (fence-agents) against the simulated BMC.
        cp = subprocess.run(["fence_ipmilan", "--lanplus", "--cipher=3", f"--ip={BRIDGE_ADDRESS}",
                             f"--ipport={h.bmc_port}", f"--username={BMC_USER}",
                             f"--password={BMC_PASSWORD}", "-o", "status"],
                            capture_output=True, text=True, timeout=30)
        assert "Status: ON" in cp.stdout, cp.stdout + cp.stderr
    # As an oVirt user checks it: every host live, the engine up on exactly one.
    def vm_status():
        data = json.loads(lab.cli("exec", "host1", "--", "hosted-engine", "--vm-status", "--json").stdout)
        hosts_ = {k: v for k, v in data.items() if k != "global_maintenance"}
        live = sorted(v["hostname"] for v in hosts_.values() if v["live-data"])
        up = [v["hostname"] for v in hosts_.values() if v["engine-status"]["vm"] == "up"]
        return data if live == ["host1", "host2", "host3"] and len(up) == 1 else None
    data = wait_for("every host live and the engine up on one in --vm-status --json", vm_status, 60)
    assert data["global_maintenance"] is False
    running = [v for k, v in data.items() if k != "global_maintenance" and v["engine-status"]["vm"] == "up"]
    assert running[0]["hostname"] == lab.single_engine()
    assert running[0]["engine-status"]["health"] == "good"
    from keel_lab import engineproc
    if engineproc.available():
        # The engine process on the lab network manages the three hosts over libvirt TCP.
        import base64
        import urllib.request
        eng = lab.status()["engine"]
        req = urllib.request.Request(eng["api_url"] + "/hosts", headers={
            "Accept": "application/json", "Authorization": "Basic " + base64.b64encode(
                f"{eng['admin_user']}:{eng['admin_password']}".encode()).decode()})
        def hosts_up():
            with urllib.request.urlopen(req, timeout=10) as r:
                found = json.load(r).get("host", [])
            return sorted(h["name"] for h in found if h.get("status") == "up")
        assert wait_for("the engine to see every host up", lambda: hosts_up() == [
            "host1", "host2", "host3"], 60)
        # Each host's BMC is its fence agent, and the engine's power management
        # reaches it: the unmodified oVirt SDK over the engine's REST API.
        import ovirtsdk4
        from ovirtsdk4 import types
        assert [(a["host"], a["port"]) for a in eng["fence_agents"]] == [
            (h.name, h.bmc_port) for h in lab.layout.all_hosts()]
        conn = ovirtsdk4.Connection(url=eng["api_url"], username=eng["admin_user"],
                                    password=eng["admin_password"], timeout=60)
        try:
            hosts_svc = conn.system_service().hosts_service()
            by_name = {x.name: x for x in hosts_svc.list()}
            for h in lab.layout.all_hosts():
                host_svc = hosts_svc.host_service(by_name[h.name].id)
                agents = host_svc.fence_agents_service().list()
                assert [(a.type, a.address, a.port, a.username, a.password) for a in agents] == [
                    ("ipmilan", BRIDGE_ADDRESS, h.bmc_port, BMC_USER, None)]
                assert {o.name: o.value for o in agents[0].options} == {"lanplus": "1", "cipher": "3"}
                pm = host_svc.fence(fence_type="status")
                assert pm.status == types.PowerManagementStatus.ON, h.name
        finally:
            conn.close()
        # The README's SDK script against the lab: a VM from a template,
        # started on a lab host, live-migrated to another, stopped, removed.
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".pw") as pw:
            pw.write(eng["admin_password"])
            pw.flush()
            demo = os.path.join(os.path.dirname(__file__), "..", "..", "appliance", "examples", "sdk_demo.py")
            cp = subprocess.run([sys.executable, demo, "--url", eng["api_url"], "--user", eng["admin_user"],
                                 "--password-file", pw.name, "--name", "lab-sdk-demo"],
                                capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        started = re.search(r"started on host (\S+)", cp.stdout).group(1)
        migrated = re.search(r"migrated to host (\S+)", cp.stdout).group(1)
        assert started != migrated and {started, migrated} <= {"host1", "host2", "host3"}
        assert "removed" in cp.stdout


SECOND_ACQUIRE = """
import sanlock, sys
fd = sanlock.register()
try:
    sanlock.acquire(b"hosted-engine", b"engine", [(sys.argv[1], 0)], slkfd=fd)
except sanlock.SanlockException as e:
    print(e.errno)
else:
    print("ACQUIRED")
"""


def test_sanlock_refuses_the_engine_lease_to_a_second_host(lab):
    """The real sanlock daemons and lease: a host that is not running the
    engine cannot acquire its lease while the engine host holds it."""
    engine_host = lab.ensure_healthy()
    other = next(h for h in lab.layout.all_hosts() if h.name != engine_host)
    lease = os.path.join(other.storage_mount, "hosted-engine.lease")
    cp = lab.cli("exec", other.name, "--", "python3", "-c", SECOND_ACQUIRE, lease, check=False)
    assert cp.stdout.strip() == "-243", cp.stdout + cp.stderr  # held by another host
    assert lab.single_engine() == engine_host


def test_kill_agent_engine_keeps_running_and_is_adopted(lab):
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    h = lab.layout.host(engine_host)
    qemu_before = lab.engine_hosts()[engine_host]
    agent_before = probe.daemon_pids(h)["agent"]
    since = time.time()
    lab.cli("kill", engine_host, "agent")
    new_agent = wait_for("the agent restarted by the host's init",
                         lambda: (p := probe.daemon_pids(h).get("agent")) and p != agent_before and p,
                         60)
    assert new_agent != agent_before
    # The restarted agent adopts the running VM: it reports EngineUp for it.
    def adopted():
        rec = probe.ha_records(lab.layout).get(h.index) or {}
        return rec.get("state") == "EngineUp" and rec.get("timestamp", 0) > since + 1
    wait_for("the restarted agent to report EngineUp", adopted, 60)
    assert lab.engine_hosts() == {engine_host: qemu_before}, "the engine VM was restarted"
    assert lab.verdict(since)["engine_starts"] == 0
    assert lab.verdict()["ok"]


def test_global_maintenance_leaves_killed_engine_down(lab):
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    assert lab.he(engine_host, "--set-maintenance", "--mode=global").returncode == 0
    try:
        wait_for("global maintenance in every host's state", lambda: all(
            r.get("state") == "GlobalMaintenance"
            for i, r in probe.ha_records(lab.layout).items() if i), 30)
        since = time.time()
        lab.cli("kill", engine_host, "engine-vm")
        wait_for("the engine VM gone", lambda: not lab.engine_hosts(), 30)
        time.sleep(20)  # many agent cycles: nobody may restart it
        assert lab.engine_hosts() == {}
        assert lab.verdict(since)["engine_starts"] == 0
    finally:
        lab.he(engine_host, "--set-maintenance", "--mode=none")
    lab.wait_single_engine(180)
    assert lab.verdict()["ok"]


def test_local_maintenance_moves_the_engine(lab):
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    since = time.time()
    assert lab.he(engine_host, "--set-maintenance", "--mode=local").returncode == 0
    try:
        new_host = wait_for("the engine on another host", lambda: (
            (h := lab.single_engine()) and h != engine_host and h), 240)
        assert new_host != engine_host
        v = lab.verdict(since)
        assert v["ok"] and v["engine_starts"] >= 1
    finally:
        lab.he(engine_host, "--set-maintenance", "--mode=none")
    assert lab.verdict()["ok"]


def test_network_partition_never_two_engines(lab):
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    h = lab.layout.host(engine_host)
    since = time.time()
    lab.cli("partition", engine_host, "--net")
    try:
        assert net.is_partitioned(h)
        new_host = wait_for("the engine up on another host", lambda: (
            (x := [n for n in lab.engine_hosts() if n != engine_host]) and lab.health_ok()
            and x[0]), 240)
        assert new_host != engine_host
        # The cut-off host gave the engine up (no second engine while it held the lease).
        assert engine_host not in lab.engine_hosts()
        v = lab.verdict(since)
        assert v["multiple_engines"] == [] and v["starts_without_lease"] == []
    finally:
        lab.cli("heal", engine_host)
    time.sleep(5)  # the healed host rejoins: still one engine
    lab.wait_single_engine()
    assert lab.verdict()["ok"]


def test_storage_partition_moves_engine_without_two_engines(lab):
    """Only the engine host loses the shared storage (its I/O hangs, as on a
    dead NFS server): the engine must come back elsewhere, and never run on
    two hosts, however long the cut host's qemu hangs on its storage."""
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    h = lab.layout.host(engine_host)
    since = time.time()
    lab.cli("partition", engine_host, "--storage")
    try:
        assert lab.status()["hosts"][h.index - 1]["storage"] == "cut"
        new_host = wait_for("the engine up on another host", lambda: (
            (x := lab.single_engine()) and x != engine_host and x), 300)
        assert new_host != engine_host
        v = lab.verdict(since)
        assert v["multiple_engines"] == [] and v["starts_without_lease"] == [], v
    finally:
        lab.cli("heal", engine_host)
    # cut from the storage, the host was reset by its watchdog (and maybe fenced)
    wait_daemons_back(lab, h, "the healed host's daemons", 120)
    lab.wait_single_engine()
    assert lab.verdict()["ok"]


def test_kill_sanlock_resets_the_host(lab):
    """The emulated watchdog: a host whose sanlock daemon dies is reset."""
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    idle = next(h for h in lab.layout.all_hosts() if h.name != engine_host)
    resets = (json.load(open(idle.daemons_file))).get("resets", 0)
    broker_before = probe.daemon_pids(idle)["broker"]
    lab.cli("kill", idle.name, "sanlock")
    wait_for("the host reset", lambda: json.load(open(idle.daemons_file)).get("resets", 0) > resets, 30)
    wait_daemons_back(lab, idle, "the host's daemons back after the reset", 90)
    assert procs.alive(broker_before) is False  # every process of the host was killed
    assert lab.single_engine() == engine_host
    assert lab.verdict()["ok"]


def test_power_off_engine_host_fails_over_without_two_engines(lab):
    engine_host = lab.ensure_healthy()  # also repairs what a failed scenario left
    since = time.time()
    cp = lab.cli("power", engine_host, "off")
    assert "power off" in cp.stdout
    h = lab.layout.host(engine_host)
    assert not hosts.powered_on(h)
    assert lab.cli("power", engine_host, "status").stdout.strip().endswith("off")
    assert procs.pids_in_netns(net.netns_inode(h.netns)) == []  # every process died at once
    # The agents fence the dead engine host through its BMC (so may the lab's engine
    # process, outside the engine VM); either frees its lease without sanlock's wait.
    new_host = wait_for("the engine up on another host", lambda: (
        (x := lab.single_engine()) and x != engine_host and x), 300)
    v = lab.verdict(since)
    assert v["ok"] and v["engine_starts"] == 1, v
    start = next(e for e in read_events(lab.dir)
                 if e["event"] == "start" and e["t"] >= since)
    assert start["host"] == new_host
    # Power the host back on through its BMC: it boots and rejoins as standby.
    lab.cli("power", engine_host, "on")
    wait_for("the powered-on host's daemons", lambda: len(
        [v for v in probe.daemon_pids(h).values() if v]) == 6, 120)
    time.sleep(5)
    assert lab.single_engine() == new_host
    assert lab.verdict()["ok"]


def test_check_command_reports_ok(lab):
    cp = lab.cli("check", "--json")
    v = json.loads(cp.stdout)
    assert cp.returncode == 0 and v["ok"] and v["observed"]
    assert v["engine_starts"] >= 3  # first start + the moves above


def test_zz_down_leaves_nothing_behind(lab):
    lab.down_leaves_nothing()
