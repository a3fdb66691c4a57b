"""The first-boot seed: a tiny vfat disk labelled CIDATA (NoCloud style).

Whoever creates the engine VM writes one (`write_seed`) and attaches it as
a second disk; the appliance reads it at boot (`keel_appliance.firstboot`).
The disk holds three files:

  keel-seed.ini    [seed] format, instance_id; [appliance] hostname, database;
                   [network] mode, address, gateway, dns, mac;
                   [storage] nfs, mount_point (the storage domain the engine uses)
  admin-password   admin@internal's password (one line); applied once per instance_id
  engine.conf      optional overrides merged into /etc/keel/engine.conf
  etcd-ca.crt, etcd-client.crt, etcd-client.key
                   optional, all three or none: the CA of the hosts' etcd and
                   the engine's client certificate for it (TLS), with which
                   the engine reads the fences the HA agents recorded

Validation is pure and shared by both sides, so a seed that `write_seed`
accepts is one the guest applies, and a hand-made bad seed is refused in the
guest with the same one-line message.
"""
from __future__ import annotations

import configparser
import io
import ipaddress
import os
import re
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field

LABEL = "CIDATA"
SEED_INI = "keel-seed.ini"
PASSWORD_FILE = "admin-password"
ENGINE_CONF = "engine.conf"
ETCD_CA, ETCD_CERT, ETCD_KEY = "etcd-ca.crt", "etcd-client.crt", "etcd-client.key"
FORMAT = "1"
DATABASES = ("sqlite", "postgresql")
# engine.conf keys the appliance owns: the database comes from [appliance]
# database, the password from admin-password (never a config file).
RESERVED_CONF = {("database", "url"): "choose the database with [appliance] database",
                 ("engine", "admin_password"): "the password goes in the admin-password file"}
SEED_SIZE_KIB = 1024

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.IGNORECASE)
_INSTANCE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SeedError(ValueError):
    """A bad seed value; str() is the one line shown to the operator."""


@dataclass(frozen=True)
class StaticNetwork:
    address: str                      # CIDR, e.g. 198.51.100.100/24
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    mac: str | None = None            # which NIC; default the first Ethernet NIC


@dataclass(frozen=True)
class DhcpNetwork:
    dns: tuple[str, ...] = ()         # DHCP's own DNS servers are not used (no resolver daemon)
    mac: str | None = None


@dataclass(frozen=True)
class NfsMount:
    """The shared storage domain the engine itself reads and writes (VM
    disks, VM leases, the hosts' delta leases), mounted at the path the
    hosts use for it, so a path means the same file everywhere."""
    export: str                       # SERVER:/EXPORT
    mount_point: str                  # absolute path


@dataclass(frozen=True)
class EtcdTls:
    """PEM texts: the etcd cluster's CA, and the engine's client certificate and key."""
    ca_cert: str
    cert: str
    key: str


@dataclass(frozen=True)
class SeedConfig:
    hostname: str
    admin_password: str
    network: StaticNetwork | DhcpNetwork = field(default_factory=DhcpNetwork)
    database: str = "sqlite"
    # {"libvirt": {"uri_template": "qemu+tls://{address}/system"}, ...}
    engine_conf: dict = field(default_factory=dict)
    instance_id: str = ""             # empty: a new random one when written
    storage: NfsMount | None = None
    etcd_tls: EtcdTls | None = None


# ---------------------------------------------------------------- validation

def check_hostname(value: str, where: str) -> str:
    labels = value.rstrip(".").split(".") if value else []
    if not labels or len(value) > 253 or not all(_HOST_LABEL.match(p) for p in labels):
        raise SeedError(f"{where} = {value!r}: expected a host name (letters, digits, '-', dots; "
                        "at most 63 per label)")
    return value.rstrip(".").lower()


def check_address(value: str, where: str):
    try:
        iface = ipaddress.ip_interface(value) if "/" in value else None
    except ValueError:
        iface = None
    net = iface.network if iface else None
    if iface is None or (net.num_addresses > 2 and
                         iface.ip in (net.network_address, net.broadcast_address)):
        raise SeedError(f"{where} = {value!r}: expected ADDRESS/PREFIX of a host, e.g. 198.51.100.100/24")
    return iface


def check_ip(value: str, where: str):
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise SeedError(f"{where} = {value!r}: expected an IP address") from None


def check_mac(value: str | None, where: str) -> str | None:
    if value in (None, ""):
        return None
    if not _MAC.match(value):
        raise SeedError(f"{where} = {value!r}: expected a MAC address like 52:54:00:6b:ee:01")
    return value.lower()


