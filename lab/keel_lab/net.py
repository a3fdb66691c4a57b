"""The lab network: one bridge in the root namespace, one namespace per host.

Host N's namespace `lab-hN` has an `eth0` (a veth whose other end,
`lab-hN-o`, sits on the lab bridge) enslaved to a `br0`, which carries the
host address, exactly like a real hypervisor's management bridge: the engine
VM's tap joins `br0` and is reachable from every other namespace.
"""
from __future__ import annotations

import logging
import os
import subprocess

from .layout import BRIDGE, BRIDGE_ADDRESS, HostLayout, LabError

log = logging.getLogger("keel_lab.net")


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    cp = subprocess.run(cmd, capture_output=True, text=True)
    if check and cp.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {cp.stderr.strip() or cp.returncode}")
    return cp


def link_exists(name: str, netns: str | None = None) -> bool:
    return _ip("link", "show", name, netns=netns, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def check_subnet_free() -> None:
    """Never put an address in a range the machine already uses."""
    out = _ip("-4", "-o", "addr", "show").stdout
    for line in out.splitlines():
        fields = line.split()
        dev, addr = fields[1], fields[3]
        if addr.startswith("198.51.100.") and dev != BRIDGE:
            raise LabError(f"198.51.100.0/24 is already in use on {dev} ({addr}); "
                           "the lab needs that range for itself")


def ensure_bridge() -> None:
    if not link_exists(BRIDGE):
        check_subnet_free()
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        log.info("created lab bridge %s (%s/24)", BRIDGE, BRIDGE_ADDRESS)
    _ip("link", "set", BRIDGE, "up")


def ensure_host_netns(host: HostLayout) -> None:
    """Create (or complete) the host's namespace; idempotent."""
    ns = host.netns
    if not netns_exists(ns):
        _ip("netns", "add", ns)
        log.info("created network namespace %s for %s", ns, host.name)
    if not link_exists(host.outer_veth):
        # A half-made pair from a crashed run would block the name.
        _ip("link", "del", "eth0", netns=ns, check=False)
        _ip("link", "add", host.outer_veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", host.outer_veth, "master", BRIDGE)
    _ip("link", "set", host.outer_veth, "up")
    _ip("link", "set", "lo", "up", netns=ns)
    if not link_exists("br0", netns=ns):
        _ip("link", "add", "br0", "type", "bridge", netns=ns)
        # No STP delay: the engine VM's tap must forward as soon as it joins.
        _ip("link", "set", "br0", "type", "bridge", "forward_delay", "0", netns=ns)
    _ip("link", "set", "eth0", "master", "br0", netns=ns)
    _ip("link", "set", "eth0", "up", netns=ns)
    addrs = _ip("-4", "-o", "addr", "show", "dev", "br0", netns=ns).stdout
    if f"{host.address}/24" not in addrs:
        _ip("addr", "add", f"{host.address}/24", "dev", "br0", netns=ns)
    _ip("link", "set", "br0", "up", netns=ns)
    routes = _ip("route", "show", "default", netns=ns).stdout
    if not routes.strip():
        _ip("route", "add", "default", "via", BRIDGE_ADDRESS, netns=ns)


def set_partitioned(host: HostLayout, cut: bool) -> None:
    """Cut (or restore) the host's only network link: its veth on the lab
    bridge, as if its switch port died. The host keeps running."""
    _ip("link", "set", host.outer_veth, "down" if cut else "up")
    log.info("%s network %s", host.name, "cut" if cut else "restored")


def is_partitioned(host: HostLayout) -> bool:
    cp = _ip("-o", "link", "show", host.outer_veth, check=False)
    return cp.returncode == 0 and "state DOWN" in cp.stdout and ",UP" not in cp.stdout.split(">")[0]


def remove_netns(name: str) -> None:
    if netns_exists(name):
        _ip("netns", "del", name, check=False)
        log.info("removed network namespace %s", name)


def remove_link(name: str) -> None:
    if link_exists(name):
        _ip("link", "del", name, check=False)
        log.info("removed link %s", name)


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None
