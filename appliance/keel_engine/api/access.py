"""Users, groups, roles (with their permits), permissions on every kind of
object, and domains (the internal one and the LDAP directories) in oVirt's
shapes: documents in, typed calls to services/users.py, roles.py and
directory.py, documents out. Who may do what is the services' to check."""
from sqlalchemy import select

from ..errors import bad_request, not_found
from ..models import (Cluster, DataCenter, Disk, Group, Host, Permission, Role, StorageDomain, Template, User,
                      Vm, VmPool)
from ..representation import Many
from .. import search as search_mod
from ..services import access, auth, directory, lookup, reads
from ..services import permits as P
from ..services import roles as role_svc
from ..services import users as user_svc
from . import access_views as av
from .common import listing, obj, row
from .fields import Bool, ListOf, Name, Obj, Reference, Text, required
from .framework import body, created, ctx, follow_param, reader, removed, render, route, search_param, session

LIST = ("search", "max")
REF = Reference()
PERMIT = Obj(id=Text(16), name=Text(64))
ROLE = Obj(name=Name(), description=Text(4000), administrative=Bool(), permits=ListOf("permit", PERMIT, 128))
# the object a permission is on, by oVirt's element name (none: the system)
OBJECT_FIELDS = {t: REF for t in access.OBJECT_TYPES}
PERMISSION = Obj(role=REF, user=REF, group=REF, **OBJECT_FIELDS)
USER = Obj(user_name=Text(512), principal=Text(255), domain=REF, domain_entry_id=Text(255), namespace=Text(1024))
GROUP = Obj(name=Text(255), domain=REF, domain_entry_id=Text(255), namespace=Text(1024))
# collection -> (model, oVirt's element name, what messages call it)
OBJECT_COLLECTIONS = {
    "datacenters": (DataCenter, "data_center", reads.DATACENTERS), "clusters": (Cluster, "cluster", reads.CLUSTERS),
    "hosts": (Host, "host", reads.HOSTS), "storagedomains": (StorageDomain, "storage_domain", reads.STORAGE_DOMAINS),
    "templates": (Template, "template", reads.TEMPLATES), "vms": (Vm, "vm", reads.VMS),
    "vmpools": (VmPool, "vm_pool", reads.POOLS), "disks": (Disk, "disk", reads.DISKS)}


def _permissions_view(p, _extra):
    return av.permission(p)


# ---- users ---------------------------------------------------------------------------
@route("/users", ["GET"], "List users (search: name, usrname, domain, last_name, email)", query=LIST)
def users_list():
    return listing("users", "user", reads.USERS, lambda u, _e: av.user(u))


@route("/users", ["POST"], "Add a user from a directory (user_name as user@domain, or principal and domain)",
       body=USER, created=True)
def users_add():
    b = body(USER)
    dom = b.get("domain")
    domain = _domain_name(dom) if dom else None
    u = user_svc.add_from_domain(ctx(), session(), b.get("user_name") or b.get("principal"), domain,
                                 b.get("domain_entry_id"))
    return created("user", None, lambda: av.user(u), None)


def _domain_name(ref):
    """A domain reference by name, or by the id /domains shows."""
    if ref.name:
        return ref.name
    if ref.id == av.INTERNAL_DOMAIN_ID:
        return auth.INTERNAL
    d = session().get(directory.Directory, ref.id) if lookup.valid_uuid(ref.id) else None
    if d is None:
        raise bad_request(f"domain: no domain with id '{ref.id}'")
    return d.name


@route("/users/<ident>", ["GET"], "Get a user")
def user_get(ident):
    return render("user", av.user(row(reads.USERS, ident)))


@route("/users/<ident>", ["DELETE"], "Remove a user (its permissions go with it)")
def user_remove(ident):
    row(reads.USERS, ident)   # one the caller may not see does not exist
    user_svc.remove(ctx(), session(), obj(User, ident, "user"))
    return removed()


@route("/users/<ident>/groups", ["GET"], "List the groups a directory user was in at its last sign-in")
def user_groups(ident):
    u = row(reads.USERS, ident)
    return listing("groups", "group", reads.GROUPS, lambda g, _e: av.group(g), access.principal_groups(u.id))


# ---- groups -----------------------------------------------------------------------------
@route("/groups", ["GET"], "List groups (search: name, domain)", query=LIST)
def groups_list():
    return listing("groups", "group", reads.GROUPS, lambda g, _e: av.group(g))


