"""Data centers, clusters, networks and storage domains."""
import logging
import os

from sqlalchemy import func, select

from .. import virt
from ..errors import bad_request, conflict
from ..models import Cluster, DataCenter, Disk, Host, Network, StorageDomain, Vm
from . import events, lookup

log = logging.getLogger("keel.engine.inventory")


# ---- data centers --------------------------------------------------------
def add_datacenter(ctx, s, body):
    name = body.name()
    lookup.unique_name(s, DataCenter, name, "data center")
    dc = DataCenter(name=name, description=body.str("description", default=""),
                    local=body.bool("local", default=False))
    s.add(dc)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Data center {name} was added.", data_center_id=dc.id,
               user_id=ctx.user_id)
    return dc


def update_datacenter(ctx, s, dc, body):
    if body.has("name"):
        name = body.name()
        lookup.unique_name(s, DataCenter, name, "data center", exclude_id=dc.id)
        dc.name = name
    if body.has("description"):
        dc.description = body.str("description")
    events.add(s, events.OBJECT_UPDATED, f"Data center {dc.name} was updated.", data_center_id=dc.id,
               user_id=ctx.user_id)
    return dc


def remove_datacenter(ctx, s, dc):
    if s.scalar(select(func.count()).select_from(Cluster).where(Cluster.data_center_id == dc.id)):
        raise conflict(f"data center {dc.name} still has clusters; remove them first")
    if s.scalar(select(func.count()).select_from(StorageDomain).where(StorageDomain.data_center_id == dc.id)):
        raise conflict(f"data center {dc.name} still has storage domains attached")
    for net in s.scalars(select(Network).where(Network.data_center_id == dc.id)):
        s.delete(net)
    s.delete(dc)
    events.add(s, events.OBJECT_REMOVED, f"Data center {dc.name} was removed.", user_id=ctx.user_id)


# ---- clusters -------------------------------------------------------------
def add_cluster(ctx, s, body):
    name = body.name()
    lookup.unique_name(s, Cluster, name, "cluster")
    dc = lookup.resolve(s, DataCenter, body.ref("data_center", required=True), "data center", "data_center")
    policy = body.sub("scheduling_policy").str("name", default="evenly_distributed",
                                               choices=("evenly_distributed", "none"))
    cl = Cluster(name=name, description=body.str("description", default=""), data_center_id=dc.id,
                 scheduling_policy=policy)
    s.add(cl)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Cluster {name} was added to data center {dc.name}.",
               cluster_id=cl.id, data_center_id=dc.id, user_id=ctx.user_id)
    return cl


def update_cluster(ctx, s, cl, body):
    if body.has("name"):
        name = body.name()
        lookup.unique_name(s, Cluster, name, "cluster", exclude_id=cl.id)
        cl.name = name
    if body.has("description"):
        cl.description = body.str("description")
    events.add(s, events.OBJECT_UPDATED, f"Cluster {cl.name} was updated.", cluster_id=cl.id,
               user_id=ctx.user_id)
    return cl


def remove_cluster(ctx, s, cl):
    for model, what in ((Host, "hosts"), (Vm, "VMs")):
        if s.scalar(select(func.count()).select_from(model).where(model.cluster_id == cl.id)):
            raise conflict(f"cluster {cl.name} still has {what}; remove them first")
    s.delete(cl)
    events.add(s, events.OBJECT_REMOVED, f"Cluster {cl.name} was removed.", user_id=ctx.user_id)


# ---- networks -------------------------------------------------------------
def add_network(ctx, s, body):
    name = body.name()
    dc = lookup.resolve(s, DataCenter, body.ref("data_center", required=True), "data center", "data_center")
    lookup.unique_name(s, Network, name, "network in this data center", data_center_id=dc.id)
    vlan = body.sub("vlan").int("id", minimum=1, maximum=4094)
    net = Network(name=name, description=body.str("description", default=""), data_center_id=dc.id,
                  vlan=vlan, mtu=body.int("mtu", default=0, minimum=0, maximum=65535))
    s.add(net)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Network {name} was added to data center {dc.name}.",
               data_center_id=dc.id, user_id=ctx.user_id)
    return net


