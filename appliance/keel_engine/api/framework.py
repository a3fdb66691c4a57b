"""Plumbing shared by the API's collection modules: a session per request
(committed in one place before the answer leaves), bounded body reading and
parsing through declared fields, XML/JSON rendering, faults, jobs (answer
202 at once for async clients, else wait for the end), and a route registry
that also writes the OpenAPI document."""
from __future__ import annotations

import base64
import functools
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, g, request

from .. import text
from ..errors import Fault
from ..representation import BadBody, parse_json, parse_xml, to_json, to_xml
from ..services import Context, auth, jobs
from . import views
from .fields import Field, Obj, parse_bool, parse_int

API = views.API
api_bp = Blueprint("api", __name__, url_prefix=API)


@dataclass(frozen=True)
class RouteDoc:
    method: str
    path: str
    summary: str
    body: Field | None = None     # the request body's fields
    query: tuple = ()             # names of the query parameters it takes
    created: bool = False         # answers 201 with the new object
    job: bool = False             # may answer 202 with a job (async)


ROUTES: list[RouteDoc] = []
JSON_TYPES = ("application/json",)


def wants_json():
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "application/xml" not in accept


def render(tag, value, status=200):
    if wants_json():
        return Response(to_json(tag, value), status=status, content_type="application/json")
    return Response(to_xml(tag, value), status=status, content_type="application/xml")


def fault_response(status, reason, detail):
    # a detail may quote what the client sent: cleaned like any text the engine writes
    return render("fault", {"reason": text.clean(str(reason)), "detail": text.clean(str(detail or ""))}, status)


def read_body_bytes(limit: int) -> bytes:
    """The request body, at most `limit` bytes: a longer one (with a length or
    chunked) is a 413, never silently cut."""
    if "body_bytes" in g:
        return g.body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise Fault(413, "Request Entity Too Large", f"the request body is larger than {limit} bytes")
    if length is None:
        # chunked (or read to the end): read one byte past the limit to know
        data = request.stream.read(limit + 1)
        if len(data) > limit:
            raise Fault(413, "Request Entity Too Large", f"the request body is larger than {limit} bytes")
        request._cached_data = data    # form parsing reads the same bytes again
    else:
        data = request.get_data(cache=True)
    g.body_bytes = data
    return data


def raw_body() -> dict:
    """The request body as a dict (XML and JSON give the same shape); a
    malformed or wrong-root body is a 400, an empty one {}."""
    if "body" in g:
        return g.body
    data = read_body_bytes(current_app.config["KEEL_CTX"].config.max_body_bytes)
    if not data.strip():
        g.body = {}
        return g.body
    ctype = request.headers.get("Content-Type", "application/xml")
    try:
        _tag, value = parse_json(data) if "json" in ctype else parse_xml(data)
    except BadBody as e:
        raise Fault(400, "Request syntactically incorrect.", str(e))
    g.body = value
    return value


def body(schema: Obj) -> dict:
    """The request body parsed through its declared fields; a field oVirt
    defines that Keel would ignore is a 400 naming it (api/unsupported.py)."""
    from . import unsupported
    raw = raw_body()
    parsed = schema.parse(raw, "")
    unsupported.check(raw, schema)
    return parsed


def session():
    """The request's ORM session (writes, and the reads of a request that writes),
    made on first use; app.py commits or closes it once, at the end."""
    if "session" not in g:
        g.session = current_app.config["KEEL_CTX"].sessionmaker()
    return g.session


def reader():
    """What a read runs on: a plain connection for GET (no ORM session is made
    at all), the request's session otherwise (one transaction per request)."""
    conn = g.get("conn")
    if conn is not None:
        return conn
    if request.method not in ("GET", "HEAD"):
        return session()
    g.conn = conn = current_app.config["KEEL_CTX"].engine.connect()
    return conn


def ctx() -> Context:
    """The caller as the service layer sees it: the signed-in user (never
    None here: None would be the engine itself) and oVirt's Filter."""
    c = current_app.config["KEEL_CTX"]
    user_id = getattr(g, "user_id", None)
    if user_id is None:
        raise Fault(401, "Unauthorized", "not signed in")
    return Context(config=c.config, sessionmaker=c.sessionmaker, user_id=user_id, filtered=filter_param())


def filter_param() -> bool:
    """oVirt's user-level filter: the `Filter` header or the `filter` query
    parameter (the SDK's list(filter=True))."""
    raw = request.headers.get("Filter")
    if raw is None and request.query_string:
        raw = request.args.get("filter")
    return False if raw is None or raw.strip() == "" else parse_bool(raw, "Filter")


