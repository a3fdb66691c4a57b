"""Everything the engine says to libvirt: connections with deadlines, host
facts, storage pools and qcow2 volumes, and the domain description of a VM
(VMs run as transient domains: the database is the truth).

Only the engine worker talks to libvirt; a web worker that tried would be a
bug, so `forbid()` (called when gunicorn loads the app) makes it fail loudly."""
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import libvirt

from keel_common import libvirt_states

log = logging.getLogger("keel.engine.virt")
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
_forbidden: str | None = None


class VirtError(Exception):
    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code   # libvirt's error code (VIR_ERR_*), when libvirt said it


def forbid(reason: str) -> None:
    """No libvirt in this process from now on (the web workers)."""
    global _forbidden
    _forbidden = reason


def with_deadline(fn, timeout, what):
    """Run a libvirt call in a helper thread; a host that does not answer
    (dropped packets, hung daemon) must not hang the caller."""
    if _forbidden:
        raise RuntimeError(f"libvirt call '{what}' in a process that must not make any: {_forbidden}")
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
            raise VirtError(f"{what}: {e.get_error_message()}", e.get_error_code())
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
    """{uuid: oVirt VM status} of every domain this host runs."""
    out = {}
    for dom in conn.listAllDomains():
        try:
            state = dom.state()[0]
        except libvirt.libvirtError:
            continue   # vanished while we looked
        out[dom.UUIDString()] = libvirt_states.vm_status(state)
    return out


def pool_name(sd):
    return f"keel-{sd.id}"


def _drop_stale_pools(conn, sd):
    """Keel's pools are transient and named after their storage domain; one on
    the same directory under another name belongs to a storage domain removed
    since (a path is one storage domain's at a time), and libvirt would refuse
    the new pool beside it. Destroying a transient pool leaves its files."""
    for pool in conn.listAllStoragePools(0):
        try:
            name = pool.name()
            if not name.startswith("keel-") or name == pool_name(sd):
                continue
            target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
            if target is None or os.path.normpath(target) != os.path.normpath(sd.path):
                continue
            log.info("storage domain %s: dropping pool %s left on %s by a removed storage domain",
                     sd.name, name, sd.path)
            if pool.isActive():
                pool.destroy()
            if pool.isPersistent():
                pool.undefine()
        except libvirt.libvirtError as e:
            log.warning("storage domain %s: could not drop stale pool: %s", sd.name, e.get_error_message())


def ensure_pool(conn, sd):
    """The storage domain as a (transient) dir pool on this host."""
    try:
        pool = conn.storagePoolLookupByName(pool_name(sd))
        if not pool.isActive():
            pool.create()
    except libvirt.libvirtError:
        _drop_stale_pools(conn, sd)
        xml = (f"<pool type='dir'><name>{pool_name(sd)}</name>"
               f"<target><path>{escape(sd.path)}</path></target></pool>")
        try:
            pool = conn.storagePoolCreateXML(xml, 0)
        except libvirt.libvirtError as e:
            raise VirtError(f"storage domain {sd.name}: cannot open {sd.path} on the host: "
                            f"{e.get_error_message()}", e.get_error_code())
    # a refresh is refused while the pool has an asynchronous job (a volume being
    # made by another of the worker's jobs): wait a little for it
    for attempt in range(20):
        try:
            pool.refresh(0)
            return pool
        except libvirt.libvirtError as e:
            if attempt == 19:
                raise VirtError(f"storage domain {sd.name}: cannot refresh its pool: {e.get_error_message()}",
                                e.get_error_code())
            time.sleep(0.5)


def _volume_xml(name, size, backing_path=None, fmt="qcow2"):
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(int(size))
    if fmt == "raw":
        # sparse: otherwise libvirt fills a raw file with zeros first, which
        # fails on NFS mounts ("cannot fill file"); the upload writes it all anyway
        ET.SubElement(vol, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(vol, "target"), "format", type=fmt)
    if backing_path:
        bs = ET.SubElement(vol, "backingStore")
        ET.SubElement(bs, "path").text = backing_path
        ET.SubElement(bs, "format", type="qcow2")
    return ET.tostring(vol, encoding="unicode")


def create_volume(pool, name, size, backing_path=None):
    return pool.createXML(_volume_xml(name, size, backing_path), 0)


def clone_volume(pool, source_name, new_name):
    """A full, flattened copy (templates are independent of the VM they came from)."""
    src = pool.storageVolLookupByName(source_name)
    return pool.createXMLFrom(_volume_xml(new_name, src.info()[1]), src, 0)


def iso_volumes(conn, sd) -> list[tuple[str, int]]:
    """(file name, size in bytes) of the `*.iso` files in a storage domain's
    directory, as its pool lists them after a refresh (so a file copied there
    a moment ago is seen); libvirt's own calls, to be run under a deadline."""
    found = []
    for vol in ensure_pool(conn, sd).listAllVolumes(0):
        name = vol.name()
        if not name.lower().endswith(".iso"):
            continue
        try:
            kind, capacity, _allocation = vol.info()
        except libvirt.libvirtError:
            continue   # deleted while the list was read
        if kind == libvirt.VIR_STORAGE_VOL_FILE:
            found.append((name, capacity))
    return sorted(found)


def upload_volume(pool, name, data: bytes, timeout):
    """A new raw volume holding `data` (a small file: a cloud-init seed),
    written through a libvirt stream of the pool's host: the engine need not
    see the storage itself. On failure no half-written volume stays."""
    def work():
        vol = pool.createXML(_volume_xml(name, len(data), fmt="raw"), 0)
        stream = pool.connect().newStream(0)
        try:
            vol.upload(stream, 0, len(data), 0)
            sent = 0
            while sent < len(data):
                n = stream.send(data[sent:sent + 2 ** 18])
                if n <= 0:
                    raise VirtError(f"upload volume {name}: the host took no data")
                sent += n
            stream.finish()
        except Exception:
            for undo in (stream.abort, lambda: vol.delete(0)):
                try:
                    undo()
                except libvirt.libvirtError:
                    pass
            raise
    with_deadline(work, timeout, f"upload volume {name}")


def delete_volume(pool, name):
    try:
        pool.storageVolLookupByName(name).delete(0)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise


def grow_volume(pool, name, size, timeout):
    """A volume's virtual size, larger, through its pool (qemu-img resize for
    qcow2): for a disk no running qemu has open."""
    with_deadline(lambda: pool.storageVolLookupByName(name).resize(int(size), 0), timeout, f"resize volume {name}")


def grow_domain_disk(dom, path, size, timeout):
    """A running domain's disk, larger, through its qemu: the guest sees the
    new size at once (a volume's resize behind qemu's back it would not)."""
    with_deadline(lambda: dom.blockResize(path, int(size), libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES), timeout,
                  f"resize disk {path}")


def snapshot_xml(pivots):
    """An external, disk-only snapshot: each (current path, new overlay path)."""
    snap = ET.Element("domainsnapshot")
    disks = ET.SubElement(snap, "disks")
    for current, new in pivots:
        d = ET.SubElement(disks, "disk", name=current, snapshot="external")
        ET.SubElement(d, "driver", type="qcow2")
        ET.SubElement(d, "source", file=new)
    return ET.tostring(snap, encoding="unicode")


def is_error(exc, *codes) -> bool:
    return isinstance(exc, VirtError) and exc.code in codes
