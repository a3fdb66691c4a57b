"""`keel-engine user ...` (internal users, oVirt's ovirt-aaa-jdbc-tool habit)
and `keel-engine directory ...` (LDAP directories users sign in from).
Passwords are read from files, never from the command line (ps, shell
history). Run where the engine's database and key file are."""
from __future__ import annotations

import sys

from .errors import Fault


def add_parsers(sub):
    u = sub.add_parser("user", help="internal users: add, password-reset, disable, enable, remove, list")
    us = u.add_subparsers(dest="user_command", required=True)
    a = us.add_parser("add", help="add an internal user (it needs a role before it can sign in)")
    a.add_argument("name")
    a.add_argument("--password-file", required=True)
    r = us.add_parser("password-reset", help="set an internal user's password (its tokens stop working)")
    r.add_argument("name")
    r.add_argument("--password-file", required=True)
    for verb, what in (("disable", "a disabled user cannot sign in; its tokens stop working at once"),
                       ("enable", "let a disabled user sign in again"),
                       ("remove", "remove a user and its permissions")):
        us.add_parser(verb, help=what).add_argument("name", help="NAME (internal) or NAME@DOMAIN")
    us.add_parser("list", help="every user: name@domain, disabled or not")

    d = sub.add_parser("directory", help="LDAP directories: add, remove, list, test")
    ds = d.add_subparsers(dest="directory_command", required=True)
    da = ds.add_parser("add", help="add a directory users sign in from as user@NAME")
    da.add_argument("name", help="the domain users type after @ (e.g. example.com)")
    da.add_argument("--profile", required=True, choices=("openldap", "389ds", "freeipa", "ad"))
    da.add_argument("--url", action="append", required=True, help="ldap://HOST[:PORT] or ldaps://..., repeatable")
    da.add_argument("--base-dn", required=True)
    da.add_argument("--tls", default="starttls", choices=("starttls", "ldaps", "none"))
    da.add_argument("--ca-file", help="CA certificates (PEM) the server's certificate is checked against")
    da.add_argument("--bind-dn", help="the engine's own account (to find users and groups)")
    da.add_argument("--bind-password-file")
    da.add_argument("--timeout", type=float, default=5.0, help="seconds per server and call (default 5)")
    da.add_argument("--login-attribute", choices=("upn", "samaccountname", "uid"),
                    help="ad: sign in with userPrincipalName (upn, default) or sAMAccountName")
    ds.add_parser("remove", help="remove a directory (its users stay, and cannot sign in)").add_argument("name")
    ds.add_parser("list", help="every directory")
    dt = ds.add_parser("test", help="connect, bind, count accounts; with --user, check a sign-in")
    dt.add_argument("name")
    dt.add_argument("--user")
    dt.add_argument("--password-file")


def _error(msg, status=1):
    print(f"keel-engine: error: {msg}", file=sys.stderr)
    raise SystemExit(status)


def _password(path):
    try:
        with open(path) as f:
            password = f.read().strip("\r\n")
    except OSError as e:
        _error(f"cannot read the password file {path}: {e.strerror}", 2)
    if not password:
        _error(f"the password file {path} is empty", 2)
    return password


def _session(cfg):
    from .app import bootstrap
    from .db import make_engine, make_sessionmaker
    from .services import Context
    bootstrap(cfg)
    # each command is one short transaction that writes: it takes the write lock first
    # (SQLite), so a running engine's commits cannot invalidate what it read
    sm = make_sessionmaker(make_engine(cfg.database_url), writes=True)
    return Context(config=cfg, sessionmaker=sm), sm()


def cmd_user(cfg, args):
    from .services import users
    ctx, s = _session(cfg)
    with s:
        try:
            if args.user_command == "list":
                for u in users.list_all(s):
                    print(f"{u.name}@{u.domain}{'  (disabled)' if u.disabled else ''}")
                return
            if args.user_command == "add":
                name = args.name[:-len("@internal")] if args.name.endswith("@internal") else args.name
                users.add_internal(ctx, s, name, _password(args.password_file))
                print(f"added {name}@internal (give it a role before it can sign in)")
            elif args.user_command == "password-reset":
                user = users.require(s, args.name)
                users.reset_password(ctx, s, user, _password(args.password_file))
                print(f"password set for {user.name}@{user.domain}")
            elif args.user_command in ("disable", "enable"):
                user = users.require(s, args.name)
                users.set_disabled(ctx, s, user, args.user_command == "disable")
                print(f"{user.name}@{user.domain} {args.user_command}d")
            elif args.user_command == "remove":
                user = users.require(s, args.name)
                users.remove(ctx, s, user)
                print(f"removed {user.name}@{user.domain}")
            s.commit()
        except Fault as f:
            _error(f.detail or f.reason)


def cmd_directory(cfg, args):
    from sqlalchemy import select

    from .models import Directory
    from .services import directory
    spec = None
    if args.directory_command == "add":
        spec = directory.DirectorySpec(
            name=args.name, profile=args.profile, urls=tuple(args.url), base_dn=args.base_dn, tls=args.tls,
            ca_file=args.ca_file, bind_dn=args.bind_dn,
            bind_password=_password(args.bind_password_file) if args.bind_password_file else None,
            timeout=args.timeout,
            login_attribute=None if args.login_attribute in (None, "uid") else args.login_attribute)
        try:
            directory.check_spec(spec)    # bad input: one line, before anything is opened
        except Fault as f:
            _error(f.detail, 2)
    ctx, s = _session(cfg)
    with s:
        try:
            if args.directory_command == "list":
                for d in s.scalars(select(Directory).order_by(Directory.name)):
                    print(f"{d.name}  {d.profile}  {d.urls}  tls={d.tls}  base={d.base_dn}  "
                          f"bind={d.bind_dn or 'anonymous'}")
                return
            if args.directory_command == "add":
                directory.add_directory(ctx, s, spec)
                s.commit()
                print(f"added directory {args.name}; users sign in as NAME@{args.name} "
                      f"(try: keel-engine directory test {args.name})")
                return
            d = directory.find(s, args.name)
            if d is None:
                _error(f"no directory named {args.name} (keel-engine directory list)")
            if args.directory_command == "remove":
                directory.remove_directory(ctx, s, d)
                s.commit()
                print(f"removed directory {d.name}")
            elif args.directory_command == "test":
                password = _password(args.password_file) if args.user and args.password_file else None
                if args.user and password is None:
                    _error("--user needs --password-file", 2)
                for line in directory.test(cfg, d, args.user, password):
                    print(line)
        except Fault as f:
            _error(f.detail or f.reason)
