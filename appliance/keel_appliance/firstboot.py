"""Inside the appliance, at every boot (keel-appliance-firstboot.service):
apply the seed disk once per instance_id.

Everything is read and checked before anything is written, so a bad seed
changes nothing: one line on the serial console and in the journal, exit
status 1, and the engine does not start unless an earlier seed configured
it (then it keeps that configuration). Passwords never reach a log line or
a command line: they travel in files under /run (tmpfs), readable by root.
"""
from __future__ import annotations

import configparser
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from . import recipe, seed
from .seed import SeedConfig, SeedError, StaticNetwork

STATE_DIR = "/var/lib/keel-appliance"
APPLIED = os.path.join(STATE_DIR, "instance-id")
RUN_DIR = "/run/keel-appliance"
PASSWORD_PATH = os.path.join(RUN_DIR, "admin-password")
ENGINE_ENV = os.path.join(RUN_DIR, "engine.env")
ENGINE_CONF = "/etc/keel/engine.conf"
NETWORK_FILE = "/etc/systemd/network/10-keel-appliance.network"
SQLITE_PATH = "/var/lib/keel/engine.db"
PG_MAP = "keel"
ENGINE_UNITS = ("keel-engine.service", "keel-engine-worker.service", "keel-engine-console-proxy.service")
UNIT_DIR = "/etc/systemd/system"
WORKER_STORAGE_DROPIN = f"{UNIT_DIR}/keel-engine-worker.service.d/10-storage.conf"
# the seed's etcd TLS files: the engine reads the HA agents' fences with them
ETCD_TLS_DIR = "/etc/keel/etcd"
ETCD_TLS_PATHS = {"etcd_ca_cert": f"{ETCD_TLS_DIR}/ca.crt", "etcd_cert": f"{ETCD_TLS_DIR}/client.crt",
                  "etcd_key": f"{ETCD_TLS_DIR}/client.key"}
# NFSv4.1 over TCP, hard: the engine's storage I/O waits for a server that is
# away instead of failing (sanlock, not NFS timeouts, decides about leases);
# a mount at boot keeps trying until the server answers.
NFS_OPTIONS = "vers=4.1,proto=tcp,hard,timeo=100,retrans=3,retry=10000"


class ApplyError(RuntimeError):
    pass


# ---------------------------------------------------------------- pure core

def engine_conf_text(cfg: SeedConfig) -> str:
    conf = {s: dict(keys) for s, keys in recipe.ENGINE_CONF_DEFAULTS.items()}
    if cfg.database == "postgresql":
        conf["database"]["url"] = recipe.POSTGRESQL_URL
    for section, keys in cfg.engine_conf.items():
        conf.setdefault(section, {}).update(keys)
    if cfg.etcd_tls:
        conf.setdefault("ha", {}).update(ETCD_TLS_PATHS)
    return (f"# Written by keel-appliance-firstboot from seed instance {cfg.instance_id}.\n"
            "# Edit it here, or write a new seed (new instance_id) and reboot.\n" + seed.render_conf(conf))


