"""The answers of `hosted-engine --deploy`: what the first host's install
needs to know, where each answer comes from and what makes it valid.

One table (`KEYS`) describes every answer: its field of `Answers`, its
section and key in an answer file, its question, what is expected, its
parser, its default and the rules it must meet on this host. The questions
(`questions.py`), the answer-file loader and writer below, and the
documentation's table (`doc_rows`, docs/installer.md) all read it.

Parsers take the typed text and return the value or raise ValueError with
a one-line reason; `check` rules see the value, the host's facts and the
answers before it (so a rule that spans two answers sits on the later one).
Passwords never appear in a message, a summary or a written answer file.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import random
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Any, Callable

from keel_appliance import seed
from keel_common import bmc, nfs
from keel_common.config import PROFILES
from keel_common.ini import ConfigError, IniFile, positive_int, render
from keel_engine.power.agents import parse_options

from .bmc_cli import PASSWORD_ENV as BMC_PASSWORD_ENV

ADMIN_PASSWORD_ENV = "KEEL_ADMIN_PASSWORD"
MIN_VM_MEMORY_MB = 1024
HOST_RESERVED_MB = 512        # what the engine VM's memory must leave to the host
DEFAULT_VM_MEMORY_MB = 4096
DEFAULT_VM_VCPUS = 2
NO_BMC = "none"               # [bmc] address of a host without a BMC


class AnswerError(Exception):
    """An answer is missing or wrong; str() is one line naming where it came
    from, the [section] key and what is expected."""


# ---------------------------------------------------------------- host facts

@dataclass(frozen=True)
class HostFacts:
    """What this host has (probed once; the defaults and the limits of the answers)."""
    hostname: str
    memory_total_mb: int
    memory_available_mb: int
    cpus: int
    bridges: tuple[str, ...]              # interfaces with /sys/class/net/NAME/bridge
    addresses: dict[str, str]             # interface -> its first IPv4 "A.B.C.D/NN"
    default_gateway: str | None           # `ip -4 route show default`

    @classmethod
    def probe(cls) -> "HostFacts":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                total, available = parse_meminfo(f.read())
        except OSError:
            total = available = 0
        try:
            names = sorted(os.listdir("/sys/class/net"))
        except OSError:
            names = []
        return cls(hostname=socket.gethostname(), memory_total_mb=total, memory_available_mb=available,
                   cpus=os.cpu_count() or 1,
                   bridges=tuple(n for n in names if os.path.exists(f"/sys/class/net/{n}/bridge")),
                   addresses=parse_addresses(_ip("-4", "-o", "addr", "show")),
                   default_gateway=parse_default_gateway(_ip("-4", "route", "show", "default")))


def _ip(*args: str) -> str:
    """`ip ARGS`' output; "" when `ip` is missing, fails or hangs."""
    try:
        cp = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return cp.stdout if cp.returncode == 0 else ""


def parse_meminfo(text: str) -> tuple[int, int]:
    """(MemTotal, MemAvailable) of /proc/meminfo in MiB."""
    kib = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kib[name.strip()] = int(parts[0])
    total = kib.get("MemTotal", 0)
    return total // 1024, kib.get("MemAvailable", kib.get("MemFree", 0)) // 1024


