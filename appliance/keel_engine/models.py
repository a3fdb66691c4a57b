"""The engine's database schema: the source of truth for the cluster's
configuration (what should exist and how it is configured) and the last
observed state (written by the monitor)."""
import uuid
from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BLANK_TEMPLATE_ID = "00000000-0000-0000-0000-000000000000"


def new_id():
    return str(uuid.uuid4())


def utcnow():
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


def _id():
    return mapped_column(String(36), primary_key=True, default=new_id)


def _created():
    return mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255))          # admin
    domain: Mapped[str] = mapped_column(String(255), default="internal")
    password_hash: Mapped[str | None] = mapped_column(String(512))
    created: Mapped[datetime] = _created()
    __table_args__ = (UniqueConstraint("name", "domain"),)


class Token(Base):
    __tablename__ = "tokens"
    # sha256 of the bearer token: a copy of the database does not hand out sessions
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = _created()


class Role(Base):
    __tablename__ = "roles"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    administrative: Mapped[bool] = mapped_column(Boolean, default=False)


class Permission(Base):
    __tablename__ = "permissions"
    id: Mapped[str] = _id()
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # object the permission applies to; None = the whole system
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(36))


class DataCenter(Base):
    __tablename__ = "datacenters"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    local: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = _created()


class Cluster(Base):
    __tablename__ = "clusters"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    data_center_id: Mapped[str | None] = mapped_column(ForeignKey("datacenters.id"))
    scheduling_policy: Mapped[str] = mapped_column(String(64), default="evenly_distributed")
    created: Mapped[datetime] = _created()


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    libvirt_uri: Mapped[str] = mapped_column(String(512))
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"))
    status: Mapped[str] = mapped_column(String(32), default="installing")
    status_detail: Mapped[str] = mapped_column(Text, default="")
    hostname: Mapped[str | None] = mapped_column(String(255))
    cpu_model: Mapped[str | None] = mapped_column(String(255))
    cpus: Mapped[int | None] = mapped_column(Integer)
    memory_total: Mapped[int | None] = mapped_column(BigInteger)
    memory_free: Mapped[int | None] = mapped_column(BigInteger)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the administrator put the host into maintenance: only activating it ends
    # that, whatever happens to it meanwhile (a fence, a power cycle)
    maintenance_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # the confirmed fence that holds the host down (None: not fenced); cleared
    # when the host answers again
    fence_id: Mapped[str | None] = mapped_column(String(36))
    created: Mapped[datetime] = _created()


class Fence(Base):
    """One fence of a host (a power-off through its BMC, or an administrator's
    word that it was rebooted): what was done, by whom, why, and how it ended.
    Failover decides on `state`; `outcome` is for people."""
    __tablename__ = "fences"
    id: Mapped[str] = _id()
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(16))          # bmc | manual
    action: Mapped[str] = mapped_column(String(16), default="off")   # off | restart | manual
    state: Mapped[str] = mapped_column(String(16), default="running")   # running | confirmed | failed
    agent: Mapped[str | None] = mapped_column(String(255))  # the fence agent that confirmed it
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(Text, default="")
    started: Mapped[datetime] = _created()
    ended: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FenceAgent(Base):
    __tablename__ = "fence_agents"
    id: Mapped[str] = _id()
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32), default="ipmilan")
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(255), default="")
    password_encrypted: Mapped[str] = mapped_column(Text, default="")
    order: Mapped[int] = mapped_column(Integer, default=1)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    encrypt_options: Mapped[bool] = mapped_column(Boolean, default=False)


class StorageDomain(Base):
    __tablename__ = "storage_domains"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(32), default="data")
    storage_type: Mapped[str] = mapped_column(String(32), default="posixfs")
    path: Mapped[str] = mapped_column(String(1024))
    address: Mapped[str | None] = mapped_column(String(255))
    data_center_id: Mapped[str | None] = mapped_column(ForeignKey("datacenters.id"))
    status: Mapped[str] = mapped_column(String(32), default="unattached")
    available: Mapped[int | None] = mapped_column(BigInteger)
    used: Mapped[int | None] = mapped_column(BigInteger)
    created: Mapped[datetime] = _created()


class Network(Base):
    __tablename__ = "networks"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    data_center_id: Mapped[str] = mapped_column(ForeignKey("datacenters.id"))
    vlan: Mapped[int | None] = mapped_column(Integer)
    mtu: Mapped[int] = mapped_column(Integer, default=0)
    __table_args__ = (UniqueConstraint("name", "data_center_id"),)


class Template(Base):
    __tablename__ = "templates"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"))
    memory: Mapped[int] = mapped_column(BigInteger, default=128 * 1024 * 1024)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    os_type: Mapped[str] = mapped_column(String(64), default="other")
    status: Mapped[str] = mapped_column(String(32), default="ok")
    source_vm_id: Mapped[str | None] = mapped_column(String(36))
    created: Mapped[datetime] = _created()


