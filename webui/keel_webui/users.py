"""Users, groups and roles, for administrators: internal users added, their
passwords reset, disabled, enabled and removed (as `keel-engine user ...`
does); groups added from a directory and removed; roles given to a user or a
group, or taken, on the system, a cluster or a VM; custom roles made from
permits, their permits added and removed, and the roles removed. Each form
is the service call the API's users, groups, roles and permissions make."""
from __future__ import annotations

from flask import abort, render_template, request, url_for
from sqlalchemy import select

from keel_engine.api.fields import Name
from keel_engine.api.schemas import DESCRIPTION
from keel_engine.errors import Fault, bad_request
from keel_engine.models import Cluster, Directory, Group, Permission, Role, RolePermit, User, Vm
from keel_engine.services import lookup, reads, roles, users
from keel_engine.services import permits as P

from . import forms
from .admin import admin_page, after_job
from .blueprint import ctx, reader, rollback, session, webui_bp

# where a role may be given from this page: the system, or one object of these kinds
SCOPES = {"cluster": (Cluster, reads.CLUSTERS), "vm": (Vm, reads.VMS)}


def _users_page(form=None, message=None, status=200):
    c, db = ctx(), reader()
    return render_template("users.html", users=reads.list_rows(c, db, reads.USERS, request.args.get("search") or None),
                           search=request.args.get("search", ""), form=form if form is not None else {},
                           message=message), status


@webui_bp.route("/users")
@admin_page
def users_list():
    return _users_page()


@webui_bp.route("/users", methods=["POST"])
@admin_page
def user_add():
    """An internal user (as `keel-engine user add`); refused, the list again
    with why and the name kept (never the passwords)."""
    c, s = ctx(), session()
    try:
        name = forms.text_field("name", "User name", required=True, max_len=255)
        user = users.add_internal(c, s, name, _password())
        s.flush()
    except Fault as f:
        rollback()
        return _users_page({"name": request.form.get("name", "")}, f, f.status)
    return after_job(None, url_for("ui.user", ident=user.id))


def _password():
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        raise bad_request("Password: the two entries differ")
    return password


@webui_bp.route("/users/<ident>")
@admin_page
def user(ident):
    c, db = ctx(), reader()
    u = reads.get_row(c, db, reads.USERS, ident)
    perms = reads.list_rows(c, db, reads.PERMISSIONS, None, None, Permission.user_id == u.id)
    return render_template("user.html", user=u, permissions=perms, **_grant_choices(c, db, perms))


def _grant_choices(c, db, perms) -> dict:
    """What a page of permissions shows beside them: their roles and objects'
    names, and the roles, clusters and VMs its "give the role" form offers."""
    return {"roles": reads.by_id(db, Role, {p.role_id for p in perms}),
            "all_roles": reads.list_rows(c, db, reads.ROLES),
            "clusters": reads.list_rows(c, db, reads.CLUSTERS), "vms": reads.list_rows(c, db, reads.VMS, None, 500),
            "names": _object_names(db, perms)}


def _object_names(db, perms):
    """{object id: name} of the objects the permissions are on (one query per kind)."""
    out = {}
    for kind, (model, _coll) in SCOPES.items():
        ids = {p.object_id for p in perms if p.object_type == kind}
        if ids:
            out.update(dict(reads.run(db, select(model.id, model.name).where(model.id.in_(ids))).all()))
    return out


@webui_bp.route("/users/<ident>/<action>", methods=["POST"])
@admin_page
def user_action(ident, action):
    c, s = ctx(), session()
    u = lookup.get(s, User, ident, "user")
    back = url_for("ui.user", ident=u.id)
    if action == "disable":
        users.set_disabled(c, s, u, True)
    elif action == "enable":
        users.set_disabled(c, s, u, False)
    elif action == "password":
        users.require_internal(u)
        users.reset_password(c, s, u, _password())
    elif action == "remove":
        users.remove(c, s, u)
        back = url_for("ui.users_list")
    elif action == "grant":
        roles.add_permission(c, s, _role_field(s), _scope_object(s), user=u)
    else:
        abort(404)
    return after_job(None, back)


