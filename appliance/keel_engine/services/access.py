"""Who may do what, in oVirt's model, answered here and nowhere else.

A permit is one kind of action (services/permits.py); a role is a set of
permits; a permission gives a role to a user or to a group on an object.
A permission covers what lies under its object:

    system > data center > cluster > host, VM, VM pool, template
             data center > storage domain > disk;  VM > its disks
             VM pool > its VMs (administrative roles only: a user role on a
             pool lets one take a VM from it, not use everyone's)

Permits are inherited downward whatever the role. Seeing is narrower: a
permission shows its own object, and what lies under it only if its role
"allows viewing children" (oVirt's flag: a VmCreator on a cluster sees the
cluster, not everybody's VMs in it). The Blank template is everyone's.

Two questions:

- ``check(ctx, s, PERMIT, obj)``: may the caller do this to that object?
  Returns quietly, or raises a 404 (the caller may not see the object: it
  reads as if it did not exist) or a 403 (it may see it, not do this).
  Every write service calls it first thing.
- ``visible(ctx, Model)``: which rows may the caller see? An SQL condition
  (``params(ctx)`` holds its values) that services/reads.py adds to every
  list and get, so a list still costs one query.

A Context without a user (the engine worker, the command line) is the
engine itself and may do anything. ``ctx.filtered`` is oVirt's
``Filter: true``: only what the caller's user (non-administrative) roles
give. Without it an administrator sees what all their roles give; a user
without any administrative role sees the same either way (oVirt with
ENGINE_API_FILTER_BY_DEFAULT=true, instead of refusing the call).

How a UI view uses it: it calls the same service functions as the API (they
check), lists through services/reads.py (filtered), and asks
``allowed(ctx, s, obj)`` once per object shown for the set of permit names
the user holds there, to show only the buttons that will work.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import String, and_, bindparam, exists, false, or_, select, true

from ..errors import Fault, not_found
from ..models import (BLANK_TEMPLATE_ID, Cluster, DataCenter, DirectoryMembership, Disk, DiskAttachment, Event,
                      FenceAgent, Group, Host, Job, Network, Nic, Permission, Role, RolePermit, Snapshot, Step,
                      StorageDomain, Template, User, Vm, VmPool, VmPoolMember)
from . import permits as P

SYSTEM = None
KIND = {"data_center": "data center", "cluster": "cluster", "host": "host", "storage_domain": "storage domain",
        "template": "template", "vm": "VM", "vm_pool": "VM pool", "disk": "disk", "network": "network"}
# the objects a permission may name, and the collection their href lives in
OBJECT_TYPES = {"data_center": "datacenters", "cluster": "clusters", "host": "hosts",
                "storage_domain": "storagedomains", "template": "templates", "vm": "vms", "vm_pool": "vmpools",
                "disk": "disks"}
MODEL_TYPE = {DataCenter: "data_center", Cluster: "cluster", Host: "host", StorageDomain: "storage_domain",
              Template: "template", Vm: "vm", VmPool: "vm_pool", Disk: "disk", Network: "network"}


# ---- the pure decision ------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One object of a chain: the object itself first, then what lies above it."""
    type: str | None          # None: the system
    id: str | None
    via_pool: bool = False    # a VM's pool: only administrative roles reach through it


@dataclass(frozen=True)
class Grant:
    """A permission of the caller (or of one of its groups), with its role's facts."""
    object_type: str | None
    object_id: str | None
    administrative: bool
    views_children: bool
    permits: frozenset


ALLOWED, VISIBLE, HIDDEN = "allowed", "visible", "hidden"


def _covers(grant: Grant, node: Node) -> bool:
    if grant.object_type != node.type or grant.object_id != node.id:
        return False
    return grant.administrative or not node.via_pool


def decide(chain: list[Node], grants: list[Grant], permit: str | None, filtered=False) -> str:
    """ALLOWED (a grant on the object or above it has the permit), VISIBLE (the
    caller may see the object), or HIDDEN."""
    if permit is not None and any(permit in g.permits and _covers(g, n) for g in grants for n in chain):
        return ALLOWED
    return VISIBLE if sees(chain, grants, filtered) else HIDDEN


def sees(chain: list[Node], grants: list[Grant], filtered=False) -> bool:
    for g in grants:
        if filtered and g.administrative:
            continue
        if _covers(g, chain[0]) or (g.views_children and any(_covers(g, n) for n in chain[1:])):
            return True
    return chain[0].type == "template" and chain[0].id == BLANK_TEMPLATE_ID


# ---- chains: what lies above an object -------------------------------------------------
def _dc_chain(dc_id):
    return ([Node("data_center", dc_id)] if dc_id else []) + [Node(SYSTEM, None)]


