"""Host configuration: one INI file per host (default /etc/keel/hosted-engine.conf).

Every daemon and command reads it through `load_host_config`. A bad or
missing value raises `ConfigError` whose message names the file, the key and
what is expected; commands print that one line and exit, never a traceback.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import ini
from .ini import ConfigError  # noqa: F401  (re-exported: callers catch it from here)
from .sanlock_disk import silence_limit

DEFAULT_PATH = "/etc/keel/hosted-engine.conf"
ENV_PATH = "KEEL_CONFIG"


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

    def record_is_live(self, timestamp: float, now: float) -> bool:
        """The one staleness rule of host records, for every reader (agents,
        brokers, the engine): a record is live while it is at most
        `record_stale_after` old, by the reader's clock against the
        publishing broker's."""
        return now - timestamp <= self.record_stale_after

    @property
    def lease_expiry_s(self) -> float:
        """Seconds after a host's death until sanlock lets another host take
        a lease it held: 8 io_timeouts plus sanlock 3.8's fixed 60 s
        watchdog allowance (see LAB-NOTES)."""
        return 8 * self.io_timeout + 60

    @property
    def fence_silence_s(self) -> float:
        """How long a host's delta lease must have stood still (and its etcd
        record for `etcd_silence_s`) before an agent may fence that host: the silence limit
        (`sanlock_disk.silence_limit`), 5 s in the fast profile, 30 s in
        production. A host cut off from the network but still reaching the
        storage keeps renewing and is never fenced; what the margin risks is
        fencing a host that is cut off from etcd *and* late on the storage
        by more than one io_timeout, which is losing the engine anyway; the
        BMC's confirmed power-off keeps that safe."""
        return silence_limit(self.io_timeout)

    @property
    def etcd_silence_s(self) -> float:
        """How long a host's broker must have published nothing in etcd
        (its record unchanged) to count as silent there, the other condition
        of a fence: two missed publishes (one per cycle), each of which may
        lag by a monitor's timeout: 3 s fast, 25 s production."""
        return 2 * self.cycle + self.monitor_timeout

    @property
    def lease_read_period(self) -> float:
        """How often brokers read the other hosts' delta leases: a silence
        is dated by the read that found it, so a read per cycle would add up
        to a cycle (10 s in production) to every fence: 1 s fast, 2 s production."""
        return min(self.cycle, max(1.0, self.io_timeout / 5.0))


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
    # the appliance's first-boot seed (a small read-only vfat disk), if any
    seed_path: str | None = None
    # a virtio-rng device fed from the host: nothing in the guest waits for entropy
    rng: bool = False


# the engine's management network, oVirt's name for it: every data center has
# it, and it is carried by each host's management bridge
MANAGEMENT_NETWORK = "ovirtmgmt"


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
    cluster_key_file: str = "/etc/keel/cluster.key"


def _host_id(s: str) -> int:
    v = ini.positive_int(s)
    if not 1 <= v <= 2000:  # sanlock host ids run 1..2000
        raise ValueError(s)
    return v


def endpoint_list(s: str) -> tuple[str, ...]:
    eps = tuple(e.strip() for e in s.split(",") if e.strip())
    if not eps:
        raise ValueError(s)
    for e in eps:
        scheme, sep, rest = e.partition("://")
        if not sep or scheme not in ("http", "https") or ":" not in rest:
            raise ValueError(e)
        ini.positive_int(rest.rsplit(":", 1)[1].rstrip("/"))
    return eps


