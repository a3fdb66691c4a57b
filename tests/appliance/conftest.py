"""Fixtures for the appliance tests: the image (built once, cached under
$KEEL_APPLIANCE_CACHE or /var/cache/keel-appliance) and a network
namespace of the test's own with a bridge and a tap for a VM with a static
address (198.51.100.0/24 exists only inside it)."""
import os
import socket
import subprocess
import uuid

import pytest

from keel_appliance.vm import TapNet, UserNet, have_qemu

BRIDGE_ADDRESS = "198.51.100.1"
ENGINE_ADDRESS = "198.51.100.100"
FORWARD_ADDRESS = "127.0.7.1"


@pytest.fixture(scope="session")
def appliance_image():
    if os.geteuid() != 0 or not have_qemu():
        pytest.skip("needs root and qemu-system-x86_64")
    from keel_appliance.build import build
    return build()


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def static_net():
    """A namespace with br0 (198.51.100.1/24) and tap0 on it."""
    name = f"keel-appl-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "br0", "type", "bridge")
        _ip("-n", name, "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", "br0")
        _ip("-n", name, "link", "set", "br0", "up")
        _ip("-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap")
        _ip("-n", name, "link", "set", "tap0", "master", "br0", "up")
        yield TapNet(netns=name, tap="tap0", guest_address=ENGINE_ADDRESS)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def user_net():
    """qemu user-mode networking, the guest's port 80 on 127.0.7.1:<free port>."""
    with socket.socket() as s:
        s.bind((FORWARD_ADDRESS, 0))
        port = s.getsockname()[1]
    return UserNet(host_address=FORWARD_ADDRESS, host_port=port, guest_address=ENGINE_ADDRESS,
                   guest_host=BRIDGE_ADDRESS)
