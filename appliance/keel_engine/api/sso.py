"""oVirt's SSO endpoints: password grant for a bearer token, and logout."""
import logging

from flask import Blueprint, current_app, jsonify, request

from .. import text
from ..errors import Fault
from ..representation import BadBody, parse_json
from ..services import auth, events
from .framework import read_body_bytes, session

log = logging.getLogger("keel.engine.sso")
sso_bp = Blueprint("sso", __name__)


def _params():
    data = read_body_bytes(current_app.config["KEEL_CTX"].config.max_body_bytes)   # 413 for an oversized body
    if request.is_json:
        try:
            return parse_json(data)[1] if data.strip() else {}
        except BadBody:
            return {}
    return request.form


def _usable(value):
    """A user name or password we can check: text, bounded, storable."""
    return isinstance(value, str) and 0 < len(value) <= 1024 and text.invalid_char(value) is None


def _error(status, code, text, retry_after=None):
    resp = jsonify({"error_code": code, "error": text})
    resp.status_code = status
    if retry_after:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


@sso_bp.route("/ovirt-engine/sso/oauth/token", methods=["POST"])
def token():
    p = _params()
    if p.get("grant_type") != "password":
        return _error(400, "unsupported_grant_type", "only grant_type=password is supported")
    username, password = p.get("username"), p.get("password")
    if not _usable(username) or not _usable(password):
        return _error(400, "invalid_request", "username and password are required (text of at most 1024 "
                      "characters, without control characters)")
    cfg = current_app.config["KEEL_CTX"].config
    try:
        got = auth.login(session(), username, password, request.remote_addr or "", cfg)
    except auth.Throttled as t:
        session().commit()
        return _error(429, "access_denied", t.detail, t.retry_after)
    except auth.SignInRefused as r:
        session().commit()     # the refusal's event stays
        return _error(401, "access_denied", f"Cannot authenticate user: {r.detail}")
    except Fault as f:         # the user's directory does not answer: say so (internal users still sign in)
        session().rollback()
        return _error(f.status, "server_error" if f.status >= 500 else "access_denied", f.detail)
    if got is None:
        session().commit()     # the failure counts, though the answer is a refusal
        return _error(401, "access_denied", "Cannot authenticate user: wrong user name or password")
    tok, user = got
    events.add(session(), events.USER_LOGIN, f"User {user.name}@{user.domain} logged in.", user_id=user.id)
    return jsonify({"access_token": tok, "token_type": "bearer", "scope": p.get("scope", "ovirt-app-api"),
                    "exp": str(cfg.token_lifetime * 1000)})


@sso_bp.route("/ovirt-engine/services/sso-logout", methods=["POST", "GET"])
def logout():
    """oVirt clients call it as GET with ?token=: the access log never shows
    query strings (see the serve command), so the token is not logged."""
    p = _params() if request.method == "POST" else request.args
    tok = p.get("token") or request.headers.get("Authorization", "")[7:].strip()
    tok = tok if isinstance(tok, str) else ""
    s = session()
    user = auth.user_for_token(s, tok) if tok else None
    if tok and auth.revoke(s, tok) and user is not None:
        events.add(s, events.USER_LOGOUT, f"User {user.name}@{user.domain} logged out.",
                   user_id=user.id)
    s.commit()     # also for GET, which is otherwise never committed
    return jsonify({})