def check_password(value: str, where: str) -> str:
    if len(value) < 6 or "\n" in value or "\r" in value:
        # never echo the password itself
        raise SeedError(f"{where}: the password must be one line of at least 6 characters")
    return value


# never mounted over: the system's own directories and the engine's state
_SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
                "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/lib/keel",
                "/var/lib/keel-appliance", "/var/log", "/var/lib/postgresql")


def check_nfs(mount: NfsMount | None) -> NfsMount | None:
    if mount is None:
        return None
    server, sep, export = mount.export.partition(":")
    if not sep or not export.startswith("/") or not server or any(c.isspace() for c in mount.export):
        raise SeedError(f"[storage] nfs = {mount.export!r}: expected SERVER:/EXPORT, e.g. 198.51.100.1:/shared")
    try:
        ipaddress.ip_address(server)
    except ValueError:
        check_hostname(server, "[storage] nfs server")
    point = mount.mount_point
    if not point.startswith("/") or any(c.isspace() for c in point) or \
            os.path.normpath(point) != point.rstrip("/") or point.rstrip("/") in ("", *_SYSTEM_DIRS):
        raise SeedError(f"[storage] mount_point = {point!r}: expected an absolute path of a directory "
                        "of its own, e.g. /rhev/data-center/mnt/shared (not a system directory)")
    return NfsMount(export=f"{server}:{os.path.normpath(export)}", mount_point=point.rstrip("/"))


def check_etcd_tls(tls: EtcdTls | None) -> EtcdTls | None:
    if tls is None:
        return None
    for name, text, marker in ((ETCD_CA, tls.ca_cert, "-----BEGIN CERTIFICATE-----"),
                               (ETCD_CERT, tls.cert, "-----BEGIN CERTIFICATE-----"),
                               (ETCD_KEY, tls.key, "PRIVATE KEY-----")):
        if marker not in (text or ""):
            what = "a PEM private key" if name == ETCD_KEY else "a PEM certificate"
            raise SeedError(f"{name}: expected {what}")
    return tls


def check_engine_conf(conf: dict, where: str) -> dict:
    """Overrides as {section: {key: value}}; the engine's own rules decide
    which keys exist and what values mean (unknown keys are refused)."""
    out = {}
    for section, keys in conf.items():
        if not isinstance(keys, dict):
            raise SeedError(f"{where}: [{section}] must map keys to values")
        for key, value in keys.items():
            s, k = str(section).strip().lower(), str(key).strip().lower()
            if (s, k) in RESERVED_CONF:
                raise SeedError(f"{where}: [{s}] {k} is not allowed here: {RESERVED_CONF[(s, k)]}")
            if "\n" in str(value) or "\r" in str(value):
                raise SeedError(f"{where}: [{s}] {k}: the value must be one line")
            out.setdefault(s, {})[k] = str(value).strip()
    _check_with_engine_rules(render_conf(out), where)
    return out


def _check_with_engine_rules(text: str, where: str) -> None:
    try:
        from keel_engine import config as engine_config
    except ImportError:       # the writer may run without the engine installed; the guest checks again
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "engine.conf")
        with open(path, "w") as f:
            f.write(text)
        try:
            engine_config.load(path)
        except engine_config.ConfigError as e:
            raise SeedError(f"{where}: {str(e).split(': ', 1)[-1]}") from None


def validate(cfg: SeedConfig) -> SeedConfig:
    """Return a normalised copy, or raise SeedError naming the first bad value."""
    hostname = check_hostname(cfg.hostname, "[appliance] hostname")
    if cfg.database not in DATABASES:
        raise SeedError(f"[appliance] database = {cfg.database!r}: expected sqlite or postgresql")
    check_password(cfg.admin_password, PASSWORD_FILE)
    net = cfg.network
    dns = tuple(str(check_ip(d, "[network] dns")) for d in net.dns)
    mac = check_mac(net.mac, "[network] mac")
    if isinstance(net, StaticNetwork):
        iface = check_address(net.address, "[network] address")
        gateway = None
        if net.gateway:
            gw = check_ip(net.gateway, "[network] gateway")
            if gw.version != iface.version or gw not in iface.network or gw == iface.ip:
                raise SeedError(f"[network] gateway = {net.gateway!r}: not another address in "
                                f"{iface.network} (the subnet of [network] address)")
            gateway = str(gw)
        net = StaticNetwork(address=str(iface), gateway=gateway, dns=dns, mac=mac)
    elif isinstance(net, DhcpNetwork):
        net = DhcpNetwork(dns=dns, mac=mac)
    else:
        raise SeedError("network: expected StaticNetwork or DhcpNetwork")
    instance_id = cfg.instance_id or uuid.uuid4().hex
    if not _INSTANCE.match(instance_id):
        raise SeedError(f"[seed] instance_id = {instance_id!r}: expected 1-64 letters, digits, '.', '_' or '-'")
    conf = check_engine_conf(cfg.engine_conf, ENGINE_CONF)
    return SeedConfig(hostname=hostname, admin_password=cfg.admin_password, network=net,
                      database=cfg.database, engine_conf=conf, instance_id=instance_id,
                      storage=check_nfs(cfg.storage), etcd_tls=check_etcd_tls(cfg.etcd_tls))


