"""Data centers, clusters, networks and storage domains."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sqlalchemy import func, select

from keel_common import nfs
from keel_common.config import MANAGEMENT_NETWORK

from .. import virt
from ..errors import bad_request, conflict
from ..models import Cluster, DataCenter, Disk, Host, Network, Nic, StorageDomain, Template, Vm, VmPool
from . import access, events, jobs, lookup
from .lookup import Ref

log = logging.getLogger("keel.engine.inventory")
SCHEDULING_POLICIES = ("evenly_distributed", "none")
STORAGE_TYPES = ("posixfs", "localfs", "nfs")
# a storage domain is a directory of its own, never one the system lives in
SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
               "/run", "/sbin", "/sys", "/usr", "/var", "/tmp", "/home", "/srv", "/mnt", "/media", "/opt",
               "/var/lib", "/var/log", "/var/run", "/usr/local")


@dataclass(frozen=True)
class DataCenterSpec:
    name: str
    description: str = ""
    local: bool = False


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    data_center: Ref
    description: str = ""
    scheduling_policy: str = "evenly_distributed"


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    data_center: Ref
    description: str = ""
    vlan: int | None = None
    mtu: int = 0


@dataclass(frozen=True)
class StorageDomainSpec:
    name: str
    storage_type: str
    path: str                  # posixfs/localfs: the local directory; nfs: the export on the server
    address: str | None = None   # nfs: the server
    description: str = ""
    data_center: Ref | None = None
    host: Ref | None = None


@dataclass(frozen=True)
class StorageLocation:
    """Where a domain's files are: the local directory every host opens and,
    for nfs, the export mounted there."""
    path: str
    address: str | None = None
    export_path: str | None = None


# ---- data centers --------------------------------------------------------
def add_datacenter(ctx, s, spec: DataCenterSpec) -> DataCenter:
    access.check(ctx, s, "create_storage_pool", None)
    lookup.unique_name(s, DataCenter, spec.name, "data center")
    dc = DataCenter(name=spec.name, description=spec.description, local=spec.local)
    s.add(dc)
    s.flush()
    add_management_network(s, dc)
    events.add(s, events.OBJECT_ADDED, f"Data center {spec.name} was added.", data_center_id=dc.id,
               user_id=ctx.user_id)
    return dc




def add_management_network(s, dc) -> Network:
    """oVirt's management network, which every data center has from its start
    (with its vNIC profile: one per network, same id). Hosts' management
    bridges map to it through [libvirt] bridge_map (ovirtmgmt:BRIDGE)."""
    net = Network(name=MANAGEMENT_NETWORK, description="Management Network", data_center_id=dc.id)
    s.add(net)
    s.flush()
    return net


def update_datacenter(ctx, s, dc, name: str | None = None, description: str | None = None) -> DataCenter:
    access.check(ctx, s, "edit_storage_pool_configuration", dc)
    if name is not None:
        lookup.unique_name(s, DataCenter, name, "data center", exclude_id=dc.id)
        dc.name = name
    if description is not None:
        dc.description = description
    events.add(s, events.OBJECT_UPDATED, f"Data center {dc.name} was updated.", data_center_id=dc.id,
               user_id=ctx.user_id)
    return dc


def remove_datacenter(ctx, s, dc):
    access.check(ctx, s, "delete_storage_pool", dc)
    if s.scalar(select(func.count()).select_from(Cluster).where(Cluster.data_center_id == dc.id)):
        raise conflict(f"data center {dc.name} still has clusters; remove them first")
    if s.scalar(select(func.count()).select_from(StorageDomain).where(StorageDomain.data_center_id == dc.id)):
        raise conflict(f"data center {dc.name} still has storage domains attached")
    for net in s.scalars(select(Network).where(Network.data_center_id == dc.id)):
        s.delete(net)
    s.flush()       # the networks (ovirtmgmt at least) go before the data center they reference
    s.delete(dc)
    events.add(s, events.OBJECT_REMOVED, f"Data center {dc.name} was removed.", user_id=ctx.user_id)


# ---- clusters -------------------------------------------------------------
def add_cluster(ctx, s, spec: ClusterSpec) -> Cluster:
    dc = lookup.require(s, DataCenter, spec.data_center, "data center", "data_center")
    access.check_ref(ctx, s, "create_cluster", dc, "data_center", spec.data_center)
    lookup.unique_name(s, Cluster, spec.name, "cluster")
    if spec.scheduling_policy not in SCHEDULING_POLICIES:
        raise bad_request(f"scheduling_policy.name: expected one of {', '.join(SCHEDULING_POLICIES)}, "
                          f"got '{spec.scheduling_policy}'")
    cl = Cluster(name=spec.name, description=spec.description, data_center_id=dc.id,
                 scheduling_policy=spec.scheduling_policy)
    s.add(cl)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Cluster {spec.name} was added to data center {dc.name}.",
               cluster_id=cl.id, data_center_id=dc.id, user_id=ctx.user_id)
    return cl


def update_cluster(ctx, s, cl, name: str | None = None, description: str | None = None) -> Cluster:
    access.check(ctx, s, "edit_cluster_configuration", cl)
    if name is not None:
        lookup.unique_name(s, Cluster, name, "cluster", exclude_id=cl.id)
        cl.name = name
    if description is not None:
        cl.description = description
    events.add(s, events.OBJECT_UPDATED, f"Cluster {cl.name} was updated.", cluster_id=cl.id,
               user_id=ctx.user_id)
    return cl


def remove_cluster(ctx, s, cl):
    access.check(ctx, s, "delete_cluster", cl)
    for model, what in ((Host, "hosts"), (Vm, "VMs"), (Template, "templates"), (VmPool, "VM pools")):
        if s.scalar(select(func.count()).select_from(model).where(model.cluster_id == cl.id)):
            raise conflict(f"cluster {cl.name} still has {what}; remove them first")
    s.delete(cl)
    events.add(s, events.OBJECT_REMOVED, f"Cluster {cl.name} was removed.", user_id=ctx.user_id)


# ---- networks -------------------------------------------------------------
def add_network(ctx, s, spec: NetworkSpec) -> Network:
    dc = lookup.require(s, DataCenter, spec.data_center, "data center", "data_center")
    access.check_ref(ctx, s, "create_storage_pool_network", dc, "data_center", spec.data_center)
    lookup.unique_name(s, Network, spec.name, "network in this data center", data_center_id=dc.id)
    if spec.vlan is not None and not 1 <= spec.vlan <= 4094:
        raise bad_request(f"vlan.id: must be from 1 to 4094, got {spec.vlan}")
    if not 0 <= spec.mtu <= 65535:
        raise bad_request(f"mtu: must be from 0 to 65535, got {spec.mtu}")
    net = Network(name=spec.name, description=spec.description, data_center_id=dc.id, vlan=spec.vlan,
                  mtu=spec.mtu)
    s.add(net)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Network {spec.name} was added to data center {dc.name}.",
               data_center_id=dc.id, user_id=ctx.user_id)
    return net


def remove_network(ctx, s, net):
    access.check(ctx, s, "delete_storage_pool_network", net)
    if net.name == MANAGEMENT_NETWORK:
        raise conflict(f"network {net.name} is the data center's management network; it stays while the "
                       "data center exists")
    if s.scalar(select(func.count()).select_from(Nic).where(Nic.network_id == net.id)):
        raise conflict(f"network {net.name} is used by VM network interfaces")
    s.delete(net)
    events.add(s, events.OBJECT_REMOVED, f"Network {net.name} was removed.", user_id=ctx.user_id)


# ---- storage domains ------------------------------------------------------
def storage_path(path: str) -> str:
    """An absolute, canonical directory of its own: no '..', not the root or a
    system directory."""
    if not path.startswith("/"):
        raise bad_request(f"storage.path: '{path}' is not an absolute path")
    parts = path.split("/")
    if ".." in parts or "." in parts:
        raise bad_request(f"storage.path: '{path}' must not contain '.' or '..' components")
    canonical = "/" + os.path.normpath(path).lstrip("/")    # POSIX keeps a leading '//'; Keel does not
    if canonical in SYSTEM_DIRS or canonical.startswith(("/proc/", "/sys/", "/dev/", "/boot/", "/etc/")):
        raise bad_request(f"storage.path: '{canonical}' is a system directory; give the storage's own "
                          "mount point")
    return canonical


def nfs_location(ctx, s, spec: StorageDomainSpec) -> StorageLocation:
    """An NFS export as oVirt users enter it (server, export path) and the
    mount point every host has it at (keel_common.nfs, [storage] nfs_mount_root)."""
    if not spec.address:
        raise bad_request("storage.address: give the NFS server's host name or IP address")
    try:
        server = nfs.server_address(spec.address)
    except ValueError as e:
        raise bad_request(f"storage.address: {e}") from None
    try:
        export = nfs.export_path(spec.path)
    except ValueError as e:
        raise bad_request(f"storage.path: {e}; expected the export's absolute path on the NFS server") from None
    holder = s.scalar(select(StorageDomain.name).where(StorageDomain.storage_type == "nfs",
                                                       StorageDomain.address == server,
                                                       StorageDomain.export_path == export))
    if holder is not None:
        raise conflict(f"storage: {nfs.export_spec(server, export)} is already storage domain {holder}")
    return StorageLocation(nfs.mount_point(ctx.config.nfs_mount_root, server, export), server, export)


def storage_location(ctx, s, spec: StorageDomainSpec) -> StorageLocation:
    if spec.storage_type not in STORAGE_TYPES:
        raise bad_request(f"storage.type: expected one of {', '.join(STORAGE_TYPES)}, got '{spec.storage_type}'")
    where = (nfs_location(ctx, s, spec) if spec.storage_type == "nfs"
             else StorageLocation(storage_path(spec.path), spec.address))
    holder = s.scalar(select(StorageDomain.name).where(StorageDomain.path == where.path))
    if holder is not None:
        raise conflict(f"storage.path: {where.path} is already storage domain {holder}")
    return where


def add_storage_domain(ctx, s, spec: StorageDomainSpec) -> tuple[StorageDomain, jobs.Job]:
    """The domain's row now (locked); a host of its data center opens it as a
    libvirt pool (the worker) before it is active."""
    dc = lookup.resolve(s, DataCenter, spec.data_center, "data center", "data_center")
    if dc is not None:
        access.check_ref(ctx, s, "create_storage_domain", dc, "data_center", spec.data_center)
    else:
        access.check(ctx, s, "create_storage_domain", None)
    lookup.unique_name(s, StorageDomain, spec.name, "storage domain")
    where = storage_location(ctx, s, spec)
    host = access.require_visible(ctx, s, lookup.resolve(s, Host, spec.host, "host", "host"), "host", spec.host)
    from .hosts import any_up_host
    probe = host or any_up_host(s, dc.id if dc else None)
    if probe is None:
        raise conflict("no host in status 'up' can check the storage path; add and activate a host first")
    sd = StorageDomain(name=spec.name, description=spec.description, type="data", storage_type=spec.storage_type,
                       path=where.path, address=where.address, export_path=where.export_path, status="locked",
                       data_center_id=dc.id if dc else None)
    s.add(sd)
    s.flush()
    job = jobs.submit(s, jobs.STORAGE_DOMAIN_ADD, {"storage_domain_id": sd.id, "host_id": probe.id},
                      f"Adding storage domain {spec.name} ({where.path})", ctx.user_id)
    return sd, job


def unopened_advice(sd, probe, error: virt.VirtError) -> str:
    """What to do when the probe host cannot open the domain's directory: for
    nfs, almost always that the export is not mounted there."""
    if sd.storage_type != "nfs":
        return str(error)
    return (f"mount {nfs.export_spec(sd.address, sd.export_path)} at {sd.path} on host {probe.name} "
            "(Keel does not mount NFS exports on hosts)")


def run_add_storage_domain(ctx, s, job):
    sd, probe = s.get(StorageDomain, job.params["storage_domain_id"]), s.get(Host, job.params["host_id"])
    if sd is None or probe is None:
        raise conflict("the storage domain or the host that checks it was removed")
    jobs.step(s, job, f"Opening {sd.path} on host {probe.name}")
    s.commit()
    try:
        conn = virt.connect(probe.libvirt_uri, ctx.config.libvirt_timeout)
        try:
            pool = virt.ensure_pool(conn, sd)
            info = pool.info()   # [state, capacity, allocation, available]
        except virt.VirtError as e:
            raise virt.VirtError(unopened_advice(sd, probe, e), e.code) from None
        finally:
            conn.close()
    except virt.VirtError as e:
        s.delete(sd)
        s.commit()
        raise conflict(str(e))
    sd.available, sd.used = info[3], info[2]
    sd.status = "active" if sd.data_center_id else "unattached"
    events.add(s, events.OBJECT_ADDED, f"Storage domain {sd.name} ({sd.path}) was added.",
               storage_domain_id=sd.id, user_id=job.owner_id)
    return {"storage_domain_id": sd.id}


def attach_storage_domain(ctx, s, dc, sd) -> StorageDomain:
    access.check(ctx, s, "manipulate_storage_domain", dc)
    access.check_ref(ctx, s, "manipulate_storage_domain", sd, "storage_domain")
    if sd.data_center_id and sd.data_center_id != dc.id:
        raise conflict(f"storage domain {sd.name} is attached to another data center")
    if sd.status == "locked":
        raise conflict(f"storage domain {sd.name} is being added")
    sd.data_center_id, sd.status = dc.id, "active"
    events.add(s, events.OBJECT_UPDATED, f"Storage domain {sd.name} was attached to data center {dc.name}.",
               storage_domain_id=sd.id, data_center_id=dc.id, user_id=ctx.user_id)
    return sd


def remove_storage_domain(ctx, s, sd):
    access.check(ctx, s, "delete_storage_domain", sd)
    if sd.status == "locked":
        raise conflict(f"storage domain {sd.name} is locked by an operation in progress")
    if s.scalar(select(func.count()).select_from(Disk).where(Disk.storage_domain_id == sd.id)):
        raise conflict(f"storage domain {sd.name} still holds disks")
    leased = s.scalars(select(Vm.name).where(Vm.lease_storage_domain_id == sd.id)).all()
    if leased:
        raise conflict(f"storage domain {sd.name} still holds the lease of VM {', '.join(sorted(leased))}; "
                       "move or remove those leases first")
    cds = s.scalars(select(Vm.name).where(Vm.cdrom_storage_domain_id == sd.id, Vm.cdrom_file != "")).all()
    if cds:
        raise conflict(f"storage domain {sd.name} holds the ISO image in the CD-ROM of VM "
                       f"{', '.join(sorted(cds))}; eject those CDs first")
    s.delete(sd)
    events.add(s, events.OBJECT_REMOVED, f"Storage domain {sd.name} was removed.", user_id=ctx.user_id)
