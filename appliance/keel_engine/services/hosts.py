"""Hosts: adding (connection and capability check), activation, maintenance,
removal, fence agents (passwords encrypted at rest) and the fence action."""
import logging
import os

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import func, select

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import Cluster, FenceAgent, Host, Vm, utcnow
from . import events, hooks, lookup, scheduler

log = logging.getLogger("keel.engine.hosts")


def uri_for(cfg, address):
    """A full libvirt URI is taken as is; a bare address goes through the template."""
    if "://" in address:
        return address
    return cfg.libvirt_uri_template.format(address=address)


def any_up_host(s, dc_id=None):
    q = select(Host).where(Host.status == "up").order_by(Host.name)
    if dc_id:
        q = q.join(Cluster, Cluster.id == Host.cluster_id).where(Cluster.data_center_id == dc_id)
    return s.scalars(q).first()


def add_host(ctx, s, body):
    name = body.name()
    lookup.unique_name(s, Host, name, "host")
    address = body.str("address", required=True, maxlen=255)
    cluster = lookup.resolve(s, Cluster, body.ref("cluster", required=True), "cluster", "cluster")
    uri = uri_for(ctx.config, address)
    if s.scalar(select(Host).where(Host.libvirt_uri == uri)):
        raise conflict(f"a host with address {address} already exists")
    try:
        conn = virt.connect(uri, ctx.config.libvirt_timeout)
        try:
            facts = virt.with_deadline(lambda: virt.host_facts(conn), ctx.config.libvirt_timeout,
                                       f"capabilities of {uri}")
        finally:
            conn.close()
    except virt.VirtError as e:
        raise Fault(409, "Operation Failed", f"cannot reach host {name} at {uri}: {e}")
    if not facts["hvm"]:
        raise conflict(f"host {name} at {uri} cannot run full virtual machines (no hvm guest support)")
    host = Host(name=name, address=address, libvirt_uri=uri, cluster_id=cluster.id, status="up",
                hostname=facts["hostname"], cpu_model=facts["cpu_model"], cpus=facts["cpus"],
                memory_total=facts["memory_total"], memory_free=facts["memory_free"], last_seen=utcnow())
    s.add(host)
    s.flush()
    events.add(s, events.HOST_ADDED, f"Host {name} ({uri}) was added to cluster {cluster.name}; "
               f"{facts['cpus']} CPUs, {facts['memory_total'] // 2**20} MiB.",
               host_id=host.id, cluster_id=cluster.id, user_id=ctx.user_id)
    return host


def update_host(ctx, s, host, body):
    if body.has("name"):
        name = body.name()
        lookup.unique_name(s, Host, name, "host", exclude_id=host.id)
        host.name = name
    if body.has("address") or body.has("cluster"):
        raise bad_request("address and cluster cannot be changed; remove and add the host again")
    events.add(s, events.OBJECT_UPDATED, f"Host {host.name} was updated.", host_id=host.id,
               user_id=ctx.user_id)
    return host


def remove_host(ctx, s, host):
    if host.status not in ("maintenance", "non_responsive", "install_failed"):
        raise conflict(f"host {host.name} is {host.status}: put it into maintenance first")
    if s.scalar(select(func.count()).select_from(Vm).where(Vm.host_id == host.id)):
        raise conflict(f"host {host.name} still has VMs assigned")
    s.delete(host)
    events.add(s, events.HOST_REMOVED, f"Host {host.name} was removed.", user_id=ctx.user_id)


def set_status(s, host, new, reason):
    """One place for host status changes: event + log, hook after commit (by the caller)."""
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


def deactivate(ctx, s, host):
    """Maintenance: refuse now if a VM could not move; the monitor does the
    migrations and then sets 'maintenance'."""
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
    old = set_status(s, host, "preparing_for_maintenance" if vms else "maintenance",
                     f"requested by user, {len(vms)} VM(s) to migrate")
    return host, old