def _cluster_chain(s, cluster_id):
    cl = s.get(Cluster, cluster_id) if cluster_id else None
    return ([Node("cluster", cl.id)] + _dc_chain(cl.data_center_id)) if cl else [Node(SYSTEM, None)]


def chain(s, obj) -> list[Node]:
    """The object's node and its ancestors' (the system last), from the database."""
    if obj is None:
        return [Node(SYSTEM, None)]
    kind = MODEL_TYPE.get(type(obj))
    if kind == "data_center":
        return [Node(kind, obj.id)] + _dc_chain(None)
    if kind == "cluster":
        return [Node(kind, obj.id)] + _dc_chain(obj.data_center_id)
    if kind in ("host", "template", "vm_pool"):
        return [Node(kind, obj.id)] + _cluster_chain(s, obj.cluster_id)
    if kind in ("storage_domain", "network"):
        return [Node(kind, obj.id)] + _dc_chain(obj.data_center_id)
    if kind == "vm":
        out = [Node(kind, obj.id)] + _cluster_chain(s, obj.cluster_id)
        member = s.get(VmPoolMember, obj.id)
        return out + ([Node("vm_pool", member.pool_id, via_pool=True)] if member else [])
    if kind == "disk":
        out = [Node(kind, obj.id)] + chain(s, s.get(StorageDomain, obj.storage_domain_id))
        att = s.scalar(select(DiskAttachment).where(DiskAttachment.disk_id == obj.id))
        if att is not None:
            owner = s.get(Vm, att.vm_id) if att.vm_id else s.get(Template, att.template_id)
            out += chain(s, owner) if owner is not None else []
        return list(dict.fromkeys(out))
    raise TypeError(f"no access chain for {type(obj).__name__}")


# ---- the caller's grants ------------------------------------------------------------------
def principal(user_id):
    """A permission naming the user, or a group the directory last said it is in."""
    groups = (select(Group.id).join(DirectoryMembership, and_(
        DirectoryMembership.domain == Group.domain, DirectoryMembership.group_external_id == Group.external_id))
        .where(DirectoryMembership.user_id == user_id))
    return or_(Permission.user_id == user_id, Permission.group_id.in_(groups))


def grants(s, user_id, nodes=None) -> list[Grant]:
    """The caller's permissions on these nodes (all of them: None), one query."""
    q = (select(Permission.object_type, Permission.object_id, Role.id, Role.administrative,
                Role.allows_viewing_children, RolePermit.permit_id)
         .join(Role, Role.id == Permission.role_id).outerjoin(RolePermit, RolePermit.role_id == Role.id)
         .where(principal(user_id)))
    if nodes is not None:
        ids = [n.id for n in nodes if n.id]
        q = q.where(or_(Permission.object_type.is_(None), Permission.object_id.in_(ids)))
    found = {}
    for otype, oid, role_id, admin, children, permit_id in s.execute(q):
        key = (otype, oid, role_id)
        if key not in found:
            found[key] = (admin, children, set())
        if permit_id in P.BY_ID:
            found[key][2].add(P.BY_ID[permit_id].name)
    return [Grant(otype, oid, admin, children, frozenset(names))
            for (otype, oid, _r), (admin, children, names) in found.items()]


def is_engine(ctx) -> bool:
    return ctx.user_id is None


def _kind_of(obj):
    return KIND.get(MODEL_TYPE.get(type(obj)), "object")


def check(ctx, s, permit: str, obj) -> None:
    """Raise unless the caller holds `permit` on `obj` (None: the system);
    404 if it may not even see `obj`, 403 if it may."""
    if permit not in P.BY_NAME:
        raise ValueError(f"unknown permit {permit!r}")   # a programming error, never the caller's
    if is_engine(ctx):
        return
    nodes = chain(s, obj)
    verdict = decide(nodes, grants(s, ctx.user_id, nodes), permit)
    if verdict == ALLOWED:
        return
    if verdict == HIDDEN and obj is not None:
        raise not_found(_kind_of(obj), obj.id)
    where = "the system" if obj is None else f"{_kind_of(obj)} {getattr(obj, 'name', obj.id)}"
    raise Fault(403, "Forbidden", f"you need the {permit} permit on {where}; none of your roles there has it")


def _missing(field, obj, ref):
    """The 400 of services/lookup.resolve for a reference to nothing, word for
    word (`ref`: what the caller gave), so an object one may not see and one
    that does not exist read alike."""
    kind = _kind_of(obj)
    if ref is not None and ref.name and not ref.id:
        return Fault(400, "Operation Failed", f"{field}: {kind} named '{ref.name}' does not exist")
    return Fault(400, "Operation Failed",
                 f"{field}: {kind} with id '{ref.id if ref is not None and ref.id else obj.id}' does not exist")


