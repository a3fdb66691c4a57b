"""Engine configuration: one INI file (default /etc/keel/engine.conf).

Every key has a default so an empty file is a valid configuration; a bad
value raises ConfigError with a one-line message naming file, key and what
was expected.
"""
import configparser
import os
from dataclasses import dataclass, field

DEFAULT_PATH = "/etc/keel/engine.conf"


class ConfigError(Exception):
    pass


@dataclass
class EngineConfig:
    path: str = "<defaults>"
    database_url: str = "sqlite:////var/lib/keel/engine.db"
    listen: str = "127.0.0.1:8080"
    workers: int = 2
    admin_password: str | None = None
    token_lifetime: int = 3600
    max_body_bytes: int = 1024 * 1024
    secret_key_file: str = "/var/lib/keel/fence-key"
    libvirt_uri_template: str = "qemu+tcp://{address}/system"
    libvirt_timeout: float = 10.0
    monitor_interval: float = 5.0
    shutdown_timeout: float = 120.0
    migration_timeout: float = 300.0
    bridge_map: dict = field(default_factory=dict)
    # libvirt refuses live migration unless it recognises the disks' file
    # system as shared (NFS, GlusterFS, ...). A directory shared by other
    # means (the lab's bind mounts, a cluster FS libvirt does not know) needs
    # this set, which passes VIR_MIGRATE_UNSAFE: only when the storage IS shared.
    storage_shared_unrecognised: bool = False
    log_level: str = "INFO"


# key -> (section, attribute, parser, expected text)
def _positive_int(v):
    n = int(v)
    if n <= 0:
        raise ValueError
    return n


def _positive_float(v):
    n = float(v)
    if n <= 0:
        raise ValueError
    return n


def _uri_template(v):
    if "{address}" not in v or "://" not in v:
        raise ValueError
    return v


def _bridge_map(v):
    out = {}
    for item in v.split(","):
        item = item.strip()
        if not item:
            continue
        net, sep, bridge = item.partition(":")
        if not sep or not net.strip() or not bridge.strip():
            raise ValueError
        out[net.strip()] = bridge.strip()
    return out


def _bool(v):
    if v.lower() in ("true", "yes", "1", "on"):
        return True
    if v.lower() in ("false", "no", "0", "off"):
        return False
    raise ValueError


def _listen(v):
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError
    return v


def _level(v):
    v = v.upper()
    if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError
    return v


KEYS = {
    ("database", "url"): ("database_url", str, "an SQLAlchemy URL (sqlite:///PATH or postgresql://...)"),
    ("engine", "listen"): ("listen", _listen, "HOST:PORT"),
    ("engine", "workers"): ("workers", _positive_int, "a positive integer"),
    ("engine", "admin_password"): ("admin_password", str, "a string"),
    ("engine", "token_lifetime"): ("token_lifetime", _positive_int, "seconds, a positive integer"),
    ("engine", "max_body_bytes"): ("max_body_bytes", _positive_int, "a positive integer"),
    ("engine", "secret_key_file"): ("secret_key_file", str, "a file path"),
    ("engine", "log_level"): ("log_level", _level, "DEBUG, INFO, WARNING or ERROR"),
    ("libvirt", "uri_template"): ("libvirt_uri_template", _uri_template, "a URI containing {address}, e.g. qemu+tcp://{address}/system"),
    ("libvirt", "timeout"): ("libvirt_timeout", _positive_float, "seconds, a positive number"),
    ("libvirt", "bridge_map"): ("bridge_map", _bridge_map, "NETWORK:BRIDGE[,NETWORK:BRIDGE...]"),
    ("libvirt", "storage_shared_unrecognised"): ("storage_shared_unrecognised", _bool, "true or false"),
    ("monitor", "interval"): ("monitor_interval", _positive_float, "seconds, a positive number"),
    ("vms", "shutdown_timeout"): ("shutdown_timeout", _positive_float, "seconds, a positive number"),
    ("vms", "migration_timeout"): ("migration_timeout", _positive_float, "seconds, a positive number"),
}


def load(path=None):
    """Read the config file; a missing default file means all defaults."""
    explicit = path is not None
    path = path or os.environ.get("KEEL_ENGINE_CONFIG") or DEFAULT_PATH
    cfg = EngineConfig(path=path)
    if not os.path.exists(path):
        if explicit:
            raise ConfigError(f"{path}: no such config file")
        return cfg
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as e:
        raise ConfigError(f"{path}: cannot parse: {str(e).splitlines()[0]}")
    for section in parser.sections():
        for key, raw in parser.items(section):
            spec = KEYS.get((section, key))
            if spec is None:
                known = ", ".join(sorted(f"{s}.{k}" for s, k in KEYS))
                raise ConfigError(f"{path}: unknown key [{section}] {key} (known: {known})")
            attr, conv, expected = spec
            try:
                value = conv(raw.strip())
            except ValueError:
                raise ConfigError(f"{path}: [{section}] {key} = {raw!r}: expected {expected}")
            setattr(cfg, attr, value)
    pw_file = os.environ.get("KEEL_ADMIN_PASSWORD_FILE")
    if pw_file and not cfg.admin_password:
        with open(pw_file) as f:
            cfg.admin_password = f.read().strip()
    return cfg
