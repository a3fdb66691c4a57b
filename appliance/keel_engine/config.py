"""Engine configuration: one INI file (default /etc/keel/engine.conf), read
with the loader every Keel part shares (keel_common.ini).

Every key has a default, so an empty file is a valid configuration; a bad
value raises ConfigError with a one-line message naming file, key and what
was expected.
"""
import os
import re
from dataclasses import dataclass, field, fields

from keel_common import ini, nfs
from keel_common.config import PROFILES, EtcdConfig, Timing, endpoint_list
from keel_common.ini import ConfigError  # noqa: F401  (re-exported)

from .power.settings import PowerSettings

DEFAULT_PATH = "/etc/keel/engine.conf"
# libvirt transports a host connection may use: never ext (runs a program),
# never unix (a local socket) or any other.
TRANSPORTS = ("tls", "ssh", "tcp")


@dataclass
class EngineConfig:
    path: str = "<defaults>"
    database_url: str = "sqlite:////var/lib/keel/engine.db"
    listen: str = "127.0.0.1:8080"
    workers: int = 2
    threads: int = 4
    admin_password: str | None = None
    token_lifetime: int = 3600
    # a web UI session ends after this long without a request
    ui_idle_timeout: int = 1800
    # where `keel-engine console-proxy` listens for browsers' console websockets
    console_proxy_listen: str = "127.0.0.1:6100"
    # the URL browsers reach it at; None: ws://<the host the page came from>:<its port>
    console_proxy_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    secret_key_file: str = "/var/lib/keel/fence-key"
    # how long a request that started a job waits for it before answering 202
    request_wait: float = 300.0
    # TLS in production; the lab and the tests set qemu+tcp with transports = tcp
    libvirt_uri_template: str = "qemu+tls://{address}/system"
    libvirt_transports: tuple = ("tls", "ssh")
    libvirt_timeout: float = 10.0
    monitor_interval: float = 5.0
    job_threads: int = 8
    # ended jobs are cleared after this long (oVirt's SucceededJobCleanupTimeInMinutes
    # and FailedJobCleanupTimeInMinutes: 10 and 60 minutes)
    jobs_keep_finished: float = 600.0
    jobs_keep_failed: float = 3600.0
    shutdown_timeout: float = 120.0
    migration_timeout: float = 300.0
    # how long a hot-unplug waits for the guest to release the device (a PCI
    # unplug needs the guest's consent) before it is refused, device kept
    unplug_timeout: float = 30.0
    bridge_map: dict = field(default_factory=dict)
    # libvirt refuses live migration unless it recognises the disks' file
    # system as shared (NFS, GlusterFS, ...). A directory shared by other
    # means (the lab's bind mounts, a cluster FS libvirt does not know) needs
    # this set, which passes VIR_MIGRATE_UNSAFE: only when the storage IS shared.
    storage_shared_unrecognised: bool = False
    # where every host (and the engine) has an NFS storage domain's export
    # mounted: {nfs_mount_root}/{server}:{export, '/' as '_'} (keel_common.nfs)
    nfs_mount_root: str = nfs.DEFAULT_MOUNT_ROOT
    log_level: str = "INFO"
    # sign-in throttling: after this many failures in a row (per user and per
    # source address) each further attempt must wait, doubling up to the cap
    login_failures_allowed: int = 5
    login_delay_cap: float = 300.0
    power: PowerSettings = field(default_factory=PowerSettings)
    # The hosts' etcd, where the HA agents record the fences of the engine's
    # own host: read so that the engine does not fence such a host again.
    ha_etcd_endpoints: tuple = ()
    # the etcd member on each host, e.g. https://{address}:2379: tried after
    # ha_etcd_endpoints, so that members joined after the engine's deploy are
    # reached too (the member the deploy named may be on the host that died)
    ha_etcd_endpoint_template: str | None = None
    ha_etcd_prefix: str = "/keel"
    ha_etcd_ca_cert: str | None = None
    ha_etcd_cert: str | None = None
    ha_etcd_key: str | None = None
    # the hosts' timing profile (their [timing] profile): it says when the
    # dashboard shows a host's HA record as stale, by the agents' own rule
    ha_timing_profile: str = "production"

    @property
    def ha_etcd_configured(self) -> bool:
        """The engine is told where the hosts' etcd is (members, or a template
        that needs the hosts' addresses)."""
        return bool(self.ha_etcd_endpoints or self.ha_etcd_endpoint_template)

    @property
    def ha_timing(self) -> Timing:
        return PROFILES[self.ha_timing_profile]

    def ha_etcd_on(self, host_addresses) -> EtcdConfig | None:
        """The hosts' etcd: the configured endpoints, then the template's
        endpoint on each of `host_addresses` (in their order); None when the
        engine is told of neither."""
        endpoints = list(self.ha_etcd_endpoints)
        if self.ha_etcd_endpoint_template:
            for address in host_addresses:
                if ini.is_host_address(address):
                    url = self.ha_etcd_endpoint_template.format(address=_url_host(address))
                    if url not in endpoints:
                        endpoints.append(url)
        if not endpoints:
            return None
        return EtcdConfig(endpoints=tuple(endpoints), prefix=self.ha_etcd_prefix,
                          ca_cert=self.ha_etcd_ca_cert, cert=self.ha_etcd_cert, key=self.ha_etcd_key)

    def libvirt_uri(self, address: str) -> str:
        """The only way a host's address becomes a libvirt URI (the address is
        validated as a host name or IP address before it gets here)."""
        if not ini.is_host_address(address):
            raise ValueError(f"not a host name or IP address: {address!r}")
        return self.libvirt_uri_template.format(address=_url_host(address))


