"""An engine of its own for the automation tests: `keel-engine serve` and
`worker` as real processes on 127.0.9.10, two real libvirtd hosts on
127.0.9.11/12, and an empty bridge that stands for the hosts' management
bridge (ovirtmgmt maps to it). Nothing here uses the lab."""
import os
import subprocess

import pytest

from engine import enginestack

# KEEL_AUTO_NET and KEEL_AUTO_HOST_INDEX let a second run share the machine
# (another /24 of 127/8, another range of migration ports)
NET = os.environ.get("KEEL_AUTO_NET", "127.0.9")
HOST_INDEX = int(os.environ.get("KEEL_AUTO_HOST_INDEX", "0"))
HOST_ADDRESSES = [f"{NET}.11", f"{NET}.12"]
ENGINE_LISTEN = f"{NET}.10:8080"
BRIDGE = f"keelauto{NET.rsplit('.', 1)[1]}"
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
    with enginestack.engine_with_hosts(
            "keel-auto-", HOST_ADDRESSES, ENGINE_LISTEN, first_index=HOST_INDEX,
            libvirt__bridge_map=f"ovirtmgmt:{mgmt_bridge}",
            monitor__interval=5,
            # a request answers 202 after this and the modules poll (as with oVirt)
            engine__request_wait=30) as eng:
        yield eng


@pytest.fixture(scope="session")
def ansible_playbook():
    path = os.path.abspath(os.path.join(ANSIBLE_VENV, "bin", "ansible-playbook"))
    if not os.path.exists(path):
        pytest.fail("the Ansible venv is missing: run scripts/setup-ansible.sh (make setup does)")
    return path
