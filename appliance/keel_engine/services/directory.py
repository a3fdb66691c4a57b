"""LDAP directories (OpenLDAP, 389/FreeIPA, Active Directory) through ldap3:
users sign in as user@NAME; administrators find the directory's users and
groups and give them roles; a user's groups (read at each sign-in) carry
permissions.

Every call is bounded: each server of a directory gets `timeout` seconds to
connect and to answer, one after the other, then the directory counts as
unreachable (a 503 that names it: internal users and other directories go
on working). The engine reads the directory with its own bind account
(password Fernet-encrypted with the engine's key) and checks a password by
binding as the account; an empty password is refused before any bind (LDAP
would take it as an anonymous bind). TLS: StartTLS on ldap://, or ldaps://,
with the server certificate checked against `ca_file` (or the system's CAs);
`tls = none` is for a directory on the same machine only."""
from __future__ import annotations

import logging
import math
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select

from ..errors import Fault, bad_request, conflict, not_found
from ..models import Directory, DirectoryMembership, Group, Permission, RolePermit, User
from . import access, events, hosts, lookup, permits
from .ldap_profiles import PROFILES, Profile
from . import ldap_profiles as lp

log = logging.getLogger("keel.engine.directory")
TLS_MODES = ("starttls", "ldaps", "none")
MAX_RESULTS = 200


@dataclass(frozen=True)
class DirectorySpec:
    name: str
    profile: str
    urls: tuple
    base_dn: str
    tls: str = "starttls"
    ca_file: str | None = None
    bind_dn: str | None = None
    bind_password: str | None = None
    timeout: float = 5.0
    login_attribute: str | None = None


@dataclass(frozen=True)
class Account:
    """An entry of the directory, user or group."""
    dn: str
    external_id: str
    login: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""


class Unreachable(Fault):
    def __init__(self, name, detail):
        super().__init__(503, "Service Unavailable", f"directory {name} does not answer: {detail}")


# ---- records ---------------------------------------------------------------------
def check_spec(spec: DirectorySpec):
    """A 400 naming what is wrong with a directory's settings (pure)."""
    if spec.profile not in PROFILES:
        raise bad_request(f"profile: expected one of {', '.join(PROFILES)}, got '{spec.profile}'")
    if spec.tls not in TLS_MODES:
        raise bad_request(f"tls: expected one of {', '.join(TLS_MODES)}, got '{spec.tls}'")
    if not spec.urls:
        raise bad_request("url: give at least one ldap:// or ldaps:// URL")
    for url in spec.urls:
        parts = urlsplit(url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
            raise bad_request(f"url: '{url}' is not ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
        if (parts.scheme == "ldaps") != (spec.tls == "ldaps"):
            raise bad_request(f"url: '{url}' does not fit tls = {spec.tls} (ldaps:// URLs go with tls = ldaps)")
    if spec.login_attribute and spec.login_attribute not in PROFILES[spec.profile].login:
        raise bad_request(f"login attribute: the {spec.profile} profile signs in with one of "
                          f"{', '.join(PROFILES[spec.profile].login)}")
    if spec.name.lower() in ("internal", "internal-authz"):
        raise bad_request(f"name: '{spec.name}' is the internal domain's")
    if not 0 < spec.timeout <= 60:
        raise bad_request("timeout: from 0 to 60 seconds")
    if spec.bind_dn and not spec.bind_password:
        raise bad_request("bind password: a bind DN needs its password")


def add_directory(ctx, s, spec: DirectorySpec) -> Directory:
    access.check(ctx, s, "configure_engine", None)
    check_spec(spec)
    if find(s, spec.name) is not None:
        raise conflict(f"a directory named '{spec.name}' already exists")
    d = Directory(name=spec.name, profile=spec.profile, urls=" ".join(spec.urls), tls=spec.tls,
                  ca_file=spec.ca_file, base_dn=spec.base_dn, bind_dn=spec.bind_dn, timeout=spec.timeout,
                  login_attribute=spec.login_attribute,
                  bind_password_encrypted=(hosts.fernet(ctx.config).encrypt(spec.bind_password.encode()).decode()
                                           if spec.bind_password else ""))
    s.add(d)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Directory {d.name} ({spec.profile}, {d.urls}) was added.",
               user_id=ctx.user_id)
    return d


def remove_directory(ctx, s, d: Directory):
    access.check(ctx, s, "configure_engine", None)
    s.delete(d)
    events.add(s, events.OBJECT_REMOVED, f"Directory {d.name} was removed (its users stay, and cannot sign in).",
               user_id=ctx.user_id)


def find(s, name) -> Directory | None:
    return s.scalar(select(Directory).where(func.lower(Directory.name) == name.lower()))


def by_id(s, ident) -> Directory:
    return lookup.get(s, Directory, ident, "domain")


def _bind_password(cfg, d: Directory) -> str | None:
    if not d.bind_dn:
        return None
    return hosts.fernet(cfg).decrypt(d.bind_password_encrypted.encode()).decode()


# ---- talking to it ------------------------------------------------------------------
# ldap3 is imported where a directory is used, not at the engine's start-up:
# under TCG (the engine VM without KVM) its import costs seconds of every boot.
def _ldap():
    import ldap3
    from ldap3.core import exceptions as lx
    return ldap3, lx


def _tls(d: Directory):
    ldap3, _lx = _ldap()
    return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=d.ca_file or None,
                     version=ssl.PROTOCOL_TLS_CLIENT)


