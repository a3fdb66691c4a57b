"""Plumbing shared by the API blueprints: a session per request (committed
before the answer leaves), body parsing, XML/JSON rendering, faults, and a
route registry that also feeds the OpenAPI document."""
import base64
import functools

from flask import Blueprint, Response, current_app, g, request

from ..errors import Fault
from ..representation import BadBody, parse_json, parse_xml, to_json, to_xml
from ..services import auth
from ..services.body import Body

API = "/ovirt-engine/api"
ROUTES = []   # (method, path, summary) for the OpenAPI document

api_bp = Blueprint("api", __name__, url_prefix=API)


def wants_json():
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "application/xml" not in accept


def render(tag, value, status=200):
    if wants_json():
        return Response(to_json(tag, value), status=status, content_type="application/json")
    return Response(to_xml(tag, value), status=status, content_type="application/xml")


def fault_response(status, reason, detail):
    return render("fault", {"reason": reason, "detail": detail}, status)


def body():
    """The request body as a Body; a missing, malformed or wrong-root body is a 400."""
    data = request.get_data(cache=True)
    if not data.strip():
        return Body({})
    ctype = request.headers.get("Content-Type", "application/xml")
    try:
        if "json" in ctype:
            _tag, value = parse_json(data)
        else:
            _tag, value = parse_xml(data)
    except BadBody as e:
        raise Fault(400, "Request syntactically incorrect.", str(e))
    return Body(value)


def session():
    return g.session


def ctx():
    c = current_app.config["KEEL_CTX"]
    from ..services import Context
    return Context(config=c.config, sessionmaker=c.sessionmaker, user_id=getattr(g, "user_id", None))


def route(path, methods, summary):
    """Register an API route (and document it)."""
    def deco(fn):
        for m in methods:
            ROUTES.append((m, path, summary))

        @functools.wraps(fn)
        def wrapper(**kwargs):
            return fn(**kwargs)
        api_bp.add_url_rule(path, endpoint=f"{fn.__name__}", view_func=wrapper, methods=methods)
        return wrapper
    return deco


def _authenticate():
    header = request.headers.get("Authorization", "")
    s = g.session
    if header.startswith("Bearer "):
        user = auth.user_for_token(s, header[7:].strip())
        if user is None:
            raise Fault(401, "Unauthorized", "the access token is unknown, expired or revoked")
        return user
    if header.startswith("Basic "):
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise Fault(401, "Unauthorized", "malformed Basic credentials")
        from sqlalchemy import select
        from ..models import User
        uname, domain = auth.split_login(name)
        user = s.scalar(select(User).where(User.name == uname, User.domain == domain))
        if user is None or not user.password_hash or not auth.verify_password(password, user.password_hash):
            raise Fault(401, "Unauthorized", "wrong user name or password")
        return user
    raise Fault(401, "Unauthorized", "an Authorization: Bearer token is required "
                "(get one from /ovirt-engine/sso/oauth/token)")


@api_bp.before_request
def _before():
    g.user_id = _authenticate().id


def href(*parts):
    return "/".join([API, *parts])


def ref(kind, ident, name=None):
    if ident is None:
        return None
    out = {"id": ident, "href": href(kind, ident)}
    if name is not None:
        out["name"] = name
    return out


def max_param():
    raw = request.args.get("max")
    if raw is None:
        return None
    if not raw.lstrip("-").isdigit():
        raise Fault(400, "Operation Failed", f"max: expected an integer, got '{raw}'")
    n = int(raw)
    return None if n < 0 else n


def follow_param():
    raw = request.args.get("follow", "")
    return {p.strip() for p in raw.split(",") if p.strip()}

