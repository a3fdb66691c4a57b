"""Host configuration: one INI file per host (default /etc/keel/hosted-engine.conf).

Every daemon and command reads it through `load_host_config`. A bad or
missing value raises `ConfigError` whose message names the file, the key and
what is expected; commands print that one line and exit, never a traceback.
"""
from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

DEFAULT_PATH = "/etc/keel/hosted-engine.conf"
ENV_PATH = "KEEL_CONFIG"


class ConfigError(Exception):
    """A configuration problem a user can fix; str() is the whole message."""


@dataclass(frozen=True)
class Timing:
    """How fast the HA core reacts. `production` suits real hosts;
    `fast` is the lab's profile (1 s cycles, sanlock io_timeout 1 s)."""
    profile: str
    cycle: float            # broker publish / agent decision period, seconds
    etcd_lease_ttl: int     # TTL of the host's etcd lease (records + engine claim)
    io_timeout: int         # sanlock io_timeout for the lockspace and leases
    record_stale_after: float  # a host record older than this is not live
    engine_start_timeout: float  # EngineStarting -> give up if health never good
    engine_bad_health_timeout: float  # EngineUpBadHealth -> stop after this long
    engine_stop_timeout: float   # graceful shutdown before force
    monitor_timeout: float       # per-probe timeout (HTTP, ping, storage, etcd)

    @property
    def lease_expiry_s(self) -> float:
        """Seconds after a host's death until sanlock lets another host take
        a lease it held: 8 io_timeouts plus sanlock 3.8's fixed 60 s
        watchdog allowance (see LAB-NOTES)."""
        return 8 * self.io_timeout + 60


PROFILES: dict[str, Timing] = {
    # A 60 s etcd lease leaves a real engine VM time for a graceful shutdown
    # when its host loses etcd (the agent forces the stop well inside the TTL).
    "production": Timing("production", cycle=10.0, etcd_lease_ttl=60, io_timeout=10,
                         record_stale_after=60.0, engine_start_timeout=600.0,
                         engine_bad_health_timeout=300.0, engine_stop_timeout=120.0,
                         monitor_timeout=5.0),
    "fast": Timing("fast", cycle=1.0, etcd_lease_ttl=8, io_timeout=1,
                   record_stale_after=6.0, engine_start_timeout=90.0,
                   engine_bad_health_timeout=30.0, engine_stop_timeout=3.0,
                   monitor_timeout=1.0),
}


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...]
    prefix: str = "/keel"
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class StorageConfig:
    shared_path: str
    lockspace: str = "hosted-engine"
    lockspace_path: str = ""
    lease_path: str = ""
    lease_name: str = "engine"
    sanlock_run_dir: str | None = None


@dataclass(frozen=True)
class EngineVmConfig:
    name: str = "HostedEngine"
    uuid: str = "6c2c8f2e-5a38-4c53-9d6f-6b2f3a6f6e01"
    memory_mb: int = 4096
    vcpus: int = 2
    disk_path: str = ""
    disk_format: str = "raw"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    mac: str = "52:54:00:6b:ee:01"
    bridge: str = "br0"
    health_url: str = ""
    libvirt_uri: str = "qemu:///system"
    domain_type: str = "kvm"
    emulator: str | None = None
    console_log: str | None = None


@dataclass(frozen=True)
class NetworkConfig:
    gateway: str
    management_interface: str = "eth0"


@dataclass(frozen=True)
class HostConfig:
    path: str
    host_id: int
    hostname: str
    address: str
    state_dir: str
    broker_socket: str
    etcd: EtcdConfig
    storage: StorageConfig
    engine: EngineVmConfig
    network: NetworkConfig
    timing: Timing
    score: dict[str, float] = field(default_factory=dict)
    config_version: int = 1


def _section(cp: configparser.ConfigParser, path: str, name: str, required: bool = True):
    if not cp.has_section(name):
        if required:
            raise ConfigError(f"{path}: missing section [{name}]")
        return {}
    return dict(cp.items(name))


def _get(path: str, sec: str, values: dict, key: str, conv: Callable[[str], Any] = str,
         expected: str = "a value", default: Any = ..., ) -> Any:
    raw = values.get(key)
    if raw is None or raw.strip() == "":
        if default is ...:
            raise ConfigError(f"{path}: [{sec}] {key} is missing; expected {expected}")
        return default
    try:
        return conv(raw.strip())
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: [{sec}] {key} = {raw.strip()!r} is invalid; expected {expected}") from None