def _role_field(s):
    return lookup.get(s, Role, forms.text_field("role", "Role", required=True), "role")


def _scope_object(s):
    """The object a role is given on: None for the whole system."""
    scope = request.form.get("scope", "system")
    if scope == "system":
        return None
    kind, _, ident = scope.partition(":")
    if kind not in SCOPES or not ident:
        raise bad_request(f"On: '{scope[:60]}' is not the system, a cluster or a VM")
    return lookup.get(s, SCOPES[kind][0], ident, kind)


@webui_bp.route("/users/<ident>/permissions/<perm_id>/remove", methods=["POST"])
@admin_page
def user_permission_remove(ident, perm_id):
    c, s = ctx(), session()
    u = lookup.get(s, User, ident, "user")
    perm = s.get(Permission, perm_id)
    if perm is None or perm.user_id != u.id:
        abort(404)
    roles.remove_permission(c, s, perm)
    return after_job(None, url_for("ui.user", ident=u.id))


# ---- groups ---------------------------------------------------------------------------
def _groups_page(form=None, message=None, status=200):
    c, db = ctx(), reader()
    search = request.args.get("search", "")
    return render_template(
        "groups.html", groups=reads.list_rows(c, db, reads.GROUPS, search or None), search=search,
        directories=reads.run(db, select(Directory.name).order_by(Directory.name)).scalars().all(),
        form=form if form is not None else {}, message=message), status


@webui_bp.route("/groups")
@admin_page
def groups_list():
    return _groups_page()


@webui_bp.route("/groups", methods=["POST"])
@admin_page
def group_add():
    """A directory's group (its members then get the group's roles): as POST /groups."""
    try:
        group = users.add_group(ctx(), session(), forms.text_field("name", "Group name", required=True),
                                forms.text_field("domain", "Directory", required=True))
        session().flush()
    except Fault as f:
        rollback()
        return _groups_page(request.form, f, f.status)
    return after_job(None, url_for("ui.group", ident=group.id))


@webui_bp.route("/groups/<ident>")
@admin_page
def group(ident):
    c, db = ctx(), reader()
    grp = reads.get_row(c, db, reads.GROUPS, ident)
    perms = reads.list_rows(c, db, reads.PERMISSIONS, None, None, Permission.group_id == grp.id)
    return render_template("group.html", group=grp, permissions=perms, **_grant_choices(c, db, perms))


@webui_bp.route("/groups/<ident>/<action>", methods=["POST"])
@admin_page
def group_action(ident, action):
    c, s = ctx(), session()
    grp = lookup.get(s, Group, ident, "group")
    if action == "grant":
        roles.add_permission(c, s, _role_field(s), _scope_object(s), group=grp)
        return after_job(None, url_for("ui.group", ident=grp.id))
    if action == "remove":
        users.remove_group(c, s, grp)
        return after_job(None, url_for("ui.groups_list"))
    abort(404)


@webui_bp.route("/groups/<ident>/permissions/<perm_id>/remove", methods=["POST"])
@admin_page
def group_permission_remove(ident, perm_id):
    c, s = ctx(), session()
    grp = lookup.get(s, Group, ident, "group")
    perm = s.get(Permission, perm_id)
    if perm is None or perm.group_id != grp.id:
        abort(404)
    roles.remove_permission(c, s, perm)
    return after_job(None, url_for("ui.group", ident=grp.id))


# ---- roles ------------------------------------------------------------------------------
# the permits a new role may have, by the kind of object each is about (the form's fieldsets)
PERMIT_KINDS = {"any": "Any object", "system": "The system", "data_center": "Data centers",
                "cluster": "Clusters", "host": "Hosts", "storage_domain": "Storage domains", "vm": "VMs",
                "template": "Templates", "vm_pool": "VM pools", "disk": "Disks"}


