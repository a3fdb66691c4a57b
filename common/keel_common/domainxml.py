"""The one builder of libvirt domain XML (ElementTree, so every value is
escaped): the HA agent's engine VM and the engine's VMs are both described
as a `Domain` and written by `domain_xml`."""
from __future__ import annotations

import ipaddress
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone

# oVirt's disk interfaces -> (device name prefix, libvirt bus)
BUSES = {"virtio": ("vd", "virtio"), "virtio_scsi": ("sd", "scsi"), "ide": ("hd", "ide"),
         "sata": ("sd", "sata")}


@dataclass(frozen=True)
class Disk:
    path: str | None                   # None: a CD-ROM drive with no medium
    format: str = "qcow2"              # qcow2 or raw
    interface: str = "virtio"          # a key of BUSES
    device: str = "disk"               # disk or cdrom
    readonly: bool = False
    cache: str = "none"
    # a medium that may be gone when the domain starts (an ISO image deleted
    # from the storage domain): the drive starts empty instead of the start failing
    optional: bool = False


@dataclass(frozen=True)
class Nic:
    mac: str
    model: str = "virtio"
    bridge: str | None = None          # None: qemu's user-mode network


@dataclass(frozen=True)
class Lease:
    """A sanlock resource lease libvirt's lock driver acquires before qemu
    starts and holds for qemu's lifetime."""
    lockspace: str
    key: str
    path: str
    offset: int = 0


@dataclass(frozen=True)
class Vnc:
    """A VNC display: on one address of its host (never every address), always
    behind a password. Without `valid_to` the password never expires: give one
    nobody knows (a VM's display at start), so no one connects before a ticket."""
    listen: str                        # an IP address of the host, not 0.0.0.0 or ::
    password: str                      # 8 characters: VNC's DES key, all libvirt allows
    valid_to: datetime | None = None   # the password's end (a console ticket's)


VNC_PASSWORD_LENGTH = 8


def new_password() -> str:
    """A display password: 8 random URL-safe characters (48 bits), as long as
    a VNC password can be."""
    return secrets.token_urlsafe(6)


def listen_address(value: str) -> str:
    """`value` if a display may listen on it: one IP address. A host name is
    refused (what it resolves to may change under a running VM), and so is the
    unspecified address (a display on every network of the host)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"a display listens on an IP address, not {value!r}") from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"a display listens on one address of its host, not on {value}")
    return str(ip)


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    memory_bytes: int
    vcpus: int = 1
    type: str = "qemu"                 # qemu (TCG) or kvm
    description: str = ""
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    lease: Lease | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    emulator: str | None = None
    boot: str | None = None            # hd or network; None: libvirt's default
    # what libvirt does on its own when the guest powers off, reboots, crashes
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    serial_log: str | None = None      # a file the serial console is also logged to
    vnc: Vnc | None = None             # None: no graphics
    rng: bool = False                  # virtio-rng fed from the host's /dev/urandom
    guest_agent: bool = False          # a virtio-serial channel for qemu-guest-agent
    extra_devices: tuple = field(default=())   # ET.Element factories for devices not modelled here


def _sub(parent: ET.Element, tag: str, text=None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = str(text)
    return el


def domain_xml(d: Domain) -> str:
    dom = ET.Element("domain", type=d.type)
    _sub(dom, "name", d.name)
    _sub(dom, "uuid", d.uuid)
    if d.description:
        _sub(dom, "description", d.description)
    _sub(dom, "memory", d.memory_bytes, unit="b")
    _sub(dom, "vcpu", d.vcpus)
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    for tag in ("kernel", "initrd", "cmdline"):
        if getattr(d, tag):
            _sub(os_el, tag, getattr(d, tag))
    if d.boot:
        _sub(os_el, "boot", dev=d.boot)
    features = _sub(dom, "features")
    _sub(features, "acpi")    # a graceful stop is an ACPI power-button press
    _sub(features, "apic")
    _sub(dom, "on_poweroff", d.on_poweroff)
    _sub(dom, "on_reboot", d.on_reboot)
    _sub(dom, "on_crash", d.on_crash)
    dev = _sub(dom, "devices")
    if d.emulator:
        _sub(dev, "emulator", d.emulator)
    counters: dict[str, int] = {}
    for disk in d.disks:
        prefix, _bus = BUSES.get(disk.interface, BUSES["virtio"])
        n = counters.get(prefix, 0)
        counters[prefix] = n + 1
        dev.append(disk_element(disk, target_name(disk.interface, n)))
    if counters.get("sd") and any(BUSES.get(x.interface, ("", ""))[1] == "scsi" for x in d.disks):
        _sub(dev, "controller", type="scsi", model="virtio-scsi")
    for nic in d.nics:
        dev.append(nic_element(nic))
    if d.lease is not None:
        el = _sub(dev, "lease")
        _sub(el, "lockspace", d.lease.lockspace)
        _sub(el, "key", d.lease.key)
        _sub(el, "target", path=d.lease.path, offset=int(d.lease.offset))
    # a pty, so `virsh console` (hosted-engine --console) attaches to it; with
    # serial_log, everything the guest writes is also appended to that file
    el = _sub(dev, "serial", type="pty")
    _sub(el, "target", port=0)
    if d.serial_log:
        _sub(el, "log", file=d.serial_log, append="on")
    el = _sub(dev, "console", type="pty")
    _sub(el, "target", type="serial", port=0)
    if d.vnc is not None:
        dev.append(_graphics(d.vnc))
    if d.guest_agent:
        # libvirt picks the socket's path and connects to the agent itself
        el = _sub(dev, "channel", type="unix")
        _sub(el, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    if d.rng:
        el = _sub(dev, "rng", model="virtio")
        _sub(el, "backend", "/dev/urandom", model="random")
    for make in d.extra_devices:
        dev.append(make())
    _sub(dev, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def target_name(interface: str, index: int) -> str:
    """The guest-side device name of the `index`-th disk (from 0) on that
    interface's bus: vda, vdb, ... sda, ... hdc, ..."""
    prefix = BUSES.get(interface, BUSES["virtio"])[0]
    return f"{prefix}{chr(97 + index)}"


