"""`hosted-engine --deploy` on bare lab hosts, for real: the engine
appliance, sanlock, etcd with TLS, the HA services run from their unit
files, the engine's API at the end; then two more hosts join and the
engine survives the loss of its host.

One bare 3-host lab for the module; the scenarios run in order:
1. a deploy on storage root cannot write fails at the storage step with its
   reason and what to do; --clean-deploy then leaves the host clean;
2. an interactive deploy on host1 through a pseudo-terminal (bad answers
   asked again, passwords not echoed), stopped with Ctrl-C while it waits
   for the engine, then resumed without a terminal: the engine answers at
   the printed URL with the host, the storage domain and the BMC registered;
3. a second deploy is refused;
4. host2 and host3 join with host1's bundle: host ids 2 and 3 from etcd, a
   3-member etcd, both hosts up in the engine with their BMCs;
5. host1 loses power: the engine comes back on another host, never twice;
6. --clean-deploy on host3 leaves etcd and gives its host id back; then on
   every other host (global maintenance first) it removes the engine VM,
   the services and every file the deploys made.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pexpect
import pytest

from keel_installer.answers import BY_FIELD
from keel_installer.engine_api import Api, EngineApiError
from keel_lab import deploy as lab_deploy, probe
from keel_lab.layout import BMC_PASSWORD, ENGINE_VM_ADDRESS

from lab_helpers import KEEL_LAB, LabDriver, lab_unavailable, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.root]

ADVANCED = {"storage": ("mount_root", "domain_name"), "engine_vm": ("appliance", "domain_type"),
            "host": ("timing_profile",), "engine": ("extra_conf",)}


@pytest.fixture(scope="module")
def lab():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_dir = tempfile.mkdtemp(prefix="keel-lab-deploy-")
    driver = LabDriver(lab_dir)
    try:
        driver.cli("up", "--hosts", "3", "--engine", "bare", "--timeout", "300", timeout=600)
        yield driver
    finally:
        subprocess.run(["chattr", "-i", os.path.join(lab_dir, "shared")], capture_output=True)
        subprocess.run(KEEL_LAB + ["down", "--dir", lab_dir], capture_output=True, timeout=180)
        shutil.rmtree(lab_dir, ignore_errors=True)


def answers_file(lab) -> str:
    return lab_deploy.path(lab.layout, lab_deploy.ANSWERS)


def admin_password(lab) -> str:
    with open(lab_deploy.path(lab.layout, lab_deploy.ADMIN_PASSWORD)) as f:
        return f.readline().strip()


def host_path(lab, *parts, host: int = 1) -> str:
    return lab.layout.host(host).path(*parts)


def deploy(lab, *args, env=None, timeout=600, host="host1"):
    return subprocess.run(KEEL_LAB + ["exec", "--dir", lab.dir, host, "--", "hosted-engine", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def test_unwritable_storage_fails_at_the_storage_step_and_clean_deploy_cleans(lab):
    shared = lab.layout.shared
    subprocess.run(["chattr", "+i", shared], check=True)
    try:
        r = deploy(lab, "--deploy", f"--config-append={answers_file(lab)}", timeout=300)
    finally:
        subprocess.run(["chattr", "-i", shared], check=True)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    assert "[1/12] Pre-flight checks" in out and "[2/12] Shared storage" in out
    assert "The deploy failed at step 2/12 (Shared storage)" in out
    assert "is not writable by root" in out and "What to do:" in out
    assert "[3/12]" not in out
    record = json.load(open(host_path(lab, "var-lib-keel", "deploy.json")))
    assert record["status"] == "failed"
    r = deploy(lab, "--clean-deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "This host is clean" in r.stdout
    assert not os.path.exists(host_path(lab, "var-lib-keel", "deploy.json"))
    assert not deploy_files(lab), deploy_files(lab)


def deploy_files(lab) -> list[str]:
    """The deploy's files on the shared storage; what the engine wrote there
    itself is the engine's. A file removed while a daemon still has it open
    stays as .fuse_hidden* until it is closed (NFS's .nfsXXXX): not counted."""
    ours = ("hosted-engine.lockspace", "hosted-engine.lease", "engine.qcow2", "engine-seed.img", "engine-boot")
    return [f for f in os.listdir(lab.layout.shared) if f.startswith(ours)]


def _partial_answers(lab, tmp: str) -> str:
    """Only the answers an administrator would not be asked (the lab's advanced ones)."""
    full = lab_deploy.deploy_answers(lab.layout, lab.layout.host(1))
    lines = []
    for section, keys in ADVANCED.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {full[section][k]}" for k in keys if k in full[section]]
    path = os.path.join(tmp, "advanced.ini")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def ask(child, field: str, answer: str) -> None:
    child.expect_exact(BY_FIELD[field].prompt)
    child.sendline(answer)


def test_interactive_deploy_stopped_with_ctrl_c_then_resumed(lab, tmp_path):
    password = admin_password(lab)
    child = pexpect.spawn(sys.executable, ["-m", "keel_lab.cli", "exec", "--dir", lab.dir, "host1", "--",
                                           "hosted-engine", "--deploy",
                                           f"--config-append={_partial_answers(lab, str(tmp_path))}"],
                          encoding="utf-8", timeout=120, dimensions=(50, 200))
    log = open(tmp_path / "transcript.txt", "w")
    child.logfile_read = log
    try:
        ask(child, "storage_connection", "198.51.100.1:/shared")
        ask(child, "storage_mount_options", "")
        ask(child, "vm_name", "")
        ask(child, "vm_hostname", "engine.lab.test")
        ask(child, "vm_memory_mb", "1024")
        ask(child, "vm_vcpus", "2")
        ask(child, "vm_mac", "52:54:00:6b:ee:01")
        ask(child, "vm_address", "198.51.100.300/24")         # not an address: asked again
        child.expect_exact("invalid:")
        ask(child, "vm_address", f"{ENGINE_VM_ADDRESS}/24")
        ask(child, "bridge", "br0")
        ask(child, "gateway", "198.51.100.1")
        ask(child, "host_address", "198.51.100.11")
        ask(child, "host_name", "host1")
        ask(child, "data_center", "")
        ask(child, "cluster", "")
        child.expect_exact("admin@internal password: ")
        child.sendline(password)
        child.expect_exact("Confirm admin@internal password: ")
        child.sendline(password + "x")                      # typed differently: asked again
        child.expect_exact("admin@internal password: ")
        child.sendline(password)
        child.expect_exact("Confirm admin@internal password: ")
        child.sendline(password)
        child.expect_exact("(yes, no)")                      # the BMC?
        child.sendline("yes")
        ask(child, "bmc_address", "198.51.100.1")
        ask(child, "bmc_port", str(lab.layout.host(1).bmc_port))
        ask(child, "bmc_user", "admin")
        child.expect_exact("BMC password: ")
        child.sendline(BMC_PASSWORD)
        ask(child, "bmc_options", "")
        child.expect_exact("Deploy with these settings?")
        child.sendline("yes")
        child.expect_exact("[11/12] Engine health", timeout=420)
        time.sleep(2)
        child.sendintr()
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close()
        log.close()
    transcript = open(tmp_path / "transcript.txt").read()
    assert "Stopped at step 11/12 (Engine health)" in transcript, transcript[-2000:]
    assert child.exitstatus == 130
    assert password not in transcript
    # the lab's BMC password is also a word of the lab's paths: look at what follows its prompt
    assert not re.search(r"BMC password: [^\n]*" + BMC_PASSWORD, transcript)
    assert "Traceback" not in transcript
    for n in range(1, 11):
        assert f"[{n}/12]" in transcript
    # resumed without a terminal: the recorded answers, the passwords from the environment
    r = deploy(lab, "--deploy", env={"KEEL_ADMIN_PASSWORD": password, "KEEL_BMC_PASSWORD": BMC_PASSWORD})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "resuming it with its answers" in out and "The hosted engine is deployed" in out
    assert f"http://{ENGINE_VM_ADDRESS}/ovirt-engine/" in out
    api = Api("admin@internal", password, f"http://{ENGINE_VM_ADDRESS}")
    host = api.find("hosts", "host1")
    assert host["status"] == "up"
    assert api.find("storagedomains", "shared")["status"] == "active"
    agents = api.call("GET", f"/hosts/{host['id']}/fenceagents").get("agent", [])
    assert [(a["address"], int(a["port"])) for a in agents] == [("198.51.100.1", lab.layout.host(1).bmc_port)]
    status = lab.he("host1", "--vm-status", "--json")
    assert status.returncode == 0, status.stderr
    rec = json.loads(status.stdout)["1"]
    assert rec["hostname"] == "host1" and rec["engine-status"]["health"] == "good"
    conf = open(host_path(lab, "etc-keel", "hosted-engine.conf")).read()
    assert "https://198.51.100.11:2379" in conf and "ca_cert" in conf
    assert list(probe.engine_qemu_pids(lab.layout)) == ["host1"]


def test_a_second_deploy_is_refused(lab):
    r = deploy(lab, "--deploy", f"--config-append={answers_file(lab)}")
    assert r.returncode == 1
    assert "deployed already" in r.stderr and "Traceback" not in r.stderr


def engine_api(lab) -> Api:
    return Api("admin@internal", admin_password(lab), f"http://{ENGINE_VM_ADDRESS}")


def test_two_hosts_join_with_the_first_hosts_bundle(lab):
    bundle = lab_deploy.path(lab.layout, lab_deploy.JOIN_BUNDLE)
    r = deploy(lab, f"--join-bundle={bundle}")
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(bundle).st_mode & 0o777) == "0o600"
    for n in (2, 3):
        h = lab.layout.host(n)
        r = deploy(lab, "--deploy", f"--join={bundle}",
                   f"--config-append={lab_deploy.path(lab.layout, lab_deploy.answers_name(h))}", host=h.name)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert f"{h.name} joined the cluster as host id {n}" in out
        assert f"the cluster has {n} members" in out
    status = lab.he("host3", "--vm-status", "--json")
    assert status.returncode == 0, status.stderr
    records = json.loads(status.stdout)
    assert sorted(records[k]["hostname"] for k in ("1", "2", "3")) == ["host1", "host2", "host3"]
    api = engine_api(lab)
    for n in (2, 3):
        host = api.find("hosts", f"host{n}")
        assert host["status"] == "up"
        agents = api.call("GET", f"/hosts/{host['id']}/fenceagents").get("agent", [])
        assert [int(a["port"]) for a in agents] == [lab.layout.host(n).bmc_port]