def _url_host(address: str) -> str:
    """An address as the host part of a URL: an IPv6 one in brackets."""
    return f"[{address}]" if ":" in address else address


def _one_address_field(template: str, host_part: str) -> bool:
    """`{address}` in the URL's host part, and no other field anywhere."""
    return "{address}" in host_part and template.count("{") == 1 and template.count("}") == 1


def _transports(v):
    out = tuple(t.strip() for t in v.split(",") if t.strip())
    if not out or any(t not in TRANSPORTS for t in out):
        raise ValueError(v)
    return out


def _uri_template(v):
    m = re.fullmatch(r"qemu(\+(tls|ssh|tcp))?://([^/?#]*)/system(\?[^#]*)?", v)
    if not m or not _one_address_field(v, m.group(3)):
        raise ValueError(v)
    return v


def _etcd_template(v):
    m = re.fullmatch(r"https?://([^/?#]*)", v)
    if not m or not _one_address_field(v, m.group(1)):
        raise ValueError(v)
    return v


def _profile(v):
    if v not in PROFILES:
        raise ValueError(v)
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


def _listen(v):
    host, sep, port = v.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError
    return v


def _mount_root(v):
    if not os.path.isabs(v) or os.path.normpath(v) == "/":
        raise ValueError(v)
    return "/" + os.path.normpath(v).lstrip("/")


def _level(v):
    v = v.upper()
    if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError
    return v


def _ws_url(v):
    if not re.fullmatch(r"wss?://[^/\s]+(/\S*)?", v):
        raise ValueError(v)
    return v.rstrip("/")


def _db_url(v):
    if not re.match(r"(sqlite|postgresql)(\+\w+)?://", v):
        raise ValueError(v)
    return v


