"""The engine VM's libvirt domain XML, built from the host configuration.

The `<lease>` element makes libvirt's sanlock lock driver acquire the
engine lease for the qemu process itself: the lease lives exactly as long
as the VM, and a second host's start is refused by sanlock."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from keel_common.config import HostConfig


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def engine_domain_xml(cfg: HostConfig) -> str:
    vm, st = cfg.engine, cfg.storage
    dom = ET.Element("domain", type=vm.domain_type)
    _sub(dom, "name", vm.name)
    _sub(dom, "uuid", vm.uuid)
    _sub(dom, "memory", vm.memory_mb, unit="MiB")
    _sub(dom, "vcpu", vm.vcpus)
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if vm.kernel:
        _sub(os_el, "kernel", vm.kernel)
    if vm.initrd:
        _sub(os_el, "initrd", vm.initrd)
    if vm.cmdline:
        _sub(os_el, "cmdline", vm.cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")  # graceful stop is an ACPI power-button press
    # The agent decides restarts, never libvirt.
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _sub(dom, event, "destroy")
    dev = _sub(dom, "devices")
    if vm.emulator:
        _sub(dev, "emulator", vm.emulator)
    disk = _sub(dev, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=vm.disk_format)
    _sub(disk, "source", file=vm.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    lease = _sub(dev, "lease")
    _sub(lease, "lockspace", st.lockspace)
    _sub(lease, "key", st.lease_name)
    _sub(lease, "target", path=st.lease_path, offset=0)
    nic = _sub(dev, "interface", type="bridge")
    _sub(nic, "source", bridge=vm.bridge)
    _sub(nic, "mac", address=vm.mac)
    _sub(nic, "model", type="virtio")
    if vm.console_log:
        serial = _sub(dev, "serial", type="file")
        _sub(serial, "source", path=vm.console_log, append="on")
        _sub(serial, "target", port=0)
    return ET.tostring(dom, encoding="unicode")