def check_ref(ctx, s, permit: str, obj, field: str, ref=None) -> None:
    """check() for an object a request body names: one the caller may not see
    is a 400 as if it did not exist, like a wrong reference."""
    try:
        check(ctx, s, permit, obj)
    except Fault as f:
        if f.status == 404:
            raise _missing(field, obj, ref) from None
        raise


def require_visible(ctx, s, obj, field: str, ref=None):
    """An object a request body names (a host to start on, a lease's storage
    domain) must be one the caller may see; else a 400 as if it did not
    exist. Returns the object."""
    if obj is not None and not is_engine(ctx):
        nodes = chain(s, obj)
        if not sees(nodes, grants(s, ctx.user_id, nodes)):
            raise _missing(field, obj, ref)
    return obj


def may(ctx, s, permit: str, obj) -> bool:
    if is_engine(ctx):
        return True
    nodes = chain(s, obj)
    return decide(nodes, grants(s, ctx.user_id, nodes), permit) == ALLOWED


def can_see(ctx, s, obj) -> bool:
    if is_engine(ctx):
        return True
    nodes = chain(s, obj)
    return sees(nodes, grants(s, ctx.user_id, nodes), ctx.filtered)


def allowed(ctx, s, obj) -> frozenset:
    """The names of every permit the caller holds on `obj` (for a UI's buttons)."""
    if is_engine(ctx):
        return frozenset(P.BY_NAME)
    nodes = chain(s, obj)
    return frozenset(p for p in P.BY_NAME
                     if decide(nodes, grants(s, ctx.user_id, nodes), p) == ALLOWED)


def may_sign_in(s, user_id) -> bool:
    """oVirt's rule: a user signs in only if some role of theirs (or of their
    groups), anywhere, has the login permit."""
    q = (select(Permission.id).join(RolePermit, RolePermit.role_id == Permission.role_id)
         .where(principal(user_id), RolePermit.permit_id == P.BY_NAME["login"].id).limit(1))
    return s.execute(q).first() is not None


def holds_admin_role(s, user_id) -> bool:
    q = (select(Permission.id).join(Role, Role.id == Permission.role_id)
         .where(principal(user_id), Role.administrative.is_(True)).limit(1))
    return s.execute(q).first() is not None


# ---- reads: which rows ---------------------------------------------------------------------
UID = bindparam("acl_uid", type_=String)


def params(ctx) -> dict:
    return {} if is_engine(ctx) else {"acl_uid": ctx.user_id}