def parse_addresses(text: str) -> dict[str, str]:
    """`ip -4 -o addr show` as {interface: its first "A.B.C.D/NN"}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            out.setdefault(parts[1].split("@")[0], parts[3])
    return out


def parse_default_gateway(text: str) -> str | None:
    """The first `via` of `ip -4 route show default`."""
    for line in text.splitlines():
        parts = line.split()
        if "via" in parts[:-1]:
            return parts[parts.index("via") + 1]
    return None


# ---------------------------------------------------------------- the answers

@dataclass(frozen=True)
class Answers:
    storage_connection: str      # SERVER:/EXPORT (NFS): the engine VM's storage
    storage_mount_options: str   # "" or NFS mount options
    storage_mount_root: str      # where NFS exports are mounted
    storage_domain: str          # the engine's storage domain name
    vm_name: str
    vm_hostname: str
    vm_memory_mb: int
    vm_vcpus: int
    vm_mac: str
    vm_address: str              # "A.B.C.D/NN" or "dhcp"
    vm_domain_type: str          # kvm, or qemu (software emulation) where there is no usable KVM
    gateway: str
    bridge: str
    host_name: str               # this host's name in the engine
    host_address: str            # this host's management IPv4
    data_center: str
    cluster: str
    admin_password: str = dataclasses.field(repr=False)
    bmc_address: str             # "" = no BMC
    bmc_port: int
    bmc_user: str
    bmc_password: str = dataclasses.field(repr=False)   # "" without a BMC
    bmc_options: str
    timing_profile: str          # keel_common.config.PROFILES
    appliance: str               # "" = the current cached build
    engine_extra_conf: str       # "" or an INI file merged into the engine's configuration
    admin_password_file: str     # "" or where admin_password came from
    bmc_password_file: str       # "" or where bmc_password came from

    def public(self) -> dict:
        """Every answer but the passwords (for the summary and logs)."""
        return {k.field: getattr(self, k.field) for k in KEYS if not k.secret}

    @property
    def has_bmc(self) -> bool:
        return bool(self.bmc_address)


# ---------------------------------------------------------------- parsers
# Each takes the stripped text and returns the value, or raises ValueError
# whose text is the reason (shown after "invalid: " when asking).

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")     # the engine's rule for object names
_IFNAME = re.compile(r"[A-Za-z0-9_.\-]{1,15}")   # Linux: at most 15 bytes, no '/', ':' or spaces
_MOUNT_OPTION = re.compile(r"[A-Za-z0-9_.\-]+(=[^\s,]+)?")


def _seed_rule(check: Callable[[str, str], Any]) -> Callable[[str], Any]:
    """A keel_appliance.seed check as a parser, its message without the 'where = value:' part."""
    def parse(text: str):
        try:
            return check(text, "value")
        except seed.SeedError as e:
            raise ValueError(str(e).removeprefix(f"value = {text!r}: ").removeprefix("value: ")) from None
    return parse


_hostname = _seed_rule(seed.check_hostname)
_mac_address = _seed_rule(seed.check_mac)
_interface = _seed_rule(seed.check_address)
_password_rules = _seed_rule(seed.check_password)


def _name(text: str) -> str:
    if not _NAME.fullmatch(text) or set(text) == {"."}:
        raise ValueError(f"'{text}' is not a name (1-64 letters, digits, '_', '-', '.'; not only dots)")
    return text


def _connection(text: str) -> str:
    return nfs.export_spec(*nfs.parse_connection(text))


def _mount_options(text: str) -> str:
    if not all(_MOUNT_OPTION.fullmatch(o) for o in text.split(",")):
        raise ValueError(f"'{text}' is not NFS mount options (NAME or NAME=VALUE separated by commas, no spaces)")
    return text


def _abs_path(text: str) -> str:
    if not os.path.isabs(text) or any(not c.isprintable() for c in text):
        raise ValueError(f"'{text}' is not an absolute path")
    return os.path.normpath(text)


def _mount_root(text: str) -> str:
    path = _abs_path(text)
    if path == "/":
        raise ValueError("'/' is not a directory of its own")
    return path


def _memory(text: str) -> int:
    mb = _number(text)
    if mb < MIN_VM_MEMORY_MB:
        raise ValueError(f"{mb} MiB is too little: the engine VM needs at least {MIN_VM_MEMORY_MB} MiB")
    return mb


def _number(text: str) -> int:
    try:
        return positive_int(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a positive whole number") from None


def _mac(text: str) -> str:
    mac = _mac_address(text)
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{mac} is a multicast address; a NIC needs a unicast one")
    return mac


def _domain_type(text: str) -> str:
    if text not in ("kvm", "qemu"):
        raise ValueError("expected kvm or qemu")
    return text


def _usable_kvm(facts: HostFacts, got: dict) -> str:
    return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"


def _vm_address(text: str) -> str:
    if text.lower() == "dhcp":
        return "dhcp"
    iface = _interface(text)
    if iface.version != 4:
        raise ValueError(f"'{text}' is not an IPv4 address (ADDRESS/PREFIX, or dhcp)")
    return str(iface)


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"'{text}' is not an IPv4 address (A.B.C.D)") from None


def _bridge(text: str) -> str:
    if not _IFNAME.fullmatch(text):
        raise ValueError(f"'{text}' is not a network interface name")
    return text


def _profile(text: str) -> str:
    if text not in PROFILES:
        raise ValueError(f"'{text}' is not a timing profile ({', '.join(PROFILES)})")
    return text


def _directory(text: str) -> str:
    path = _abs_path(text)
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a directory")
    return path


def _ini_file(text: str) -> str:
    path = _abs_path(text)
    try:
        IniFile.load(path, "an INI file of engine settings")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return path


def _admin_password(text: str) -> str:
    return _password_rules(text)


def _bmc_password(text: str) -> str:
    if not text or "\n" in text or "\r" in text:
        raise ValueError("the BMC password must be one line, not empty")
    if len(text.encode()) > 20:
        raise ValueError("the BMC password is longer than IPMI's 20 bytes")
    return text


def _bmc_address(text: str) -> str:
    if text.lower() == NO_BMC:
        return ""
    try:
        return bmc.check_address(text)
    except bmc.BmcError as e:
        raise ValueError(str(e)) from None


def _port(text: str) -> int:
    port = _number(text)
    if port > 65535:
        raise ValueError(f"{port} is not a port number (1-65535)")
    return port


def _bmc_user(text: str) -> str:
    if len(text) > 16 or any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError("the BMC user name must be 1 to 16 characters, no spaces (IPMI's limit)")
    return text


def _bmc_options(text: str) -> str:
    parse_options(text)         # the engine's own rules for its fence agents' options
    return text


# ---------------------------------------------------------------- rules on this host

def _static(got: dict) -> ipaddress.IPv4Interface | None:
    address = got.get("vm_address")
    return ipaddress.IPv4Interface(address) if address and address != "dhcp" else None


def _fitting_memory(facts: HostFacts) -> int:
    return facts.memory_available_mb - HOST_RESERVED_MB


def _memory_fits(mb: int, facts: HostFacts, got: dict) -> None:
    if mb > _fitting_memory(facts):
        raise ValueError(f"this host has {facts.memory_available_mb} MiB available; the engine VM can "
                         f"have at most {_fitting_memory(facts)} MiB ({HOST_RESERVED_MB} MiB stay for the host)")


def _too_little_memory(facts: HostFacts) -> str | None:
    if _fitting_memory(facts) < MIN_VM_MEMORY_MB:
        return (f"this host has {facts.memory_available_mb} MiB of memory available: too little for the "
                f"engine VM ({MIN_VM_MEMORY_MB} MiB, and {HOST_RESERVED_MB} MiB stay for the host)")
    return None


def _vcpus_fit(n: int, facts: HostFacts, got: dict) -> None:
    if n > facts.cpus:
        raise ValueError(f"this host has {facts.cpus} CPUs")


def _address_is_free(address: str, facts: HostFacts, got: dict) -> None:
    iface = _static({"vm_address": address})
    for name, own in facts.addresses.items():
        if iface and ipaddress.IPv4Interface(own).ip == iface.ip:
            raise ValueError(f"{iface.ip} is this host's own address (on {name})")


def _gateway_in_subnet(gateway: str, facts: HostFacts, got: dict) -> None:
    iface = _static(got)
    if iface and (ipaddress.IPv4Address(gateway) not in iface.network or ipaddress.IPv4Address(gateway) == iface.ip):
        raise ValueError(f"{gateway} is not another address in {iface.network} (the engine VM's subnet)")


def _bridge_exists(name: str, facts: HostFacts, got: dict) -> None:
    if name not in facts.bridges:
        raise ValueError(f"{name} is not a bridge on this host (its bridges: {', '.join(facts.bridges)})")


def _no_bridge(facts: HostFacts) -> str | None:
    if not facts.bridges:
        return ("this host has no network bridge: make one holding the management interface "
                "(e.g. ovirtmgmt), then deploy again")
    return None


def _not_the_vm(address: str, facts: HostFacts, got: dict) -> None:
    iface = _static(got)
    if iface and ipaddress.IPv4Address(address) == iface.ip:
        raise ValueError(f"{address} is the engine VM's address")


def _bmc_named(address: str, facts: HostFacts, got: dict) -> None:
    if not address:
        raise ValueError("give the BMC's address (a host without a BMC answers no to the BMC question)")


# ---------------------------------------------------------------- defaults

def random_mac() -> str:
    """A MAC in 52:54:00:xx:xx:xx, qemu's locally administered range."""
    return "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))