def network_text(cfg: SeedConfig) -> str:
    net = cfg.network
    match = f"MACAddress={net.mac}" if net.mac else "Type=ether"
    lines = ["# Written by keel-appliance-firstboot from the seed's [network]",
             "[Match]", match, "", "[Network]"]
    if isinstance(net, StaticNetwork):
        lines.append(f"Address={net.address}")
        if net.gateway:
            lines.append(f"Gateway={net.gateway}")
        # a static engine address: no router advertisements, no link-local noise
        lines += ["LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    else:
        lines.append("DHCP=yes")
    lines += [f"DNS={d}" for d in net.dns]
    return "\n".join(lines) + "\n"


def hosts_text(cfg: SeedConfig) -> str:
    short = cfg.hostname.split(".")[0]
    names = f"{cfg.hostname} {short}" if short != cfg.hostname else cfg.hostname
    own = cfg.network.address.split("/")[0] if isinstance(cfg.network, StaticNetwork) else "127.0.1.1"
    return (f"127.0.0.1 localhost\n{own} {names}\n"
            "::1 localhost ip6-localhost ip6-loopback\n")


def resolv_text(cfg: SeedConfig) -> str:
    return "# Written by keel-appliance-firstboot from the seed's [network] dns\n" + \
        "".join(f"nameserver {d}\n" for d in cfg.network.dns)


def mount_unit_name(path: str) -> str:
    """systemd's name for the mount unit of `path` (as systemd-escape --path)."""
    out = []
    for i, ch in enumerate(path.strip("/")):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return ("".join(out) or "-") + ".mount"


def mount_unit_text(cfg: SeedConfig) -> str:
    m = cfg.storage
    return ("# Written by keel-appliance-firstboot from the seed's [storage]\n"
            "[Unit]\n"
            f"Description=Keel storage domain {m.export}\n"
            # mount.nfs gives up at once on an unreachable network (it retries
            # only a server that does not answer): wait for the address first
            "Wants=systemd-networkd-wait-online.service\n"
            "After=systemd-networkd-wait-online.service\n\n"
            "[Mount]\n"
            f"What={m.export}\nWhere={m.mount_point}\nType=nfs\nOptions={NFS_OPTIONS}\n"
            "TimeoutSec=infinity\n")


def worker_dropin_text(cfg: SeedConfig) -> str:
    # the worker writes VM leases and reads the hosts' delta leases there: it
    # must never see the empty directory under the mount point
    return ("# Written by keel-appliance-firstboot from the seed's [storage]\n"
            f"[Unit]\nRequiresMountsFor={cfg.storage.mount_point}\n")


def configured_database(engine_conf: str | None) -> str | None:
    """Which database an existing engine.conf uses (None: not configured)."""
    if engine_conf is None:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(engine_conf)
    except configparser.Error:
        return None
    url = parser.get("database", "url", fallback="sqlite")
    return "postgresql" if url.startswith("postgresql") else "sqlite"


@dataclass(frozen=True)
class Plan:
    files: dict                  # path -> (text, mode), engine.conf written last
    postgresql: bool
    fresh_database: bool         # no database yet: the engine's first start sets the password


def plan(cfg: SeedConfig, current_engine_conf: str | None, database_exists: bool) -> Plan:
    was = configured_database(current_engine_conf)
    if was is not None and was != cfg.database and database_exists:
        raise SeedError(f"[appliance] database = {cfg.database}, but this appliance keeps its data in "
                        f"{was}: the database cannot change once configured")
    files = {}
    if cfg.etcd_tls:
        files = {ETCD_TLS_PATHS["etcd_ca_cert"]: (cfg.etcd_tls.ca_cert, 0o644),
                 ETCD_TLS_PATHS["etcd_cert"]: (cfg.etcd_tls.cert, 0o644),
                 ETCD_TLS_PATHS["etcd_key"]: (cfg.etcd_tls.key, 0o600)}
    files = {**files, "/etc/hostname": (cfg.hostname + "\n", 0o644),
             "/etc/hosts": (hosts_text(cfg), 0o644),
             NETWORK_FILE: (network_text(cfg), 0o644),
             "/etc/resolv.conf": (resolv_text(cfg), 0o644),
             ENGINE_CONF: (engine_conf_text(cfg), 0o600)}
    if cfg.storage is not None:
        files = {f"{UNIT_DIR}/{mount_unit_name(cfg.storage.mount_point)}": (mount_unit_text(cfg), 0o644),
                 WORKER_STORAGE_DROPIN: (worker_dropin_text(cfg), 0o644), **files}
    return Plan(files=files, postgresql=cfg.database == "postgresql", fresh_database=not database_exists)


# ---------------------------------------------------------------- shell

def say(msg: str) -> None:
    # stdout goes to the journal and the serial console (the unit says so)
    print(f"keel-appliance: {msg}", flush=True)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_atomic(path: str, text: str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.keel-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _run(cmd: list[str], what: str, **kw) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if out.returncode != 0:
        tail = [ln for ln in (out.stderr or out.stdout).splitlines() if ln.strip()]
        raise ApplyError(f"{what} failed: {tail[-1] if tail else 'exit status %d' % out.returncode}")
    return out.stdout


def find_seed_device() -> str | None:
    out = subprocess.run(["blkid", "-L", seed.LABEL], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def _pg_version() -> str:
    versions = sorted(os.listdir("/usr/lib/postgresql"))
    if not versions:
        raise ApplyError("PostgreSQL is not installed in this image")
    return versions[-1]


def _postgresql_database_exists() -> bool:
    return os.path.isdir(f"/var/lib/postgresql/{_pg_version()}/main/base")


def setup_postgresql() -> None:
    """A cluster on the VM's disk, a role and database for the engine, the
    engine (running as root) mapped to that role; then started for this boot
    and enabled for the next ones."""
    v = _pg_version()
    data, etc = f"/var/lib/postgresql/{v}/main", f"/etc/postgresql/{v}/main"
    if not os.path.isdir(etc):
        say(f"creating the PostgreSQL {v} cluster in {data}")
        _run(["pg_createcluster", "--pgoption", "jit=off", "--pgoption", "listen_addresses=",
              v, "main"], "pg_createcluster")
        hba = _read(f"{etc}/pg_hba.conf") or ""
        _write_atomic(f"{etc}/pg_hba.conf", f"local engine keel peer map={PG_MAP}\n" + hba, 0o640)
        _run(["chown", "postgres:postgres", f"{etc}/pg_hba.conf"], "chown pg_hba.conf")
        ident = _read(f"{etc}/pg_ident.conf") or ""
        _write_atomic(f"{etc}/pg_ident.conf", ident + f"{PG_MAP} root keel\n", 0o640)
        _run(["chown", "postgres:postgres", f"{etc}/pg_ident.conf"], "chown pg_ident.conf")
        # single-user mode: no server to start and stop just to create two objects
        sql = "CREATE ROLE keel LOGIN\nCREATE DATABASE engine OWNER keel\n"
        _run(["runuser", "-u", "postgres", "--", f"/usr/lib/postgresql/{v}/bin/postgres", "--single",
              "-D", data, "-c", f"config_file={etc}/postgresql.conf", "postgres"],
             "creating the engine's PostgreSQL role and database", input=sql)
    wants = "/etc/systemd/system/multi-user.target.wants/postgresql.service"
    if not os.path.lexists(wants):
        os.makedirs(os.path.dirname(wants), exist_ok=True)
        os.symlink("/lib/systemd/system/postgresql.service", wants)
    # queued now, so keel-engine (ordered after it) waits for it in this boot
    _run(["systemctl", "start", "--no-block", f"postgresql@{v}-main.service"], "starting PostgreSQL")


def hand_over_password(password: str, fresh_database: bool) -> None:
    """A new database: the engine's first start creates admin@internal from
    the file (KEEL_ADMIN_PASSWORD_FILE), saving a second Python start-up.
    An existing one: `keel-engine create-admin` sets it now."""
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    _write_atomic(PASSWORD_PATH, password + "\n", 0o600)
    if fresh_database:
        _write_atomic(ENGINE_ENV, f"KEEL_ADMIN_PASSWORD_FILE={PASSWORD_PATH}\n", 0o600)
        return
    try:
        _run([f"{recipe.VENV}/bin/keel-engine", "--config", ENGINE_CONF, "create-admin",
              "--user", "admin@internal", "--password-file", PASSWORD_PATH], "keel-engine create-admin")
    finally:
        os.unlink(PASSWORD_PATH)


def apply(cfg: SeedConfig) -> None:
    current = _read(ENGINE_CONF)
    exists = (os.path.exists(SQLITE_PATH) if cfg.database == "sqlite" else _postgresql_database_exists())
    p = plan(cfg, current, exists)
    _check_engine_conf(p.files[ENGINE_CONF][0])
    if current is not None:
        # a new seed for a configured appliance: the engine restarts with it
        _run(["systemctl", "stop", *ENGINE_UNITS], "stopping the engine")
    if p.postgresql:
        setup_postgresql()
    for path, (text, mode) in p.files.items():    # engine.conf last: it marks "configured"
        _write_atomic(path, text, mode)
    units_changed = cfg.storage is not None
    if cfg.storage is None and os.path.exists(WORKER_STORAGE_DROPIN):
        os.unlink(WORKER_STORAGE_DROPIN)   # a new seed without [storage]
        units_changed = True
    if cfg.storage is not None:
        os.makedirs(cfg.storage.mount_point, exist_ok=True)
    if units_changed:
        _run(["systemctl", "daemon-reload"], "reloading systemd for the storage mount")
    socket.sethostname(cfg.hostname)
    hand_over_password(cfg.admin_password, p.fresh_database)
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    _write_atomic(APPLIED, cfg.instance_id + "\n", 0o600)
    # the engine's units skipped their start while engine.conf was missing
    _run(["systemctl", "start", "--no-block", *ENGINE_UNITS], "starting the engine")


def _check_engine_conf(text: str) -> None:
    """The merged file, by the engine's own rules, before it is written."""
    from keel_engine import config as engine_config
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    path = os.path.join(RUN_DIR, "engine.conf.check")
    _write_atomic(path, text, 0o600)
    try:
        engine_config.load(path)
    except engine_config.ConfigError as e:
        raise SeedError(f"engine.conf: {str(e).split(': ', 1)[-1]}") from None
    finally:
        os.unlink(path)


def main() -> int:
    applied = (_read(APPLIED) or "").strip() or None
    keeping = f"keeping the configuration of seed instance {applied}" if applied else \
        "the engine stays unconfigured and does not start"
    device = find_seed_device()
    if device is None:
        if applied:
            say(f"no seed disk (label {seed.LABEL}); {keeping}")
            return 0
        say(f"error: no seed disk (a vfat disk labelled {seed.LABEL}); {keeping}")
        return 1
    try:
        files = seed.read_seed(device)
        if applied and seed.instance_id_of(files) == applied:
            say(f"seed instance {applied} is already applied")
            return 0
        cfg = seed.parse_files(files)
        say(f"applying seed instance {cfg.instance_id} from {device}: hostname {cfg.hostname}, "
            f"{'static ' + cfg.network.address if isinstance(cfg.network, StaticNetwork) else 'DHCP'}, "
            f"database {cfg.database}"
            + (f", storage {cfg.storage.export} at {cfg.storage.mount_point}" if cfg.storage else ""))
        apply(cfg)
    except SeedError as e:
        say(f"error: bad seed on {device}: {e}; nothing applied, {keeping}")
        return 1
    except (ApplyError, OSError) as e:
        say(f"error: applying the seed failed: {e}; {keeping}")
        return 1
    say(f"seed instance {cfg.instance_id} applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