def _positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise ValueError(s)
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if v <= 0:
        raise ValueError(s)
    return v


def _host_id(s: str) -> int:
    v = int(s)
    if not 1 <= v <= 2000:  # sanlock host ids run 1..2000
        raise ValueError(s)
    return v


def _endpoint_list(s: str) -> tuple[str, ...]:
    eps = tuple(e.strip() for e in s.split(",") if e.strip())
    if not eps:
        raise ValueError(s)
    for e in eps:
        scheme, sep, rest = e.partition("://")
        if not sep or scheme not in ("http", "https") or ":" not in rest:
            raise ValueError(e)
        int(rest.rsplit(":", 1)[1].rstrip("/"))
    return eps


def _abs_path(s: str) -> str:
    if not os.path.isabs(s):
        raise ValueError(s)
    return s


def _profile(s: str) -> str:
    if s not in PROFILES:
        raise ValueError(s)
    return s


def _mac(s: str) -> str:
    parts = s.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and int(p, 16) >= 0 for p in parts):
        raise ValueError(s)
    return s.lower()


def _bool(s: str) -> bool:
    low = s.lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError(s)


def _timing(path: str, values: dict) -> Timing:
    profile = _get(path, "timing", values, "profile", _profile,
                   "one of: " + ", ".join(PROFILES), default="production")
    base = PROFILES[profile]
    overrides = {}
    for f in fields(Timing):
        if f.name == "profile" or f.name not in values:
            continue
        conv = _positive_int if f.type in ("int", int) else _positive_float
        overrides[f.name] = _get(path, "timing", values, f.name, conv, "a positive number")
    t = replace(base, **overrides)
    # Losing etcd is losing the claim: the agent must be able to notice a
    # failed renewal and stop the engine well inside the lease TTL.
    if t.etcd_lease_ttl < 3 * t.cycle:
        raise ConfigError(f"{path}: [timing] etcd_lease_ttl = {t.etcd_lease_ttl} is too short; "
                          f"expected at least 3 cycles ({3 * t.cycle:g} s)")
    return t


