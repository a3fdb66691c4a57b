"""Everything the engine says to libvirt: connections with deadlines,
host facts, storage pools and qcow2 volumes, and domain XML built from the
database (VMs run as transient domains: the database is the truth)."""
import logging
import threading
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import libvirt

log = logging.getLogger("keel.engine.virt")
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

STATE = {
    libvirt.VIR_DOMAIN_RUNNING: "up",
    libvirt.VIR_DOMAIN_BLOCKED: "up",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "powering_down",
    libvirt.VIR_DOMAIN_SHUTOFF: "down",
    libvirt.VIR_DOMAIN_CRASHED: "down",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


class VirtError(Exception):
    pass


def with_deadline(fn, timeout, what):
    """Run a libvirt call in a helper thread; a host that does not answer
    (dropped packets, hung daemon) must not hang the caller."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except Exception as e:  # handed to the caller below
            result["error"] = e

    t = threading.Thread(target=run, daemon=True, name=f"libvirt:{what}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise VirtError(f"{what}: no answer within {timeout:.0f} s")
    if "error" in result:
        e = result["error"]
        if isinstance(e, libvirt.libvirtError):
            raise VirtError(f"{what}: {e.get_error_message()}")
        raise e
    return result.get("value")


def connect(uri, timeout):
    return with_deadline(lambda: libvirt.open(uri), timeout, f"connect {uri}")


def host_facts(conn):
    caps = ET.fromstring(conn.getCapabilities())
    info = conn.getInfo()   # [arch, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    return {
        "hostname": conn.getHostname(),
        "cpu_model": caps.findtext("host/cpu/model") or info[0],
        "cpus": info[2],
        "memory_total": info[1] * 1024 * 1024,
        "memory_free": conn.getFreeMemory(),
        "hvm": any(g.findtext("os_type") == "hvm" for g in caps.findall("guest")),
    }


def domains(conn):
    """{uuid: state} of every domain this host runs."""
    out = {}
    for dom in conn.listAllDomains():
        try:
            state = dom.state()[0]
        except libvirt.libvirtError:
            continue   # vanished while we looked
        out[dom.UUIDString()] = STATE.get(state, "unknown")
    return out


def pool_name(sd):
    return f"keel-{sd.id}"


def ensure_pool(conn, sd):
    """The storage domain as a (transient) dir pool on this host."""
    try:
        pool = conn.storagePoolLookupByName(pool_name(sd))
        if not pool.isActive():
            pool.create()
    except libvirt.libvirtError:
        xml = (f"<pool type='dir'><name>{pool_name(sd)}</name>"
               f"<target><path>{escape(sd.path)}</path></target></pool>")
        try:
            pool = conn.storagePoolCreateXML(xml, 0)
        except libvirt.libvirtError as e:
            raise VirtError(f"storage domain {sd.name}: cannot open {sd.path} on the host: "
                            f"{e.get_error_message()}")
    pool.refresh(0)
    return pool


def create_volume(pool, name, size, backing_path=None):
    backing = ""
    if backing_path:
        backing = (f"<backingStore><path>{escape(backing_path)}</path>"
                   "<format type='qcow2'/></backingStore>")
    xml = (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
           f"<target><format type='qcow2'/></target>{backing}</volume>")
    return pool.createXML(xml, 0)


def clone_volume(pool, source_name, new_name):
    """A full, flattened copy (templates are independent of the VM they came from)."""
    src = pool.storageVolLookupByName(source_name)
    xml = (f"<volume><name>{escape(new_name)}</name><capacity unit='bytes'>{src.info()[1]}</capacity>"
           "<target><format type='qcow2'/></target></volume>")
    return pool.createXMLFrom(xml, src, 0)


def delete_volume(pool, name):
    try:
        pool.storageVolLookupByName(name).delete(0)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise


def domain_xml(vm, disks, nics, bridge_for, lease=None):
    """disks: [(path, interface, bootable)], nics: [(mac, model, network name or None)];
    lease: (lockspace, key, path, offset) of a sanlock lease the domain holds while it
    runs (libvirt's sanlock lock driver acquires it before qemu starts) or None."""
    parts = [
        "<domain type='qemu'>",
        f"<name>{escape(vm.name)}</name><uuid>{vm.id}</uuid>",
        f"<description>{escape(vm.description or '')}</description>",
        f"<memory unit='b'>{vm.memory}</memory>",
        f"<vcpu>{vm.cpus}</vcpu>",
        "<os><type arch='x86_64' machine='pc'>hvm</type>",
        "<boot dev='hd'/>" if any(d[2] for d in disks) else "<boot dev='network'/>",
        "</os><features><acpi/><apic/></features>",
        "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>",
        "<devices>",
    ]
    buses = {"virtio": ("vd", "virtio"), "virtio_scsi": ("sd", "scsi"), "ide": ("hd", "ide"), "sata": ("sd", "sata")}
    counters = {}
    for path, interface, _bootable in disks:
        prefix, bus = buses.get(interface, ("vd", "virtio"))
        n = counters.get(prefix, 0)
        counters[prefix] = n + 1
        parts.append(
            "<disk type='file' device='disk'>"
            "<driver name='qemu' type='qcow2' cache='none'/>"
            f"<source file={quoteattr(path)}/><target dev='{prefix}{chr(97 + n)}' bus='{bus}'/></disk>")
    if counters.get("sd"):
        parts.append("<controller type='scsi' model='virtio-scsi'/>")
    for mac, model, network in nics:
        bridge = bridge_for(network) if network else None
        if bridge:
            parts.append(f"<interface type='bridge'><source bridge={quoteattr(bridge)}/>"
                         f"<mac address='{mac}'/><model type='{model}'/></interface>")
        else:
            parts.append(f"<interface type='user'><mac address='{mac}'/><model type='{model}'/></interface>")
    if lease is not None:
        lockspace, key, path, offset = lease
        parts.append(f"<lease><lockspace>{escape(lockspace)}</lockspace><key>{escape(key)}</key>"
                     f"<target path={quoteattr(path)} offset='{int(offset)}'/></lease>")
    parts.append("<serial type='pty'/><console type='pty'/>"
                 "<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>"
                 "<memballoon model='none'/></devices></domain>")
    return "".join(parts)
