"""`keel-engine`: serve (gunicorn, the web workers), worker (the engine
worker: monitoring, power management, jobs), db-upgrade, create-admin,
init-cluster, user and directory (access_cli.py)."""
import argparse
import getpass
import logging
import os
import re
import signal
import sys

from keel_common.pipes import pipe_closed

from . import access_cli
from . import config as config_mod


def _setup_logging(level):
    # journald stamps time and unit; keep lines short and grep-able
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# The access log never shows query strings: oVirt clients put tokens in some
# (sso-logout?token=...). Method, path, status, size, time, address.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


def cmd_serve(cfg, args):
    from gunicorn.app.base import BaseApplication

    from .app import bootstrap, create_app
    bootstrap(cfg)   # once, in the master, before workers fork

    class Server(BaseApplication):
        app = None

        def load_config(self):
            self.cfg.set("bind", args.bind or cfg.listen)
            self.cfg.set("workers", cfg.workers)
            self.cfg.set("threads", cfg.threads)
            self.cfg.set("worker_class", "gthread")
            # requests never wait for a host or a BMC (the engine worker does), so the
            # default timeout fits; a request waiting for its job is bounded by request_wait
            self.cfg.set("timeout", 30)
            self.cfg.set("accesslog", "-")
            self.cfg.set("access_log_format", ACCESS_LOG_FORMAT)
            self.cfg.set("proc_name", "keel-engine")
            self.cfg.set("control_socket_disable", True)
            # The master imports the API once and the workers fork from it: under
            # TCG every worker importing it again cost seconds of the engine's boot.
            self.cfg.set("preload_app", True)
            self.cfg.set("post_fork", lambda _server, _worker: self._fresh_connections())

        def _fresh_connections(self):
            # no database connection may be shared across a fork
            self.app.config["KEEL_CTX"].engine.dispose(close=False)

        def load(self):
            from . import virt
            from keel_common import ipmi
            self.app = create_app(cfg, migrate=False)
            reason = "web workers never talk to hosts or BMCs; the engine worker does"
            virt.forbid(reason)
            ipmi.forbid(reason)
            return self.app

    Server().run()


def cmd_worker(cfg, args):
    from .app import bootstrap
    from .worker.main import Worker
    bootstrap(cfg)
    worker = Worker(cfg)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    worker.run_forever()


def cmd_console_proxy(cfg, args):
    from . import console_proxy
    console_proxy.serve(cfg)


def cmd_db_upgrade(cfg, args):
    from .app import bootstrap
    bootstrap(cfg)
    print("database is up to date")


def cmd_create_admin(cfg, args):
    from .app import bootstrap
    from .db import make_engine, make_sessionmaker
    from .services import auth
    bootstrap(cfg)
    if args.password_file:
        with open(args.password_file) as f:
            password = f.read().strip()
    else:
        password = getpass.getpass(f"password for {args.user}: ")
    if len(password) < 6:
        raise SystemExit("keel-engine: error: the password must have at least 6 characters")
    with make_sessionmaker(make_engine(cfg.database_url))() as s:
        auth.set_password(s, args.user, password)
        s.commit()
    print(f"password set for {args.user}")


def _pairs(values, what):
    out = []
    for v in values or []:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"keel-engine: error: --{what} expects NAME=VALUE, got '{v}'")
        out.append((name, rest))
    return out


FENCE_AGENT_SYNTAX = ("HOST=TYPE,address=A,username=U,password_file=F"
                      "[,port=P][,order=N][,lanplus=1][,cipher=3][,privlvl=operator]")
_AGENT_KEYS = ("address", "port", "username", "password_file", "order")