class Vm(Base):
    __tablename__ = "vms"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"))
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id"))
    memory: Mapped[int] = mapped_column(BigInteger)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    os_type: Mapped[str] = mapped_column(String(64), default="other")
    high_availability: Mapped[bool] = mapped_column(Boolean, default=False)
    # restart order after a host failure: higher first (oVirt: 1 low, 50 medium, 100 high)
    ha_priority: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # where the VM's own sanlock lease lives (None: no lease); HA VMs get one
    # when VM leases are enabled, so no two hosts can ever run the VM at once
    lease_storage_domain_id: Mapped[str | None] = mapped_column(ForeignKey("storage_domains.id"))
    # observed state
    status: Mapped[str] = mapped_column(String(32), default="down")
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"))
    # the engine's intent: when set, a graceful shutdown past this time is forced
    shutdown_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # set while an API worker drives a transition (start, migrate); the monitor
    # leaves the VM alone until then, and takes over if the worker died
    busy_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_reason: Mapped[str] = mapped_column(Text, default="")
    # an HA VM waiting to be restarted after this host failed (None: no restart pending)
    ha_restart_host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created: Mapped[datetime] = _created()
    # optimistic locking: the monitor and API workers both write VM rows; a
    # write based on a stale read fails instead of undoing the other's change
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    __mapper_args__ = {"version_id_col": version}


class Nic(Base):
    __tablename__ = "nics"
    id: Mapped[str] = _id()
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    interface: Mapped[str] = mapped_column(String(32), default="virtio")
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    network_id: Mapped[str | None] = mapped_column(ForeignKey("networks.id"))
    __table_args__ = (UniqueConstraint("vm_id", "name"),)


class Disk(Base):
    __tablename__ = "disks"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    storage_domain_id: Mapped[str] = mapped_column(ForeignKey("storage_domains.id"))
    provisioned_size: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16), default="cow")
    # the qcow2 file the disk writes to now (top of its chain), in the domain's pool
    active_volume: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="ok")
    template_id: Mapped[str | None] = mapped_column(ForeignKey("templates.id"))
    created: Mapped[datetime] = _created()


class Volume(Base):
    """One qcow2 file of a disk's chain; deleted with the disk that owns it."""
    __tablename__ = "volumes"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    disk_id: Mapped[str] = mapped_column(ForeignKey("disks.id", ondelete="CASCADE"))
    backing: Mapped[str | None] = mapped_column(String(255))


class DiskAttachment(Base):
    __tablename__ = "disk_attachments"
    id: Mapped[str] = _id()   # oVirt uses the disk id; we keep them equal
    disk_id: Mapped[str] = mapped_column(ForeignKey("disks.id", ondelete="CASCADE"), unique=True)
    vm_id: Mapped[str | None] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    template_id: Mapped[str | None] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    interface: Mapped[str] = mapped_column(String(32), default="virtio")
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Snapshot(Base):
    __tablename__ = "snapshots"
    id: Mapped[str] = _id()
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="ok")
    # {disk_id: volume name frozen by this snapshot}
    volumes: Mapped[dict] = mapped_column(JSON, default=dict)
    memory: Mapped[int] = mapped_column(BigInteger)
    cpus: Mapped[int] = mapped_column(Integer)
    date: Mapped[datetime] = _created()


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16), default="normal")
    description: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = _created()
    origin: Mapped[str] = mapped_column(String(255), default="keel")
    custom_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[str | None] = mapped_column(String(36))
    vm_id: Mapped[str | None] = mapped_column(String(36))
    host_id: Mapped[str | None] = mapped_column(String(36))
    cluster_id: Mapped[str | None] = mapped_column(String(36))
    data_center_id: Mapped[str | None] = mapped_column(String(36))
    storage_domain_id: Mapped[str | None] = mapped_column(String(36))
    template_id: Mapped[str | None] = mapped_column(String(36))


class Job(Base):
    """A long operation (oVirt's job): recorded by the request that asks for
    it, carried out by the engine worker, visible while it runs."""
    __tablename__ = "jobs"
    id: Mapped[str] = _id()
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="started")   # started | finished | failed | aborted
    start_time: Mapped[datetime] = _created()
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_updated: Mapped[datetime] = _created()
    auto_cleared: Mapped[bool] = mapped_column(Boolean, default=True)
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[str | None] = mapped_column(String(36))
    # what the worker runs (None: a record of work done elsewhere) and with what
    kind: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict | None] = mapped_column(JSON, default=dict)
    result: Mapped[dict | None] = mapped_column(JSON, default=dict)
    # how a failed job failed, as the API would have answered
    fault_status: Mapped[int | None] = mapped_column(Integer)
    fault_reason: Mapped[str | None] = mapped_column(Text)
    fault_detail: Mapped[str | None] = mapped_column(Text)
    # the worker that took it (None: waiting for one)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_jobs_queue", "status", "claimed_by"),)


class Step(Base):
    __tablename__ = "steps"
    id: Mapped[str] = _id()
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16), default="executing")   # oVirt: validating, executing, ...
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="started")
    start_time: Mapped[datetime] = _created()
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """Failed sign-ins in a row, per user name and per source address: the
    throttle that makes guessing passwords slow (shared by every web worker)."""
    __tablename__ = "login_failures"
    key: Mapped[str] = mapped_column(String(320), primary_key=True)   # user:NAME@DOMAIN or addr:IP
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[datetime] = _created()
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkerLease(Base):
    """Exactly one engine worker acts at a time: it holds this row's lease and
    renews it; another worker waits until the lease is stale."""
    __tablename__ = "worker_lease"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    renewed: Mapped[datetime] = mapped_column(DateTime(timezone=True))