def _roles_page(form=None, message=None, status=200, permit_form=None, edit_form=None):
    """permit_form: a refused permit change's answers ({"role": id, "permit": name}), kept;
    edit_form: a refused change of a role's name, description or kind ({"role": id, ...}), kept."""
    c, db = ctx(), reader()
    rows = reads.list_rows(c, db, reads.ROLES)
    held = reads.grouped(db, RolePermit, RolePermit.role_id, [r.id for r in rows], (RolePermit.permit_id,))
    return render_template(
        "roles.html", roles=rows, message=message, form=form if form is not None else {},
        permits={r.id: [P.BY_ID[x.permit_id].name for x in held.get(r.id, []) if x.permit_id in P.BY_ID]
                 for r in rows},
        kinds=PERMIT_KINDS, all_permits=P.PERMITS, permit_form=permit_form or {}, edit_form=edit_form or {},
        chosen=set(form.getlist("permit")) if form is not None else set()), status


@webui_bp.route("/roles")
@admin_page
def roles_list():
    return _roles_page()


def _role_fields() -> dict:
    """A role's name, description and kind from the form, by the API's rules."""
    return {"name": Name().parse(forms.text_field("name", "Name", required=True, max_len=64), "Name"),
            "description": DESCRIPTION.parse(forms.text_field("description", "Description", max_len=4000),
                                             "Description"),
            "administrative": forms.checkbox("administrative")}


def _role(ident) -> Role:
    return lookup.get(session(), Role, ident, "role")


def _roles_change(change, anchor: str = "", **kept):
    """change(), the service call, then the roles page (at `anchor`);
    refused, the roles page with the service's reason and the answers
    `kept` (_roles_page's form, permit_form or edit_form), nothing changed."""
    try:
        change()
        session().flush()
    except Fault as f:
        rollback()
        return _roles_page(message=f, status=f.status, **kept)
    return after_job(None, url_for("ui.roles_list") + anchor)


@webui_bp.route("/roles", methods=["POST"])
@admin_page
def role_add():
    """A custom role with its permits: as POST /roles."""
    return _roles_change(lambda: roles.add_role(ctx(), session(), roles.RoleSpec(
        **_role_fields(), permits=tuple(request.form.getlist("permit")))), form=request.form)


@webui_bp.route("/roles/<ident>/edit", methods=["POST"])
@admin_page
def role_edit(ident):
    """A custom role's name, description and kind: as PUT /roles/{id}; refused (a
    built-in role, a name in use), the roles page with the reason and the answers kept."""
    return _roles_change(lambda: roles.update_role(ctx(), session(), _role(ident), **_role_fields()),
                         f"#role-{ident}", edit_form={"role": ident, **request.form.to_dict()})


@webui_bp.route("/roles/<ident>/remove", methods=["POST"])
@admin_page
def role_remove(ident):
    """A custom role no permission uses; a built-in one is refused with the service's reason."""
    return _roles_change(lambda: roles.remove_role(ctx(), session(), _role(ident)))


@webui_bp.route("/roles/<ident>/permits", methods=["POST"])
@admin_page
def role_permit_add(ident):
    """A permit added to a custom role: as POST /roles/{id}/permits; refused (a
    built-in role), the roles page with the service's reason and the choice kept."""
    return _roles_change(lambda: roles.add_permit(ctx(), session(), _role(ident), forms.text_field(
        "permit", "Permit", required=True, max_len=64)), f"#role-{ident}",
        permit_form={"role": ident, "permit": request.form.get("permit", "")})


@webui_bp.route("/roles/<ident>/permits/<permit>/remove", methods=["POST"])
@admin_page
def role_permit_remove(ident, permit):
    """A permit taken from a custom role: as DELETE /roles/{id}/permits/{permit}
    (a role keeps at least one; built-in roles are refused)."""
    return _roles_change(lambda: roles.remove_permit(ctx(), session(), _role(ident), permit), f"#role-{ident}")