class _Rules:
    """The SQL of `visible`, for one mode (filtered or not); all of it uses
    the one bind parameter UID, so a statement is built once per mode."""

    def __init__(self, filtered: bool):
        self.filtered = filtered

    def granted(self, object_type, children=False, admin_only=False):
        """ids of objects of a type the caller has a permission on (that shows
        what is under it, with children=True)."""
        q = (select(Permission.object_id).join(Role, Role.id == Permission.role_id)
             .where(principal(UID), Permission.object_type == object_type))
        if children:
            q = q.where(Role.allows_viewing_children.is_(True))
        if self.filtered:
            q = q.where(Role.administrative.is_(False))
        if admin_only:
            q = q.where(Role.administrative.is_(True))
        return q

    def system(self):
        q = (select(Permission.id).join(Role, Role.id == Permission.role_id)
             .where(principal(UID), Permission.object_type.is_(None), Role.allows_viewing_children.is_(True)))
        if self.filtered:
            q = q.where(Role.administrative.is_(False))
        return exists(q)

    def admin_anywhere(self):
        if self.filtered:
            return false()
        return exists(select(Permission.id).join(Role, Role.id == Permission.role_id)
                      .where(principal(UID), Role.administrative.is_(True)))

    # objects under which the caller sees everything
    def dcs_open(self):
        return self.granted("data_center", children=True)

    def clusters_open(self):
        return select(Cluster.id).where(or_(Cluster.id.in_(self.granted("cluster", children=True)),
                                            Cluster.data_center_id.in_(self.dcs_open())))

    def sds_open(self):
        return select(StorageDomain.id).where(or_(
            StorageDomain.id.in_(self.granted("storage_domain", children=True)),
            StorageDomain.data_center_id.in_(self.dcs_open())))

    # what the caller sees, per model
    def datacenter(self):
        return or_(self.system(), DataCenter.id.in_(self.granted("data_center")))

    def cluster(self):
        return or_(self.system(), Cluster.id.in_(self.granted("cluster")), Cluster.data_center_id.in_(self.dcs_open()))

    def host(self):
        return or_(self.system(), Host.id.in_(self.granted("host")), Host.cluster_id.in_(self.clusters_open()))

    def vm(self):
        pools = self.granted("vm_pool", children=True, admin_only=True)
        return or_(self.system(), Vm.id.in_(self.granted("vm")), Vm.cluster_id.in_(self.clusters_open()),
                   Vm.id.in_(select(VmPoolMember.vm_id).where(VmPoolMember.pool_id.in_(pools))))

    def vm_ids(self):
        return select(Vm.id).where(self.vm())

    def pool(self):
        return or_(self.system(), VmPool.id.in_(self.granted("vm_pool")),
                   VmPool.cluster_id.in_(self.clusters_open()))

    def template(self):
        return or_(self.system(), Template.id == BLANK_TEMPLATE_ID, Template.id.in_(self.granted("template")),
                   Template.cluster_id.in_(self.clusters_open()))

    def template_ids(self):
        return select(Template.id).where(self.template())

    def storage_domain(self):
        return or_(self.system(), StorageDomain.id.in_(self.granted("storage_domain")),
                   StorageDomain.data_center_id.in_(self.dcs_open()))

    def network(self):
        return or_(self.system(), Network.data_center_id.in_(self.dcs_open()))

    def disk(self):
        attached = select(DiskAttachment.disk_id).where(or_(DiskAttachment.vm_id.in_(self.vm_ids()),
                                                            DiskAttachment.template_id.in_(self.template_ids())))
        return or_(self.system(), Disk.id.in_(self.granted("disk")), Disk.storage_domain_id.in_(self.sds_open()),
                   Disk.id.in_(attached))

    def event(self):
        return or_(self.system(),
                   Event.vm_id.in_(self.vm_ids()),
                   Event.host_id.in_(select(Host.id).where(self.host())),
                   Event.cluster_id.in_(select(Cluster.id).where(self.cluster())),
                   Event.data_center_id.in_(select(DataCenter.id).where(self.datacenter())),
                   Event.storage_domain_id.in_(select(StorageDomain.id).where(self.storage_domain())),
                   Event.template_id.in_(select(Template.id).where(self.template(), Template.id != BLANK_TEMPLATE_ID)))

    def job(self):
        return or_(self.system(), Job.owner_id == UID)

    def permission(self):
        ids = {"data_center": select(DataCenter.id).where(self.datacenter()),
               "cluster": select(Cluster.id).where(self.cluster()), "host": select(Host.id).where(self.host()),
               "storage_domain": select(StorageDomain.id).where(self.storage_domain()),
               "template": self.template_ids(), "vm": self.vm_ids(), "vm_pool": select(VmPool.id).where(self.pool()),
               "disk": select(Disk.id).where(self.disk())}
        return or_(principal(UID), and_(Permission.object_type.is_(None), self.system()),
                   *(and_(Permission.object_type == t, Permission.object_id.in_(q)) for t, q in ids.items()))

    def condition(self, model):
        """The condition for a model, or None when the model is not filtered."""
        simple = {DataCenter: self.datacenter, Cluster: self.cluster, Host: self.host, Vm: self.vm,
                  VmPool: self.pool, Template: self.template, StorageDomain: self.storage_domain,
                  Network: self.network, Disk: self.disk, Event: self.event, Job: self.job,
                  Permission: self.permission}
        if model in simple:
            return simple[model]()
        if model in (Nic, Snapshot):
            return model.vm_id.in_(self.vm_ids())
        if model is DiskAttachment:
            return or_(DiskAttachment.vm_id.in_(self.vm_ids()), DiskAttachment.template_id.in_(self.template_ids()))
        if model is FenceAgent:
            return FenceAgent.host_id.in_(select(Host.id).where(self.host()))
        if model is Step:
            return Step.job_id.in_(select(Job.id).where(self.job()))
        if model is User:
            return or_(User.id == UID, self.admin_anywhere())
        if model is Group:
            return or_(self.admin_anywhere(), principal_groups(UID))
        if model is Role:
            return true()
        raise TypeError(f"no read rule for {model.__name__}")


def principal_groups(user_id):
    return Group.id.in_(select(Group.id).join(DirectoryMembership, and_(
        DirectoryMembership.domain == Group.domain, DirectoryMembership.group_external_id == Group.external_id))
        .where(DirectoryMembership.user_id == user_id))


_RULES = {False: _Rules(False), True: _Rules(True)}


def mode(ctx) -> str:
    """What a cached statement depends on: the engine, a user, a filtered user."""
    return "engine" if is_engine(ctx) else ("filtered" if ctx.filtered else "user")


def visible(ctx, model):
    """The SQL condition on `model`'s rows the caller may see (None: all), with
    the parameters of params(ctx)."""
    return rule(mode(ctx), model)


def rule(mode_: str, model):
    """visible() for a mode() rather than a caller: for statements built once."""
    return None if mode_ == "engine" else _RULES[mode_ == "filtered"].condition(model)


def sees_admin_things(s, ctx) -> bool:
    """Directories, users and groups are for administrators (and the engine)."""
    return is_engine(ctx) or (not ctx.filtered and holds_admin_role(s, ctx.user_id))
