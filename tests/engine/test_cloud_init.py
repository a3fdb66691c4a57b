"""cloud-init for real: a real engine (`keel-engine serve` and `worker`) with
two real libvirtd hosts, a disk-less VM that boots the test guest's kernel
directly (os.kernel, os.initrd, os.cmdline), started through the REST API
with use_cloud_init. What the guest applied is read straight from the
host's libvirtd through its guest agent (host name; a file the custom
script's runcmd wrote), not from the engine. The seed is a volume of the
storage domain's pool while the VM runs, attached as a read-only CD-ROM,
and gone from the pool once the VM is down: after a stop through the API,
and after the guest powered itself off (noticed by the engine's monitor)."""
import base64
import json
import os
import sqlite3
import subprocess

import libvirt
import libvirt_qemu
import ovirtsdk4
import ovirtsdk4.types as t
import pytest

from harness.wait import wait_for
from keel_lab import guest_image

from . import enginestack

pytestmark = [pytest.mark.slow, pytest.mark.root]
MiB = 2 ** 20
AGENT_DEADLINE = 300        # s: a TCG guest on a loaded 2-core machine
SEED = ".cloud-init-seed"


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


@pytest.fixture(scope="module")
def eng():
    with enginestack.engine_with_hosts("keel-ci-", ["127.0.15.11", "127.0.15.12"], "127.0.15.10:8080",
                                       first_index=6, engine__request_wait=120) as e:
        yield e


@pytest.fixture(scope="module")
def sdk(eng):
    conn = ovirtsdk4.Connection(url=eng.url, username="admin@internal", password="keel-test-pw", timeout=180)
    system = conn.system_service()
    dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
    system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
    for i, host in enumerate(eng.hosts):
        system.hosts_service().add(t.Host(name=f"h{i + 1}", address=host.address, root_password="unused",
                                          cluster=t.Cluster(name="Default")))
    hosts = system.hosts_service()
    wait_for(lambda: len([h for h in hosts.list() if h.status == t.HostStatus.UP]) == 2, 180, what="hosts up")
    sd = system.storage_domains_service().add(t.StorageDomain(
        name="data", type=t.StorageDomainType.DATA, data_center=t.DataCenter(id=dc.id),
        storage=t.HostStorage(type=t.StorageType.POSIXFS, path=eng.storage), host=t.Host(name="h1")))
    attached = system.data_centers_service().data_center_service(dc.id).storage_domains_service() \
        .storage_domain_service(sd.id)
    wait_for(lambda: attached.get().status == t.StorageDomainStatus.ACTIVE, 180, what="storage domain active")
    conn.storage_domain_id = sd.id
    yield conn
    conn.close()


def host_conn(eng, sdk, vm_service):
    """A connection to the libvirtd of the host the VM runs on, and that host's name."""
    host = sdk.follow_link(vm_service.get().host)
    return libvirt.open(f"qemu+tcp://{host.address}/system"), host.name


def agent(dom, command, arguments=None, timeout=30):
    msg = {"execute": command, **({"arguments": arguments} if arguments is not None else {})}
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(msg), timeout, 0))["return"]


def read_file(dom, path):
    handle = agent(dom, "guest-file-open", {"path": path, "mode": "r"})
    try:
        return base64.b64decode(agent(dom, "guest-file-read", {"handle": handle, "count": 65536})["buf-b64"]).decode()
    finally:
        agent(dom, "guest-file-close", {"handle": handle})


def wait_for_agent(dom, console):
    try:
        wait_for(lambda: agent(dom, "guest-ping", timeout=5) == {}, AGENT_DEADLINE, what="the guest agent",
                 interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}; console:\n{console()}") from None


def seeds(eng, conn, sd_id):
    """The seed volumes in the storage domain's pool, as the host's libvirt lists them."""
    pool = conn.storagePoolLookupByName(f"keel-{sd_id}")
    pool.refresh(0)
    found = sorted(v for v in pool.listVolumes() if v.endswith(SEED))
    assert found == sorted(f for f in os.listdir(eng.storage) if f.endswith(SEED))
    return found


def console_of(conn, vm_id):
    def read():
        try:
            dom = conn.lookupByUUIDString(vm_id)
            return f"(domain {dom.name()} running: {dom.isActive()}; see the host's qemu log)"
        except libvirt.libvirtError:
            return "(no domain)"
    return read