# ---------------------------------------------------------------- rendering

def render_conf(conf: dict) -> str:
    lines = []
    for section in sorted(conf):
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in sorted(conf[section].items()))
        lines.append("")
    return "\n".join(lines)


def render_seed_ini(cfg: SeedConfig) -> str:
    net = cfg.network
    lines = ["# Keel engine appliance seed (see docs/appliance.md)",
             "[seed]", f"format = {FORMAT}", f"instance_id = {cfg.instance_id}", "",
             "[appliance]", f"hostname = {cfg.hostname}", f"database = {cfg.database}", "",
             "[network]"]
    if isinstance(net, StaticNetwork):
        lines += ["mode = static", f"address = {net.address}"]
        if net.gateway:
            lines.append(f"gateway = {net.gateway}")
    else:
        lines.append("mode = dhcp")
    if net.dns:
        lines.append("dns = " + " ".join(net.dns))
    if net.mac:
        lines.append(f"mac = {net.mac}")
    if cfg.storage:
        lines += ["", "[storage]", f"nfs = {cfg.storage.export}", f"mount_point = {cfg.storage.mount_point}"]
    return "\n".join(lines) + "\n"


def render_files(cfg: SeedConfig) -> dict[str, str]:
    """The seed disk's files, from a validated config."""
    files = {SEED_INI: render_seed_ini(cfg), PASSWORD_FILE: cfg.admin_password + "\n"}
    if cfg.engine_conf:
        files[ENGINE_CONF] = render_conf(cfg.engine_conf)
    if cfg.etcd_tls:
        files.update({ETCD_CA: cfg.etcd_tls.ca_cert, ETCD_CERT: cfg.etcd_tls.cert, ETCD_KEY: cfg.etcd_tls.key})
    return files


# ---------------------------------------------------------------- parsing

_SEED_KEYS = {"seed": {"format", "instance_id"}, "appliance": {"hostname", "database"},
              "network": {"mode", "address", "gateway", "dns", "mac"}, "storage": {"nfs", "mount_point"}}


def parse_files(files: dict[str, str]) -> SeedConfig:
    """The inverse of render_files, for the guest: every key checked, unknown
    ones refused, nothing applied unless all of it is good."""
    if SEED_INI not in files:
        raise SeedError(f"{SEED_INI} is missing on the seed disk")
    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read_string(files[SEED_INI], source=SEED_INI)
    except configparser.Error as e:
        raise SeedError(f"{SEED_INI}: cannot parse: {str(e).splitlines()[0]}") from None
    for section in ini.sections():
        known = _SEED_KEYS.get(section)
        if known is None:
            raise SeedError(f"{SEED_INI}: unknown section [{section}] (known: {', '.join(_SEED_KEYS)})")
        for key in ini[section]:
            if key not in known:
                raise SeedError(f"{SEED_INI}: unknown key [{section}] {key} (known: {', '.join(sorted(known))})")

    def get(section, key, default=None):
        return ini.get(section, key, fallback=default)

    fmt = get("seed", "format")
    if fmt != FORMAT:
        raise SeedError(f"{SEED_INI}: [seed] format = {fmt!r}: this appliance reads format {FORMAT}")
    instance_id = get("seed", "instance_id") or ""
    if not instance_id:
        raise SeedError(f"{SEED_INI}: [seed] instance_id is required")
    hostname = get("appliance", "hostname")
    if not hostname:
        raise SeedError(f"{SEED_INI}: [appliance] hostname is required")
    dns = tuple((get("network", "dns") or "").replace(",", " ").split())
    mac = get("network", "mac")
    mode = get("network", "mode", "dhcp")
    if mode == "static":
        address = get("network", "address")
        if not address:
            raise SeedError(f"{SEED_INI}: [network] address is required with mode = static")
        net = StaticNetwork(address=address, gateway=get("network", "gateway"), dns=dns, mac=mac)
    elif mode == "dhcp":
        for key in ("address", "gateway"):
            if get("network", key):
                raise SeedError(f"{SEED_INI}: [network] {key} is only for mode = static")
        net = DhcpNetwork(dns=dns, mac=mac)
    else:
        raise SeedError(f"{SEED_INI}: [network] mode = {mode!r}: expected static or dhcp")
    storage = None
    if ini.has_section("storage"):
        if not get("storage", "nfs") or not get("storage", "mount_point"):
            raise SeedError(f"{SEED_INI}: [storage] needs both nfs and mount_point")
        storage = NfsMount(export=get("storage", "nfs"), mount_point=get("storage", "mount_point"))
    password = files.get(PASSWORD_FILE)
    if password is None:
        raise SeedError(f"{PASSWORD_FILE} is missing on the seed disk")
    conf = {}
    if files.get(ENGINE_CONF, "").strip():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(files[ENGINE_CONF], source=ENGINE_CONF)
        except configparser.Error as e:
            raise SeedError(f"{ENGINE_CONF}: cannot parse: {str(e).splitlines()[0]}") from None
        conf = {s: dict(parser[s]) for s in parser.sections()}
    tls_files = [files.get(name) for name in (ETCD_CA, ETCD_CERT, ETCD_KEY)]
    if any(tls_files) and not all(tls_files):
        raise SeedError(f"{ETCD_CA}, {ETCD_CERT} and {ETCD_KEY} go together; expected all three or none")
    cfg = SeedConfig(hostname=hostname, admin_password=password.rstrip("\r\n"), network=net,
                     database=get("appliance", "database", "sqlite"), engine_conf=conf,
                     instance_id=instance_id, storage=storage,
                     etcd_tls=EtcdTls(*tls_files) if all(tls_files) else None)
    try:
        return validate(cfg)
    except SeedError as e:
        msg = str(e)
        raise SeedError(msg if msg.startswith((PASSWORD_FILE, ENGINE_CONF, ETCD_CA, ETCD_CERT, ETCD_KEY)) else f"{SEED_INI}: {msg}") \
            from None


