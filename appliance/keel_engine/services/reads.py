"""Reads: what the API and the UI show, in a constant number of queries per
answer. Lists come back as plain rows (no ORM objects: a list of 10,000 VMs
is the common big read); whatever a view needs beside a row (its NICs, its
host's name, a host's VM count) is loaded in one query for the whole page.

Every read goes through here, so there is one place that decides what a
caller may see."""
from __future__ import annotations

from dataclasses import dataclass

from functools import lru_cache

from sqlalchemy import and_, bindparam, func, literal, or_, select
from sqlalchemy.orm import Session

from .. import search as search_mod
from ..errors import not_found
from ..models import (Cluster, DataCenter, Disk, DiskAttachment, Event, FenceAgent, Host, Job, Network, Nic,
                      Group, Permission, Role, Snapshot, Step, StorageDomain, Template, User, Vm, VmPool,
                      VmPoolMember)
from ..search import Via
from ..text import invalid_char
from . import access, auth

CHUNK = 500    # ids per IN (...) list


@dataclass(frozen=True, eq=False)
class Collection:
    model: type
    kind: str                    # how messages name one (e.g. "VM")
    order: tuple = ()
    search: dict | None = None   # search field -> column or Via


def _names(model, column):
    """A search field on the name of the row another column points at."""
    return Via(lambda value, cs=False: column.in_(select(model.id).where(
        search_mod.matches_column(model.name, value, cs))), column)


def _user_name(value, cs=False):
    """usrname=LOGIN@DOMAIN (what ovirt_user and ovirt_permission search by),
    or LOGIN alone; oVirt's name of the internal domain, internal-authz, is
    Keel's internal."""
    login, at, domain = value.rpartition("@")
    if not at:
        return search_mod.matches_column(User.name, value, cs)
    if domain.lower() in auth.INTERNAL_ALIASES:
        domain = auth.INTERNAL
    return and_(search_mod.matches_column(User.name, login, cs), search_mod.matches_column(User.domain, domain, cs))


def _dc_of_cluster(column, or_none=False):
    """A search field on the data center of the cluster `column` points at;
    or_none: a row without a cluster belongs to every data center (Blank)."""
    def build(value, cs=False):
        cond = column.in_(select(Cluster.id).join(DataCenter, DataCenter.id == Cluster.data_center_id)
                          .where(search_mod.matches_column(DataCenter.name, value, cs)))
        return or_(column.is_(None), cond) if or_none else cond
    return Via(build, None if or_none else column)


def _owners(column, model, key, name_column):
    """A search field on the name of a row that refers to this one
    (data centers by the name of one of their clusters, say)."""
    return Via(lambda value, cs=False: column.in_(select(key).select_from(model).where(
        key.is_not(None), search_mod.matches_column(name_column, value, cs))))


def _always(text):
    """A search field whose value is the same for every row here (every disk
    is an image; Keel has no LUN disks): a term on it matches all or none."""
    return Via(lambda value, cs=False: search_mod.matches_column(literal(text), value, cs))


VMS = Collection(Vm, "VM", (Vm.name,), {
    "name": Vm.name, "status": Vm.status, "description": Vm.description, "id": Vm.id,
    "cluster": _names(Cluster, Vm.cluster_id), "cluster.name": _names(Cluster, Vm.cluster_id),
    "host": _names(Host, Vm.host_id), "host.name": _names(Host, Vm.host_id),
    "template": _names(Template, Vm.template_id), "template.name": _names(Template, Vm.template_id),
    "datacenter": _dc_of_cluster(Vm.cluster_id),
    "pool": Via(lambda value, cs=False: Vm.id.in_(select(VmPoolMember.vm_id).join(
        VmPool, VmPool.id == VmPoolMember.pool_id).where(search_mod.matches_column(VmPool.name, value, cs)))),
    "storage": Via(lambda value, cs=False: Vm.id.in_(select(DiskAttachment.vm_id).join(
        Disk, Disk.id == DiskAttachment.disk_id).join(StorageDomain, StorageDomain.id == Disk.storage_domain_id)
        .where(search_mod.matches_column(StorageDomain.name, value, cs)))),
    "type": _always("server")})
HOSTS = Collection(Host, "host", (Host.name,), {
    "name": Host.name, "status": Host.status, "address": Host.address, "id": Host.id,
    "cluster": _names(Cluster, Host.cluster_id), "cluster.name": _names(Cluster, Host.cluster_id),
    "datacenter": _dc_of_cluster(Host.cluster_id), "type": _always("rhel")})
