"""oVirt's shapes of what a guest agent reported (the VM's guest_* columns,
services/guest_info.py): a VM's `fqdn`, `guest_operating_system` and
`guest_time_zone`, and its reported devices, one `reported_device` of type
network per guest interface. Pure, like views.py (which uses these)."""
from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid

from ..representation import Many

X86 = {"i386", "i486", "i586", "i686"}


def version(text: str | None) -> dict | None:
    """oVirt's Version of a version string: full_version as given, and its
    leading numbers as major, minor, build and revision ("6.1.0-18-amd64":
    6, 1, 0, 18), as oVirt reads a guest's kernel and OS versions."""
    if not text:
        return None
    out = {"full_version": text}
    for key, part in zip(("major", "minor", "build", "revision"), re.split(r"[.-]", text)):
        if not part.isdigit() or len(part) > 9:
            break
        out[key] = int(part)
    return out


def guest_operating_system(os: dict | None) -> dict | None:
    if not os or not any(k != "timezone" for k in os):
        return None
    machine = os.get("machine")
    # a release's code name, where os-release gives one: VERSION="7.3 (Maipo)", "12 (bookworm)"
    named = re.search(r"\(([^()]+)\)\s*$", os.get("version", ""))
    kernel = version(os.get("kernel_release"))
    return {"architecture": "x86" if machine in X86 else machine,
            "codename": named.group(1) if named else os.get("variant"),
            "distribution": os.get("name") or os.get("pretty_name") or os.get("id"),
            "family": "Windows" if os.get("id") == "mswindows" else "Linux",
            "kernel": {"version": kernel} if kernel else None,
            "version": version(os.get("version_id"))}


def guest_time_zone(os: dict | None) -> dict | None:
    tz = (os or {}).get("timezone")
    if not tz:
        return None
    offset = tz.get("offset")
    utc_offset = None
    if offset is not None:
        minutes = abs(offset) // 60
        utc_offset = f"{'-' if offset < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"
    return {"name": tz.get("name") or None, "utc_offset": utc_offset}


def vm_fields(v) -> dict:
    """What a VM shows of its guest agent's report (nothing before one)."""
    return {"fqdn": v.guest_fqdn or None, "guest_operating_system": guest_operating_system(v.guest_os),
            "guest_time_zone": guest_time_zone(v.guest_os)}


def device_id(name: str, mac: str) -> str:
    """A stable id of a reported interface (its name and MAC address), so a
    device keeps its id from one report to the next."""
    return str(uuid.UUID(bytes=hashlib.md5(f"{name}{mac}".encode()).digest(), version=3))


def _ip(a: dict) -> dict:
    out = {"address": a["address"], "version": a["version"]}
    prefix = a.get("prefix")
    if prefix is not None:
        out["netmask"] = (str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)
                          if a["version"] == "v4" and prefix <= 32 else str(prefix))
    return out


def reported_devices(vm_id: str, vm_href: str, interfaces: list | None, base: str | None = None,
                     mac: str | None = None) -> list:
    """The VM's guest interfaces as oVirt's reported devices (those with
    MAC address `mac` only, when given: a NIC's), their hrefs under `base`
    (default: the VM's reporteddevices)."""
    base = base or f"{vm_href}/reporteddevices"
    out = []
    for iface in interfaces or []:
        if mac is not None and iface.get("mac") != mac.lower():
            continue
        ident = device_id(iface.get("name", ""), iface.get("mac", ""))
        out.append({"id": ident, "href": f"{base}/{ident}", "name": iface.get("name") or None,
                    "description": "guest reported data", "type": "network",
                    "mac": {"address": iface["mac"]} if iface.get("mac") else None,
                    "ips": Many("ip", [_ip(a) for a in iface["ips"]]) if iface.get("ips") else None,
                    "vm": {"id": vm_id, "href": vm_href}})
    return out