SECONDS = "seconds, a positive number"
# (section, key) -> (attribute, parser, what is expected)
KEYS = {
    ("database", "url"): ("database_url", _db_url, "an SQLAlchemy URL (sqlite:///PATH or postgresql://...)"),
    ("engine", "listen"): ("listen", _listen, "HOST:PORT"),
    ("engine", "workers"): ("workers", ini.positive_int, "a positive integer"),
    ("engine", "threads"): ("threads", ini.positive_int, "a positive integer"),
    ("engine", "admin_password"): ("admin_password", str, "a string"),
    ("engine", "token_lifetime"): ("token_lifetime", ini.positive_int, "seconds, a positive integer"),
    ("console", "proxy_listen"): ("console_proxy_listen", _listen, "HOST:PORT"),
    ("console", "proxy_url"): ("console_proxy_url", _ws_url, "ws://HOST:PORT or wss://HOST:PORT"),
    ("engine", "ui_idle_timeout"): ("ui_idle_timeout", ini.positive_int, "seconds, a positive integer"),
    ("engine", "max_body_bytes"): ("max_body_bytes", ini.positive_int, "a positive integer"),
    ("engine", "secret_key_file"): ("secret_key_file", ini.abs_path, "an absolute file path"),
    ("engine", "request_wait"): ("request_wait", ini.positive_float, SECONDS),
    ("engine", "log_level"): ("log_level", _level, "DEBUG, INFO, WARNING or ERROR"),
    ("engine", "login_failures_allowed"): ("login_failures_allowed", ini.positive_int, "a positive integer"),
    ("engine", "login_delay_cap"): ("login_delay_cap", ini.positive_float, SECONDS),
    ("libvirt", "uri_template"): ("libvirt_uri_template", _uri_template,
                                  "qemu+TRANSPORT://{address}/system, e.g. qemu+tls://{address}/system"),
    ("libvirt", "transports"): ("libvirt_transports", _transports,
                                "a comma-separated list of: " + ", ".join(TRANSPORTS)),
    ("libvirt", "timeout"): ("libvirt_timeout", ini.positive_float, SECONDS),
    ("libvirt", "bridge_map"): ("bridge_map", _bridge_map, "NETWORK:BRIDGE[,NETWORK:BRIDGE...]"),
    ("libvirt", "storage_shared_unrecognised"): ("storage_shared_unrecognised", ini.boolean, "true or false"),
    ("storage", "nfs_mount_root"): ("nfs_mount_root", _mount_root, "an absolute directory path, e.g. "
                                    + nfs.DEFAULT_MOUNT_ROOT),
    ("monitor", "interval"): ("monitor_interval", ini.positive_float, SECONDS),
    ("monitor", "job_threads"): ("job_threads", ini.positive_int, "a positive integer"),
    ("jobs", "keep_finished"): ("jobs_keep_finished", ini.positive_float, SECONDS),
    ("jobs", "keep_failed"): ("jobs_keep_failed", ini.positive_float, SECONDS),
    ("vms", "shutdown_timeout"): ("shutdown_timeout", ini.positive_float, SECONDS),
    ("vms", "migration_timeout"): ("migration_timeout", ini.positive_float, SECONDS),
    ("vms", "unplug_timeout"): ("unplug_timeout", ini.positive_float, SECONDS),
    ("ha", "etcd_endpoints"): ("ha_etcd_endpoints", endpoint_list, "a comma-separated list of http(s)://host:port"),
    ("ha", "etcd_endpoint_template"): ("ha_etcd_endpoint_template", _etcd_template,
                                       "http(s)://{address}:PORT, e.g. https://{address}:2379"),
    ("ha", "etcd_prefix"): ("ha_etcd_prefix", str, "a key prefix"),
    ("ha", "etcd_ca_cert"): ("ha_etcd_ca_cert", ini.abs_path, "an absolute path"),
    ("ha", "etcd_cert"): ("ha_etcd_cert", ini.abs_path, "an absolute path"),
    ("ha", "etcd_key"): ("ha_etcd_key", ini.abs_path, "an absolute path"),
    ("ha", "timing_profile"): ("ha_timing_profile", _profile, "one of: " + ", ".join(PROFILES)),
}
POWER_PARSERS = {"bool": (ini.boolean, "true or false"), "int": (ini.non_negative_int, "a whole number >= 0"),
                 "float": (ini.non_negative_float, "a number >= 0"), "str": (str, "a value")}


def load(path=None):
    """Read the config file; a missing default file means all defaults."""
    explicit = path is not None
    path = path or os.environ.get("KEEL_ENGINE_CONFIG") or DEFAULT_PATH
    cfg = EngineConfig(path=path)
    if not os.path.exists(path):
        if explicit:
            raise ConfigError(f"{path}: no such config file")
        return cfg
    f = ini.IniFile.load(path, "the engine configuration")
    for (section, key), (attr, parse, expected) in KEYS.items():
        setattr(cfg, attr, f.get(section, key, parse, expected, default=getattr(cfg, attr)))
    power = {}
    for fld in fields(PowerSettings):
        parse, expected = POWER_PARSERS[fld.type]
        power[fld.name] = f.get("power", fld.name, parse, expected, default=getattr(cfg.power, fld.name))
    cfg.power = PowerSettings(**power)
    problem = cfg.power.problem()
    if problem:
        raise f.error("power", problem[0], problem[1])
    transport = re.match(r"qemu(?:\+([a-z]+))?:", cfg.libvirt_uri_template).group(1) or "tls"
    if transport not in cfg.libvirt_transports:
        raise f.error("libvirt", "uri_template", f"uses transport {transport!r}, which [libvirt] transports "
                      f"does not allow (allowed: {', '.join(cfg.libvirt_transports)})")
    if (cfg.ha_etcd_cert is None) != (cfg.ha_etcd_key is None):
        raise f.error("ha", "etcd_cert and etcd_key", "go together; expected both or neither")
    f.finish()
    pw_file = os.environ.get("KEEL_ADMIN_PASSWORD_FILE")
    if pw_file and not cfg.admin_password:
        with open(pw_file) as fh:
            cfg.admin_password = fh.read().strip()
    return cfg