def route(path, methods, summary, body=None, query=(), created=False, job=False):
    """Register an API route (and document it)."""
    def deco(fn):
        for m in methods:
            ROUTES.append(RouteDoc(m, path, summary, body, tuple(query), created, job))

        @functools.wraps(fn)
        def wrapper(**kwargs):
            if request.method in ("POST", "PUT"):
                raw_body()    # a body too large or malformed is refused before anything else is looked up
            return fn(**kwargs)
        api_bp.add_url_rule(path, endpoint=f"{fn.__name__}", view_func=wrapper, methods=methods)
        return wrapper
    return deco


def _authenticate():
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        user_id = auth.user_id_for_token(reader(), header[7:].strip())
        if user_id is None:
            raise Fault(401, "Unauthorized", "the access token is unknown, expired or revoked")
        return user_id
    if header[:6].lower() == "basic ":
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise Fault(401, "Unauthorized", "malformed Basic credentials")
        if not name or len(name) > 1024 or len(password) > 1024 or text.invalid_char(name + password):
            raise Fault(401, "Unauthorized", "malformed Basic credentials")
        cfg = current_app.config["KEEL_CTX"].config
        s = current_app.config["KEEL_CTX"].sessionmaker()
        try:
            user = auth.check_password(s, name, password, request.remote_addr or "", cfg)
            s.commit()    # the throttle's bookkeeping stays, whatever the request does next
        except auth.SignInRefused:
            s.commit()    # its event stays too
            raise
        finally:
            s.close()
        if user is None:
            raise Fault(401, "Unauthorized", "wrong user name or password")
        return user.id
    raise Fault(401, "Unauthorized", "an Authorization: Bearer token is required "
                "(get one from /ovirt-engine/sso/oauth/token)")


@api_bp.before_request
def _before():
    g.user_id = _authenticate()


# ---- query parameters -----------------------------------------------------------
def max_param():
    raw = request.args.get("max")
    if raw is None or raw == "":
        return None
    n = parse_int(raw, "max", -1, 2 ** 31 - 1)
    return None if n < 0 else n


def from_param():
    raw = request.args.get("from")
    return None if raw is None or raw == "" else parse_int(raw, "from", 0, 2 ** 63 - 1)


def follow_param():
    if not request.query_string:
        return set()
    raw = request.args.get("follow", "")
    if len(raw) > 256:
        raise Fault(400, "Operation Failed", "follow: longer than 256 characters")
    return {p.strip() for p in raw.split(",") if p.strip()}


def search_param():
    raw = request.args.get("search")
    if raw is not None and len(raw) > 1024:
        raise Fault(400, "Operation Failed", "search: longer than 1024 characters")
    return raw


def bool_param(name, default=False):
    raw = request.args.get(name)
    return default if raw is None or raw == "" else parse_bool(raw, name)


# ---- jobs -------------------------------------------------------------------------
def wants_async(action: dict | None = None) -> bool:
    """oVirt's async: `async=true` in the query or in an action's body, or
    `Prefer: respond-async`."""
    if bool_param("async"):
        return True
    if action and action.get("async") is True:
        return True
    return "respond-async" in request.headers.get("Prefer", "").lower()


def finish_job(job, done, pending, action=None):
    """Commit (the worker sees the job), then answer: `pending(job)` (202) for
    async clients or when the wait runs out, `done(job)` when it finished, the
    job's fault when it failed."""
    s = session()
    s.commit()
    if wants_async(action):
        return pending(job)
    c = current_app.config["KEEL_CTX"]
    ended = jobs.wait(c.engine, job.id, c.config.request_wait)
    if ended is not None and ended.status == "failed":
        raise jobs.fault_of(ended)
    if ended is None or ended.status != "finished":
        return pending(job)
    s.expire_all()
    return done(ended)


def job_ref(job):
    return {"id": job.id, "href": views.href("jobs", job.id)}


def action_answer(job=None, extra=None, status=200, state="complete"):
    out = {"status": state}
    if job is not None:
        out["job"] = job_ref(job)
    out.update(extra or {})
    return render("action", out, status)


def action_job(job, action=None, extra_of=None):
    """An action carried out by a job: `complete` when it ends, 202 `pending` while it runs."""
    if job is None:
        return action_answer(extra=extra_of(None) if extra_of else None)
    return finish_job(job, lambda j: action_answer(j, extra_of(j) if extra_of else None),
                      lambda j: action_answer(j, status=202, state="pending"), action)


def created(tag, job, view_now, view_done):
    """A new object: 201 with it (once its job ended), or 202 with it in its
    transitional state (locked, installing, ...) for async clients."""
    if job is None:
        g.session.flush()
        return render(tag, view_now(), 201)
    return finish_job(job, lambda j: render(tag, view_done(), 201), lambda j: render(tag, view_now(), 202))


def removed(job=None):
    return action_job(job)
