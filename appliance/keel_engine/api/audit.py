"""Events, jobs (with their steps), users, roles and permissions."""
from ..errors import Fault, not_found
from ..models import Cluster, Event, Host, Permission, Step, Vm
from ..representation import Many
from ..services import events as ev_svc
from ..services import lookup, reads
from . import schemas, views
from .common import listing, row
from .fields import parse_int, required
from .framework import body, created, ctx, from_param, max_param, reader, render, route, search_param, session


# ---- events and jobs ----------------------------------------------------------------------
@route("/events", ["GET"], "List events, newest first (max, from, search)", query=("search", "max", "from"))
def events_list():
    since = from_param()
    where = (Event.id > since,) if since is not None else ()
    rows = reads.list_rows(ctx(), reader(), reads.EVENTS, search_param(), max_param(), *where)
    return render("events", Many("event", [views.event(e) for e in rows]))


@route("/events", ["POST"], "Add a custom event", body=schemas.EVENT, created=True)
def events_add():
    b = body(schemas.EVENT)
    s = session()
    refs = {}
    for key, model, col in (("vm", Vm, "vm_id"), ("host", Host, "host_id"), ("cluster", Cluster, "cluster_id")):
        if b.get(key):
            refs[col] = lookup.resolve(s, model, b[key], key, key).id
    e = ev_svc.add(s, ev_svc.CUSTOM, required(b, "description"), severity=b.get("severity", "normal"),
                   origin=required(b, "origin"), custom_id=required(b, "custom_id"), user_id=ctx().user_id, **refs)
    return created("event", None, lambda: views.event(e), None)


@route("/events/<ident>", ["GET"], "Get an event")
def event_get(ident):
    try:
        n = parse_int(ident, "id", 0, 2 ** 63 - 1)
    except Fault:
        raise not_found("event", ident[:40]) from None
    return render("event", views.event(row(reads.EVENTS, n)))


@route("/jobs", ["GET"], "List jobs, newest first", query=("search", "max"))
def jobs_list():
    return listing("jobs", "job", reads.JOBS, lambda j, _e: views.job(j))


@route("/jobs/<ident>", ["GET"], "Get a job (with its steps)")
def job_get(ident):
    j = row(reads.JOBS, ident)
    steps = reads.list_rows(ctx(), reader(), reads.STEPS, None, None, Step.job_id == j.id)
    return render("job", views.job(j, steps))


@route("/jobs/<ident>/steps", ["GET"], "List a job's steps")
def job_steps(ident):
    j = row(reads.JOBS, ident)
    return listing("steps", "step", reads.STEPS, lambda st, _e: views.step(st), Step.job_id == j.id)


# ---- users, roles, permissions ---------------------------------------------------------------
@route("/users", ["GET"], "List users", query=("search", "max"))
def users_list():
    return listing("users", "user", reads.USERS, lambda u, _e: views.user(u))


@route("/users/<ident>", ["GET"], "Get a user")
def user_get(ident):
    return render("user", views.user(row(reads.USERS, ident)))


@route("/users/<ident>/permissions", ["GET"], "List a user's permissions", query=("search", "max"))
def user_permissions(ident):
    u = row(reads.USERS, ident)
    return listing("permissions", "permission", reads.PERMISSIONS, lambda p, _e: views.permission(p),
                   Permission.user_id == u.id)


@route("/roles", ["GET"], "List roles", query=("search", "max"))
def roles_list():
    return listing("roles", "role", reads.ROLES, lambda r, _e: views.role(r))


@route("/roles/<ident>", ["GET"], "Get a role")
def role_get(ident):
    return render("role", views.role(row(reads.ROLES, ident)))


@route("/permissions", ["GET"], "List permissions (system-wide)", query=("search", "max"))
def permissions_list():
    return listing("permissions", "permission", reads.PERMISSIONS, lambda p, _e: views.permission(p))


@route("/permissions/<ident>", ["GET"], "Get a permission")
def permission_get(ident):
    return render("permission", views.permission(row(reads.PERMISSIONS, ident)))
