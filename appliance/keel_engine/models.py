"""The engine's database schema: the source of truth for the cluster's
configuration (what should exist and how it is configured) and the last
observed state (written by the monitor)."""
import uuid
from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint, event)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.attributes import flag_modified

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
    # the directory's own id of the account (entryUUID, nsUniqueId, objectGUID); None: internal
    external_id: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    last_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    email: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # a disabled user cannot sign in, and its tokens stop working at once
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    __table_args__ = (UniqueConstraint("name", "domain"),)


class Group(Base):
    """A directory group the engine knows (added by an administrator): its
    members are whoever the directory says at their last sign-in."""
    __tablename__ = "groups"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255))
    domain: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    created: Mapped[datetime] = _created()
    __table_args__ = (UniqueConstraint("domain", "external_id"),)


class DirectoryMembership(Base):
    """The groups a directory user belonged to when they last signed in
    (matched to `groups` by domain and the directory's group id)."""
    __tablename__ = "directory_memberships"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    group_external_id: Mapped[str] = mapped_column(String(255), primary_key=True)


class Directory(Base):
    """An LDAP directory users sign in from as user@NAME."""
    __tablename__ = "directories"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    profile: Mapped[str] = mapped_column(String(32))          # openldap | 389ds | freeipa | ad
    urls: Mapped[str] = mapped_column(Text)                    # space-separated ldap:// or ldaps:// URLs
    tls: Mapped[str] = mapped_column(String(16), default="starttls")   # starttls | ldaps | none
    ca_file: Mapped[str | None] = mapped_column(String(1024))
    base_dn: Mapped[str] = mapped_column(String(1024))
    bind_dn: Mapped[str | None] = mapped_column(String(1024))
    bind_password_encrypted: Mapped[str] = mapped_column(Text, default="")
    timeout: Mapped[float] = mapped_column(Float, default=5.0)
    # AD only: sign in with userPrincipalName (upn) or sAMAccountName
    login_attribute: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[datetime] = _created()


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
    # built-in roles are read-only
    mutable: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    # oVirt's allows_viewing_children: a permission with this role shows the
    # objects under its object too, not only the object itself
    allows_viewing_children: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")


class RolePermit(Base):
    """One permit (oVirt's action group, see services/access.py) of a role."""
    __tablename__ = "role_permits"
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    permit_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class Permission(Base):
    """A role given to a user or a group on an object (and what lies under it)."""
    __tablename__ = "permissions"
    id: Mapped[str] = _id()
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"))
    # exactly one of user_id and group_id
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    # object the permission applies to (oVirt's tag: vm, cluster, data_center,
    # host, storage_domain, template, vm_pool, disk); None = the whole system
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(36), index=True)


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
    # the local directory every host opens (for nfs: where the export is mounted)
    path: Mapped[str] = mapped_column(String(1024))
    address: Mapped[str | None] = mapped_column(String(255))      # nfs: the server
    export_path: Mapped[str | None] = mapped_column(String(1024))  # nfs: the export on the server
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
    # direct kernel boot (oVirt's os.kernel, os.initrd, os.cmdline): paths on the hosts
    kernel_path: Mapped[str] = mapped_column(Text, default="", server_default="")
    initrd_path: Mapped[str] = mapped_column(Text, default="", server_default="")
    kernel_params: Mapped[str] = mapped_column(Text, default="", server_default="")
    # the ISO image in the CD-ROM ("" empty): a file of that storage domain
    cdrom_file: Mapped[str] = mapped_column(String(255), default="", server_default="")
    cdrom_storage_domain_id: Mapped[str | None] = mapped_column(ForeignKey("storage_domains.id"))
    # the cloud-init NoCloud seed attached for the current boot ("" none): a
    # volume of that storage domain, removed when the VM is down again
    seed_volume: Mapped[str] = mapped_column(String(255), default="", server_default="")
    seed_storage_domain_id: Mapped[str | None] = mapped_column(ForeignKey("storage_domains.id"))
    # what the guest agent last reported (None/"": no agent answered during this run)
    guest_fqdn: Mapped[str] = mapped_column(String(255), default="", server_default="")
    guest_os: Mapped[dict | None] = mapped_column(JSON)
    guest_interfaces: Mapped[list | None] = mapped_column(JSON)
    guest_reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created: Mapped[datetime] = _created()
    # optimistic locking: the monitor and API workers both write VM rows; a
    # write based on a stale read fails instead of undoing the other's change
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    __mapper_args__ = {"version_id_col": version}


GUEST_REPORT = {"guest_fqdn": "", "guest_os": None, "guest_interfaces": None, "guest_reported_at": None}


@event.listens_for(Vm.status, "set")
def _guest_report_ends_with_the_run(vm, value, old, _initiator):
    """What a guest agent reported belongs to one run of its VM: it goes when
    the VM is down, in the same flush, whatever brought it down (a stop, a
    shutdown from inside, its host's failure, a start that failed): each of
    them sets this attribute, so this one place covers them all. Written
    even when it looks unchanged: the monitor may have stored a report after
    this row was read (it never stores one on a VM that is no longer up)."""
    if value == "down" and old != "down":
        for key, empty in GUEST_REPORT.items():
            setattr(vm, key, empty)
            flag_modified(vm, key)


