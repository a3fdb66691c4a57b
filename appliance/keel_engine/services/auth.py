"""Users of the internal domain, password hashes, bearer tokens and the
sign-in throttle. Users of a directory (user@DOMAIN) have their password
checked by services/directory.py, through the same throttle. Either way a
disabled user, or one without any role that has the login permit, is
refused (services/access.py).

A sign-in costs the same whether the user exists or not (an unknown user's
password is checked against a dummy hash), so user names cannot be probed
by timing. Failures in a row are counted per user name and per source
address (in the database, so every web worker sees them): past the allowance
each attempt must wait, doubling up to a cap, and the first refusal writes
an event."""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select

from ..errors import Fault
from ..models import LoginFailure, Permission, Role, RolePermit, Token, User, utcnow
from ..timeutil import aware
from . import access, events, permits, reads

log = logging.getLogger("keel.engine.auth")
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
MAX_LOGIN = 320
_DUMMY = None


def hash_password(password):
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return "scrypt${n}${r}${p}${salt}${digest}".format(
        salt=base64.b64encode(salt).decode(), digest=base64.b64encode(digest).decode(), **SCRYPT)


def verify_password(password, stored):
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=base64.b64decode(salt),
                             n=int(n), r=int(r), p=int(p), dklen=32)
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, AttributeError, MemoryError):
        return False


def _dummy_hash():
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password(secrets.token_urlsafe(16))
    return _DUMMY


INTERNAL = "internal"
# oVirt 4 calls the internal domain's authorization provider internal-authz
INTERNAL_ALIASES = (INTERNAL, "internal-authz")


def split_login(username):
    """'name@domain' -> (name, domain); no domain is the internal one."""
    name, at, domain = username.rpartition("@")
    if not at:
        return username, INTERNAL
    return name, (INTERNAL if domain.lower() in INTERNAL_ALIASES else domain)


def _token_hash(token):
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# ---- sign-in -------------------------------------------------------------------
class Throttled(Fault):
    def __init__(self, wait_s: float):
        super().__init__(429, "Too Many Requests", f"too many failed sign-ins; try again in {wait_s:.0f} s")
        self.retry_after = max(1, int(wait_s + 0.999))


class SignInRefused(Fault):
    """The password was right, but this user may not sign in (disabled, or no
    role with the login permit)."""

    def __init__(self, detail):
        super().__init__(401, "Unauthorized", detail)


def _keys(username, address):
    return [f"user:{username.lower()}"[:320], f"addr:{address}"[:320]]


def check_password(s, username, password, address, cfg) -> User | None:
    """The user whose password this is, or None; raises Throttled while the
    user name or the address must wait. Flushes the throttle's bookkeeping:
    the caller commits it even when it refuses the request."""
    now = utcnow()
    keys = _keys(username, address)
    rows = {r.key: r for r in s.scalars(select(LoginFailure).where(LoginFailure.key.in_(keys)))}
    blocked = [aware(r.blocked_until) for r in rows.values() if r.blocked_until and aware(r.blocked_until) > now]
    if blocked:
        raise Throttled((max(blocked) - now).total_seconds())
    name, domain = split_login(username)
    user = None
    if domain == INTERNAL:
        if len(username) <= MAX_LOGIN:
            user = s.scalar(select(User).where(User.name == name, User.domain == domain))
        stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
        ok = verify_password(password, stored) and user is not None and bool(user.password_hash)
    else:
        from . import directory   # ldap3 is loaded only where directories are used
        user = directory.sign_in(s, cfg, name, domain, password) if len(username) <= MAX_LOGIN else None
        ok = user is not None
    if ok:
        for r in rows.values():
            s.delete(r)
        s.flush()
        _may_sign_in(s, user, username)
        return user
    log.warning("sign-in refused for %s from %s", username[:80], address)
    for key in keys:
        r = rows.get(key) or LoginFailure(key=key, failures=0)
        if key not in rows:
            s.add(r)
        r.failures += 1
        r.last_failure = now
        if r.failures >= cfg.login_failures_allowed:
            delay = min(cfg.login_delay_cap, 2.0 ** (r.failures - cfg.login_failures_allowed))
            r.blocked_until = now + timedelta(seconds=delay)
            if r.failures == cfg.login_failures_allowed:
                what = "user " + username[:80] if key.startswith("user:") else "address " + address
                events.add(s, events.USER_LOGIN_THROTTLED, f"{cfg.login_failures_allowed} failed sign-ins in a "
                           f"row for {what}: further attempts must wait (up to "
                           f"{cfg.login_delay_cap:.0f} s).", severity="warning",
                           user_id=user.id if user is not None and key.startswith("user:") else None)
    events.add(s, events.USER_LOGIN_FAILED, f"Sign-in failed for {username[:80]} from {address}.",
               severity="warning", user_id=user.id if user is not None else None)
    s.flush()
    return None