def _connect(d: Directory, who: str | None, password: str | None) -> ldap3.Connection:
    """A bound connection to the first server that answers; Unreachable if
    none does, Fault 503 if the engine's own bind account is refused, and
    lx.LDAPInvalidCredentialsResult for a user's wrong password."""
    ldap3, lx = _ldap()
    last = "no server"
    for url in d.urls.split():
        server = ldap3.Server(url, use_ssl=d.tls == "ldaps", tls=_tls(d) if d.tls != "none" else None,
                              connect_timeout=d.timeout, get_info=ldap3.NONE)
        # ldap3 packs the receive timeout into a socket option: whole seconds
        conn = ldap3.Connection(server, user=who, password=password, receive_timeout=max(1, math.ceil(d.timeout)),
                                raise_exceptions=True, read_only=True, auto_referrals=False)
        try:
            conn.open()
            if d.tls == "starttls":
                conn.start_tls()
            conn.bind()
            return conn
        except lx.LDAPInvalidCredentialsResult:
            conn.unbind()
            raise
        except (lx.LDAPSocketOpenError, lx.LDAPSocketReceiveError, lx.LDAPSocketSendError,
                lx.LDAPSessionTerminatedByServerError, lx.LDAPStartTLSError, lx.LDAPCommunicationError,
                lx.LDAPResponseTimeoutError, lx.LDAPSSLConfigurationError, ssl.SSLError, OSError) as e:
            last = f"{url}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log.warning("directory %s: %s", d.name, last)
            _close(conn)
        except lx.LDAPException as e:
            _close(conn)
            raise Unreachable(d.name, f"{url}: {type(e).__name__}: {str(e)[:200]}")
    raise Unreachable(d.name, last)


def _close(conn):
    try:
        conn.unbind()
    except Exception:   # already gone; nothing more to release
        pass


def _engine_connection(cfg, d: Directory) -> ldap3.Connection:
    _ldap3, lx = _ldap()
    try:
        return _connect(d, d.bind_dn, _bind_password(cfg, d))
    except lx.LDAPInvalidCredentialsResult:
        raise Fault(503, "Service Unavailable", f"directory {d.name} refused the engine's bind account "
                    f"{d.bind_dn}: check its DN and password (keel-engine directory add)")


def _search(d, conn, flt, attrs, base=None, limit=MAX_RESULTS):
    ldap3, lx = _ldap()
    try:
        conn.search(base or d.base_dn, flt, search_scope=ldap3.SUBTREE, attributes=attrs, size_limit=limit,
                    time_limit=max(1, int(d.timeout)))
    except lx.LDAPSizeLimitExceededResult:
        pass   # the first `limit` entries are kept in conn.response
    except lx.LDAPNoSuchObjectResult:
        return []
    except (lx.LDAPCommunicationError, lx.LDAPResponseTimeoutError, lx.LDAPSocketReceiveError) as e:
        raise Unreachable(d.name, f"{type(e).__name__} during a search")
    return [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]


def _first(entry, attr) -> str:
    v = entry["attributes"].get(attr)
    if isinstance(v, list):
        v = v[0] if v else ""
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v or "")


