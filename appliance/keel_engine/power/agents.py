"""Fence agent specs: how to reach one BMC, validated once, password kept out of reprs."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

SUPPORTED_TYPES = ("ipmilan",)
# pyghmi negotiates RMCP+ with cipher suite 3 (RAKP-HMAC-SHA1, AES-128) and
# falls back to IPMI 1.5 on its own; it cannot be told to use another suite.
SUPPORTED_CIPHERS = (3,)
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
PRIVILEGES = {"operator": 3, "administrator": 4, "admin": 4}


class AgentConfigError(ValueError):
    """A fence agent's configuration is unusable (a one-line, user-facing message)."""


@dataclass(frozen=True)
class FenceAgentSpec:
    address: str
    username: str
    password: str = field(repr=False)
    port: int = 623
    type: str = "ipmilan"
    order: int = 1
    options: dict = field(default_factory=dict)
    id: str | None = None

    @property
    def label(self) -> str:
        """How events and logs name this agent (never with credentials)."""
        return f"{self.type}:{self.username}@{self.address}:{self.port}"

    @property
    def privlevel(self) -> int | None:
        return PRIVILEGES.get(str(self.options.get("privlvl", "")).lower())


def parse_options(options) -> dict:
    """oVirt writes options as 'lanplus=1,cipher=3'; accept that or a mapping."""
    if options is None or options == "":
        return {}
    if isinstance(options, dict):
        items = options.items()
    elif isinstance(options, str):
        items = []
        for part in options.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            items.append((key.strip(), value.strip() if sep else "1"))
    elif isinstance(options, (list, tuple)):
        items = []
        for opt in options:
            if isinstance(opt, dict) and "name" in opt:
                items.append((opt["name"], opt.get("value", "1")))
            else:
                raise AgentConfigError(f"fence agent option {opt!r} must be name=value")
    else:
        raise AgentConfigError("fence agent options must be 'name=value,...' or a mapping")
    out = {}
    for key, value in items:
        key = str(key).strip().lower()
        value = "" if value is None else str(value).strip()
        if key == "cipher":
            if not value.isdigit() or int(value) not in SUPPORTED_CIPHERS:
                raise AgentConfigError(f"fence agent option cipher={value}: only cipher suite "
                                       f"{'/'.join(map(str, SUPPORTED_CIPHERS))} is supported")
            out[key] = int(value)
        elif key == "lanplus":
            if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise AgentConfigError(f"fence agent option lanplus={value}: expected 1 or 0")
            out[key] = value.lower() in ("1", "true", "yes", "on")
        elif key == "privlvl":
            if value.lower() not in PRIVILEGES:
                raise AgentConfigError(f"fence agent option privlvl={value}: expected operator or administrator")
            out[key] = value.lower()
        else:
            raise AgentConfigError(f"unknown fence agent option {key!r} (known: lanplus, cipher, privlvl)")
    return out


def make_spec(address, username, password, port=623, type="ipmilan", order=1,
              options=None, id=None) -> FenceAgentSpec:
    """Build a validated spec; raises AgentConfigError with a one-line reason."""
    if type not in SUPPORTED_TYPES:
        raise AgentConfigError(f"fence agent type {type!r} is not supported (supported: ipmilan)")
    address = (address or "").strip()
    if not address:
        raise AgentConfigError("fence agent address is empty")
    if not _HOSTNAME.match(address):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise AgentConfigError(f"fence agent address {address!r} is not an IP address or host name") from None
    try:
        port = int(port if port not in (None, "") else 623)
    except (TypeError, ValueError):
        raise AgentConfigError(f"fence agent port {port!r} is not a number") from None
    if not 0 < port < 65536:
        raise AgentConfigError(f"fence agent port {port} is out of range 1-65535")
    if not username:
        raise AgentConfigError("fence agent user name is empty")
    if password is None:
        raise AgentConfigError("fence agent password is missing")
    if len(str(password).encode()) > 20:
        raise AgentConfigError("fence agent password is longer than 20 bytes (IPMI limit)")
    try:
        order = int(order if order not in (None, "") else 1)
    except (TypeError, ValueError):
        raise AgentConfigError(f"fence agent order {order!r} is not a number") from None
    return FenceAgentSpec(address=address, username=str(username), password=str(password),
                          port=port, type=type, order=order, options=parse_options(options),
                          id=None if id is None else str(id))


def spec_from_record(rec) -> FenceAgentSpec:
    """Accept the engine's plain spec (a mapping or an object with attributes)."""
    get = rec.get if isinstance(rec, dict) else (lambda k, d=None: getattr(rec, k, d))
    return make_spec(address=get("address"), username=get("username") or get("user"),
                     password=get("password"), port=get("port", 623),
                     type=get("type", "ipmilan") or "ipmilan", order=get("order", 1),
                     options=get("options"), id=get("id"))


def ordered(specs) -> list[FenceAgentSpec]:
    return sorted(specs, key=lambda s: (s.order, s.id or ""))