@route("/groups", ["POST"], "Add a group from a directory (its members get the group's permissions)",
       body=GROUP, created=True)
def groups_add():
    b = body(GROUP)
    dom = b.get("domain")
    if not dom:
        raise bad_request("domain: give the group's domain (id or name)")
    g = user_svc.add_group(ctx(), session(), b.get("name"), _domain_name(dom), b.get("domain_entry_id"))
    return created("group", None, lambda: av.group(g), None)


@route("/groups/<ident>", ["GET"], "Get a group")
def group_get(ident):
    return render("group", av.group(row(reads.GROUPS, ident)))


@route("/groups/<ident>", ["DELETE"], "Remove a group (its permissions go with it)")
def group_remove(ident):
    row(reads.GROUPS, ident)
    user_svc.remove_group(ctx(), session(), obj(Group, ident, "group"))
    return removed()


# ---- roles and permits ------------------------------------------------------------------------
@route("/roles", ["GET"], "List roles (built in and custom)", query=LIST)
def roles_list():
    return listing("roles", "role", reads.ROLES, lambda r, _e: av.role(r))


@route("/roles", ["POST"], "Add a custom role with its permits", body=ROLE, created=True)
def roles_add():
    b = body(ROLE)
    r = role_svc.add_role(ctx(), session(), role_svc.RoleSpec(
        name=required(b, "name"), description=b.get("description", ""),
        administrative=b.get("administrative", False), permits=tuple(_permit_key(p) for p in b.get("permits", []))))
    return created("role", None, lambda: av.role(r, role_svc.role_permits(session(), r)), None)


def _permit_key(p):
    key = p.get("name") or p.get("id")
    if not key:
        raise bad_request("permit: give its id or name")
    return key


@route("/roles/<ident>", ["GET"], "Get a role (with its permits: follow=permits)", query=("follow",))
def role_get(ident):
    r = row(reads.ROLES, ident)
    return render("role", av.role(r, role_svc.role_permits(reader(), r) if "permits" in follow_param() else None))


@route("/roles/<ident>", ["PUT"], "Update a custom role (name, description, administrative)", body=ROLE)
def role_update(ident):
    b = body(ROLE)
    r = role_svc.update_role(ctx(), session(), obj(Role, ident, "role"), name=b.get("name"),
                             description=b.get("description"), administrative=b.get("administrative"))
    return render("role", av.role(r))


@route("/roles/<ident>", ["DELETE"], "Remove a custom role no permission uses")
def role_remove(ident):
    role_svc.remove_role(ctx(), session(), obj(Role, ident, "role"))
    return removed()


@route("/roles/<ident>/permits", ["GET"], "List a role's permits")
def role_permits(ident):
    r = row(reads.ROLES, ident)
    return render("permits", Many("permit", [av.permit(p, r.id) for p in role_svc.role_permits(reader(), r)]))


@route("/roles/<ident>/permits", ["POST"], "Add a permit to a custom role", body=PERMIT, created=True)
def role_permit_add(ident):
    p = role_svc.add_permit(ctx(), session(), obj(Role, ident, "role"), _permit_key(body(PERMIT)))
    return created("permit", None, lambda: av.permit(p, ident), None)


@route("/roles/<ident>/permits/<permit>", ["GET"], "Get a permit of a role")
def role_permit_get(ident, permit):
    r = row(reads.ROLES, ident)
    found = [p for p in role_svc.role_permits(reader(), r) if str(p.id) == permit or p.name == permit]
    if not found:
        raise not_found("permit", permit[:40])
    return render("permit", av.permit(found[0], r.id))


@route("/roles/<ident>/permits/<permit>", ["DELETE"], "Remove a permit from a custom role")
def role_permit_remove(ident, permit):
    role_svc.remove_permit(ctx(), session(), obj(Role, ident, "role"), permit)
    return removed()


@route("/permits", ["GET"], "List every permit a role can have (oVirt's action groups)")
def permits_list():
    return render("permits", Many("permit", [av.permit(p) for p in P.PERMITS]))


# ---- permissions ------------------------------------------------------------------------------
def _role(ref):
    if not ref:
        raise bad_request("role: required reference is missing (give id or name)")
    return lookup.resolve(session(), Role, ref, "role", "role")


def _principal(b):
    user = group = None
    if b.get("user"):
        user = _user_ref(b["user"])
    if b.get("group"):
        group = lookup.resolve(session(), Group, b["group"], "group", "group")
    if (user is None) == (group is None):
        raise bad_request("permission: give either a user or a group")
    return user, group