def parse_host_config(text: str, path: str = "<string>") -> HostConfig:
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read_string(text, source=path)
    except configparser.Error as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{path}: not a valid INI file: {first}") from None
    host = _section(cp, path, "host")
    etcd = _section(cp, path, "etcd")
    storage = _section(cp, path, "storage")
    engine = _section(cp, path, "engine")
    network = _section(cp, path, "network")
    timing = _section(cp, path, "timing", required=False)
    score = _section(cp, path, "score", required=False)

    host_id = _get(path, "host", host, "host_id", _host_id, "an integer from 1 to 2000")
    hostname = _get(path, "host", host, "hostname", str, "the host's name", default=os.uname().nodename)
    address = _get(path, "host", host, "address", str, "the host's management address", default="")
    state_dir = _get(path, "host", host, "state_dir", _abs_path, "an absolute path", default="/var/lib/keel")
    broker_socket = _get(path, "host", host, "broker_socket", _abs_path, "an absolute path",
                         default="/run/keel/broker.sock")
    config_version = _get(path, "host", host, "config_version", _positive_int, "a positive integer",
                          default=1)

    etcd_cfg = EtcdConfig(
        endpoints=_get(path, "etcd", etcd, "endpoints", _endpoint_list,
                       "a comma-separated list of http(s)://host:port"),
        prefix=_get(path, "etcd", etcd, "prefix", str, "a key prefix", default="/keel").rstrip("/") or "/keel",
        ca_cert=_get(path, "etcd", etcd, "ca_cert", _abs_path, "an absolute path", default=None),
        cert=_get(path, "etcd", etcd, "cert", _abs_path, "an absolute path", default=None),
        key=_get(path, "etcd", etcd, "key", _abs_path, "an absolute path", default=None),
    )
    if (etcd_cfg.cert is None) != (etcd_cfg.key is None):
        raise ConfigError(f"{path}: [etcd] cert and key go together; expected both or neither")

    shared = _get(path, "storage", storage, "shared_path", _abs_path, "an absolute path")
    ls_name = _get(path, "storage", storage, "lockspace", str, "a lockspace name", default="hosted-engine")
    storage_cfg = StorageConfig(
        shared_path=shared,
        lockspace=ls_name,
        lockspace_path=_get(path, "storage", storage, "lockspace_path", _abs_path, "an absolute path",
                            default=os.path.join(shared, ls_name + ".lockspace")),
        lease_path=_get(path, "storage", storage, "lease_path", _abs_path, "an absolute path",
                        default=os.path.join(shared, ls_name + ".lease")),
        lease_name=_get(path, "storage", storage, "lease_name", str, "a resource name", default="engine"),
        sanlock_run_dir=_get(path, "storage", storage, "sanlock_run_dir", _abs_path, "an absolute path",
                             default=None),
    )
    if len(storage_cfg.lockspace.encode()) > 48 or len(storage_cfg.lease_name.encode()) > 48:
        raise ConfigError(f"{path}: [storage] lockspace and lease_name must be at most 48 bytes")

    d = EngineVmConfig()
    engine_cfg = EngineVmConfig(
        name=_get(path, "engine", engine, "vm_name", str, "a domain name", default=d.name),
        uuid=_get(path, "engine", engine, "vm_uuid", str, "a UUID", default=d.uuid),
        memory_mb=_get(path, "engine", engine, "memory_mb", _positive_int, "a positive integer (MiB)",
                       default=d.memory_mb),
        vcpus=_get(path, "engine", engine, "vcpus", _positive_int, "a positive integer", default=d.vcpus),
        disk_path=_get(path, "engine", engine, "disk_path", _abs_path, "an absolute path",
                       default=os.path.join(shared, "engine.img")),
        disk_format=_get(path, "engine", engine, "disk_format", str, "raw or qcow2", default=d.disk_format),
        kernel=_get(path, "engine", engine, "kernel", _abs_path, "an absolute path", default=None),
        initrd=_get(path, "engine", engine, "initrd", _abs_path, "an absolute path", default=None),
        cmdline=_get(path, "engine", engine, "cmdline", str, "a kernel command line", default=None),
        mac=_get(path, "engine", engine, "mac", _mac, "a MAC address like 52:54:00:12:34:56", default=d.mac),
        bridge=_get(path, "engine", engine, "bridge", str, "a bridge name", default=d.bridge),
        health_url=_get(path, "engine", engine, "health_url", str, "an http(s) URL"),
        libvirt_uri=_get(path, "engine", engine, "libvirt_uri", str, "a libvirt URI", default=d.libvirt_uri),
        domain_type=_get(path, "engine", engine, "domain_type", str, "kvm or qemu", default=d.domain_type),
        emulator=_get(path, "engine", engine, "emulator", _abs_path, "an absolute path", default=None),
        console_log=_get(path, "engine", engine, "console_log", _abs_path, "an absolute path", default=None),
    )
    if engine_cfg.domain_type not in ("kvm", "qemu"):
        raise ConfigError(f"{path}: [engine] domain_type = {engine_cfg.domain_type!r} is invalid; "
                          "expected kvm or qemu")
    if engine_cfg.disk_format not in ("raw", "qcow2"):
        raise ConfigError(f"{path}: [engine] disk_format = {engine_cfg.disk_format!r} is invalid; "
                          "expected raw or qcow2")
    if not engine_cfg.health_url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: [engine] health_url = {engine_cfg.health_url!r} is invalid; "
                          "expected an http(s) URL")

    network_cfg = NetworkConfig(
        gateway=_get(path, "network", network, "gateway", str, "the gateway's IP address"),
        management_interface=_get(path, "network", network, "management_interface", str,
                                  "an interface name", default="eth0"),
    )
    score_cfg = {k: _get(path, "score", score, k, float, "a number") for k in score}
    return HostConfig(path=path, host_id=host_id, hostname=hostname, address=address,
                      state_dir=state_dir, broker_socket=broker_socket, etcd=etcd_cfg,
                      storage=storage_cfg, engine=engine_cfg, network=network_cfg,
                      timing=_timing(path, timing), score=score_cfg,
                      config_version=config_version)


def load_host_config(path: str | None = None) -> HostConfig:
    path = path or os.environ.get(ENV_PATH) or DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; expected the host configuration "
                          "(see README, 'Configuring a host')") from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e.__class__.__name__}") from None
    return parse_host_config(text, path)


def render_host_config(values: dict[str, dict[str, Any]]) -> str:
    """Write an INI text from {section: {key: value}}: used by the lab and,
    later, by `hosted-engine --deploy`."""
    out = []
    for sec, kv in values.items():
        out.append(f"[{sec}]")
        out.extend(f"{k} = {v}" for k, v in kv.items() if v is not None)
        out.append("")
    return "\n".join(out)