class VmInitialization(Base):
    """A VM's cloud-init configuration (oVirt's `initialization`), given to the
    guest as a NoCloud seed when the VM starts with use_cloud_init. The root
    password is kept because the seed needs it; it is never returned or logged."""
    __tablename__ = "vm_initializations"
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    user_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    root_password: Mapped[str] = mapped_column(Text, default="", server_default="")
    authorized_ssh_keys: Mapped[str] = mapped_column(Text, default="", server_default="")
    custom_script: Mapped[str] = mapped_column(Text, default="", server_default="")
    dns_servers: Mapped[str] = mapped_column(Text, default="", server_default="")
    dns_search: Mapped[str] = mapped_column(Text, default="", server_default="")
    timezone: Mapped[str] = mapped_column(String(64), default="", server_default="")
    nic_configurations: Mapped[list | None] = mapped_column(JSON)


class Nic(Base):
    __tablename__ = "nics"
    id: Mapped[str] = _id()
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    interface: Mapped[str] = mapped_column(String(32), default="virtio")
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    network_id: Mapped[str | None] = mapped_column(ForeignKey("networks.id"))
    # oVirt's `plugged`: in the VM's domain (live, or at its next start); an
    # unplugged NIC stays configured but the guest does not see it
    plugged: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
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


class HaHost(Base):
    """A host as its HA agent last published it in the hosts' etcd (what
    `hosted-engine --vm-status` shows), copied there by the engine worker
    every monitor cycle; web workers read these rows, never etcd. The rows
    are the records of the last good read: a record gone from etcd (its
    host's etcd lease expired) is a row gone, and a failed read leaves them
    as they were (`HaCluster.updated` says when that was)."""
    __tablename__ = "ha_hosts"
    # the HA host id (the host's sanlock host id), not an engine host's id
    host_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hostname: Mapped[str] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(255))     # None: its broker does not publish one
    ha_state: Mapped[str] = mapped_column(String(64))            # the agent's state, e.g. EngineUp
    score: Mapped[int] = mapped_column(Integer)
    engine_vm_running: Mapped[bool] = mapped_column(Boolean)     # the engine VM runs on this host
    engine_health: Mapped[str | None] = mapped_column(String(16))   # good | bad | unknown, as seen from there
    engine_detail: Mapped[str] = mapped_column(Text, default="")    # e.g. "Down", and why: for people
    local_maintenance: Mapped[bool] = mapped_column(Boolean)
    agent_stopped: Mapped[bool] = mapped_column(Boolean)         # the agent does not take part
    record_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))   # when its broker wrote it
    # older than the agents' own staleness rule allows, when it was read
    stale: Mapped[bool] = mapped_column(Boolean)


class HaCluster(Base):
    """The HA cluster's own facts, one row (id 1) while the engine is told
    where the hosts' etcd is; no row: not configured."""
    __tablename__ = "ha_cluster"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    global_maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    updated: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))   # the last good read
    error: Mapped[str | None] = mapped_column(Text)      # why the last read failed; None: it did not


class UsageSample(Base):
    """A cluster's use at one moment, for the dashboard's charts: what the
    host monitor last saw of its hosts that are up, and what its running VMs
    are given. The engine worker writes one row per cluster at most once a
    minute, all with the same time, and deletes rows older than a day."""
    __tablename__ = "usage_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    sampled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    hosts_up: Mapped[int] = mapped_column(Integer)
    host_cpus: Mapped[int] = mapped_column(Integer)          # CPUs of its hosts that are up
    vm_cpus: Mapped[int] = mapped_column(Integer)            # virtual CPUs of its running VMs
    memory_total: Mapped[int] = mapped_column(BigInteger)    # bytes, of its hosts that are up
    memory_used: Mapped[int] = mapped_column(BigInteger)     # total less what the hosts report free
    vm_memory: Mapped[int] = mapped_column(BigInteger)       # given to its running VMs


class VmPool(Base):
    """oVirt's VM pool: VMs made from one template, handed to users on request;
    `prestarted_vms` of the free ones are kept running."""
    __tablename__ = "vm_pools"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"))
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id"))
    type: Mapped[str] = mapped_column(String(16), default="automatic")     # automatic | manual
    size: Mapped[int] = mapped_column(Integer, default=1)
    prestarted_vms: Mapped[int] = mapped_column(Integer, default=0)
    max_user_vms: Mapped[int] = mapped_column(Integer, default=1)
    # removed by an administrator: the worker removes its VMs, then the pool
    removing: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = _created()


class VmPoolMember(Base):
    """A pool's VM and who holds it. state: preparing (its disks or its clean
    snapshot are being made), free, allocated (to user_id, through the
    permission permission_id), returning (its changes being discarded),
    removing (the pool shrank)."""
    __tablename__ = "vm_pool_members"
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("vm_pools.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="preparing")
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    permission_id: Mapped[str | None] = mapped_column(String(36))
    # the snapshot an automatic pool's VM goes back to when its user is done
    base_snapshot_id: Mapped[str | None] = mapped_column(String(36))
    allocated: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the VM ran since it was allocated (so a down VM means its user is done)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    # the job that makes the VM clean again (returning) or takes its clean snapshot (preparing)
    job_id: Mapped[str | None] = mapped_column(String(36))