def test_the_engine_survives_the_loss_of_its_host(lab):
    since = time.time()
    lab.cli("power", "host1", "off")
    try:
        new_host = wait_for("the engine back on another host", lambda: (
            lab.single_engine() if lab.single_engine() not in (None, "host1") else None), 240, interval=1)
        assert new_host in ("host2", "host3")
        assert lab.verdict(since)["ok"], lab.verdict(since)
        # The engine, back, reads the agents' fence from the hosts' etcd with
        # the certificate the deploy gave it (host1's member, the one its
        # settings name, is the dead one: it finds the others through its
        # hosts) and does not fence host1 again.
        api = engine_api(lab)

        def adopted():
            try:
                events = api.call("GET", "/events").get("event", [])
            except EngineApiError:
                api.token = None      # the engine restarting: sign in again
                return False
            return any("Host host1 was fenced by the HA agent of host" in e.get("description", "")
                       for e in events)
        wait_for("the engine to adopt the HA agents' fence of host1", adopted, 240, interval=3)
        events = api.call("GET", "/events").get("event", [])
        assert not any("requested by the engine" in e.get("description", "") and "host1" in e["description"]
                       for e in events), [e["description"] for e in events]
    finally:     # the scenarios after this one need host1
        lab.cli("power", "host1", "on")
    wait_for("host1's broker back", lambda: os.path.exists(host_path(lab, "run-keel", "broker.sock")), 120)


