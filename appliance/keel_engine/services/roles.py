"""Roles (custom ones, with permits) and permissions: a role given to a user
or a group on an object. Who may change what is services/access.py's rule:
manipulate_roles on the system for roles; manipulate_permissions on the
object for its permissions, and only with a role whose every permit the
giver holds there itself (no one hands out more than they have)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from ..errors import Fault, bad_request, conflict
from ..models import (Cluster, DataCenter, Disk, Group, Host, Permission, Role, RolePermit, StorageDomain,
                      Template, User, Vm, VmPool)
from . import access, events, lookup
from . import permits as P

MODELS = {"data_center": DataCenter, "cluster": Cluster, "host": Host, "storage_domain": StorageDomain,
          "template": Template, "vm": Vm, "vm_pool": VmPool, "disk": Disk}


@dataclass(frozen=True)
class RoleSpec:
    name: str
    permits: tuple = ()           # permit names
    description: str = ""
    administrative: bool = False


def _permit(name_or_id) -> P.Permit:
    p = P.BY_NAME.get(str(name_or_id)) or (P.BY_ID.get(int(name_or_id)) if str(name_or_id).isdigit() else None)
    if p is None:
        raise bad_request(f"permit: no permit '{str(name_or_id)[:40]}' (see /roles/{{id}}/permits of SuperUser)")
    return p


def permit_of(name_or_id) -> P.Permit:
    return _permit(name_or_id)


def role_permits(s, role) -> list[P.Permit]:
    ids = s.scalars(select(RolePermit.permit_id).where(RolePermit.role_id == role.id)).all()
    return sorted((P.BY_ID[i] for i in ids if i in P.BY_ID), key=lambda p: p.id)


def _mutable(role):
    if not role.mutable:
        raise Fault(409, "Operation Failed", f"role {role.name} is built in and cannot be changed; "
                    "make a custom role instead")


def add_role(ctx, s, spec: RoleSpec) -> Role:
    access.check(ctx, s, "manipulate_roles", None)
    lookup.unique_name(s, Role, spec.name, "role")
    perms = {_permit(n) for n in spec.permits}
    if not perms:
        raise bad_request("permits: a role needs at least one permit")
    role = Role(name=spec.name, description=spec.description, administrative=spec.administrative, mutable=True,
                allows_viewing_children=P.views_children(p.name for p in perms))
    s.add(role)
    s.flush()
    for p in perms:
        s.add(RolePermit(role_id=role.id, permit_id=p.id))
    events.add(s, events.OBJECT_ADDED, f"Role {role.name} was added ({', '.join(sorted(p.name for p in perms))}).",
               user_id=ctx.user_id)
    return role


def update_role(ctx, s, role, name=None, description=None, administrative=None) -> Role:
    access.check(ctx, s, "manipulate_roles", None)
    _mutable(role)
    if name is not None and name != role.name:
        lookup.unique_name(s, Role, name, "role", exclude_id=role.id)
        role.name = name
    if description is not None:
        role.description = description
    if administrative is not None:
        role.administrative = administrative
    events.add(s, events.OBJECT_UPDATED, f"Role {role.name} was updated.", user_id=ctx.user_id)
    return role


def remove_role(ctx, s, role):
    access.check(ctx, s, "manipulate_roles", None)
    _mutable(role)
    used = s.scalar(select(func.count()).select_from(Permission).where(Permission.role_id == role.id))
    if used:
        raise conflict(f"role {role.name} is given in {used} permission(s); remove them first")
    s.delete(role)
    events.add(s, events.OBJECT_REMOVED, f"Role {role.name} was removed.", user_id=ctx.user_id)


def add_permit(ctx, s, role, name_or_id) -> P.Permit:
    access.check(ctx, s, "manipulate_roles", None)
    _mutable(role)
    p = _permit(name_or_id)
    if s.get(RolePermit, (role.id, p.id)) is None:
        s.add(RolePermit(role_id=role.id, permit_id=p.id))
        s.flush()
    role.allows_viewing_children = P.views_children(x.name for x in role_permits(s, role))
    events.add(s, events.OBJECT_UPDATED, f"Permit {p.name} was added to role {role.name}.", user_id=ctx.user_id)
    return p


def remove_permit(ctx, s, role, name_or_id):
    access.check(ctx, s, "manipulate_roles", None)
    _mutable(role)
    p = _permit(name_or_id)
    row = s.get(RolePermit, (role.id, p.id))
    if row is None:
        raise Fault(404, "Not Found", f"role {role.name} has no permit {p.name}")
    if len(role_permits(s, role)) == 1:
        raise conflict(f"permit {p.name} is role {role.name}'s last; remove the role instead")
    s.delete(row)
    s.flush()
    role.allows_viewing_children = P.views_children(x.name for x in role_permits(s, role))
    events.add(s, events.OBJECT_UPDATED, f"Permit {p.name} was removed from role {role.name}.",
               user_id=ctx.user_id)


# ---- permissions ----------------------------------------------------------------------
def object_of(s, object_type, object_id):
    """The ORM object a permission names (None: the system)."""
    if object_type is None:
        return None
    model = MODELS.get(object_type)
    return s.get(model, object_id) if model is not None and object_id else None


def _name(obj):
    return "the system" if obj is None else f"{access.KIND[access.MODEL_TYPE[type(obj)]]} {obj.name}"


def _who(user, group):
    return f"user {user.name}@{user.domain}" if user is not None else f"group {group.name}@{group.domain}"


def add_permission(ctx, s, role: Role, obj=None, user: User | None = None, group: Group | None = None) -> Permission:
    """Give `role` to a user or a group on `obj` (None: the system)."""
    if (user is None) == (group is None):
        raise bad_request("permission: give either a user or a group")
    access.check(ctx, s, "manipulate_permissions", obj)
    if not access.is_engine(ctx):
        have = access.allowed(ctx, s, obj)
        kind = None if obj is None else access.MODEL_TYPE[type(obj)]
        missing = sorted({p.name for p in role_permits(s, role) if P.applies_to(p, kind)} - have)
        if missing:
            raise Fault(403, "Forbidden", f"role {role.name} has permits you do not hold on {_name(obj)} "
                        f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}); you cannot give it")
    otype = None if obj is None else access.MODEL_TYPE[type(obj)]
    oid = None if obj is None else obj.id
    q = select(Permission.id).where(Permission.role_id == role.id)
    q = (q.where(Permission.object_type.is_(None)) if otype is None
         else q.where(Permission.object_type == otype, Permission.object_id == oid))
    q = q.where(Permission.user_id == user.id) if user is not None else q.where(Permission.group_id == group.id)
    if s.scalar(q) is not None:
        raise conflict(f"{_who(user, group)} already has role {role.name} on {_name(obj)}")
    perm = Permission(role_id=role.id, user_id=user.id if user else None, group_id=group.id if group else None,
                      object_type=otype, object_id=oid)
    s.add(perm)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Role {role.name} was given to {_who(user, group)} on {_name(obj)}.",
               user_id=ctx.user_id, **_event_ref(obj))
    return perm


def remove_permission(ctx, s, perm: Permission):
    obj = object_of(s, perm.object_type, perm.object_id)
    access.check(ctx, s, "manipulate_permissions", obj)
    role = s.get(Role, perm.role_id)
    if perm.object_type is None and role.name == "SuperUser":
        left = s.scalar(select(func.count()).select_from(Permission).where(
            Permission.role_id == role.id, Permission.object_type.is_(None), Permission.id != perm.id))
        if not left:
            raise conflict("this is the last SuperUser permission on the system; give that role to someone "
                           "else first")
    user = s.get(User, perm.user_id) if perm.user_id else None
    group = s.get(Group, perm.group_id) if perm.group_id else None
    s.delete(perm)
    events.add(s, events.OBJECT_REMOVED, f"Role {role.name} was taken from "
               f"{_who(user, group) if user or group else 'a removed user'} on {_name(obj)}.",
               user_id=ctx.user_id, **_event_ref(obj))


def _event_ref(obj):
    col = {"data_center": "data_center_id", "cluster": "cluster_id", "host": "host_id",
           "storage_domain": "storage_domain_id", "template": "template_id", "vm": "vm_id"}
    kind = None if obj is None else access.MODEL_TYPE[type(obj)]
    return {col[kind]: obj.id} if kind in col else {}


def grant_owner(ctx, s, obj):
    """oVirt's habit: a user who makes a VM, a template or a disk gets its
    owner role on it (UserVmManager, TemplateOwner, DiskOperator), unless
    their roles already give them all of it there."""
    if access.is_engine(ctx):
        return None
    kind = access.MODEL_TYPE[type(obj)]
    role = s.scalar(select(Role).where(Role.name == P.OWNER_ROLE[kind]))
    if role is None:
        return None
    if {p.name for p in role_permits(s, role)} <= access.allowed(ctx, s, obj):
        return None
    perm = Permission(role_id=role.id, user_id=ctx.user_id, object_type=kind, object_id=obj.id)
    s.add(perm)
    s.flush()
    return perm