def _account(p: Profile, entry, login_attr, id_attr, names=True) -> Account | None:
    ext = lp.external_id(p, entry["raw_attributes"].get(id_attr))
    if ext is None:
        return None
    return Account(dn=entry["dn"], external_id=ext, login=_first(entry, login_attr),
                   first_name=_first(entry, p.first_name) if names else "",
                   last_name=_first(entry, p.last_name) if names else "",
                   email=_first(entry, p.email) if names else "")


def _user_attrs(p, login_attr):
    return [login_attr, p.user_id, p.first_name, p.last_name, p.email, "memberOf"]


def _groups(d, p, conn, account: Account, entry) -> list[Account]:
    memberof = entry["attributes"].get("memberOf") or [] if p.membership == "memberof" else []
    flt = lp.membership_filter(p, account.dn, account.login, memberof)
    if flt is None:
        return []
    found = [_account(p, e, p.group_name, p.group_id, names=False)
             for e in _search(d, conn, flt, [p.group_name, p.group_id], limit=1000)]
    return [g for g in found if g is not None]


def authenticate(cfg, d: Directory, name: str, domain: str, password: str):
    """(account, its groups) when the password is right, None when not (or
    no such account); Unreachable when the directory does not answer; a
    SignInRefused when the directory marks the account disabled."""
    from .auth import SignInRefused
    _ldap3, lx = _ldap()
    if not password:
        return None
    p = PROFILES[d.profile]
    attr = lp.login_attribute(p, d.login_attribute)
    conn = _engine_connection(cfg, d)
    try:
        found = _search(d, conn, lp.account_filter(p, attr, lp.login_value(p, d.login_attribute, name, domain)),
                        _user_attrs(p, attr), limit=2)
        if len(found) != 1:
            return None
        entry = found[0]
        account = _account(p, entry, attr, p.user_id)
        if account is None:
            return None
        try:
            _close(_connect(d, account.dn, password))
        except lx.LDAPInvalidCredentialsResult:
            return None
        disabled = lp.disabled_filter(p, attr, account.login)
        if disabled and _search(d, conn, disabled, [attr], limit=1):
            raise SignInRefused(f"the account {name}@{d.name} is disabled in the directory")
        return account, _groups(d, p, conn, account, entry)
    finally:
        _close(conn)


def sign_in(s, cfg, name: str, domain: str, password: str) -> User | None:
    """The engine's user for a directory account whose password is right
    (made on its first sign-in, its names and groups refreshed every time),
    or None."""
    d = find(s, domain)
    if d is None:
        return None
    got = authenticate(cfg, d, name, domain, password)
    if got is None:
        return None
    account, groups = got
    if _known(s, d, account) is None and not _groups_may_sign_in(s, d, groups):
        # no row for every account that tries: only for those the engine lets in
        from .auth import SignInRefused
        events.add(s, events.USER_LOGIN_FAILED, f"Sign-in refused for {name}@{d.name}: no role of theirs "
                   "has the login permit.", severity="warning")
        raise SignInRefused(f"{name}@{d.name} may not sign in: none of their groups has a role with the login "
                            "permit; an administrator must give them one")
    user = upsert_user(s, d, account)
    s.execute(delete(DirectoryMembership).where(DirectoryMembership.user_id == user.id))
    for g in {g.external_id for g in groups}:
        s.add(DirectoryMembership(user_id=user.id, domain=d.name, group_external_id=g))
    s.flush()
    log.info("%s@%s signed in through directory %s (%d groups)", name, d.name, d.name, len(groups))
    return user


def _login(account):
    return account.login.rpartition("@")[0] if "@" in account.login else account.login


def _known(s, d, account) -> User | None:
    """The engine's row for an account: by the directory's id (a renamed
    account stays the same user), else by its name."""
    user = s.scalar(select(User).where(User.domain == d.name, User.external_id == account.external_id))
    if user is None:
        user = s.scalar(select(User).where(User.domain == d.name, User.name == _login(account)))
    return user