def _user_ref(ref):
    s = session()
    if ref.id:
        u = s.get(User, ref.id)
    else:
        u = user_svc.find(s, ref.name)
    if u is None:
        raise bad_request(f"user: user '{ref.id or ref.name}' does not exist")
    return u


def _add(b, target):
    user, group = _principal(b)
    p = role_svc.add_permission(ctx(), session(), _role(b.get("role")), target, user=user, group=group)
    return created("permission", None, lambda: av.permission(p), None)


def _own(perm_id, where):
    """A permission of the caller's view that belongs where the path says."""
    p = row(reads.PERMISSIONS, perm_id, *where)
    return session().get(Permission, p.id)


@route("/permissions", ["GET"], "List the permissions on the system (search: name)", query=LIST)
def permissions_list():
    return listing("permissions", "permission", reads.PERMISSIONS, _permissions_view,
                   Permission.object_type.is_(None))


@route("/permissions", ["POST"], "Give a user or a group a role on the whole system", body=PERMISSION,
       created=True)
def permissions_add():
    return _add(body(PERMISSION), None)


@route("/permissions/<ident>", ["GET"], "Get a permission")
def permission_get(ident):
    return render("permission", av.permission(row(reads.PERMISSIONS, ident)))


@route("/permissions/<ident>", ["DELETE"], "Remove a permission")
def permission_remove(ident):
    role_svc.remove_permission(ctx(), session(), _own(ident, ()))
    return removed()


def _principal_routes(coll, model, column, kind, tag):
    """users/{id}/permissions and groups/{id}/permissions: the object is in
    the body (<vm id=.../>, ...; none: the system)."""
    def list_(ident):
        who = row(coll, ident)
        return listing("permissions", "permission", reads.PERMISSIONS, _permissions_view, column == who.id)

    def add(ident):
        b = body(PERMISSION)
        row(coll, ident)
        who = obj(model, ident, kind)
        given = [(t, b[t]) for t in access.OBJECT_TYPES if b.get(t)]
        if len(given) > 1:
            raise bad_request(f"permission: give one object, not {', '.join(t for t, _ in given)}")
        target = None
        if given:
            t, ref = given[0]
            target = lookup.resolve(session(), role_svc.MODELS[t], ref, access.KIND[t], t)
        p = role_svc.add_permission(ctx(), session(), _role(b.get("role")), target,
                                    user=who if model is User else None, group=who if model is Group else None)
        return created("permission", None, lambda: av.permission(p), None)

    def get(ident, perm):
        who = row(coll, ident)
        return render("permission", av.permission(row(reads.PERMISSIONS, perm, column == who.id)))

    def remove(ident, perm):
        who = row(coll, ident)
        role_svc.remove_permission(ctx(), session(), _own(perm, (column == who.id,)))
        return removed()

    for fn, suffix in ((list_, "list"), (add, "add"), (get, "get"), (remove, "remove")):
        fn.__name__ = f"{tag}_permissions_{suffix}"
    route(f"/{tag}s/<ident>/permissions", ["GET"], f"List a {kind}'s permissions", query=LIST)(list_)
    route(f"/{tag}s/<ident>/permissions", ["POST"], f"Give a {kind} a role on an object (none: the system)",
          body=PERMISSION, created=True)(add)
    route(f"/{tag}s/<ident>/permissions/<perm>", ["GET"], f"Get a permission of a {kind}")(get)
    route(f"/{tag}s/<ident>/permissions/<perm>", ["DELETE"], f"Remove a permission of a {kind}")(remove)


_principal_routes(reads.USERS, User, Permission.user_id, "user", "user")
_principal_routes(reads.GROUPS, Group, Permission.group_id, "group", "group")


