"""`keel-engine`: serve (gunicorn), monitor, db-upgrade, create-admin."""
import argparse
import getpass
import logging
import signal
import sys

from . import config as config_mod


def _setup_logging(level):
    # journald stamps time and unit; keep lines short and grep-able
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def cmd_serve(cfg, args):
    from gunicorn.app.base import BaseApplication

    from .app import bootstrap, create_app
    bootstrap(cfg)   # once, in the master, before workers fork

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", args.bind or cfg.listen)
            self.cfg.set("workers", cfg.workers)
            self.cfg.set("threads", 4)
            # a migrate request may run as long as the migration timeout
            self.cfg.set("timeout", int(cfg.migration_timeout) + 60)
            self.cfg.set("accesslog", "-")
            self.cfg.set("proc_name", "keel-engine")

        def load(self):
            return create_app(cfg, migrate=False)

    Server().run()


def cmd_monitor(cfg, args):
    from .app import bootstrap
    from .monitor import Monitor
    bootstrap(cfg)
    mon = Monitor(cfg)
    signal.signal(signal.SIGTERM, lambda *_: mon.stopping.set())
    mon.run_forever()


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


def cmd_init_cluster(cfg, args):
    from .app import bootstrap
    from .db import make_engine, make_sessionmaker
    from .errors import Fault
    from .services import Context
    from .services.setup import ensure_inventory
    bootstrap(cfg)
    hosts, storages = _pairs(args.host, "host"), _pairs(args.storage, "storage")
    sm = make_sessionmaker(make_engine(cfg.database_url))
    with sm() as s:
        try:
            for line in ensure_inventory(Context(config=cfg, sessionmaker=sm), s, args.data_center,
                                         args.cluster, hosts, storages):
                print(line)
        except Fault as f:
            raise SystemExit(f"keel-engine: error: {f.detail or f.reason}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="keel-engine", description="Keel engine (oVirt-compatible API)")
    p.add_argument("--config", help=f"config file (default {config_mod.DEFAULT_PATH})")
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("serve", help="run the API under gunicorn")
    sp.add_argument("--bind", help="HOST:PORT (overrides [engine] listen)")
    sub.add_parser("monitor", help="run the background host/VM monitor")
    sub.add_parser("db-upgrade", help="run database migrations forward")
    ca = sub.add_parser("create-admin", help="create a user or set its password")
    ca.add_argument("--user", default="admin@internal")
    ca.add_argument("--password-file")
    ic = sub.add_parser("init-cluster", help="create the data center, cluster, hosts and storage "
                        "domains that are missing (idempotent)")
    ic.add_argument("--data-center", default="Default")
    ic.add_argument("--cluster", default="Default")
    ic.add_argument("--host", action="append", metavar="NAME=ADDRESS")
    ic.add_argument("--storage", action="append", metavar="NAME=PATH")
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"keel-engine: error: {e}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log_level)
    try:
        {"serve": cmd_serve, "monitor": cmd_monitor, "db-upgrade": cmd_db_upgrade,
         "create-admin": cmd_create_admin, "init-cluster": cmd_init_cluster}[args.command](cfg, args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:   # one line for the operator; details in debug logs
        logging.getLogger("keel.engine").debug("failed", exc_info=True)
        print(f"keel-engine: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