def disk_element(disk: Disk, target: str) -> ET.Element:
    """One <disk>: in a whole domain, or alone for attachDeviceFlags /
    updateDeviceFlags (hot-plug, changing a CD)."""
    _prefix, bus = BUSES.get(disk.interface, BUSES["virtio"])
    el = ET.Element("disk", type="file", device=disk.device)
    if disk.device == "cdrom":
        _sub(el, "driver", name="qemu", type="raw")
    else:
        _sub(el, "driver", name="qemu", type=disk.format, cache=disk.cache)
    if disk.path is not None:
        _sub(el, "source", file=disk.path, startupPolicy="optional" if disk.optional else None)
    _sub(el, "target", dev=target, bus=bus)
    if disk.readonly or disk.device == "cdrom":
        _sub(el, "readonly")
    return el


def nic_element(nic: Nic) -> ET.Element:
    el = ET.Element("interface", type="bridge" if nic.bridge else "user")
    if nic.bridge:
        _sub(el, "source", bridge=nic.bridge)
    _sub(el, "mac", address=nic.mac.lower())
    _sub(el, "model", type=nic.model)
    return el


def device_xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def _graphics(vnc: Vnc) -> ET.Element:
    password = vnc.password or ""
    if len(password) != VNC_PASSWORD_LENGTH or any(not 32 < ord(c) < 127 for c in password):
        raise ValueError(f"a display's password is {VNC_PASSWORD_LENGTH} printable ASCII characters")
    valid_to = None
    if vnc.valid_to is not None:
        if vnc.valid_to.tzinfo is None:
            raise ValueError("a display password's end is an aware datetime")
        # libvirt reads it as UTC, without a zone
        valid_to = vnc.valid_to.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    el = ET.Element("graphics", {"type": "vnc", "autoport": "yes", "passwd": password})
    if valid_to:
        el.set("passwdValidTo", valid_to)
    _sub(el, "listen", type="address", address=listen_address(vnc.listen))
    return el


def graphics_xml(vnc: Vnc) -> str:
    """The <graphics> element alone: what updateDeviceFlags takes to set a
    running display's password (a console ticket). Its listen address must be
    the one the display has: libvirt refuses to move it."""
    return ET.tostring(_graphics(vnc), encoding="unicode")


def vnc_display(xml: str) -> tuple[str | None, int | None]:
    """(listen address, port) of the VNC display in a running domain's XML;
    (None, None) without one, port None while it has none yet."""
    g = ET.fromstring(xml).find("devices/graphics[@type='vnc']")
    if g is None:
        return None, None
    listen = g.find("listen[@type='address']")
    address = listen.get("address") if listen is not None else g.get("listen")
    port = int(g.get("port", "-1"))
    return address, port if port > 0 else None


def with_vnc_listen(xml: str, address: str) -> str:
    """A domain's XML (what a migration's destination runs) with its VNC
    display on `address`: a display stays on its own host's address."""
    dom = ET.fromstring(xml)
    for g in dom.findall("devices/graphics[@type='vnc']"):
        # both spellings libvirt writes, which it requires to agree
        if g.get("listen") is not None:
            g.set("listen", listen_address(address))
        for listen in g.findall("listen"):
            g.remove(listen)
        _sub(g, "listen", type="address", address=listen_address(address))
    return ET.tostring(dom, encoding="unicode")


# ---- a running domain's devices, as its live XML says (hot-plug) ----------------------
def disk_targets(xml: str) -> set[str]:
    """The guest-side names its disks (and CD-ROM drives) have: vda, sdb, hdc, ..."""
    return {t.get("dev") for t in ET.fromstring(xml).findall("devices/disk/target")}


def free_target(xml: str, interface: str) -> str:
    """The first name on `interface`'s bus that none of the domain's disks has:
    what a disk plugged in now is called (its place at the next start may differ)."""
    taken = disk_targets(xml)
    for index in range(26):
        name = target_name(interface, index)
        if name not in taken:
            return name
    raise ValueError(f"every device name on the {BUSES.get(interface, BUSES['virtio'])[1]} bus is taken")


def find_interface(xml: str, mac: str) -> ET.Element | None:
    """The domain's <interface> with that MAC address, or None."""
    for el in ET.fromstring(xml).findall("devices/interface"):
        m = el.find("mac")
        if m is not None and (m.get("address") or "").lower() == mac.lower():
            return el
    return None


def find_disk(xml: str, path: str) -> ET.Element | None:
    """The domain's <disk> whose source is the file at `path`, or None."""
    for el in ET.fromstring(xml).findall("devices/disk"):
        src = el.find("source")
        if src is not None and src.get("file") == path:
            return el
    return None


def cdrom_drives(xml: str) -> list[tuple[str, str, str | None]]:
    """(target, bus, medium's file or None when empty) of each CD-ROM drive
    of a domain, in the order of its XML."""
    out = []
    for el in ET.fromstring(xml).findall("devices/disk[@device='cdrom']"):
        target, src = el.find("target"), el.find("source")
        if target is not None:
            out.append((target.get("dev"), target.get("bus"), src.get("file") if src is not None else None))
    return out
