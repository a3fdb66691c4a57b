"""The typical administrator's playbook (playbooks/admin.yml), run with the
ovirt.ovirt collection as shipped in ansible 8.7.0 against a real engine
and real libvirt hosts: no task may fail, and what the engine did is
checked where it happened (libvirt's record of the qemu it started, the
volumes on the storage domain, the engine's events)."""
import glob
import json
import os
import subprocess

import pytest
import requests

from engine.enginestack import VENV_BIN
from harness.wait import wait_for
from keel_lab import guest_image

pytestmark = [pytest.mark.slow, pytest.mark.root]
PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "admin.yml")
GUEST_ADDRESS = "198.51.100.150/24"


def qemu_img_chain(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def add_internal_user(engine, name, tmp_path):
    """What an administrator does on the engine before ovirt_user can find the user."""
    pw = tmp_path / f"{name}.pw"
    pw.write_text("ops-user-pw\n")
    subprocess.run([os.path.join(VENV_BIN, "keel-engine"), "--config", engine.config_path, "user", "add", name,
                    "--password-file", str(pw)], check=True, capture_output=True, timeout=60)


def test_the_admin_playbook_runs_without_a_failed_task(auto_engine, ansible_playbook, tmp_path):
    h1, h2 = auto_engine.hosts
    guest = guest_image.build()
    add_internal_user(auto_engine, "ops", tmp_path)
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False",
           "ANSIBLE_PYTHON_INTERPRETER": os.path.join(os.path.dirname(ansible_playbook), "python")}
    run = subprocess.run(
        [ansible_playbook, PLAYBOOK, "-e", f"engine_url={auto_engine.url}", "-e", "engine_password=keel-test-pw",
         "-e", f"storage_path={auto_engine.storage}", "-e", f"h1_address={h1.address}",
         "-e", f"h2_address={h2.address}", "-e", f"facts_dir={tmp_path}",
         # the test guest on ovirtmgmt's bridge, which has no uplink: its address stays in the guest
         "-e", f"guest_kernel={guest.kernel}", "-e", f"guest_initrd={guest.initrd}",
         "-e", f"guest_cmdline={guest.cmdline}", "-e", f"guest_address={GUEST_ADDRESS}"],
        capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "failed=0" in run.stdout
    facts = json.loads((tmp_path / "facts.json").read_text())

    # read back while it ran: on h2 after the migration, with its NIC and disk
    vm, = facts["vm"]
    assert vm["status"] == "up" and vm["high_availability"]["enabled"] is True
    assert vm["high_availability"]["priority"] == 50
    assert [n["name"] for n in vm["nics"]] == ["nic1"]

    # libvirt's own record of the qemu each host ran: the NIC on ovirtmgmt's bridge, the disk
    for host in (h1, h2):
        log, = glob.glob(os.path.join(host.root, "log", "qemu", "web1.log"))
        cmdline = open(log).read()
        assert "56:6f:00:00:09:01" in cmdline and "virtio-blk" in cmdline and "virtio-rng" in cmdline
    # the snapshot's layer under the disk's active volume, on the storage domain
    token = requests.post(auto_engine.url.replace("/api", "/sso/oauth/token"), timeout=30, data={
        "grant_type": "password", "username": "admin@internal", "password": "keel-test-pw"}).json()["access_token"]
    api = requests.Session()
    api.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
    disk, = api.get(f"{auto_engine.url}/disks", params={"search": "name=web1_data"}).json()["disk"]
    chain = qemu_img_chain(os.path.join(auto_engine.storage, f"{disk['id']}.{disk['image_id']}.qcow2"))
    assert len(chain) == 2
    # the template made from it, with its own copy of the disk
    tpl, = api.get(f"{auto_engine.url}/templates", params={"search": "name=web-template"}).json()["template"]
    assert tpl["status"] == "ok"
    tatt, = api.get(f"{auto_engine.url}/templates/{tpl['id']}/diskattachments").json()["disk_attachment"]
    # ovirt_template's update, once (the second task found nothing to change)
    assert tpl["description"] == "web servers" and int(tpl["memory"]) == 96 * 2 ** 20
    assert facts["template_changed"] is True and facts["template_again"] is False
    assert facts["cluster_again"] is False and facts["hosts_again"] is False and facts["nic_again"] is False
    # ovirt_vm with clone: true: web2's disk is a whole copy of the template's, backed by nothing
    web2 = api.get(f"{auto_engine.url}/vms/{facts['web2']}").json()
    assert web2["status"] == "down" and web2["template"]["id"] == tpl["id"]
    watt, = api.get(f"{auto_engine.url}/vms/{facts['web2']}/diskattachments").json()["disk_attachment"]
    wdisk = api.get(f"{auto_engine.url}/disks/{watt['disk']['id']}").json()
    tdisk = api.get(f"{auto_engine.url}/disks/{tatt['disk']['id']}").json()
    assert wdisk["status"] == "ok" and wdisk["id"] != tdisk["id"]
    wchain = qemu_img_chain(os.path.join(auto_engine.storage, f"{wdisk['id']}.{wdisk['image_id']}.qcow2"))
    assert len(wchain) == 1 and "backing-filename" not in wchain[0]
    # ovirt_vmpool: two VMs made from the template; ovirt_user + ovirt_permission: ops holds its roles
    pool = api.get(f"{auto_engine.url}/vmpools/{facts['pool']}").json()
    assert int(pool["size"]) == 2 and pool["template"]["id"] == tpl["id"]
    # the pool's VMs are made by the engine's jobs after the module's answer
    wait_for(lambda: len(api.get(f"{auto_engine.url}/vms", params={"search": "pool=webpool"}).json().get("vm", []))
             == 2, timeout=180, what="the pool's two VMs")
    ops, = api.get(f"{auto_engine.url}/users", params={"search": "usrname=ops@internal-authz"}).json()["user"]
    roles = {r["id"]: r["name"] for r in api.get(f"{auto_engine.url}/roles").json()["role"]}
    held = {(roles[p["role"]["id"]], next(k for k in ("vm", "vm_pool") if k in p))
            for p in api.get(f"{auto_engine.url}/users/{ops['id']}/permissions").json()["permission"]}
    assert held == {("UserVmManager", "vm"), ("UserRole", "vm_pool")}
    # app1 booted the test guest with the run's cloud-init; its guest agent told the engine so
    app1, = facts["app1"]
    assert app1["fqdn"] == "app1.example.test"
    assert app1["guest_operating_system"]["distribution"] == "Keel test guest"
    ips = [ip["address"] for d in app1["reported_devices"] for ip in d.get("ips", [])]
    assert GUEST_ADDRESS.split("/")[0] in ips, app1["reported_devices"]
    # and its one-boot seed left the storage domain when it stopped
    wait_for(lambda: not glob.glob(os.path.join(auto_engine.storage, "*.cloud-init-seed")), timeout=120,
             what="the cloud-init seed removed")
    # the engine's events say what happened
    texts = [e["description"] for e in facts["events"]]
    assert any("Migration of VM web1 from host h1 to host h2 completed" in t for t in texts), texts