def test_clean_deploy_of_a_joined_host_gives_its_place_back(lab):
    r = deploy(lab, "--clean-deploy", host="host3", timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "removed etcd member host3" in out and "gave host id 3 back" in out
    assert not os.path.exists(host_path(lab, "etc-keel", "hosted-engine.conf", host=3))

    def live_hosts():
        status = lab.he("host2", "--vm-status", "--json")
        return status.returncode == 0 and [v["hostname"] for k, v in json.loads(status.stdout).items()
                                           if k.isdigit() and v["live-data"]]
    # its record expires with its broker's etcd lease
    assert sorted(wait_for("host3 gone from --vm-status", lambda: (
        live_hosts() if live_hosts() and "host3" not in live_hosts() else None), 60, interval=2)) == ["host1", "host2"]
    # if the engine ran on host3, it comes back on host1 or host2
    assert lab.wait_single_engine(300) in ("host1", "host2")


def test_clean_deploy_removes_the_engine_the_services_and_the_files(lab):
    # the cluster may still be settling from host3's leaving: exit 3 is "etcd unreachable"
    wait_for("global maintenance set", lambda: lab.he("host1", "--set-maintenance", "--mode=global").returncode == 0,
             60, interval=2)
    outs = ""
    for name in ("host2", "host1"):
        engine_here = name in probe.engine_qemu_pids(lab.layout)
        r = deploy(lab, "--clean-deploy", host=name, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert ("powered off the engine VM HostedEngine" in out) == engine_here, (engine_here, out)
        outs += out
    assert "stopped and removed keel-ha-agent.service" in outs and "stopped and removed keel-etcd.service" in outs
    assert "left the sanlock lockspace hosted-engine" in outs
    wait_for("no engine VM", lambda: not probe.engine_qemu_pids(lab.layout), 30)
    for n in (1, 2, 3):
        assert not os.path.exists(host_path(lab, "etc-keel", "hosted-engine.conf", host=n))
        assert not os.path.exists(host_path(lab, "etc-keel", "pki", host=n))
        assert not os.path.exists(host_path(lab, "var-lib-keel", "deploy.json", host=n))
        assert not json.load(open(host_path(lab, "run-keel", "lab-units.json", host=n)))
        assert not re.search(r"keel-(etcd|ha-)", " ".join(os.listdir(host_path(lab, "etc-systemd", host=n))))
    assert not deploy_files(lab), deploy_files(lab)