DATACENTERS = Collection(DataCenter, "data center", (DataCenter.name,), {
    "name": DataCenter.name, "id": DataCenter.id, "description": DataCenter.description, "status": _always("up"),
    "clusters.name": _owners(DataCenter.id, Cluster, Cluster.data_center_id, Cluster.name),
    "cluster": _owners(DataCenter.id, Cluster, Cluster.data_center_id, Cluster.name),
    "storage": _owners(DataCenter.id, StorageDomain, StorageDomain.data_center_id, StorageDomain.name),
    "storage.name": _owners(DataCenter.id, StorageDomain, StorageDomain.data_center_id, StorageDomain.name)})
CLUSTERS = Collection(Cluster, "cluster", (Cluster.name,), {
    "name": Cluster.name, "id": Cluster.id, "description": Cluster.description,
    "datacenter": _names(DataCenter, Cluster.data_center_id),
    "datacenter.name": _names(DataCenter, Cluster.data_center_id)})
STORAGE_DOMAINS = Collection(StorageDomain, "storage domain", (StorageDomain.name,), {
    "name": StorageDomain.name, "status": StorageDomain.status, "id": StorageDomain.id,
    "description": StorageDomain.description, "type": StorageDomain.type,
    "datacenter": _names(DataCenter, StorageDomain.data_center_id),
    "datacenter.name": _names(DataCenter, StorageDomain.data_center_id)})
NETWORKS = Collection(Network, "network", (Network.name,), {
    "name": Network.name, "id": Network.id, "description": Network.description,
    "datacenter": _names(DataCenter, Network.data_center_id),
    "datacenter.name": _names(DataCenter, Network.data_center_id),
    "clusters.name": Via(lambda value, cs=False: Network.data_center_id.in_(select(Cluster.data_center_id).where(
        search_mod.matches_column(Cluster.name, value, cs))))})
TEMPLATES = Collection(Template, "template", (Template.name,), {
    "name": Template.name, "id": Template.id, "status": Template.status, "description": Template.description,
    "cluster": _names(Cluster, Template.cluster_id), "cluster.name": _names(Cluster, Template.cluster_id),
    # Blank (no cluster) is in every data center, as in oVirt
    "datacenter": _dc_of_cluster(Template.cluster_id, or_none=True),
    # the template a VM was made from
    "vm.name": Via(lambda value, cs=False: Template.id.in_(select(Vm.template_id).where(
        search_mod.matches_column(Vm.name, value, cs))))})
def _disk_of_vm():
    return Via(lambda value, cs=False: Disk.id.in_(select(DiskAttachment.disk_id).join(
        Vm, Vm.id == DiskAttachment.vm_id).where(search_mod.matches_column(Vm.name, value, cs))))


DISKS = Collection(Disk, "disk", (Disk.name,), {
    "name": Disk.name, "alias": Disk.name, "id": Disk.id, "status": Disk.status,
    "description": Disk.description,
    "storage": _names(StorageDomain, Disk.storage_domain_id),
    "storage.name": _names(StorageDomain, Disk.storage_domain_id),
    "vm.name": _disk_of_vm(), "vm_names": _disk_of_vm(),
    "disk_type": _always("image"), "format": Disk.format})
EVENTS = Collection(Event, "event", (Event.id.desc(),), {
    "severity": Event.severity, "code": Event.code, "type": Event.code, "description": Event.description,
    "message": Event.description, "origin": Event.origin,
    "vm": _names(Vm, Event.vm_id), "vm.name": _names(Vm, Event.vm_id), "vm.id": Event.vm_id,
    "host": _names(Host, Event.host_id), "host.name": _names(Host, Event.host_id), "host.id": Event.host_id,
    "cluster": _names(Cluster, Event.cluster_id)})
JOBS = Collection(Job, "job", (Job.start_time.desc(),), {"name": Job.description, "status": Job.status,
                                                        "description": Job.description})
USERS = Collection(User, "user", (User.name,), {"name": User.name, "usrname": Via(_user_name), "domain": User.domain,
                                                "last_name": User.last_name, "email": User.email})
GROUPS = Collection(Group, "group", (Group.name,), {"name": Group.name, "domain": Group.domain})
POOLS = Collection(VmPool, "VM pool", (VmPool.name,), {"name": VmPool.name, "description": VmPool.description,
                                                      "cluster": _names(Cluster, VmPool.cluster_id)})
ROLES = Collection(Role, "role", (Role.name,), {"name": Role.name})
PERMISSIONS = Collection(Permission, "permission", (Permission.id,), {"name": Permission.id})
NICS = Collection(Nic, "network interface", (Nic.name,), {"name": Nic.name})
SNAPSHOTS = Collection(Snapshot, "snapshot", (Snapshot.date,), {"name": Snapshot.description,
                                                                "description": Snapshot.description})