def remove_network(ctx, s, net):
    from ..models import Nic
    if s.scalar(select(func.count()).select_from(Nic).where(Nic.network_id == net.id)):
        raise conflict(f"network {net.name} is used by VM network interfaces")
    s.delete(net)
    events.add(s, events.OBJECT_REMOVED, f"Network {net.name} was removed.", user_id=ctx.user_id)


# ---- storage domains ------------------------------------------------------
STORAGE_TYPES = ("posixfs", "localfs", "nfs")


def add_storage_domain(ctx, s, body):
    from . import hosts as host_svc
    name = body.name()
    lookup.unique_name(s, StorageDomain, name, "storage domain")
    kind = body.str("type", default="data", choices=("data",))
    storage = body.sub("storage")
    stype = storage.str("type", required=True, choices=STORAGE_TYPES)
    path = storage.str("path", required=True, maxlen=1024)
    if not os.path.isabs(path):
        raise bad_request(f"storage.path: '{path}' is not an absolute path")
    address = storage.str("address", maxlen=255)
    if stype == "nfs":
        # The hosts mount NFS themselves; the engine only needs the mount point.
        raise bad_request("storage.type: nfs is not supported yet; mount the export on every host "
                          "and add it as posixfs with its mount path")
    dc_ref = body.ref("data_center")
    dc = lookup.resolve(s, DataCenter, dc_ref, "data center", "data_center") if dc_ref else None
    host_ref = body.ref("host")
    host = lookup.resolve(s, Host, host_ref, "host", "host") if host_ref else None
    sd = StorageDomain(name=name, description=body.str("description", default=""), type=kind,
                       storage_type=stype, path=path, address=address)
    # The path must be reachable as a libvirt pool from a host before we accept it.
    probe = host or host_svc.any_up_host(s, dc.id if dc else None)
    if probe is None:
        raise conflict("no host in status 'up' can check the storage path; add and activate a host first")
    s.add(sd)
    s.flush()
    try:
        conn = virt.connect(probe.libvirt_uri, ctx.config.libvirt_timeout)
        try:
            pool = virt.ensure_pool(conn, sd)
            info = pool.info()   # [state, capacity, allocation, available]
            sd.available, sd.used = info[3], info[2]
        finally:
            conn.close()
    except virt.VirtError as e:
        raise conflict(str(e))
    if dc:
        sd.data_center_id, sd.status = dc.id, "active"
    events.add(s, events.OBJECT_ADDED, f"Storage domain {name} ({path}) was added.",
               storage_domain_id=sd.id, user_id=ctx.user_id)
    return sd


def attach_storage_domain(ctx, s, dc, sd):
    if sd.data_center_id and sd.data_center_id != dc.id:
        raise conflict(f"storage domain {sd.name} is attached to another data center")
    sd.data_center_id, sd.status = dc.id, "active"
    events.add(s, events.OBJECT_UPDATED, f"Storage domain {sd.name} was attached to data center {dc.name}.",
               storage_domain_id=sd.id, data_center_id=dc.id, user_id=ctx.user_id)
    return sd


def remove_storage_domain(ctx, s, sd):
    if s.scalar(select(func.count()).select_from(Disk).where(Disk.storage_domain_id == sd.id)):
        raise conflict(f"storage domain {sd.name} still holds disks")
    leased = s.scalars(select(Vm.name).where(Vm.lease_storage_domain_id == sd.id)).all()
    if leased:
        raise conflict(f"storage domain {sd.name} still holds the lease of VM {', '.join(sorted(leased))}; "
                       "move or remove those leases first")
    s.delete(sd)
    events.add(s, events.OBJECT_REMOVED, f"Storage domain {sd.name} was removed.", user_id=ctx.user_id)