def _default_bridge(facts: HostFacts, got: dict) -> str | None:
    if "ovirtmgmt" in facts.bridges:
        return "ovirtmgmt"
    return facts.bridges[0] if facts.bridges else None


def _bridge_address(facts: HostFacts, got: dict) -> str | None:
    address = facts.addresses.get(got.get("bridge", ""))
    return address.split("/")[0] if address else None


def _const(value) -> Callable[[HostFacts, dict], Any]:
    return lambda facts, got: value


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Key:
    field: str                     # of Answers
    section: str                   # in an answer file
    key: str
    question: str                  # the question, and the summary's label
    expected: str                  # what a good value is, for messages and the docs
    parse: Callable[[str], Any]    # text -> value, ValueError(reason) when bad
    default: Callable[[HostFacts, dict], Any] | None = None   # None: must be answered
    default_doc: str = ""          # the default, in the docs' words
    check: Callable[[Any, HostFacts, dict], None] | None = None   # rules on this host and earlier answers
    impossible: Callable[[HostFacts], str | None] | None = None   # why no answer can fit this host
    asked: bool = True             # False: advanced, its default unless an answer file gives it
    secret: bool = False           # a password: never written, shown or echoed
    env: str = ""                  # secret: the environment variable that may hold it
    twice: bool = False            # secret: typed twice when asked
    password_of: str = ""          # a *_password_file key: the secret field it holds
    empty: str = "(none)"          # how the summary shows ""
    hint: str = ""                 # said in brackets after the question

    @property
    def prompt(self) -> str:
        return f"{self.question} ({self.hint})" if self.hint else self.question


