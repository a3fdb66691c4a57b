"""Signing in and out of the UI, and what guards every page.

The session cookie carries an engine token (the same table as the API's
bearer tokens), so signing out revokes it on the server and a copied cookie
stops working. It expires after `ui_idle_timeout` seconds without a request.
Every form and every htmx request carries a CSRF token derived from the
session token; the sign-in form, before any session, uses a double-submit
cookie."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app, g, make_response, redirect, render_template, request

from keel_engine import text
from keel_engine.errors import Fault
from keel_engine.models import User, utcnow
from keel_engine.services import access, auth, events, reads
from sqlalchemy import select

from .blueprint import PREFIX, is_htmx, reader, session, webui_bp

log = logging.getLogger("keel.engine.webui")
COOKIE = "keel_session"
SIGNIN_COOKIE = "keel_signin"
OPEN = {"ui.signin", "ui.static"}


def _config():
    return current_app.config["KEEL_CTX"].config


def csrf_for(token: str) -> str:
    return hashlib.sha256(b"keel-ui-csrf:" + token.encode()).hexdigest()


def _set_cookie(response, name, value, max_age=None):
    response.set_cookie(name, value, max_age=max_age, path=PREFIX + "/", httponly=True, samesite="Strict",
                        secure=request.is_secure)


def _safe_next(target: str | None) -> str:
    """Only a page of this UI: never a redirect to another site."""
    if not target:
        return PREFIX + "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/") or "\\" in target:
        return PREFIX + "/"
    return target


def _to_signin():
    target = PREFIX + "/signin"
    if request.method == "GET" and not is_htmx():
        target += "?next=" + request.full_path.rstrip("?")
    if is_htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target, code=303)


@webui_bp.before_request
def guard():
    if request.endpoint in OPEN:
        return None
    token = request.cookies.get(COOKIE, "")
    found = auth.token_expiry(reader(), token) if token else None
    if found is None:
        return _to_signin()
    g.user_id, expires = found
    g.csrf = csrf_for(token)
    if request.method == "POST":
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf", "")
        if not hmac.compare_digest(sent, g.csrf):
            raise Fault(403, "Forbidden", "the form is out of date (its security token does not match your "
                        "session); reload the page and try again")
    idle = _config().ui_idle_timeout
    if expires - utcnow() < timedelta(seconds=idle / 2):
        _slide(token, idle)
    return None


def _slide(token, idle):
    """Push the idle expiry forward, at most once per half period (a write)."""
    sm = current_app.config["KEEL_CTX"].sessionmaker
    with sm() as s:
        auth.extend(s, token, idle)
        s.commit()


@webui_bp.app_context_processor
def page_globals():
    return {"csrf": g.get("csrf", ""), "me": me() if g.get("user_id") else None, "prefix": PREFIX}


def me():
    """(id, name, domain) of the signed-in user, read once per request."""
    if "me" not in g:
        g.me = reads.run(reader(), select(User.id, User.name, User.domain).where(User.id == g.user_id)).first()
    return g.me


def is_admin() -> bool:
    """The administration portal is for users holding an administrative role."""
    if "is_admin" not in g:
        g.is_admin = access.holds_admin_role(reader(), g.user_id)
    return g.is_admin


@webui_bp.route("/signin", methods=["GET", "POST"])
def signin():
    nonce = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    message, status = None, 200
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        if not hmac.compare_digest(request.form.get("csrf", ""), nonce):
            message, status = "The sign-in form had expired; please try again.", 400
        elif not username or not password:
            message, status = "Enter a user name and a password.", 400
        elif len(username) > auth.MAX_LOGIN or len(password) > 1024 or text.invalid_char(username + password):
            message, status = "Wrong user name or password.", 401
        else:
            response, message, status = _try(username, password)
            if response is not None:
                return response
    response = make_response(render_template("signin.html", message=message, nonce=nonce, username=username,
                                             next=_safe_next(request.values.get("next"))), status)
    _set_cookie(response, SIGNIN_COOKIE, nonce)
    return response


def _try(username, password):
    """(a response that signs the user in, None, None), or (None, the message to show, its status)."""
    cfg = _config()
    address = request.remote_addr or ""
    s = session()
    try:
        got = auth.login(s, username, password, address, cfg, lifetime=cfg.ui_idle_timeout)
    except auth.Throttled as e:
        s.commit()
        return None, f"Too many failed sign-ins: wait {e.retry_after} s and try again.", 429
    except auth.SignInRefused as e:
        s.commit()     # the refusal's event stays
        return None, e.detail[:1].upper() + e.detail[1:] + ".", 403
    if got is None:
        s.commit()     # the throttle's count and the failure's event stay
        return None, "Wrong user name or password.", 401
    token, user = got
    events.add(s, events.USER_LOGIN, f"User {user.name}@{user.domain} signed in to the web UI from {address}.",
               user_id=user.id)
    s.commit()
    log.info("%s@%s signed in to the web UI from %s", user.name, user.domain, address)
    target = _safe_next(request.form.get("next"))
    if target == PREFIX + "/" and not access.holds_admin_role(s, user.id):
        target = PREFIX + "/portal/"
    response = redirect(target, code=303)
    _set_cookie(response, COOKIE, token)
    response.delete_cookie(SIGNIN_COOKIE, path=PREFIX + "/")
    return response, None, None


@webui_bp.route("/signout", methods=["POST"])
def signout():
    s = session()
    token = request.cookies.get(COOKIE, "")
    user = s.get(User, g.user_id)
    if auth.revoke(s, token) and user is not None:
        events.add(s, events.USER_LOGOUT, f"User {user.name}@{user.domain} signed out of the web UI.",
                   user_id=user.id)
    target = PREFIX + "/signin"
    response = make_response("", 204, {"HX-Redirect": target}) if is_htmx() else redirect(target, code=303)
    response.delete_cookie(COOKIE, path=PREFIX + "/")
    return response
