"""Events, jobs, users, roles and permissions."""
from flask import request
from sqlalchemy import select

from ..errors import bad_request, not_found
from ..models import Cluster, Event, Host, Job, Permission, Role, User, Vm
from ..services import events as ev_svc
from ..services import lookup
from . import views
from .common import get, listing
from .framework import body, ctx, max_param, render, route, session


# ---- events and jobs ----------------------------------------------------------------------
SEVERITY_ORDER = {"normal": 0, "warning": 1, "error": 2, "alert": 3}


@route("/events", ["GET"], "List events, newest first (max, from, search)")
def events_list():
    s = session()
    q = select(Event).order_by(Event.id.desc())
    since = request.args.get("from")
    if since is not None:
        if not since.isdigit():
            raise bad_request(f"from: expected an event id (integer), got '{since}'")
        q = q.where(Event.id > int(since))
    n = max_param()
    if n is not None and not request.args.get("search"):
        q = q.limit(n)   # the common case ("the newest N") stays cheap on a long history
    rows = s.scalars(q).all()
    names = {}
    for model, key in ((Vm, "vm"), (Host, "host"), (Cluster, "cluster")):
        names[key] = {r.id: r.name for r in s.scalars(select(model))}
    return listing("events", "event", rows, lambda e: views.event(s, e),
                   lambda e: {"severity": e.severity, "code": e.code, "description": e.description,
                              "vm": names["vm"].get(e.vm_id), "vm.name": names["vm"].get(e.vm_id),
                              "host": names["host"].get(e.host_id), "host.name": names["host"].get(e.host_id),
                              "cluster": names["cluster"].get(e.cluster_id), "origin": e.origin},
                   ("severity", "code", "description", "vm", "vm.name", "host", "host.name", "cluster", "origin"))


@route("/events", ["POST"], "Add a custom event")
def events_add():
    s = session()
    b = body()
    e = ev_svc.add(s, ev_svc.CUSTOM, b.str("description", required=True, maxlen=4000),
                   severity=b.str("severity", default="normal", choices=tuple(SEVERITY_ORDER)),
                   origin=b.str("origin", required=True, maxlen=255),
                   custom_id=b.int("custom_id", required=True, minimum=0, maximum=2 ** 31 - 1),
                   user_id=ctx().user_id)
    for key, model, col in (("vm", Vm, "vm_id"), ("host", Host, "host_id"), ("cluster", Cluster, "cluster_id")):
        r = b.ref(key)
        if r:
            setattr(e, col, lookup.resolve(s, model, r, key, key).id)
    s.flush()
    return render("event", views.event(s, e), 201)


@route("/events/<ident>", ["GET"], "Get an event")
def event_get(ident):
    s = session()
    if not ident.isdigit():
        raise not_found("event", ident)
    return render("event", views.event(s, get(Event, int(ident), "event")))


@route("/jobs", ["GET"], "List jobs, newest first")
def jobs_list():
    s = session()
    return listing("jobs", "job", s.scalars(select(Job).order_by(Job.start_time.desc())).all(),
                   lambda j: views.job(s, j), lambda j: {"name": j.description, "status": j.status},
                   ("name", "status"))


@route("/jobs/<ident>", ["GET"], "Get a job")
def job_get(ident):
    s = session()
    return render("job", views.job(s, get(Job, ident, "job")))


# ---- users, roles, permissions ---------------------------------------------------------------
@route("/users", ["GET"], "List users")
def users_list():
    s = session()
    return listing("users", "user", s.scalars(select(User).order_by(User.name)).all(), lambda u: views.user(s, u))


@route("/users/<ident>", ["GET"], "Get a user")
def user_get(ident):
    s = session()
    return render("user", views.user(s, get(User, ident, "user")))


@route("/users/<ident>/permissions", ["GET"], "List a user's permissions")
def user_permissions(ident):
    s = session()
    u = get(User, ident, "user")
    rows = s.scalars(select(Permission).where(Permission.user_id == u.id)).all()
    return listing("permissions", "permission", rows, lambda p: views.permission(s, p), lambda p: {"name": p.id})


@route("/roles", ["GET"], "List roles")
def roles_list():
    s = session()
    return listing("roles", "role", s.scalars(select(Role).order_by(Role.name)).all(), lambda r: views.role(s, r))


@route("/roles/<ident>", ["GET"], "Get a role")
def role_get(ident):
    s = session()
    return render("role", views.role(s, get(Role, ident, "role")))


@route("/permissions", ["GET"], "List permissions (system-wide)")
def permissions_list():
    s = session()
    rows = s.scalars(select(Permission)).all()
    return listing("permissions", "permission", rows, lambda p: views.permission(s, p), lambda p: {"name": p.id})


@route("/permissions/<ident>", ["GET"], "Get a permission")
def permission_get(ident):
    s = session()
    return render("permission", views.permission(s, get(Permission, ident, "permission")))