DISK_ATTACHMENTS = Collection(DiskAttachment, "disk attachment", (DiskAttachment.position,), {})
FENCE_AGENTS = Collection(FenceAgent, "fence agent", (FenceAgent.order,), {"name": FenceAgent.address})
STEPS = Collection(Step, "step", (Step.number,), {})


def run(db, q, params=None):
    """Execute a Core statement on a plain connection, or on a session's own
    connection: a read needs none of the ORM's machinery."""
    conn = db.connection() if isinstance(db, Session) else db
    return conn.execute(q, params or {})


def _select(coll: Collection):
    return select(*coll.model.__table__.columns)


def list_rows(ctx, s, coll: Collection, search: str | None = None, limit: int | None = None, *where,
              case_sensitive: bool = False, offset: int = 0):
    """Rows of a collection, searched (oVirt's syntax) and limited, in its order."""
    q = _select(coll)
    terms = search_mod.parse(search, set(coll.search or {})) if search else []
    cond = search_mod.where(terms, coll.search or {}, case_sensitive)
    if cond is not None:
        q = q.where(cond)
    for w in where:
        q = q.where(w)
    seen = access.visible(ctx, coll.model)
    if seen is not None:
        q = q.where(seen)
    q = q.order_by(*coll.order)
    if limit is not None:
        q = q.limit(limit)
    if offset:
        q = q.offset(offset)
    return run(s, q, access.params(ctx)).all()


@lru_cache(maxsize=None)
def _by_id(coll: Collection, mode: str):
    """One statement per collection and access mode, built once: SQLAlchemy
    then reuses its compiled form (a GET of one object is the API's most
    common call). What the caller may see is part of the statement."""
    q = _select(coll).where(coll.model.__table__.c.id == bindparam("ident"))
    seen = access.rule(mode, coll.model)
    return q if seen is None else q.where(seen)


def get_row(ctx, s, coll: Collection, ident, *where):
    """One row by id, or a 404 naming what was asked for."""
    if not isinstance(ident, (str, int)) or (isinstance(ident, str) and (len(ident) > 64 or invalid_char(ident))):
        raise not_found(coll.kind, "?")
    q = _by_id(coll, access.mode(ctx))
    for w in where:
        q = q.where(w)
    row = run(s, q, {"ident": ident, **access.params(ctx)}).first()
    if row is None:
        raise not_found(coll.kind, ident)
    return row


def _chunks(ids):
    ids = list(ids)
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


def by_id(s, model, ids, ctx=None) -> dict:
    """{id: row}; with ctx, only the rows the caller may see (a VM's host, say)."""
    seen = access.visible(ctx, model) if ctx is not None else None
    out = {}
    for part in _chunks({i for i in ids if i}):
        q = select(*model.__table__.columns).where(model.id.in_(part))
        for r in run(s, q if seen is None else q.where(seen), access.params(ctx) if ctx is not None else None):
            out[r.id] = r
    return out


def grouped(s, model, key_column, ids, order=()) -> dict:
    """{key: [rows]} of the rows whose key_column is one of ids."""
    out = {}
    for part in _chunks(ids):
        q = select(*model.__table__.columns).where(key_column.in_(part)).order_by(*order)
        for r in run(s, q):
            out.setdefault(getattr(r, key_column.key), []).append(r)
    return out


def counts(s, key_column, ids) -> dict:
    """{key: how many rows have it} for the keys in ids (absent: none), e.g.
    the VMs of each cluster of a page: one query per 500 keys, not one a key."""
    out = {}
    for part in _chunks(ids):
        out.update(run(s, select(key_column, func.count()).where(key_column.in_(part))
                       .group_by(key_column)).all())
    return out


def hosts_with_fence_agents(s: Session, host_ids) -> set:
    """Which of these hosts have at least one fence agent (power management on)."""
    if not host_ids:
        return set()
    return set(s.scalars(select(FenceAgent.host_id).where(FenceAgent.host_id.in_(list(host_ids))).distinct()))


def vm_counts(s, host_ids) -> dict:
    return counts(s, Vm.host_id, host_ids)


def attachments(s, owner_column, ids) -> dict:
    """{owner id: [(attachment row, disk row)]} in attachment order."""
    rows = grouped(s, DiskAttachment, owner_column, ids, (DiskAttachment.position,))
    disks = by_id(s, Disk, [a.disk_id for atts in rows.values() for a in atts])
    return {owner: [(a, disks[a.disk_id]) for a in atts if a.disk_id in disks] for owner, atts in rows.items()}


def count(s, model, *where, ctx=None) -> int:
    """How many rows (with ctx: of those the caller may see)."""
    seen = access.visible(ctx, model) if ctx is not None else None
    q = select(func.count()).select_from(model).where(*where)
    return run(s, q if seen is None else q.where(seen), access.params(ctx) if ctx is not None else None).scalar()