def _groups_may_sign_in(s, d, groups) -> bool:
    ids = [g.external_id for g in groups]
    if not ids:
        return False
    q = (select(Permission.id).join(Group, Group.id == Permission.group_id)
         .join(RolePermit, RolePermit.role_id == Permission.role_id)
         .where(Group.domain == d.name, Group.external_id.in_(ids),
                RolePermit.permit_id == permits.BY_NAME["login"].id).limit(1))
    return s.execute(q).first() is not None


def upsert_user(s, d: Directory, account: Account) -> User:
    """The engine's row for a directory account, made or brought up to date."""
    user = _known(s, d, account)
    login = _login(account)
    if user is None:
        user = User(name=login, domain=d.name, external_id=account.external_id)
        s.add(user)
    user.name, user.external_id = login, account.external_id
    user.first_name, user.last_name, user.email = account.first_name, account.last_name, account.email
    s.flush()
    return user


# ---- finding users and groups (for administrators) ----------------------------------------
def search_users(cfg, d: Directory, text: str = "*") -> list[Account]:
    p = PROFILES[d.profile]
    attr = lp.login_attribute(p, d.login_attribute)
    conn = _engine_connection(cfg, d)
    try:
        entries = _search(d, conn, lp.user_search_filter(p, attr, text), _user_attrs(p, attr))
        return sorted((a for a in (_account(p, e, attr, p.user_id) for e in entries) if a), key=lambda a: a.login)
    finally:
        _close(conn)


def search_groups(cfg, d: Directory, text: str = "*") -> list[Account]:
    p = PROFILES[d.profile]
    conn = _engine_connection(cfg, d)
    try:
        entries = _search(d, conn, lp.group_search_filter(p, text), [p.group_name, p.group_id])
        return sorted((a for a in (_account(p, e, p.group_name, p.group_id, names=False) for e in entries) if a),
                      key=lambda a: a.login)
    finally:
        _close(conn)


def get_entry(cfg, d: Directory, external_id: str, user: bool) -> Account:
    p = PROFILES[d.profile]
    attr = lp.login_attribute(p, d.login_attribute) if user else p.group_name
    id_attr = p.user_id if user else p.group_id
    conn = _engine_connection(cfg, d)
    try:
        entries = _search(d, conn, lp.id_filter(p, id_attr, external_id, user),
                          _user_attrs(p, attr) if user else [attr, id_attr], limit=2)
    finally:
        _close(conn)
    found = [a for a in (_account(p, e, attr, id_attr, names=user) for e in entries) if a]
    if len(found) != 1:
        raise not_found("user" if user else "group", external_id)
    return found[0]


def find_login(cfg, d: Directory, login: str) -> Account | None:
    """The account that signs in as login@directory, or None."""
    p = PROFILES[d.profile]
    attr = lp.login_attribute(p, d.login_attribute)
    conn = _engine_connection(cfg, d)
    try:
        entries = _search(d, conn, lp.account_filter(p, attr, lp.login_value(p, d.login_attribute, login, d.name)),
                          _user_attrs(p, attr), limit=2)
    finally:
        _close(conn)
    found = [a for a in (_account(p, e, attr, p.user_id) for e in entries) if a]
    return found[0] if len(found) == 1 else None


def find_group(cfg, d: Directory, name: str) -> Account | None:
    found = [g for g in search_groups(cfg, d, name) if g.login.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def test(cfg, d: Directory, user: str | None = None, password: str | None = None) -> list[str]:
    """What `keel-engine directory test` prints: each step that worked, or
    the Fault of the first that did not."""
    out = []
    conn = _engine_connection(cfg, d)
    try:
        who = d.bind_dn or "anonymous"
        out.append(f"connected and bound as {who} ({d.tls}) to {d.urls}")
        users = _search(d, conn, f"(&{PROFILES[d.profile].user_class})", ["dn"], limit=MAX_RESULTS)
        out.append(f"base {d.base_dn}: {len(users)} account(s) visible"
                   f"{' (first ' + str(MAX_RESULTS) + ')' if len(users) >= MAX_RESULTS else ''}")
    finally:
        _close(conn)
    if user:
        got = authenticate(cfg, d, user, d.name, password or "")
        if got is None:
            out.append(f"{user}@{d.name}: wrong user name or password")
        else:
            account, groups = got
            out.append(f"{user}@{d.name}: password accepted ({account.dn}); groups: "
                       f"{', '.join(g.login for g in groups) or 'none'}")
    return out
