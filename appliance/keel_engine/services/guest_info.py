"""What a VM's guest agent (qemu-guest-agent) reports, as the engine keeps it.

libvirt answers for the agent: `virDomainGetGuestInfo` gives its host name,
operating system, time zone and network interfaces as flat typed parameters
("os.id", "if.0.addr.1.addr", ...); a host whose libvirt cannot list
interfaces there gives them through `virDomainInterfaceAddresses` instead.
This module turns either answer into the VM's guest_* columns, and reads the
agent's channel state from a domain's XML. Pure: no libvirt, no database.

Everything here comes from inside a guest, whoever runs it: strings are cut
to a sane length and cleaned of what XML cannot carry, addresses must parse,
and the lists are bounded, so a hostile guest can make its own VM's report
wrong but never an answer of the API malformed or huge."""
from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from keel_common.domainxml import GUEST_AGENT_CHANNEL

from ..text import clean

MAX_TEXT = 255
MAX_INTERFACES = 32
MAX_ADDRESSES = 32
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# guest-get-osinfo's fields (libvirt's "os.<key>") and the names they are kept under
OS_FIELDS = {"id": "id", "name": "name", "pretty-name": "pretty_name", "version": "version",
             "version-id": "version_id", "variant": "variant", "variant-id": "variant_id",
             "kernel-release": "kernel_release", "kernel-version": "kernel_version", "machine": "machine"}
# libvirt's address types: "ipv4"/"ipv6" in guest info, VIR_IP_ADDR_TYPE_IPV4/6 (0/1) in interfaceAddresses
VERSIONS = {"ipv4": "v4", "ipv6": "v6", 0: "v4", 1: "v6"}


@dataclass(frozen=True)
class GuestReport:
    """One answer of a guest agent, as the VM's columns keep it."""
    fqdn: str                  # guest_fqdn ("" the agent gave no host name)
    os: dict | None            # guest_os: OS_FIELDS' values, and "timezone": {"name", "offset" (s east of UTC)}
    interfaces: list           # guest_interfaces: [{"name", "mac", "ips": [{"address", "prefix", "version"}]}]


def _text(value) -> str:
    return clean(str(value))[:MAX_TEXT].strip() if value is not None else ""


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _os(params: dict) -> dict | None:
    out = {ours: _text(params[f"os.{key}"]) for key, ours in OS_FIELDS.items() if params.get(f"os.{key}")}
    zone, offset = _text(params.get("timezone.name")), _int(params.get("timezone.offset"))
    if zone or offset is not None:
        # a time zone is the guest OS's own setting: it is kept with the OS, not in a column of its own
        out["timezone"] = {"name": zone, "offset": offset if offset is not None and abs(offset) < 86400 else None}
    return out or None


def _address(addr, prefix, kind) -> dict | None:
    version = VERSIONS.get(kind)
    try:
        ip = ipaddress.ip_address(str(addr).split("%", 1)[0])   # an IPv6 link-local's %zone is the guest's business
    except ValueError:
        return None
    if version is None:
        version = f"v{ip.version}"
    prefix = _int(prefix)
    return {"address": str(ip), "prefix": prefix if prefix is not None and 0 <= prefix <= 128 else None,
            "version": version}


def _interface(name, hwaddr, addresses) -> dict | None:
    """One guest interface; None for the loopback, which is no device of the
    VM, and for one without a name (a count larger than what follows)."""
    mac = _text(hwaddr).lower()
    name = _text(name)
    if not name or name == "lo" or mac == "00:00:00:00:00:00":
        return None
    ips = [a for a in (_address(*x) for x in addresses[:MAX_ADDRESSES]) if a is not None]
    return {"name": name, "mac": mac if MAC.match(mac) else "", "ips": ips}


def interfaces_from_guest_info(params: dict) -> list:
    out = []
    for i in range(min(_int(params.get("if.count")) or 0, MAX_INTERFACES)):
        p = f"if.{i}."
        n = min(_int(params.get(p + "addr.count")) or 0, MAX_ADDRESSES)
        found = _interface(params.get(p + "name"), params.get(p + "hwaddr"), [
            (params.get(f"{p}addr.{j}.addr"), params.get(f"{p}addr.{j}.prefix"), params.get(f"{p}addr.{j}.type"))
            for j in range(n)])
        if found is not None:
            out.append(found)
    return out


def interfaces_from_addresses(found: dict) -> list:
    """virDomainInterfaceAddresses(VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)'s answer."""
    out = []
    for name, iface in sorted((found or {}).items())[:MAX_INTERFACES]:
        addrs = [(a.get("addr"), a.get("prefix"), a.get("type")) for a in (iface or {}).get("addrs") or []]
        one = _interface(name, (iface or {}).get("hwaddr"), addrs)
        if one is not None:
            out.append(one)
    return out


def report(params: dict, addresses: dict | None = None) -> GuestReport:
    """virDomainGetGuestInfo's answer (and interfaceAddresses' when the guest
    info could not list interfaces) as the VM's columns."""
    interfaces = interfaces_from_addresses(addresses) if addresses is not None else interfaces_from_guest_info(params)
    return GuestReport(fqdn=_text(params.get("hostname")), os=_os(params), interfaces=interfaces)


def agent_connected(domain_xml: str) -> bool | None:
    """Whether the guest has the agent's channel open (libvirt's channel
    state), from a running domain's XML; None when libvirt does not say.
    Reading it costs nothing and logs nothing on the host, where asking an
    agent that is not there is an error libvirtd writes to its log."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None
    for target in root.iterfind("devices/channel/target"):
        if target.get("name") == GUEST_AGENT_CHANNEL:
            state = target.get("state")
            return None if state is None else state == "connected"
    return False