def _object_routes(collection, model, otype, coll):
    kind = access.KIND[otype]

    def where(ident):
        target = row(coll, ident)
        return target, (Permission.object_type == otype, Permission.object_id == target.id)

    def list_(ident):
        _t, w = where(ident)
        return listing("permissions", "permission", reads.PERMISSIONS, _permissions_view, *w)

    def add(ident):
        b = body(PERMISSION)
        row(coll, ident)
        return _add(b, obj(model, ident, kind))

    def get(ident, perm):
        _t, w = where(ident)
        return render("permission", av.permission(row(reads.PERMISSIONS, perm, *w)))

    def remove(ident, perm):
        _t, w = where(ident)
        role_svc.remove_permission(ctx(), session(), _own(perm, w))
        return removed()

    for fn, suffix in ((list_, "list"), (add, "add"), (get, "get"), (remove, "remove")):
        fn.__name__ = f"{otype}_permissions_{suffix}"
    route(f"/{collection}/<ident>/permissions", ["GET"], f"List the permissions on a {kind}", query=LIST)(list_)
    route(f"/{collection}/<ident>/permissions", ["POST"], f"Give a user or a group a role on a {kind}",
          body=PERMISSION, created=True)(add)
    route(f"/{collection}/<ident>/permissions/<perm>", ["GET"], f"Get a permission on a {kind}")(get)
    route(f"/{collection}/<ident>/permissions/<perm>", ["DELETE"], f"Remove a permission on a {kind}")(remove)


for _collection, (_model, _otype, _coll) in OBJECT_COLLECTIONS.items():
    _object_routes(_collection, _model, _otype, _coll)


# ---- domains ------------------------------------------------------------------------------------
def _admin_only():
    """Domains are for administrators: to anyone else they do not exist."""
    if not access.sees_admin_things(reader(), ctx()):
        raise not_found("domain", "?")


def _domain(ident):
    _admin_only()
    if ident == av.INTERNAL_DOMAIN_ID:
        return None
    d = session().get(directory.Directory, ident) if lookup.valid_uuid(ident) else None
    if d is None:
        raise not_found("domain", ident[:40])
    return d


@route("/domains", ["GET"], "List the domains users come from (internal, and each LDAP directory)")
def domains_list():
    if not access.sees_admin_things(reader(), ctx()):
        return render("domains", Many("domain", []))
    dirs = session().scalars(select(directory.Directory).order_by(directory.Directory.name)).all()
    return render("domains", Many("domain", [av.domain(av.INTERNAL_DOMAIN_ID, auth.INTERNAL)]
                                  + [av.domain(d.id, d.name) for d in dirs]))


@route("/domains/<ident>", ["GET"], "Get a domain")
def domain_get(ident):
    d = _domain(ident)
    return render("domain", av.domain(ident, d.name if d else auth.INTERNAL))


def _search_text():
    """The name a domain search looks for: oVirt's usrname=jdoe*, name=..., or the bare text."""
    raw = search_param()
    if not raw or not raw.strip():
        return "*"
    if "=" not in raw:
        return raw.strip()
    terms = search_mod.parse(raw, {"usrname", "name", "last_name", "principal"})
    return terms[0][2] if terms else "*"


@route("/domains/<ident>/users", ["GET"], "Find a domain's users (search: usrname=jdoe*, name=...)", query=LIST)
def domain_users(ident):
    d = _domain(ident)
    text = _search_text()
    if d is None:
        users = session().scalars(select(User).where(
            User.domain == auth.INTERNAL, search_mod.matches_column(User.name, text)).order_by(User.name)).all()
        found = [directory.Account(dn="", external_id=u.id, login=u.name) for u in users]
        return render("users", Many("user", [av.domain_user(ident, auth.INTERNAL, a) for a in found]))
    return render("users", Many("user", [av.domain_user(ident, d.name, a)
                                         for a in directory.search_users(ctx().config, d, text)]))


@route("/domains/<ident>/users/<user>", ["GET"], "Get a domain's user")
def domain_user(ident, user):
    d = _domain(ident)
    if d is None:
        u = session().get(User, user) if lookup.valid_uuid(user) else None
        if u is None or u.domain != auth.INTERNAL:
            raise not_found("user", user[:40])
        return render("user", av.domain_user(ident, auth.INTERNAL,
                                             directory.Account(dn="", external_id=u.id, login=u.name)))
    return render("user", av.domain_user(ident, d.name, directory.get_entry(ctx().config, d, user, user=True)))


@route("/domains/<ident>/groups", ["GET"], "Find a domain's groups (search: name=admins*)", query=LIST)
def domain_groups(ident):
    d = _domain(ident)
    if d is None:
        return render("groups", Many("group", []))
    return render("groups", Many("group", [av.domain_group(ident, d.name, a)
                                           for a in directory.search_groups(ctx().config, d, _search_text())]))


@route("/domains/<ident>/groups/<group>", ["GET"], "Get a domain's group")
def domain_group(ident, group):
    d = _domain(ident)
    if d is None:
        raise not_found("group", group[:40])
    return render("group", av.domain_group(ident, d.name, directory.get_entry(ctx().config, d, group, user=False)))