def activate(ctx, s, host):
    if host.status not in ("maintenance", "preparing_for_maintenance"):
        raise conflict(f"host {host.name} is {host.status}, not in maintenance")
    try:
        conn = virt.connect(host.libvirt_uri, ctx.config.libvirt_timeout)
        conn.close()
    except virt.VirtError as e:
        raise conflict(f"host {host.name} cannot be activated: {e}")
    old = set_status(s, host, "up", "activated by user")
    events.add(s, events.HOST_ACTIVATED, f"Host {host.name} was activated.", host_id=host.id,
               user_id=ctx.user_id)
    return host, old


# ---- fence agents ---------------------------------------------------------
def _fernet(cfg):
    path = cfg.secret_key_file
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
        log.info("created the fence-agent key file %s", path)
    with open(path, "rb") as f:
        return Fernet(f.read().strip())


def _agent_fields(ctx, agent, body, creating):
    agent.type = body.str("type", default=agent.type or "ipmilan", choices=("ipmilan",))
    if creating or body.has("address"):
        agent.address = body.str("address", required=True, maxlen=255)
    if body.has("port") or creating:
        agent.port = body.int("port", default=agent.port or 623, minimum=1, maximum=65535)
    if body.has("username") or creating:
        agent.username = body.str("username", required=creating, default=agent.username, maxlen=255)
    if body.has("password") or creating:
        password = body.str("password", required=creating, maxlen=255)
        agent.password_encrypted = _fernet(ctx.config).encrypt(password.encode()).decode()
    if body.has("order") or creating:
        agent.order = body.int("order", default=agent.order or 1, minimum=1, maximum=100)
    if body.has("options"):
        opts = {}
        for o in body.list("options", "option"):
            opts[o.str("name", required=True, maxlen=64)] = o.str("value", default="", maxlen=255)
        agent.options = opts
    if body.has("encrypt_options"):
        agent.encrypt_options = body.bool("encrypt_options")


def add_fence_agent(ctx, s, host, body):
    agent = FenceAgent(host_id=host.id, options={})
    _agent_fields(ctx, agent, body, creating=True)
    s.add(agent)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Fence agent {agent.address} was added to host {host.name}.",
               host_id=host.id, user_id=ctx.user_id)
    return agent


def update_fence_agent(ctx, s, host, agent, body):
    _agent_fields(ctx, agent, body, creating=False)
    events.add(s, events.OBJECT_UPDATED, f"Fence agent {agent.address} of host {host.name} was updated.",
               host_id=host.id, user_id=ctx.user_id)
    return agent


def remove_fence_agent(ctx, s, host, agent):
    s.delete(agent)
    events.add(s, events.OBJECT_REMOVED, f"Fence agent {agent.address} was removed from host {host.name}.",
               host_id=host.id, user_id=ctx.user_id)


def fence_agents_for_host(session, host_id, config=None):
    """Plain specs with decrypted passwords, in order, for the power module."""
    if config is None:
        from .. import config as config_mod
        config = config_mod.load()
    f = _fernet(config)
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


FENCE_TYPES = ("status", "stop", "start", "restart", "manual")


def fence(ctx, s, host, fence_type):
    if fence_type not in FENCE_TYPES:
        raise bad_request(f"fence_type: expected one of {', '.join(FENCE_TYPES)}, got '{fence_type}'")
    handler = hooks.fence_handler()
    agents = fence_agents_for_host(s, host.id, ctx.config)
    # "Confirm host has been rebooted" is the admin's word, not a BMC's:
    # it needs the handler (HA restarts follow) but no fence agent.
    if handler is None or (not agents and fence_type != "manual"):
        raise conflict("no power management configured"
                       + (" for this host (add a fence agent)" if handler else " (no fence handler installed)"))
    events.add(s, events.HOST_FENCE, f"Fence action '{fence_type}' requested for host {host.name}.",
               host_id=host.id, user_id=ctx.user_id)
    # commit first: the handler works in its own sessions, and with SQLite an
    # open write transaction here would block it
    s.commit()
    return handler(ctx, host, fence_type, agents) or {}
