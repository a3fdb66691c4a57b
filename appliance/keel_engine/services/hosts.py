"""Hosts: adding (connection and capability check, by the worker),
activation, maintenance, removal, fence agents (passwords encrypted at rest)
and the fence action (carried out by the worker's power management)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sqlalchemy import func, select

from keel_common import ini

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import Cluster, FenceAgent, Host, Vm, utcnow
from ..power.agents import AgentConfigError, make_spec
from . import access, events, jobs, lookup, scheduler
from .lookup import Ref

log = logging.getLogger("keel.engine.hosts")
FENCE_TYPES = ("status", "stop", "start", "restart", "manual")


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str                # a host name or an IP address, nothing else
    cluster: Ref


@dataclass(frozen=True)
class FenceAgentSpec:
    """A fence agent as written (None leaves a field as it is on update)."""
    address: str | None = None
    username: str | None = None
    password: str | None = None
    port: int | None = None
    type: str | None = None
    order: int | None = None
    options: dict | None = None
    encrypt_options: bool | None = None


def any_up_host(s, dc_id=None):
    q = select(Host).where(Host.status == "up").order_by(Host.name)
    if dc_id:
        q = q.join(Cluster, Cluster.id == Host.cluster_id).where(Cluster.data_center_id == dc_id)
    return s.scalars(q).first()


def _address(address):
    if not ini.is_host_address(address):
        raise bad_request(f"address: '{address}' is not a host name or an IP address "
                          "(the engine builds the libvirt URI itself)")
    return address


def add_host(ctx, s, spec: HostSpec) -> tuple[Host, jobs.Job]:
    """The host row now (status installing); the worker checks libvirt and
    its capabilities, then the host is up (or gone, with the reason)."""
    cluster = lookup.require(s, Cluster, spec.cluster, "cluster", "cluster")
    access.check_ref(ctx, s, "create_host", cluster, "cluster", spec.cluster)
    lookup.unique_name(s, Host, spec.name, "host")
    address = _address(spec.address)
    uri = ctx.config.libvirt_uri(address)
    if s.scalar(select(Host).where(Host.libvirt_uri == uri)):
        raise conflict(f"a host with address {address} already exists")
    host = Host(name=spec.name, address=address, libvirt_uri=uri, cluster_id=cluster.id, status="installing",
                status_detail="checking its libvirt connection")
    s.add(host)
    s.flush()
    job = jobs.submit(s, jobs.HOST_ADD, {"host_id": host.id}, f"Adding host {spec.name} ({address})", ctx.user_id)
    return host, job


def _facts(ctx, host):
    conn = virt.connect(host.libvirt_uri, ctx.config.libvirt_timeout)
    try:
        return virt.with_deadline(lambda: virt.host_facts(conn), ctx.config.libvirt_timeout,
                                  f"capabilities of {host.libvirt_uri}")
    finally:
        conn.close()


def run_add(ctx, s, job):
    host = s.get(Host, job.params["host_id"])
    if host is None:
        raise conflict("the host was removed while it was being added")
    jobs.step(s, job, f"Connecting to libvirt on {host.address}")
    s.commit()
    try:
        facts = _facts(ctx, host)
        if not facts["hvm"]:
            raise Fault(409, "Operation Failed", f"host {host.name} at {host.libvirt_uri} cannot run full "
                        "virtual machines (no hvm guest support)")
    except (virt.VirtError, Fault) as e:
        why = e.detail if isinstance(e, Fault) else f"cannot reach host {host.name} at {host.libvirt_uri}: {e}"
        s.delete(host)
        events.add(s, events.HOST_ADD_FAILED, f"Host {host.name} was not added: {why}.", severity="error",
                   user_id=job.owner_id)
        s.commit()
        raise Fault(409, "Operation Failed", why)
    cluster = s.get(Cluster, host.cluster_id)
    host.hostname, host.cpu_model, host.cpus = facts["hostname"], facts["cpu_model"], facts["cpus"]
    host.memory_total, host.memory_free, host.last_seen = facts["memory_total"], facts["memory_free"], utcnow()
    set_status(s, host, "up", "its libvirt answers")
    events.add(s, events.HOST_ADDED, f"Host {host.name} ({host.libvirt_uri}) was added to cluster "
               f"{cluster.name}; {facts['cpus']} CPUs, {facts['memory_total'] // 2**20} MiB.",
               host_id=host.id, cluster_id=cluster.id, user_id=job.owner_id)
    return {"host_id": host.id}


def update_host(ctx, s, host, name: str | None = None) -> Host:
    access.check(ctx, s, "edit_host_configuration", host)
    if name is not None:
        lookup.unique_name(s, Host, name, "host", exclude_id=host.id)
        host.name = name
    events.add(s, events.OBJECT_UPDATED, f"Host {host.name} was updated.", host_id=host.id,
               user_id=ctx.user_id)
    return host


def remove_host(ctx, s, host):
    access.check(ctx, s, "delete_host", host)
    if host.status not in ("maintenance", "non_responsive", "install_failed", "down"):
        raise conflict(f"host {host.name} is {host.status}: put it into maintenance first")
    if s.scalar(select(func.count()).select_from(Vm).where(Vm.host_id == host.id)):
        raise conflict(f"host {host.name} still has VMs assigned")
    s.delete(host)
    events.add(s, events.HOST_REMOVED, f"Host {host.name} was removed.", user_id=ctx.user_id)


def set_status(s, host, new, reason):
    """One place for host status changes: an event and a log line, once.
    Returns the old status, or None when nothing changed."""
    old = host.status
    if old == new:
        return None
    host.status = new
    host.status_detail = reason
    sev = {"non_responsive": "error", "maintenance": "normal"}.get(new, "normal")
    code = {"up": events.HOST_UP, "non_responsive": events.HOST_NON_RESPONSIVE,
            "maintenance": events.HOST_MAINTENANCE,
            "preparing_for_maintenance": events.HOST_PREPARING}.get(new, events.OBJECT_UPDATED)
    events.add(s, code, f"Host {host.name} status changed from {old} to {new}: {reason}.",
               severity=sev, host_id=host.id, cluster_id=host.cluster_id)
    return old


def returned_status(host) -> str:
    """What a host that answers again becomes: maintenance stays until the
    administrator activates the host, whatever happened meanwhile."""
    return "maintenance" if host.maintenance_requested else "up"


def deactivate(ctx, s, host):
    """Maintenance: refuse now if a VM could not move; the worker migrates them
    (a job) and then sets 'maintenance'. Returns (host, job or None)."""
    access.check(ctx, s, "manipulate_host", host)
    if host.status in ("maintenance", "preparing_for_maintenance"):
        raise conflict(f"host {host.name} is already {host.status}")
    if host.status != "up":
        raise conflict(f"host {host.name} is {host.status}; only an 'up' host can be put into "
                       "maintenance (a non-responsive host must be fenced first)")
    vms = s.scalars(select(Vm).where(Vm.host_id == host.id)).all()
    for vm in vms:
        if vm.status not in ("up", "paused"):
            raise conflict(f"VM {vm.name} on host {host.name} is {vm.status} and cannot be migrated now")
        scheduler.pick(s, vm, exclude={host.id})
    host.maintenance_requested = True
    set_status(s, host, "preparing_for_maintenance" if vms else "maintenance",
               f"requested by user, {len(vms)} VM(s) to migrate")
    if not vms:
        return host, None
    return host, jobs.submit(s, jobs.HOST_EVACUATE, {"host_id": host.id},
                             f"Moving host {host.name} to maintenance: migrating {len(vms)} VM(s)", ctx.user_id)


def request_activate(ctx, s, host) -> jobs.Job:
    access.check(ctx, s, "manipulate_host", host)
    if host.status not in ("maintenance", "preparing_for_maintenance"):
        raise conflict(f"host {host.name} is {host.status}, not in maintenance")
    return jobs.submit(s, jobs.HOST_ACTIVATE, {"host_id": host.id}, f"Activating host {host.name}", ctx.user_id)


def run_activate(ctx, s, job):
    host = s.get(Host, job.params["host_id"])
    if host is None:
        raise conflict("the host was removed")
    if host.status not in ("maintenance", "preparing_for_maintenance"):
        raise conflict(f"host {host.name} is {host.status}, not in maintenance")
    s.commit()      # no transaction stays open while the host is asked
    try:
        conn = virt.connect(host.libvirt_uri, ctx.config.libvirt_timeout)
        conn.close()
    except virt.VirtError as e:
        raise conflict(f"host {host.name} cannot be activated: {e}")
    host.maintenance_requested = False
    set_status(s, host, "up", "activated by user")
    events.add(s, events.HOST_ACTIVATED, f"Host {host.name} was activated.", host_id=host.id,
               user_id=job.owner_id)
    return {"host_id": host.id}


# ---- fence agents ---------------------------------------------------------
class FenceKeyError(Fault):
    """The fence-agent key file is damaged: no password it encrypted can be read."""

    def __init__(self, detail):
        super().__init__(500, "Operation Failed", detail)


def fernet(cfg):
    # imported here: it is needed only with fence agents, and importing it
    # cost the engine VM's boot about half a second under TCG
    from cryptography.fernet import Fernet
    path = cfg.secret_key_file
    if not os.path.exists(path):
        _create_key_file(path)
    with open(path, "rb") as f:
        key = f.read().strip()
    try:
        return Fernet(key)
    except ValueError:
        raise FenceKeyError(f"the fence-agent key file {path} is damaged ({len(key)} bytes, not a key): "
                            "restore it from a backup, or re-enter every fence agent's password "
                            "after removing it") from None


def _create_key_file(path: str) -> None:
    """Written whole, flushed to disk, then linked into place: a power loss
    (the engine VM's host dying is the everyday case) leaves either no key
    file or the whole key, never an empty one; of two workers racing, the
    first link wins and both use that key."""
    from cryptography.fernet import Fernet
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.new-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            log.info("created the fence-agent key file %s", path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def apply_spec(ctx, agent, spec: FenceAgentSpec, creating):
    if creating:
        for name in ("address", "username", "password"):
            if not getattr(spec, name):
                raise bad_request(f"{name}: required field is missing")
    new = {k: getattr(spec, k) for k in ("address", "username", "port", "type", "order", "options")
           if getattr(spec, k) is not None}
    merged = {"address": agent.address, "username": agent.username, "port": agent.port or 623,
              "type": agent.type or "ipmilan", "order": agent.order or 1, "options": dict(agent.options or {})}
    merged.update(new)
    # the same rules the fencing code applies, when the agent is written, not when a host needs it
    try:
        checked = make_spec(password=spec.password if spec.password is not None else "x", **merged)
    except AgentConfigError as e:
        raise bad_request(str(e)) from None
    agent.address, agent.username, agent.port = checked.address, checked.username, checked.port
    agent.type, agent.order = checked.type, checked.order
    agent.options = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in checked.options.items()}
    if spec.password is not None:
        agent.password_encrypted = fernet(ctx.config).encrypt(spec.password.encode()).decode()
    if spec.encrypt_options is not None:
        agent.encrypt_options = spec.encrypt_options


def add_fence_agent(ctx, s, host, spec: FenceAgentSpec) -> FenceAgent:
    access.check(ctx, s, "edit_host_configuration", host)
    agent = FenceAgent(host_id=host.id, options={})
    apply_spec(ctx, agent, spec, creating=True)
    s.add(agent)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Fence agent {agent.address} was added to host {host.name}.",
               host_id=host.id, user_id=ctx.user_id)
    return agent


def update_fence_agent(ctx, s, host, agent, spec: FenceAgentSpec) -> FenceAgent:
    access.check(ctx, s, "edit_host_configuration", host)
    apply_spec(ctx, agent, spec, creating=False)
    events.add(s, events.OBJECT_UPDATED, f"Fence agent {agent.address} of host {host.name} was updated.",
               host_id=host.id, user_id=ctx.user_id)
    return agent


def remove_fence_agent(ctx, s, host, agent):
    access.check(ctx, s, "edit_host_configuration", host)
    s.delete(agent)
    events.add(s, events.OBJECT_REMOVED, f"Fence agent {agent.address} was removed from host {host.name}.",
               host_id=host.id, user_id=ctx.user_id)


def hosts_etcd(session, config):
    """The hosts' etcd, where the HA agents publish: the configured members
    first, then each host's (those up first: they answer); None when the
    engine is told of none."""
    hosts = session.execute(select(Host.address, Host.status)).all()
    return config.ha_etcd_on([h.address for h in sorted(hosts, key=lambda h: h.status != "up")])


def fence_agents_for_host(session, host_id, config):
    """Plain specs with decrypted passwords, in order, for power management."""
    from cryptography.fernet import InvalidToken
    f = fernet(config)
    out = []
    for a in session.scalars(select(FenceAgent).where(FenceAgent.host_id == host_id)
                             .order_by(FenceAgent.order)):
        try:
            password = f.decrypt(a.password_encrypted.encode()).decode()
        except InvalidToken:
            raise Fault(500, "Operation Failed",
                        f"fence agent {a.address}: the password cannot be decrypted with the key in "
                        f"{config.secret_key_file}")
        out.append({"id": a.id, "type": a.type, "address": a.address, "port": a.port,
                    "username": a.username, "password": password, "order": a.order,
                    "options": dict(a.options or {}), "encrypt_options": a.encrypt_options})
    return out


def request_fence(ctx, s, host, fence_type) -> jobs.Job:
    access.check(ctx, s, "manipulate_host", host)
    if fence_type not in FENCE_TYPES:
        raise bad_request(f"fence_type: expected one of {', '.join(FENCE_TYPES)}, got '{fence_type}'")
    has_agents = s.scalar(select(func.count()).select_from(FenceAgent).where(FenceAgent.host_id == host.id))
    # "Confirm host has been rebooted" is the admin's word, not a BMC's: no agent needed
    if not has_agents and fence_type != "manual":
        raise conflict("no power management configured for this host (add a fence agent)")
    if fence_type == "manual" and host.status not in ("non_responsive", "down", "connecting"):
        raise conflict(f"host {host.name} is {host.status}: only a non-responsive host can be "
                       "confirmed as rebooted")
    events.add(s, events.HOST_FENCE, f"Fence action '{fence_type}' requested for host {host.name}.",
               host_id=host.id, user_id=ctx.user_id)
    return jobs.submit(s, jobs.HOST_FENCE, {"host_id": host.id, "fence_type": fence_type},
                       f"Fence action '{fence_type}' on host {host.name}", ctx.user_id)


def request_agent_test(ctx, s, host, agent) -> jobs.Job:
    access.check(ctx, s, "manipulate_host", host)
    return jobs.submit(s, jobs.FENCE_AGENT_TEST, {"host_id": host.id, "agent_id": agent.id},
                       f"Testing fence agent {agent.address} of host {host.name}", ctx.user_id)