def _usage_error(msg):
    # bad command-line input: one line, exit status 2 (argparse's convention)
    print(f"keel-engine: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def parse_fence_agent(value):
    """'h1=ipmilan,address=...,password_file=F,lanplus=1' -> (host, FenceAgentSpec).

    The password is read from a file so it never shows in argv (ps, shell
    history); anything else is validated by the power module's own rules, so
    init-cluster accepts exactly what the fencing code can use."""
    from .power.agents import AgentConfigError, make_spec
    host, sep, rest = value.partition("=")
    parts = [p.strip() for p in rest.split(",")] if sep else []
    if not host or not parts or not parts[0] or "=" in parts[0]:
        # a mistyped option may still carry a clear password: never echo it
        shown = re.sub(r"(password=)[^,]*", r"\1***", value)
        _usage_error(f"--fence-agent expects {FENCE_AGENT_SYNTAX}, got '{shown}'")
    fields, options = {"type": parts[0]}, []
    for part in parts[1:]:
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if key == "password":
            _usage_error(f"--fence-agent {host}: give the password as password_file=PATH, "
                         "never on the command line")
        if not sep or not key or not val.strip():
            _usage_error(f"--fence-agent {host}: expected key=value, got '{part.partition('=')[0]}'")
        if key in fields or key in dict(options):
            _usage_error(f"--fence-agent {host}: '{key}' given twice")
        if key in _AGENT_KEYS:
            fields[key] = val.strip()
        else:
            options.append((key, val.strip()))
    missing = [k for k in ("address", "username", "password_file") if k not in fields]
    if missing:
        _usage_error(f"--fence-agent {host}: missing {', '.join(missing)} ({FENCE_AGENT_SYNTAX})")
    try:
        with open(fields["password_file"]) as f:
            password = f.read().strip("\r\n")
    except OSError as e:
        _usage_error(f"--fence-agent {host}: cannot read password_file {fields['password_file']}: "
                     f"{e.strerror}")
    if not password:
        _usage_error(f"--fence-agent {host}: password_file {fields['password_file']} is empty")
    try:
        make_spec(address=fields["address"], username=fields["username"], password=password,
                  port=fields.get("port", 623), type=fields["type"], order=fields.get("order", 1),
                  options=dict(options))
    except AgentConfigError as e:
        _usage_error(f"--fence-agent {host}: {e}")
    from .services.hosts import FenceAgentSpec
    agent = FenceAgentSpec(type=fields["type"], address=fields["address"], username=fields["username"],
                           password=password, port=int(fields.get("port", 623)), options=dict(options),
                           order=int(fields["order"]) if "order" in fields else None)
    return host, agent


def cmd_init_cluster(cfg, args):
    from sqlalchemy import select

    from .app import bootstrap
    from .db import make_engine, make_sessionmaker
    from .errors import Fault
    from .models import Host
    from .services import Context
    from .services.setup import ensure_fence_agents, ensure_inventory
    hosts, storages = _pairs(args.host, "host"), _pairs(args.storage, "storage")
    # every --fence-agent is checked before anything is created or changed
    agents = [parse_fence_agent(v) for v in args.fence_agent or []]
    bootstrap(cfg)
    sm = make_sessionmaker(make_engine(cfg.database_url))
    with sm() as s:
        known = set(s.scalars(select(Host.name))) | {name for name, _ in hosts}
        unknown = sorted({name for name, _ in agents} - known)
        if unknown:
            _usage_error(f"--fence-agent: no host named {unknown[0]} (add it with --host)")
        try:
            ctx = Context(config=cfg, sessionmaker=sm)
            for line in ensure_inventory(ctx, s, args.data_center, args.cluster, hosts, storages):
                print(line)
            for line in ensure_fence_agents(ctx, s, agents):
                print(line)
        except Fault as f:
            raise SystemExit(f"keel-engine: error: {f.detail or f.reason}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="keel-engine", description="Keel engine (oVirt-compatible API)")
    p.add_argument("--config", help=f"config file (default {config_mod.DEFAULT_PATH})")
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("serve", help="run the API under gunicorn")
    sp.add_argument("--bind", help="HOST:PORT (overrides [engine] listen)")
    sub.add_parser("worker", help="run the engine worker (host monitoring, power management, jobs)")
    sub.add_parser("monitor", help="the same as worker (its former name)")
    sub.add_parser("console-proxy", help="relay browsers' VM consoles (websocket to VNC), for signed tickets only")
    sub.add_parser("db-upgrade", help="run database migrations forward")
    ca = sub.add_parser("create-admin", help="create a user or set its password")
    ca.add_argument("--user", default="admin@internal")
    ca.add_argument("--password-file")
    ic = sub.add_parser("init-cluster", help="create the data center, cluster, hosts and storage "
                        "domains that are missing (idempotent)")
    ic.add_argument("--data-center", default="Default")
    ic.add_argument("--cluster", default="Default")
    ic.add_argument("--host", action="append", metavar="NAME=ADDRESS")
    ic.add_argument("--storage", action="append", metavar="NAME=PATH|NAME=SERVER:/EXPORT",
                    help="a data storage domain: a local directory (posixfs) or an NFS export (nfs), "
                         "which every host must have mounted under [storage] nfs_mount_root")
    ic.add_argument("--fence-agent", action="append", metavar=FENCE_AGENT_SYNTAX,
                    help="a host's fence agent (repeatable; the password is read from the file)")
    access_cli.add_parsers(sub)   # user ..., directory ...
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"keel-engine: error: {e}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log_level)
    os.umask(0o077)   # whatever the engine creates (database, key, logs) is private
    try:
        {"serve": cmd_serve, "worker": cmd_worker, "monitor": cmd_worker, "db-upgrade": cmd_db_upgrade,
         "console-proxy": cmd_console_proxy,
         "create-admin": cmd_create_admin, "init-cluster": cmd_init_cluster,
         "user": access_cli.cmd_user, "directory": access_cli.cmd_directory}[args.command](cfg, args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return pipe_closed()
    except Exception as e:   # one line for the operator; details in debug logs
        logging.getLogger("keel.engine").debug("failed", exc_info=True)
        print(f"keel-engine: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