def _may_sign_in(s, user, username):
    if user.disabled:
        events.add(s, events.USER_LOGIN_FAILED, f"Sign-in refused for {username[:80]}: the account is disabled.",
                   severity="warning", user_id=user.id)
        raise SignInRefused(f"the account {user.name}@{user.domain} is disabled")
    if not access.may_sign_in(s, user.id):
        events.add(s, events.USER_LOGIN_FAILED, f"Sign-in refused for {username[:80]}: no role of theirs has "
                   "the login permit.", severity="warning", user_id=user.id)
        raise SignInRefused(f"{user.name}@{user.domain} may not sign in: none of their roles (or their groups') "
                            "has the login permit; an administrator must give them one")


def login(s, username, password, address, cfg, lifetime: float | None = None):
    """(token, user), or None for a wrong user name or password; raises Throttled.
    The token lasts `lifetime` seconds (the configured token lifetime if None)."""
    user = check_password(s, username, password, address, cfg)
    if user is None:
        return None
    token = secrets.token_urlsafe(32)
    s.add(Token(token_hash=_token_hash(token), user_id=user.id,
                expires=utcnow() + timedelta(seconds=lifetime or cfg.token_lifetime)))
    return token, user


# built once: every API request runs it (a disabled user's tokens stop working at once)
_TOKEN = (select(Token.user_id, Token.expires, Token.revoked, User.disabled)
          .join(User, User.id == Token.user_id).where(Token.token_hash == bindparam("h")))


def user_id_for_token(s, token):
    """The signed-in user's id for a bearer token, or None (one query)."""
    found = token_expiry(s, token)
    return None if found is None else found[0]


def token_expiry(s, token):
    """(user id, expiry) of a valid token, or None (one query)."""
    if not token or len(token) > 512:
        return None
    row = reads.run(s, _TOKEN, {"h": _token_hash(token)}).first()
    if row is None or row.revoked or row.disabled or aware(row.expires) <= utcnow():
        return None
    return row.user_id, aware(row.expires)


def extend(s, token, seconds: float) -> None:
    """An idle-expiry session's token: valid `seconds` from now."""
    row = s.get(Token, _token_hash(token))
    if row is not None and not row.revoked:
        row.expires = utcnow() + timedelta(seconds=seconds)


def user_for_token(s, token):
    user_id = user_id_for_token(s, token)
    return None if user_id is None else s.get(User, user_id)


def revoke(s, token):
    if not token or len(token) > 512:
        return False
    row = s.get(Token, _token_hash(token))
    if row is None:
        return False
    row.revoked = True
    return True


def purge_expired(s):
    now = utcnow()
    for row in s.scalars(select(Token)):
        if row.revoked or aware(row.expires) <= now:
            s.delete(row)
    for row in s.scalars(select(LoginFailure)):
        if aware(row.last_failure) < now - timedelta(days=1):
            s.delete(row)


def ensure_builtin(s, admin_password):
    """Every start: the built-in roles as services/permits.py has them
    (read-only); first start: the admin@internal user, its SuperUser permission."""
    roles = sync_builtin_roles(s)
    admin = s.scalar(select(User).where(User.name == "admin", User.domain == "internal"))
    if admin is None:
        if not admin_password:
            log.warning("admin@internal not created: no admin_password in the config "
                        "(use `keel-engine create-admin`)")
            return
        admin = User(name="admin", domain="internal", password_hash=hash_password(admin_password))
        s.add(admin)
        s.flush()
        s.add(Permission(role_id=roles["SuperUser"].id, user_id=admin.id))
        log.info("created admin@internal")


def sync_builtin_roles(s) -> dict:
    """{name: Role}: the built-in roles, made or brought up to date."""
    roles = {}
    for spec in permits.BUILTIN_ROLES:
        role = s.scalar(select(Role).where(Role.name == spec.name))
        if role is None:
            taken = s.get(Role, spec.id) is not None
            role = Role(name=spec.name) if taken else Role(id=spec.id, name=spec.name)
            s.add(role)
        role.description, role.administrative = spec.description, spec.administrative
        role.mutable, role.allows_viewing_children = False, spec.views_children
        s.flush()
        want = {permits.BY_NAME[n].id for n in spec.permits}
        have = set(s.scalars(select(RolePermit.permit_id).where(RolePermit.role_id == role.id)))
        for pid in have - want:
            s.delete(s.get(RolePermit, (role.id, pid)))
        for pid in want - have:
            s.add(RolePermit(role_id=role.id, permit_id=pid))
        roles[spec.name] = role
    s.flush()
    return roles


def set_password(s, username, password):
    name, domain = split_login(username)
    user = s.scalar(select(User).where(User.name == name, User.domain == domain))
    if user is None:
        user = User(name=name, domain=domain)
        s.add(user)
        s.flush()
        role = s.scalar(select(Role).where(Role.name == "SuperUser"))
        if role is not None and name == "admin":
            s.add(Permission(role_id=role.id, user_id=user.id))
    user.password_hash = hash_password(password)
    return user