_NAME_EXPECTED = "a name: 1-64 letters, digits, '_', '-', '.'"

KEYS: tuple[Key, ...] = (
    Key("storage_connection", "storage", "connection", "NFS export of the engine's storage",
        "SERVER:/EXPORT of an NFS export, e.g. 198.51.100.1:/exports/engine", _connection, hint="SERVER:/EXPORT"),
    Key("storage_mount_options", "storage", "mount_options", "NFS mount options",
        "NFS mount options separated by commas, e.g. vers=4.2", _mount_options, _const(""), "none",
        hint="e.g. vers=4.2; empty for none"),
    Key("storage_mount_root", "storage", "mount_root", "Where NFS exports are mounted",
        "an absolute path", _mount_root, _const(nfs.DEFAULT_MOUNT_ROOT), nfs.DEFAULT_MOUNT_ROOT, asked=False),
    Key("storage_domain", "storage", "domain_name", "Storage domain of the engine VM",
        _NAME_EXPECTED, _name, _const("hosted_storage"), "hosted_storage", asked=False),
    Key("vm_name", "engine_vm", "name", "Engine VM name", _NAME_EXPECTED, _name,
        _const("HostedEngine"), "HostedEngine"),
    Key("vm_hostname", "engine_vm", "hostname", "Engine VM host name",
        "a host name, e.g. engine.example.com", _hostname, _const("keel-engine"), "keel-engine",
        hint="FQDN or short name"),
    Key("vm_memory_mb", "engine_vm", "memory_mb", "Engine VM memory in MiB",
        f"a whole number of MiB, at least {MIN_VM_MEMORY_MB}, leaving {HOST_RESERVED_MB} MiB of this "
        "host's available memory", _memory,
        lambda facts, got: min(DEFAULT_VM_MEMORY_MB, _fitting_memory(facts)),
        f"{DEFAULT_VM_MEMORY_MB}, or less to fit this host", _memory_fits, _too_little_memory),
    Key("vm_vcpus", "engine_vm", "vcpus", "Engine VM virtual CPUs",
        "a whole number of virtual CPUs, 1 to this host's CPUs", _number,
        lambda facts, got: min(DEFAULT_VM_VCPUS, facts.cpus), f"{DEFAULT_VM_VCPUS}, or this host's CPUs if fewer",
        _vcpus_fit),
    Key("vm_mac", "engine_vm", "mac", "Engine VM MAC address", "a unicast MAC address like 52:54:00:6b:ee:01",
        _mac, lambda facts, got: random_mac(), "a random 52:54:00:xx:xx:xx"),
    Key("vm_address", "engine_vm", "address", "Engine VM address",
        "ADDRESS/PREFIX of IPv4, e.g. 198.51.100.100/24, or dhcp", _vm_address, check=_address_is_free,
        hint="ADDRESS/PREFIX, or dhcp"),
    Key("vm_domain_type", "engine_vm", "domain_type", "Engine VM virtualization",
        "kvm, or qemu (software emulation, many times slower) where KVM does not work", _domain_type,
        _usable_kvm, "kvm if /dev/kvm is usable, else qemu", asked=False),
    Key("appliance", "engine_vm", "appliance", "Engine appliance image",
        "the absolute path of a built engine appliance's directory", _directory, _const(""),
        "the current cached build", asked=False, empty="(the current cached build)"),
    Key("bridge", "network", "bridge", "Bridge of the management network",
        "the name of a bridge on this host, e.g. ovirtmgmt", _bridge, _default_bridge,
        "ovirtmgmt if this host has it, else its first bridge", _bridge_exists, _no_bridge),
    Key("gateway", "network", "gateway", "Gateway",
        "an IPv4 address, in the engine VM's subnet when its address is static", _ipv4,
        lambda facts, got: facts.default_gateway, "this host's default gateway", _gateway_in_subnet,
        hint="the HA agents ping it to check the network"),
    Key("host_address", "network", "host_address", "This host's management address",
        "this host's management IPv4 address (no prefix)", _ipv4, _bridge_address, "the bridge's address",
        _not_the_vm),
    Key("host_name", "host", "name", "This host's name in the engine", _NAME_EXPECTED, _name,
        lambda facts, got: facts.hostname, "this host's host name"),
    Key("timing_profile", "host", "timing_profile", "Timing profile of the HA services",
        " or ".join(PROFILES), _profile, _const("production"), "production", asked=False),
    Key("data_center", "engine", "data_center", "Data center name", _NAME_EXPECTED, _name,
        _const("Default"), "Default"),
    Key("cluster", "engine", "cluster", "Cluster name", _NAME_EXPECTED, _name, _const("Default"), "Default"),
    Key("admin_password", "engine", "admin_password", "admin@internal password",
        "admin@internal's password: one line of at least 6 characters", _admin_password,
        secret=True, env=ADMIN_PASSWORD_ENV, twice=True),
    Key("admin_password_file", "engine", "admin_password_file", "admin@internal password file",
        "the absolute path of a file whose first line is admin@internal's password (at least 6 characters)",
        _abs_path, _const(""), "none", asked=False, password_of="admin_password"),
    Key("engine_extra_conf", "engine", "extra_conf", "Extra engine settings",
        "the absolute path of a readable INI file of engine settings", _ini_file, _const(""), "none",
        asked=False),
    Key("bmc_address", "bmc", "address", "BMC address", f"the BMC's IP address or host name, or {NO_BMC}",
        _bmc_address, None, f"{NO_BMC} (no BMC)", _bmc_named, empty=NO_BMC),
    Key("bmc_port", "bmc", "port", "BMC port", "a UDP port number (1-65535)", _port, _const(623), "623"),
    Key("bmc_user", "bmc", "user", "BMC user", "the IPMI user name (1 to 16 characters)", _bmc_user,
        default_doc="none: must be given with a BMC"),
    Key("bmc_password", "bmc", "password", "BMC password", "the IPMI password (1 to 20 bytes)",
        _bmc_password, secret=True, env=BMC_PASSWORD_ENV),
    Key("bmc_password_file", "bmc", "password_file", "BMC password file",
        "the absolute path of a file whose first line is the IPMI password (1 to 20 bytes)", _abs_path,
        _const(""), "none", asked=False, password_of="bmc_password"),
    Key("bmc_options", "bmc", "options", "BMC fence agent options",
        "fence agent options: lanplus, cipher, privlvl as NAME=VALUE separated by commas", _bmc_options,
        _const("lanplus=1"), "lanplus=1"),
)
BY_FIELD = {k.field: k for k in KEYS}
assert set(BY_FIELD) == {f.name for f in dataclasses.fields(Answers)}


