"""Idempotent first-time inventory: a data center, a cluster, hosts and data
storage domains, created only if missing (the lab and installers call this
on every start)."""
from sqlalchemy import select

from ..errors import Fault
from ..models import Cluster, DataCenter, Host, StorageDomain
from . import hosts as host_svc
from . import inventory
from .body import Body


def ensure_inventory(ctx, s, dc_name, cluster_name, hosts, storages):
    """hosts: [(name, address)], storages: [(name, path)]. Returns what was done, one line each."""
    done = []
    dc = s.scalar(select(DataCenter).where(DataCenter.name == dc_name))
    if dc is None:
        dc = inventory.add_datacenter(ctx, s, Body({"name": dc_name}))
        s.commit()
        done.append(f"created data center {dc_name}")
    cl = s.scalar(select(Cluster).where(Cluster.name == cluster_name))
    if cl is None:
        cl = inventory.add_cluster(ctx, s, Body({"name": cluster_name, "data_center": {"id": dc.id}}))
        s.commit()
        done.append(f"created cluster {cluster_name}")
    elif cl.data_center_id != dc.id:
        raise Fault(409, "Operation Failed", f"cluster {cluster_name} belongs to another data center")
    for name, address in hosts:
        h = s.scalar(select(Host).where(Host.name == name))
        if h is not None:
            if h.address != address:
                raise Fault(409, "Operation Failed",
                            f"host {name} exists with address {h.address}, not {address}")
            done.append(f"host {name} already present ({h.status})")
            continue
        host_svc.add_host(ctx, s, Body({"name": name, "address": address, "cluster": {"id": cl.id}}))
        s.commit()
        done.append(f"added host {name} at {address}")
    for name, path in storages:
        sd = s.scalar(select(StorageDomain).where(StorageDomain.name == name))
        if sd is not None:
            if sd.path != path:
                raise Fault(409, "Operation Failed", f"storage domain {name} exists with path {sd.path}")
            done.append(f"storage domain {name} already present")
            continue
        inventory.add_storage_domain(ctx, s, Body({
            "name": name, "type": "data", "storage": {"type": "posixfs", "path": path},
            "data_center": {"id": dc.id}}))
        s.commit()
        done.append(f"added storage domain {name} at {path}")
    return done
