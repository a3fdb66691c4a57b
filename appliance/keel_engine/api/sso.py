"""oVirt's SSO endpoints: password grant for a bearer token, and logout."""
import logging

from flask import Blueprint, current_app, g, jsonify, request

from ..services import auth, events

log = logging.getLogger("keel.engine.sso")
sso_bp = Blueprint("sso", __name__)


def _params():
    if request.is_json:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}
    return request.form


def _error(status, code, text):
    resp = jsonify({"error_code": code, "error": text})
    resp.status_code = status
    return resp


@sso_bp.route("/ovirt-engine/sso/oauth/token", methods=["POST"])
def token():
    p = _params()
    if p.get("grant_type") != "password":
        return _error(400, "unsupported_grant_type", "only grant_type=password is supported")
    username, password = p.get("username"), p.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        return _error(400, "invalid_request", "username and password are required")
    cfg = current_app.config["KEEL_CTX"].config
    got = auth.login(g.session, username, password, cfg.token_lifetime)
    if got is None:
        return _error(401, "access_denied", "Cannot authenticate user: wrong user name or password")
    tok, user = got
    events.add(g.session, events.USER_LOGIN, f"User {username} logged in.", user_id=user.id)
    return jsonify({"access_token": tok, "token_type": "bearer", "scope": p.get("scope", "ovirt-app-api"),
                    "exp": str(cfg.token_lifetime * 1000)})


@sso_bp.route("/ovirt-engine/services/sso-logout", methods=["POST", "GET"])
def logout():
    p = _params() if request.method == "POST" else request.args
    tok = p.get("token") or request.headers.get("Authorization", "")[7:].strip()
    user = auth.user_for_token(g.session, tok) if tok else None
    if tok and auth.revoke(g.session, tok) and user is not None:
        events.add(g.session, events.USER_LOGOUT, f"User {user.name}@{user.domain} logged out.",
                   user_id=user.id)
    return jsonify({})