def instance_id_of(files: dict[str, str]) -> str | None:
    """Just the instance id (None if unreadable): at every boot after the
    first, this is all the appliance needs to know the seed is applied."""
    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read_string(files.get(SEED_INI, ""), source=SEED_INI)
    except configparser.Error:
        return None
    return ini.get("seed", "instance_id", fallback=None)


# ---------------------------------------------------------------- the disk

def write_seed(path: str, cfg: SeedConfig) -> SeedConfig:
    """Validate `cfg` and write the seed disk image to `path`. Returns the
    validated config (with its instance_id)."""
    cfg = validate(cfg)
    write_files(path, render_files(cfg))
    return cfg


def write_files(path: str, files: dict[str, str]) -> None:
    """The seed disk itself: a raw vfat image labelled CIDATA holding
    `files`, readable by its owner only (it carries the admin password);
    made with mkfs.vfat and mcopy, no mount."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".seed-", dir=directory)
    except OSError as e:
        raise SeedError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        os.unlink(tmp)    # mkfs.vfat -C refuses an existing file
        _run(["mkfs.vfat", "-C", "-n", LABEL, tmp, str(SEED_SIZE_KIB)])
        os.chmod(tmp, 0o600)
        with tempfile.TemporaryDirectory() as staging:
            for name, text in files.items():
                src = os.path.join(staging, name)
                with open(src, "w") as f:
                    f.write(text)
                _run(["mcopy", "-i", tmp, src, "::" + name])
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_seed(device: str) -> dict[str, str]:
    """The files on a seed disk (or image file), read with mtools: no mount."""
    listing = _run(["mdir", "-b", "-i", device, "::"])
    names = {os.path.basename(line.strip()) for line in listing.splitlines() if line.strip()}
    files = {}
    for name in (SEED_INI, PASSWORD_FILE, ENGINE_CONF, ETCD_CA, ETCD_CERT, ETCD_KEY):
        if name in names:
            files[name] = _run(["mtype", "-i", device, "::" + name])
    return files


def _run(cmd: list[str]) -> str:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        raise SeedError(f"{cmd[0]} not found (install dosfstools and mtools)") from None
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        raise SeedError(f"{cmd[0]} failed: {detail[-1] if detail else 'exit status %d' % out.returncode}")
    return out.stdout


def parse_engine_conf_text(text: str) -> dict:
    """engine.conf text -> {section: {key: value}} (for the CLI's --engine-conf FILE)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_file(io.StringIO(text))
    except configparser.Error as e:
        raise SeedError(f"cannot parse engine.conf overrides: {str(e).splitlines()[0]}") from None
    return {s: dict(parser[s]) for s in parser.sections()}