def file_key_of(secret: Key) -> Key:
    """The *_password_file key that holds a secret."""
    return next(k for k in KEYS if k.password_of == secret.field)


# ---------------------------------------------------------------- answer files

def load_answer_files(paths: list[str], allow_passwords: bool = False) -> dict[str, object]:
    """Merge answer files (later wins) into {field: validated value}. A bad
    value, an unknown section or key, or a literal password (unless
    allow_passwords) is an AnswerError naming the file, [section] key and
    what is expected. A *_password_file is read here: its first line is the password."""
    merged: dict[str, object] = {}
    for path in paths:
        try:
            ini = IniFile.load(path, "an answer file")
            merged.update(_load(ini, allow_passwords))
            ini.finish()
        except ConfigError as e:
            raise AnswerError(str(e)) from None
    return merged


def _load(ini: IniFile, allow_passwords: bool) -> dict[str, object]:
    got: dict[str, object] = {}
    for k in KEYS:
        if k.secret:
            raw = ini.raw(k.section, k.key)
            if raw is None:
                continue
            via = file_key_of(k)
            if not allow_passwords:
                raise ini.error(k.section, k.key, f"is refused: no password in an answer file; name a file "
                                f"holding it with [{via.section}] {via.key}, or set ${k.env}")
            if ini.raw(via.section, via.key) is not None:
                raise ini.error(k.section, k.key, f"and [{via.section}] {via.key} are both given; keep one")
            try:
                got[k.field] = k.parse(raw)
            except ValueError:      # the message must not show the password
                raise ini.error(k.section, k.key, f"is invalid; expected {k.expected}") from None
            got[via.field] = ""
        elif k.password_of:
            path = ini.get(k.section, k.key, k.parse, k.expected, default=None)
            if path is None:
                continue
            try:
                got[k.password_of] = read_password_file(path, BY_FIELD[k.password_of])
            except ValueError as e:
                raise ini.error(k.section, k.key, f"= {path!r}: {e}; expected {k.expected}") from None
            got[k.field] = path
        else:
            value = ini.get(k.section, k.key, k.parse, k.expected, default=None)
            if value is not None:
                got[k.field] = value
    return got


