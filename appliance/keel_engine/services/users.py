"""Users and groups: internal users (the `internal` domain, with passwords:
`keel-engine user ...`, oVirt's ovirt-aaa-jdbc-tool habit), users and
groups added from a directory, disabling and removal. What a user may do
comes from permissions (services/roles.py), not from here."""
from __future__ import annotations

import re

from sqlalchemy import func, select, update

from ..errors import Fault, bad_request, conflict, not_found
from ..models import Group, Permission, Role, Token, User
from . import access, auth, directory, events

MIN_PASSWORD = 6
LOGIN_NAME = re.compile(r"[A-Za-z0-9_.+\-]{1,255}")


def _check_password(password: str):
    if len(password) < MIN_PASSWORD:
        raise bad_request(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise bad_request("password: at most 1024 characters")


def find(s, username: str) -> User | None:
    name, domain = auth.split_login(username)
    return s.scalar(select(User).where(User.name == name, func.lower(User.domain) == domain.lower()))


def require(s, username: str) -> User:
    user = find(s, username)
    if user is None:
        raise not_found("user", username)
    return user


# ---- internal users ---------------------------------------------------------------
def add_internal(ctx, s, name: str, password: str) -> User:
    access.check(ctx, s, "manipulate_users", None)
    if not LOGIN_NAME.fullmatch(name):
        raise bad_request(f"name: '{name[:40]}' is not a user name (letters, digits, '_', '.', '+', '-')")
    _check_password(password)
    if find(s, f"{name}@{auth.INTERNAL}") is not None:
        raise conflict(f"user {name}@{auth.INTERNAL} already exists")
    user = User(name=name, domain=auth.INTERNAL, password_hash=auth.hash_password(password))
    s.add(user)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"User {name}@{auth.INTERNAL} was added (no role yet: give it one "
               "before it can sign in).", user_id=ctx.user_id)
    return user


def reset_password(ctx, s, user: User, password: str) -> User:
    access.check(ctx, s, "manipulate_users", None)
    if user.domain != auth.INTERNAL:
        raise conflict(f"{user.name}@{user.domain} signs in through its directory; change the password there")
    _check_password(password)
    user.password_hash = auth.hash_password(password)
    _revoke_tokens(s, user)
    events.add(s, events.OBJECT_UPDATED, f"The password of user {user.name}@{user.domain} was reset.",
               user_id=ctx.user_id)
    return user


def set_disabled(ctx, s, user: User, disabled: bool) -> User:
    """A disabled user cannot sign in; its tokens are revoked at once (and
    stay revoked when it is enabled again)."""
    access.check(ctx, s, "manipulate_users", None)
    if disabled and user.id == ctx.user_id:
        raise conflict("you cannot disable yourself")
    user.disabled = disabled
    if disabled:
        _revoke_tokens(s, user)
    events.add(s, events.OBJECT_UPDATED, f"User {user.name}@{user.domain} was {'disabled' if disabled else 'enabled'}.",
               user_id=ctx.user_id, severity="warning" if disabled else "normal")
    return user


def _revoke_tokens(s, user):
    s.execute(update(Token).where(Token.user_id == user.id).values(revoked=True)
              .execution_options(synchronize_session=False))


def remove(ctx, s, user: User):
    access.check(ctx, s, "manipulate_users", None)
    if user.id == ctx.user_id:
        raise conflict("you cannot remove yourself")
    if _holds_last_superuser(s, user):
        raise conflict(f"{user.name}@{user.domain} is the last user with SuperUser on the system; "
                       "give that role to someone else first")
    s.delete(user)
    events.add(s, events.OBJECT_REMOVED, f"User {user.name}@{user.domain} was removed.", user_id=ctx.user_id)


def _holds_last_superuser(s, user) -> bool:
    su = s.scalar(select(Role.id).where(Role.name == "SuperUser"))
    holders = set(s.scalars(select(Permission.user_id).where(
        Permission.role_id == su, Permission.object_type.is_(None), Permission.user_id.is_not(None))))
    return holders == {user.id}


def list_all(s) -> list[User]:
    return s.scalars(select(User).order_by(User.domain, User.name)).all()


# ---- from a directory ------------------------------------------------------------------
def add_from_domain(ctx, s, login: str | None, domain: str | None, external_id: str | None = None) -> User:
    """POST /users: a directory's account becomes a user roles can be given
    to (it would also become one at its first sign-in). Internal users are
    made with `keel-engine user add`."""
    access.check(ctx, s, "add_users_and_groups_from_directory", None)
    if login and "@" in login:
        login, _, named = login.rpartition("@")
        domain = domain or named
    if not domain:
        raise bad_request("domain: give the user's domain (domain.name, or user_name as user@domain)")
    if domain.lower() in auth.INTERNAL_ALIASES:
        user = find(s, f"{login}@{auth.INTERNAL}") if login else None
        if user is None:
            raise bad_request(f"user_name: no internal user '{login}'; internal users are made with "
                              "`keel-engine user add NAME --password-file FILE`")
        return user
    d = _directory_named(s, domain)
    account = (directory.get_entry(ctx.config, d, external_id, user=True) if external_id
               else directory.find_login(ctx.config, d, login or ""))
    if account is None:
        raise bad_request(f"user_name: directory {d.name} has no account '{login}'")
    known = s.scalar(select(User).where(User.domain == d.name, User.external_id == account.external_id))
    if known is not None:
        raise conflict(f"user {known.name}@{d.name} was already added")
    user = directory.upsert_user(s, d, account)
    events.add(s, events.OBJECT_ADDED, f"User {user.name}@{d.name} was added from directory {d.name}.",
               user_id=ctx.user_id)
    return user


def _directory_named(s, domain: str):
    d = directory.find(s, domain)
    if d is None:
        raise bad_request(f"domain: no directory named '{domain}' (see /domains)")
    return d


def add_group(ctx, s, name: str | None, domain: str | None, external_id: str | None = None) -> Group:
    """POST /groups: a directory group whose members get its permissions."""
    access.check(ctx, s, "add_users_and_groups_from_directory", None)
    if not domain:
        raise bad_request("domain: give the group's domain (domain.name)")
    d = _directory_named(s, domain)
    g = (directory.get_entry(ctx.config, d, external_id, user=False) if external_id
         else directory.find_group(ctx.config, d, name or ""))
    if g is None:
        raise bad_request(f"name: directory {d.name} has no group '{name}'")
    if s.scalar(select(Group).where(Group.domain == d.name, Group.external_id == g.external_id)) is not None:
        raise conflict(f"group {g.login}@{d.name} was already added")
    group = Group(name=g.login, domain=d.name, external_id=g.external_id, namespace=d.base_dn)
    s.add(group)
    s.flush()
    events.add(s, events.OBJECT_ADDED, f"Group {group.name}@{d.name} was added from directory {d.name}.",
               user_id=ctx.user_id)
    return group


def remove_group(ctx, s, group: Group):
    access.check(ctx, s, "manipulate_users", None)
    s.delete(group)
    events.add(s, events.OBJECT_REMOVED, f"Group {group.name}@{group.domain} was removed.", user_id=ctx.user_id)


def require_internal(user: User):
    if user.domain != auth.INTERNAL:
        raise Fault(409, "Operation Failed", f"{user.name}@{user.domain} is not an internal user")
