"""Users of the internal domain, password hashes and bearer tokens."""
import base64
import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from sqlalchemy import select

from ..models import Permission, Role, Token, User, utcnow
from ..timeutil import aware

log = logging.getLogger("keel.engine.auth")
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


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
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt),
                             n=int(n), r=int(r), p=int(p), dklen=32)
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, AttributeError):
        return False


def split_login(username):
    name, _, domain = username.partition("@")
    return name, (domain or "internal")


def _token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def login(session, username, password, lifetime):
    """Returns (token, user) or None for a wrong user or password."""
    name, domain = split_login(username)
    user = session.scalar(select(User).where(User.name == name, User.domain == domain))
    if user is None or not user.password_hash or not verify_password(password, user.password_hash):
        log.warning("login refused for %s", username)
        return None
    token = secrets.token_urlsafe(32)
    session.add(Token(token_hash=_token_hash(token), user_id=user.id,
                      expires=utcnow() + timedelta(seconds=lifetime)))
    return token, user


def user_for_token(session, token):
    row = session.get(Token, _token_hash(token))
    if row is None or row.revoked or aware(row.expires) <= utcnow():
        return None
    return session.get(User, row.user_id)


def revoke(session, token):
    row = session.get(Token, _token_hash(token))
    if row is None:
        return False
    row.revoked = True
    return True


def purge_expired(session):
    for row in session.scalars(select(Token)):
        if row.revoked or aware(row.expires) <= utcnow():
            session.delete(row)


def ensure_builtin(session, admin_password):
    """First start: roles, the admin@internal user, its SuperUser permission."""
    roles = {}
    for name, admin, desc in (("SuperUser", True, "Roles management administrator"),
                              ("UserRole", False, "Standard user role")):
        role = session.scalar(select(Role).where(Role.name == name))
        if role is None:
            role = Role(name=name, administrative=admin, description=desc)
            session.add(role)
        roles[name] = role
    admin = session.scalar(select(User).where(User.name == "admin", User.domain == "internal"))
    if admin is None:
        if not admin_password:
            log.warning("admin@internal not created: no admin_password in the config "
                        "(use `keel-engine create-admin`)")
            return
        admin = User(name="admin", domain="internal", password_hash=hash_password(admin_password))
        session.add(admin)
        session.flush()
        session.add(Permission(role_id=roles["SuperUser"].id, user_id=admin.id))
        log.info("created admin@internal")


def set_password(session, username, password):
    name, domain = split_login(username)
    user = session.scalar(select(User).where(User.name == name, User.domain == domain))
    if user is None:
        user = User(name=name, domain=domain)
        session.add(user)
        session.flush()
        role = session.scalar(select(Role).where(Role.name == "SuperUser"))
        if role is not None and name == "admin":
            session.add(Permission(role_id=role.id, user_id=user.id))
    user.password_hash = hash_password(password)
    return user