def read_password_file(path: str, secret: Key) -> str:
    """The first line of a password file, checked by the secret's rules (ValueError: why, no password)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read it ({e.__class__.__name__})") from None
    if not line:
        raise ValueError("its first line is empty")
    try:
        return secret.parse(line)
    except ValueError:
        raise ValueError("the password in it breaks the rules") from None


def render_answer_file(a: Answers) -> str:
    """An answer file giving every answer of `a` but the passwords (the
    *_password_file keys are kept when set)."""
    sections: dict[str, dict[str, Any]] = {}
    for k in KEYS:
        value = getattr(a, k.field)
        if k.secret or (k.password_of and not value):
            continue
        if k.section == "bmc" and not a.has_bmc and k.field != "bmc_address":
            continue
        if k.field == "bmc_address" and not value:
            value = NO_BMC
        sections.setdefault(k.section, {})[k.key] = value
    via = [f"[{f.section}] {f.key}" for f in KEYS if f.password_of]
    envs = [f"${k.env}" for k in KEYS if k.secret]
    header = ("# hosted-engine --deploy answers (docs/installer.md, \"Answer files\").\n"
              f"# No passwords here: name a file holding each with {' / '.join(via)},\n"
              f"# or set {' / '.join(envs)}.\n")
    return header + render(sections)


def doc_rows() -> list[str]:
    """The answer-file table of docs/installer.md, one row a key."""
    rows = []
    for k in KEYS:
        default = k.default_doc or ("none: a secret" if k.secret else "none: must be given")
        how = "" if k.asked else " (not asked)"
        rows.append(f"| `[{k.section}] {k.key}` | {k.expected} | {default}{how} |")
    return rows