def test_a_guest_applies_the_seed_of_its_boot_and_the_seed_goes_when_the_vm_is_down(eng, sdk, image):
    vms = sdk.system_service().vms_service()
    vm = vms.add(t.Vm(
        name="ci1", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"), memory=256 * MiB,
        os=t.OperatingSystem(type="other_linux", kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline),
        initialization=t.Initialization(
            host_name="ci-1.example.test", root_password="never-shown-1",
            custom_script="runcmd:\n  - echo applied by cloud-init > /run/ci-proof\n")))
    vm_service = vms.vm_service(vm.id)
    wait_for(lambda: vm_service.get().status == t.VmStatus.DOWN, 60, what="VM down")

    # boot 1: the VM's own configuration, asked for with use_cloud_init
    vm_service.start(use_cloud_init=True)
    wait_for(lambda: vm_service.get().status == t.VmStatus.UP, 120, what="VM up")
    conn, host_name = host_conn(eng, sdk, vm_service)
    try:
        dom = conn.lookupByUUIDString(vm.id)
        seed, = seeds(eng, conn, sdk.storage_domain_id)
        assert seed.startswith(vm.id)
        cds = [d for d in dom.XMLDesc(0).split("<disk ")[1:] if "device='cdrom'" in d]
        assert any(seed in d and "<readonly/>" in d and "bus='ide'" in d for d in cds), cds
        wait_for_agent(dom, console_of(conn, vm.id))
        assert agent(dom, "guest-get-host-name")["host-name"] == "ci-1.example.test"
        assert read_file(dom, "/run/ci-proof") == "applied by cloud-init\n"
        assert read_file(dom, "/run/cloud-init/instance-id") == f"{vm.id}\n"
        vm_service.stop()
        wait_for(lambda: vm_service.get().status == t.VmStatus.DOWN, 120, what="VM down")
        wait_for(lambda: seeds(eng, conn, sdk.storage_domain_id) == [], 60, what="the seed deleted after a stop")
    finally:
        conn.close()

    # boot 2: run-once on the other host, not stored; the guest powers itself off
    other = "h2" if host_name == "h1" else "h1"
    vm_service.start(use_cloud_init=True, vm=t.Vm(
        placement_policy=t.VmPlacementPolicy(hosts=[t.Host(name=other)]),
        initialization=t.Initialization(host_name="ci-2.example.test", root_password="never-shown-2",
                                        custom_script="runcmd:\n  - [sh, -c, 'echo run once > /run/ci-once']\n")))
    wait_for(lambda: vm_service.get().status == t.VmStatus.UP, 120, what="VM up again")
    conn, host_name = host_conn(eng, sdk, vm_service)
    try:
        assert host_name == other
        dom = conn.lookupByUUIDString(vm.id)
        new_seed, = seeds(eng, conn, sdk.storage_domain_id)
        assert new_seed != seed
        wait_for_agent(dom, console_of(conn, vm.id))
        assert agent(dom, "guest-get-host-name")["host-name"] == "ci-2.example.test"
        assert read_file(dom, "/run/ci-once") == "run once\n"
        stored = vms.vm_service(vm.id).get(all_content=True).initialization
        assert stored.host_name == "ci-1.example.test" and stored.root_password is None
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
        wait_for(lambda: vm_service.get().status == t.VmStatus.DOWN, 180, what="VM down after the guest's poweroff")
        wait_for(lambda: seeds(eng, conn, sdk.storage_domain_id) == [], 60,
                 what="the seed deleted after the guest powered off")
    finally:
        conn.close()

    # nothing secret in the engine's jobs, events or logs
    said = " ".join(e.description for e in sdk.system_service().events_service().list(max=500))
    with sqlite3.connect(os.path.join(eng.root, "engine.db")) as db:
        said += " ".join(str(row) for row in db.execute("SELECT description, params, result FROM jobs"))
    for name in ("worker.log", "serve.log"):
        with open(os.path.join(eng.root, name), errors="replace") as f:
            said += f.read()
    assert "never-shown" not in said
    assert "cloud-init seed" in said      # the worker's log says where each seed went and when it went


PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ovirt.ovirt.ovirt_auth:
        url: "{{ engine_url }}"
        username: admin@internal
        password: keel-test-pw
        insecure: true
    # the kernel first, stored: with state running ovirt_vm would send it in the start action too
    - ovirt.ovirt.ovirt_vm:
        auth: "{{ ovirt_auth }}"
        name: "{{ item }}"
        cluster: Default
        template: Blank
        memory: 256MiB
        operating_system: other_linux
        kernel_path: "{{ kernel }}"
        initrd_path: "{{ initrd }}"
        kernel_params: "{{ cmdline }}"
        kernel_params_persist: true
        nics:
          - name: nic1
        state: stopped
      loop: [ci-once, ci-kept]
    - name: run-once cloud-init (not stored)
      ovirt.ovirt.ovirt_vm:
        auth: "{{ ovirt_auth }}"
        name: ci-once
        state: running
        cloud_init:
          host_name: ci-3.example.test
          root_password: never-shown-3
          custom_script: |
            runcmd:
              - echo from ansible > /run/ci-ansible
          nic_name: eth0
          nic_boot_protocol: static
          nic_ip_address: 198.51.100.33
          nic_netmask: 255.255.255.0
          nic_gateway: 198.51.100.1
    - name: stored cloud-init, used at the first run
      ovirt.ovirt.ovirt_vm:
        auth: "{{ ovirt_auth }}"
        name: ci-kept
        state: running
        cloud_init_persist: true
        cloud_init:
          host_name: ci-4.example.test
          custom_script: |
            write_files:
              - path: /run/ci-kept
                content: kept
        cloud_init_nics:
          - nic_name: eth0
            nic_boot_protocol: static
            nic_ip_address: 198.51.100.44
            nic_netmask: "24"
"""


def test_ovirt_vm_cloud_init_run_once_and_persisted(eng, sdk, image, tmp_path):
    ansible = os.path.join(os.path.dirname(__file__), "..", "..", ".venv-ansible", "bin", "ansible-playbook")
    if not os.path.exists(ansible):
        pytest.fail("the Ansible venv is missing: run scripts/setup-ansible.sh (make setup does)")
    (tmp_path / "ci.yml").write_text(PLAYBOOK)
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False",
           "ANSIBLE_PYTHON_INTERPRETER": os.path.join(os.path.dirname(ansible), "python")}
    run = subprocess.run([ansible, str(tmp_path / "ci.yml"), "-e", f"engine_url={eng.url}",
                          "-e", f"kernel={image.kernel}", "-e", f"initrd={image.initrd}",
                          "-e", f"cmdline={image.cmdline}"], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0 and "failed=0" in run.stdout, run.stdout[-6000:] + run.stderr[-2000:]
    vms = sdk.system_service().vms_service()
    for name, host_name, path, text, address in (
            ("ci-once", "ci-3.example.test", "/run/ci-ansible", "from ansible\n", "198.51.100.33"),
            ("ci-kept", "ci-4.example.test", "/run/ci-kept", "kept", "198.51.100.44")):
        vm, = vms.list(search=f"name={name}")
        vm_service = vms.vm_service(vm.id)
        conn, _host = host_conn(eng, sdk, vm_service)
        try:
            dom = conn.lookupByUUIDString(vm.id)
            wait_for_agent(dom, console_of(conn, vm.id))
            assert agent(dom, "guest-get-host-name")["host-name"] == host_name
            assert read_file(dom, path) == text
            eth0, = [n for n in agent(dom, "guest-network-get-interfaces") if n["name"] == "eth0"]
            assert (address, 24) in {(a["ip-address"], a["prefix"]) for a in eth0.get("ip-addresses", ())}
            stored = vm_service.get(all_content=True).initialization
            if name == "ci-once":
                assert stored is None          # run-once: not kept
            else:
                assert stored.host_name == host_name
            vm_service.stop()
            wait_for(lambda: vm_service.get().status == t.VmStatus.DOWN, 120, what=f"{name} down")
        finally:
            conn.close()
    conn = libvirt.open(eng.hosts[0].uri)
    try:
        wait_for(lambda: seeds(eng, conn, sdk.storage_domain_id) == [], 60, what="the seeds deleted")
    finally:
        conn.close()