def _mac(s: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", s):
        raise ValueError(s)
    return s.lower()


def _timing(f: ini.IniFile) -> Timing:
    profile = f.get("timing", "profile", ini.one_of(*PROFILES), "one of: " + ", ".join(PROFILES),
                    default="production")
    base = PROFILES[profile]
    overrides = {}
    for fld in fields(Timing):
        if fld.name == "profile" or f.raw("timing", fld.name) is None:
            continue
        conv = ini.positive_int if fld.type in ("int", int) else ini.positive_float
        overrides[fld.name] = f.get("timing", fld.name, conv, "a positive number")
    t = replace(base, **overrides)
    # Losing etcd is losing the claim: the agent must be able to notice a
    # failed renewal and stop the engine well inside the lease TTL.
    if t.etcd_lease_ttl < 3 * t.cycle:
        raise f.error("timing", f"etcd_lease_ttl = {t.etcd_lease_ttl}",
                      f"is too short; expected at least 3 cycles ({3 * t.cycle:g} s)")
    return t


def parse_host_config(text: str, path: str = "<string>") -> HostConfig:
    return host_config_from(ini.IniFile(text, path))


def host_config_from(f: ini.IniFile) -> HostConfig:
    path = f.path
    for sec in ("host", "etcd", "storage", "engine", "network"):
        f.require_section(sec)
    g = f.get

    host_id = g("host", "host_id", _host_id, "an integer from 1 to 2000")
    hostname = g("host", "hostname", str, "the host's name", default=os.uname().nodename)
    address = g("host", "address", str, "the host's management address", default="")
    state_dir = g("host", "state_dir", ini.abs_path, "an absolute path", default="/var/lib/keel")
    broker_socket = g("host", "broker_socket", ini.abs_path, "an absolute path", default="/run/keel/broker.sock")
    config_version = g("host", "config_version", ini.positive_int, "a positive integer", default=1)
    cluster_key_file = g("host", "cluster_key_file", ini.abs_path, "an absolute path",
                         default="/etc/keel/cluster.key")

    etcd_cfg = EtcdConfig(
        endpoints=g("etcd", "endpoints", endpoint_list, "a comma-separated list of http(s)://host:port"),
        prefix=g("etcd", "prefix", str, "a key prefix", default="/keel").rstrip("/") or "/keel",
        ca_cert=g("etcd", "ca_cert", ini.abs_path, "an absolute path", default=None),
        cert=g("etcd", "cert", ini.abs_path, "an absolute path", default=None),
        key=g("etcd", "key", ini.abs_path, "an absolute path", default=None),
    )
    if (etcd_cfg.cert is None) != (etcd_cfg.key is None):
        raise f.error("etcd", "cert and key", "go together; expected both or neither")

    shared = g("storage", "shared_path", ini.abs_path, "an absolute path")
    ls_name = g("storage", "lockspace", str, "a lockspace name", default="hosted-engine")
    storage_cfg = StorageConfig(
        shared_path=shared,
        lockspace=ls_name,
        lockspace_path=g("storage", "lockspace_path", ini.abs_path, "an absolute path",
                         default=os.path.join(shared, ls_name + ".lockspace")),
        lease_path=g("storage", "lease_path", ini.abs_path, "an absolute path",
                     default=os.path.join(shared, ls_name + ".lease")),
        lease_name=g("storage", "lease_name", str, "a resource name", default="engine"),
        sanlock_run_dir=g("storage", "sanlock_run_dir", ini.abs_path, "an absolute path", default=None),
    )
    if len(storage_cfg.lockspace.encode()) > 48 or len(storage_cfg.lease_name.encode()) > 48:
        raise f.error("storage", "lockspace and lease_name", "must be at most 48 bytes")

    d = EngineVmConfig()
    engine_cfg = EngineVmConfig(
        name=g("engine", "vm_name", str, "a domain name", default=d.name),
        uuid=g("engine", "vm_uuid", str, "a UUID", default=d.uuid),
        memory_mb=g("engine", "memory_mb", ini.positive_int, "a positive integer (MiB)", default=d.memory_mb),
        vcpus=g("engine", "vcpus", ini.positive_int, "a positive integer", default=d.vcpus),
        disk_path=g("engine", "disk_path", ini.abs_path, "an absolute path",
                    default=os.path.join(shared, "engine.img")),
        disk_format=g("engine", "disk_format", ini.one_of("raw", "qcow2"), "raw or qcow2",
                      default=d.disk_format),
        kernel=g("engine", "kernel", ini.abs_path, "an absolute path", default=None),
        initrd=g("engine", "initrd", ini.abs_path, "an absolute path", default=None),
        cmdline=g("engine", "cmdline", str, "a kernel command line", default=None),
        mac=g("engine", "mac", _mac, "a MAC address like 52:54:00:12:34:56", default=d.mac),
        bridge=g("engine", "bridge", str, "a bridge name", default=d.bridge),
        health_url=g("engine", "health_url", _http_url, "an http(s) URL"),
        libvirt_uri=g("engine", "libvirt_uri", str, "a libvirt URI", default=d.libvirt_uri),
        domain_type=g("engine", "domain_type", ini.one_of("kvm", "qemu"), "kvm or qemu",
                      default=d.domain_type),
        emulator=g("engine", "emulator", ini.abs_path, "an absolute path", default=None),
        console_log=g("engine", "console_log", ini.abs_path, "an absolute path", default=None),
        seed_path=g("engine", "seed_path", ini.abs_path, "an absolute path", default=None),
        rng=g("engine", "rng", ini.boolean, "true or false", default=False),
    )

    network_cfg = NetworkConfig(
        gateway=g("network", "gateway", str, "the gateway's IP address"),
        management_interface=g("network", "management_interface", str, "an interface name", default="eth0"),
    )
    score_cfg = {k: g("score", k, float, "a number") for k in f.keys("score")}
    timing = _timing(f)
    f.finish()
    return HostConfig(path=path, host_id=host_id, hostname=hostname, address=address,
                      state_dir=state_dir, broker_socket=broker_socket, etcd=etcd_cfg,
                      storage=storage_cfg, engine=engine_cfg, network=network_cfg,
                      timing=timing, score=score_cfg,
                      config_version=config_version, cluster_key_file=cluster_key_file)


def _http_url(s: str) -> str:
    if not s.startswith(("http://", "https://")):
        raise ValueError(s)
    return s


def load_host_config(path: str | None = None) -> HostConfig:
    path = path or os.environ.get(ENV_PATH) or DEFAULT_PATH
    return host_config_from(ini.IniFile.load(path, "the host configuration (see README, 'Configuring a host')"))


def render_host_config(values: dict[str, dict[str, Any]]) -> str:
    """INI text from {section: {key: value}}: used by the lab and the installer."""
    return ini.render(values)
