"""Users and their roles, for administrators: internal users added, their
passwords reset, disabled, enabled and removed (as `keel-engine user ...`
does), and roles given or taken on the system, a cluster or a VM."""
from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for
from sqlalchemy import select

from keel_engine.errors import bad_request
from keel_engine.models import Cluster, Permission, Role, User, Vm
from keel_engine.services import lookup, reads, roles, users

from . import forms
from .admin import admin_page, after_job
from .blueprint import ctx, reader, session, webui_bp

# where a role may be given from this page: the system, or one object of these kinds
SCOPES = {"cluster": (Cluster, reads.CLUSTERS), "vm": (Vm, reads.VMS)}


@webui_bp.route("/users")
@admin_page
def users_list():
    c, db = ctx(), reader()
    return render_template("users.html", users=reads.list_rows(c, db, reads.USERS, request.args.get("search") or None),
                           search=request.args.get("search", ""))


@webui_bp.route("/users", methods=["POST"])
@admin_page
def user_add():
    c, s = ctx(), session()
    name = forms.text_field("name", "User name", required=True, max_len=255)
    password = _password()
    user = users.add_internal(c, s, name, password)
    s.flush()
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
    return render_template(
        "user.html", user=u, permissions=perms,
        roles=reads.by_id(db, Role, {p.role_id for p in perms}),
        all_roles=reads.list_rows(c, db, reads.ROLES),
        clusters=reads.list_rows(c, db, reads.CLUSTERS), vms=reads.list_rows(c, db, reads.VMS, None, 500),
        names=_object_names(db, perms))


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
        role = lookup.get(s, Role, forms.text_field("role", "Role", required=True), "role")
        roles.add_permission(c, s, role, _scope_object(s), user=u)
    else:
        abort(404)
    return after_job(None, back)


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
