"""Helpers shared by the API's collection modules."""
from flask import request

from .. import search
from ..representation import Many
from ..services import lookup
from . import views
from .framework import body, max_param, render, session


def get(model, ident, kind):
    return lookup.get(session(), model, ident, kind)


def listing(tag, item_tag, rows, to_view, fields=None, allowed=("name",)):
    terms = search.parse(request.args.get("search"), set(allowed))
    if terms:
        rows = [r for r in rows if search.matches(fields(r) if fields else {"name": r.name}, terms)]
    n = max_param()
    if n is not None:
        rows = rows[:n]
    return render(tag, Many(item_tag, [to_view(r) for r in rows]))


def action_done(extra=None, job=None, status=200):
    out = {"status": "complete"}
    if job is not None:
        out["job"] = {"id": job.id, "href": views.href("jobs", job.id)}
    out.update(extra or {})
    return render("action", out, status)


def removed():
    return render("action", {"status": "complete"})


def action_body():
    return body()
