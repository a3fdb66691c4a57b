"""Events and jobs (with their steps). Users, roles and permissions: api/access.py."""
from ..errors import Fault, not_found
from ..models import Cluster, Event, Host, Step, Vm
from ..representation import Many
from ..services import events as ev_svc
from ..services import access, lookup, reads
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
    access.check(ctx(), s, "inject_external_events", None)
    refs = {}
    for key, model, col in (("vm", Vm, "vm_id"), ("host", Host, "host_id"), ("cluster", Cluster, "cluster_id")):
        if b.get(key):
            refs[col] = access.require_visible(ctx(), s, lookup.resolve(s, model, b[key], key, key), key, b[key]).id
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

