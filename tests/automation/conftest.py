"""An engine of its own for the automation tests: `keel-engine serve` and
`worker` as real processes on 127.0.9.10, two real libvirtd hosts on
127.0.9.11/12, and an empty bridge that stands for the hosts' management
bridge (ovirtmgmt maps to it). Nothing here uses the lab."""
import os
import shutil
import subprocess
import tempfile

import pytest

from engine import enginestack, libvirt_hosts

HOST_ADDRESSES = ["127.0.9.11", "127.0.9.12"]
ENGINE_LISTEN = "127.0.9.10:8080"
BRIDGE = "keelauto0"
ANSIBLE_VENV = os.path.join(os.path.dirname(__file__), "..", "..", ".venv-ansible")


@pytest.fixture(scope="session")
def mgmt_bridge():
    """A bridge without addresses or ports: VMs' NICs on ovirtmgmt plug into it."""
    # a run that was killed leaves its bridge behind; the name is this fixture's own
    subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    yield BRIDGE
    subprocess.run(["ip", "link", "del", BRIDGE], check=False)


@pytest.fixture(scope="session")
def auto_engine(mgmt_bridge):
    root = tempfile.mkdtemp(prefix="keel-auto-")
    hosts = libvirt_hosts.start_hosts(os.path.join(root, "hosts"), HOST_ADDRESSES)
    eng = None
    try:
        storage = os.path.join(root, "storage")
        os.makedirs(storage)
        cfg = os.path.join(root, "engine.conf")
        enginestack.write_config(cfg, f"sqlite:///{root}/engine.db", ENGINE_LISTEN, root,
                                 libvirt__bridge_map=f"ovirtmgmt:{mgmt_bridge}", monitor__interval=5,
                                 # a request answers 202 after this and the modules poll (as with oVirt)
                                 engine__request_wait=30)
        eng = enginestack.Engine(cfg, ENGINE_LISTEN, root)
        eng.storage, eng.hosts, eng.root = storage, hosts, root
        eng.start()
        yield eng
    finally:
        if eng is not None:
            eng.stop()
        for h in hosts:
            h.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ansible_playbook():
    path = os.path.abspath(os.path.join(ANSIBLE_VENV, "bin", "ansible-playbook"))
    if not os.path.exists(path):
        pytest.fail("the Ansible venv is missing: run scripts/setup-ansible.sh (make setup does)")
    return path
