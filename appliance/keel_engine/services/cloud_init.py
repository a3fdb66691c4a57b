"""cloud-init configuration (oVirt's `initialization`) and the NoCloud seed
documents made from it: pure functions, no database, no files.

A seed holds `meta-data` (instance-id: the VM's id, local-hostname),
`user-data` (#cloud-config: host name, users and passwords, SSH keys, time
zone, DNS, then the configuration's own cloud-config merged in) and, when
there is something to say, `network-config` (version 1)."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, fields, replace

import yaml

from ..errors import bad_request

BOOT_PROTOCOLS = ("none", "dhcp", "static")
HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
TIMEZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]{0,30}(/[A-Za-z0-9_+\-]{1,30}){0,2}")
NIC_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,15}")
KEY_TYPE = re.compile(r"(ssh-[a-z0-9]+|ecdsa-sha2-[a-z0-9]+|sk-[A-Za-z0-9@._\-]+)")
KEY_DATA = re.compile(r"[A-Za-z0-9+/]+={0,3}")
# what cloud-init takes as a password hash (chpasswd type: hash)
PASSWORD_HASH = re.compile(r"\$(1|2a|2y|5|6)(\$[^$:\n]+){2}")


@dataclass(frozen=True)
class NicConfiguration:
    """One guest interface as cloud-init sets it up (oVirt's nic_configuration):
    `name` is the interface's name in the guest (eth0), not the vNIC's."""
    name: str | None = None
    boot_protocol: str | None = None   # none, dhcp, static; None: static with an address, else dhcp
    address: str | None = None
    netmask: str | None = None         # dotted (255.255.255.0) or a prefix length (24)
    gateway: str | None = None
    on_boot: bool = True


@dataclass(frozen=True)
class Initialization:
    """oVirt's Initialization for cloud-init. None: not given (an update
    leaves the stored value), "": cleared."""
    host_name: str | None = None
    user_name: str | None = None
    root_password: str | None = None
    authorized_ssh_keys: str | None = None
    custom_script: str | None = None
    dns_servers: str | None = None
    dns_search: str | None = None
    timezone: str | None = None
    nic_configurations: tuple[NicConfiguration, ...] | None = None

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def merged(self, change: "Initialization") -> "Initialization":
        """This configuration with the fields `change` gives (oVirt's update)."""
        return replace(self, **{f.name: getattr(change, f.name) for f in fields(change)
                                if getattr(change, f.name) is not None})


# ---- to and from plain data (the database row, the run-once token) -------------
TEXT_FIELDS = ("host_name", "user_name", "root_password", "authorized_ssh_keys", "custom_script",
               "dns_servers", "dns_search", "timezone")


def to_dict(init: Initialization) -> dict:
    out = {k: getattr(init, k) or "" for k in TEXT_FIELDS}
    out["nic_configurations"] = [asdict(replace(n, boot_protocol=boot_protocol(n)))
                                 for n in init.nic_configurations or ()]
    return out


def from_dict(d) -> Initialization:
    """From to_dict's output, or a row with the same names."""
    get = d.get if isinstance(d, dict) else (lambda k: getattr(d, k, None))
    nics = tuple(NicConfiguration(**{k: n.get(k) for k in ("name", "boot_protocol", "address", "netmask",
                                                              "gateway")}, on_boot=n.get("on_boot", True) is not False)
                 for n in get("nic_configurations") or ())
    return Initialization(**{k: get(k) or "" for k in TEXT_FIELDS}, nic_configurations=nics)


# ---- checks ------------------------------------------------------------------------
def check(init: Initialization, where: str = "initialization") -> None:
    """A 400 naming the first field (under `where`) a seed could not be made
    from. Values are not quoted: some of them are secrets."""
    if init.host_name:
        name = init.host_name.rstrip(".")
        if len(name) > 253 or not all(HOST_LABEL.fullmatch(p) for p in name.split(".")):
            raise bad_request(f"{where}.host_name: a host name (letters, digits and '-' in labels of at most "
                              "63 characters, joined by dots)")
    if init.user_name and not USER_NAME.fullmatch(init.user_name):
        raise bad_request(f"{where}.user_name: a user name of the guest (lower-case letters, digits, '_', '-'; "
                          "at most 32 characters, not starting with a digit or '-')")
    if init.root_password and ("\n" in init.root_password or "\r" in init.root_password):
        raise bad_request(f"{where}.root_password: one line")
    for i, line in enumerate(_key_lines(init.authorized_ssh_keys), 1):
        if not _is_public_key(line):
            raise bad_request(f"{where}.authorized_ssh_keys: line {i} is not an OpenSSH public key "
                              "(type, base64 key, optional comment)")
    for value in _words(init.dns_servers):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise bad_request(f"{where}.dns_servers: IP addresses separated by spaces") from None
    for value in _words(init.dns_search):
        if len(value) > 253 or not all(HOST_LABEL.fullmatch(p) for p in value.rstrip(".").split(".")):
            raise bad_request(f"{where}.dns_search: domain names separated by spaces")
    if init.timezone and not TIMEZONE.fullmatch(init.timezone):
        raise bad_request(f"{where}.timezone: a time zone of the tz database, e.g. Europe/Prague or UTC")
    _check_nics(init.nic_configurations or (), f"{where}.nic_configurations.nic_configuration")
    custom_config(init.custom_script, f"{where}.custom_script")


def _check_nics(nics, where):
    seen = set()
    for nic in nics:
        if not nic.name or not NIC_NAME.fullmatch(nic.name):
            raise bad_request(f"{where}.name: the interface's name in the guest (e.g. eth0), at most 15 "
                              "letters, digits, '_', '.', ':', '-'")
        if nic.name in seen:
            raise bad_request(f"{where}.name: interface {nic.name} is configured twice")
        seen.add(nic.name)
        protocol = boot_protocol(nic)
        if protocol not in BOOT_PROTOCOLS:
            raise bad_request(f"{where}.boot_protocol: expected one of {', '.join(BOOT_PROTOCOLS)}")
        if protocol != "static":
            if nic.address or nic.netmask or nic.gateway:
                raise bad_request(f"{where}.ip: an address is set only with boot_protocol static")
            continue
        if not nic.address or not nic.netmask:
            raise bad_request(f"{where}.ip: boot_protocol static needs ip.address and ip.netmask")
        for key in ("address", "gateway"):
            value = getattr(nic, key)
            if value:
                try:
                    ipaddress.IPv4Address(value)
                except ValueError:
                    raise bad_request(f"{where}.ip.{key}: an IPv4 address") from None
        try:
            netmask(nic.netmask)
        except ValueError:
            raise bad_request(f"{where}.ip.netmask: a netmask (255.255.255.0) or a prefix length (24)") from None


def boot_protocol(nic: NicConfiguration) -> str:
    return nic.boot_protocol or ("static" if nic.address else "dhcp")


def netmask(value: str) -> str:
    """Dotted netmask of '255.255.255.0' or '24' (ValueError otherwise)."""
    value = value.strip()
    if value.isdigit():
        return str(ipaddress.IPv4Network(f"0.0.0.0/{int(value)}").netmask)
    return str(ipaddress.IPv4Network(f"0.0.0.0/{value}").netmask)


def _words(text):
    return [w for w in re.split(r"[\s,]+", text or "") if w]


def _key_lines(text):
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _is_public_key(line):
    words = line.split()
    for i, word in enumerate(words[:-1]):
        if KEY_TYPE.fullmatch(word) and KEY_DATA.fullmatch(words[i + 1]):
            return True
    return False


def custom_config(text, where="initialization.custom_script") -> dict:
    """The custom script as a cloud-config mapping ({} for none); a 400
    unless it is one. The error says where, never what (it may hold secrets)."""
    if not text or not text.strip():
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise bad_request(f"{where}: not valid YAML{at}; cloud-config is expected") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise bad_request(f"{where}: cloud-config is a YAML mapping (e.g. 'runcmd: [...]'); "
                          "scripts and other user-data formats are not supported")
    return doc


# ---- which configuration a start gives --------------------------------------------
def for_start(use_cloud_init: bool, run_once: Initialization | None, stored: Initialization | None,
              ever_started: bool) -> tuple[str, Initialization] | None:
    """(how, configuration) for a start, or None for a start without a seed.

    use_cloud_init (oVirt's run-once): the start's own configuration if it
    has one (not stored), else the VM's. Without it, oVirt's rule: a VM
    that has a stored configuration and has never run is initialized on its
    first run."""
    if use_cloud_init:
        if run_once is not None and not run_once.is_empty():
            return "run_once", run_once
        if stored is not None and not stored.is_empty():
            return "stored", stored
        return None
    if stored is not None and not stored.is_empty() and not ever_started:
        return "stored", stored
    return None


# ---- the seed's documents -----------------------------------------------------------
def meta_data(vm_id: str, vm_name: str, init: Initialization) -> str:
    return _yaml({"instance-id": vm_id, "local-hostname": init.host_name or vm_name})


def user_data(init: Initialization, password_hash: str | None = None) -> str:
    """#cloud-config. `password_hash`: the root_password as a crypt(3) hash,
    written instead of the password itself."""
    doc: dict = {}
    if init.host_name:
        name = init.host_name.rstrip(".")
        doc["hostname"] = name.split(".")[0]
        if "." in name:
            doc["fqdn"] = name
    user = init.user_name or "root"
    keys = _key_lines(init.authorized_ssh_keys)
    if user == "root":
        doc["disable_root"] = False
        if keys:
            doc["ssh_authorized_keys"] = keys     # cloud-init gives them to root too with disable_root false
    else:
        entry = {"name": user, "shell": "/bin/bash"}
        if init.root_password:
            entry["lock_passwd"] = False
        if keys:
            entry["ssh_authorized_keys"] = keys
        doc["users"] = ["default", entry]
    if init.root_password:
        hashed = password_hash is not None
        if hashed and not PASSWORD_HASH.fullmatch(password_hash):
            raise ValueError("not a crypt(3) password hash")
        doc["ssh_pwauth"] = True
        doc["chpasswd"] = {"expire": False, "users": [
            {"name": user, "password": password_hash if hashed else init.root_password,
             "type": "hash" if hashed else "text"}]}
    if init.timezone:
        doc["timezone"] = init.timezone
    servers, search = _words(init.dns_servers), _words(init.dns_search)
    if servers or search:
        doc["manage_resolv_conf"] = True
        doc["resolv_conf"] = {k: v for k, v in (("nameservers", servers), ("searchdomains", search)) if v}
    return "#cloud-config\n" + _yaml(merge(doc, custom_config(init.custom_script)))


def merge(generated: dict, custom: dict) -> dict:
    """The custom cloud-config over the generated one: a list both have is
    the generated items then the custom ones (runcmd, users, write_files);
    a mapping both have is merged the same way; any other value is the
    custom one."""
    out = dict(generated)
    for key, value in custom.items():
        mine = out.get(key)
        if isinstance(mine, list) and isinstance(value, list):
            out[key] = mine + value
        elif isinstance(mine, dict) and isinstance(value, dict):
            out[key] = merge(mine, value)
        else:
            out[key] = value
    return out


def network_config(init: Initialization) -> str | None:
    """version 1, or None when the configuration says nothing about the
    network (cloud-init then keeps the guest's own)."""
    config = []
    for nic in init.nic_configurations or ():
        protocol = boot_protocol(nic)
        entry: dict = {"type": "physical", "name": nic.name}
        if protocol == "static":
            subnet = {"type": "static", "address": nic.address, "netmask": netmask(nic.netmask)}
            if nic.gateway:
                subnet["gateway"] = nic.gateway
        elif protocol == "dhcp":
            subnet = {"type": "dhcp"}
        else:
            subnet = None
        if subnet is not None:
            if not nic.on_boot:
                subnet["control"] = "manual"
            entry["subnets"] = [subnet]
        config.append(entry)
    servers, search = _words(init.dns_servers), _words(init.dns_search)
    if servers or search:
        config.append({"type": "nameserver", **({"address": servers} if servers else {}),
                       **({"search": search} if search else {})})
    if not config:
        return None
    return _yaml({"version": 1, "config": config})


def seed_files(vm_id: str, vm_name: str, init: Initialization, password_hash: str | None = None) -> dict:
    """{file name: text} of the NoCloud seed."""
    files = {"meta-data": meta_data(vm_id, vm_name, init), "user-data": user_data(init, password_hash)}
    net = network_config(init)
    if net is not None:
        files["network-config"] = net
    return files


class _Dumper(yaml.SafeDumper):
    """Seeds as people write them: a list of plain values on one line
    ([sh, -c, ...]), text of several lines as a literal block (|), no line
    folding (a long SSH key stays one line)."""


def _text(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


def _list(dumper, data):
    flat = bool(data) and not any(isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(str, _text)
_Dumper.add_representer(list, _list)


def _yaml(doc) -> str:
    return yaml.dump(doc, Dumper=_Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True,
                     width=2 ** 16)
