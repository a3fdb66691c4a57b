"""Idempotent first-time inventory: a data center, a cluster, hosts and data
storage domains, created only if missing (the lab and the installer call
this on every start). It runs where hosts are reachable, so the jobs it
records (checking a host, opening a storage domain) run right here."""
from sqlalchemy import select

from keel_common import nfs

from ..errors import Fault
from ..models import Cluster, DataCenter, FenceAgent, Host, StorageDomain
from . import hosts as host_svc
from . import inventory, jobs
from .lookup import Ref


def ensure_inventory(ctx, s, dc_name, cluster_name, hosts, storages):
    """hosts: [(name, address)], storages: [(name, PATH or SERVER:/EXPORT)].
    Returns what was done, one line each."""
    done = []
    dc = s.scalar(select(DataCenter).where(DataCenter.name == dc_name))
    if dc is None:
        dc = inventory.add_datacenter(ctx, s, inventory.DataCenterSpec(name=dc_name))
        s.commit()
        done.append(f"created data center {dc_name}")
    cl = s.scalar(select(Cluster).where(Cluster.name == cluster_name))
    if cl is None:
        cl = inventory.add_cluster(ctx, s, inventory.ClusterSpec(name=cluster_name, data_center=Ref(id=dc.id)))
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
        _host, job = host_svc.add_host(ctx, s, host_svc.HostSpec(name=name, address=address, cluster=Ref(id=cl.id)))
        jobs.run_here(ctx, s, job, host_svc.run_add)
        done.append(f"added host {name} at {address}")
    for name, location in storages:
        spec = storage_spec(name, location, dc.id)
        sd = s.scalar(select(StorageDomain).where(StorageDomain.name == name))
        if sd is not None:
            if not same_storage(sd, spec):
                raise Fault(409, "Operation Failed", f"storage domain {name} exists with path {sd.path}")
            done.append(f"storage domain {name} already present")
            continue
        _sd, job = inventory.add_storage_domain(ctx, s, spec)
        jobs.run_here(ctx, s, job, inventory.run_add_storage_domain)
        done.append(f"added storage domain {name} at {location}")
    return done


def storage_spec(name, location, dc_id) -> inventory.StorageDomainSpec:
    """A local directory (PATH: posixfs) or an NFS export (SERVER:/EXPORT:
    nfs, mounted on every host at its mount point by oVirt's convention)."""
    if location.startswith("/"):
        return inventory.StorageDomainSpec(name=name, storage_type="posixfs", path=location, data_center=Ref(id=dc_id))
    server, sep, export = location.partition(":/")
    return inventory.StorageDomainSpec(name=name, storage_type="nfs", address=server.strip("[]"),
                                       path="/" + export if sep else location, data_center=Ref(id=dc_id))


def same_storage(sd, spec) -> bool:
    if spec.storage_type != "nfs":
        return sd.path == spec.path
    try:
        return sd.storage_type == "nfs" and \
            nfs.export_spec(sd.address, sd.export_path) == nfs.export_spec(spec.address, spec.path)
    except ValueError:
        return False


def ensure_fence_agents(ctx, s, agents):
    """agents: [(host name, FenceAgentSpec with the password)].

    Stored through the same service calls as POST/PUT hosts/{id}/fenceagents
    (password encrypted, events written). An agent is the same agent when
    type, address and port match: identical -> left alone, otherwise updated
    (a changed password or user must not leave a second, stale agent that
    power management would try first)."""
    done = []
    per_host = {}
    for host_name, spec in agents:
        host = s.scalar(select(Host).where(Host.name == host_name))
        if host is None:
            raise Fault(404, "Not Found", f"no host named {host_name}")
        # without an explicit order, agents keep the order they were given in
        n = per_host[host_name] = per_host.get(host_name, 0) + 1
        order = spec.order or n
        port = spec.port or 623
        agent = s.scalar(select(FenceAgent).where(
            FenceAgent.host_id == host.id, FenceAgent.type == (spec.type or "ipmilan"),
            FenceAgent.address == spec.address, FenceAgent.port == port))
        label = f"{spec.type} agent {spec.username}@{spec.address}:{port} of host {host_name}"
        spec = host_svc.FenceAgentSpec(**{**spec.__dict__, "order": order, "port": port})
        if agent is None:
            host_svc.add_fence_agent(ctx, s, host, spec)
            s.commit()
            done.append(f"added {label}")
            continue
        current = next(a for a in host_svc.fence_agents_for_host(s, host.id, ctx.config) if a["id"] == agent.id)
        probe = FenceAgent(host_id=host.id, options={})
        host_svc.apply_spec(ctx, probe, spec, creating=True)   # the options as they would be stored
        if (current["username"], current["password"], current["order"], current["options"]) == \
                (spec.username, spec.password, order, probe.options):
            done.append(f"{label} already present")
            continue
        host_svc.update_fence_agent(ctx, s, host, agent, spec)
        s.commit()
        done.append(f"updated {label}")
    return done
