"""Hosts' BMCs as every HA agent knows them, and the record of a fence.

When the engine's own host dies, the engine is not there to fence it: the
HA agents do. So every host's BMC (IPMI over LAN) is stored where every
agent can read it, in etcd (`Keys.bmc`), with the password encrypted by the
cluster key: a Fernet key in a file that every host holds and etcd never
sees (`[host] cluster_key_file`). `hosted-engine --set-bmc` writes a record;
`--vm-status` shows it without the password.

A fence by an agent leaves a `FenceRecord` (`Keys.fence`, no etcd lease, so
it outlives the fencing host): who fenced which host, when, which sanlock
generation of the dead host it released, and how it ended.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field

from cryptography.fernet import Fernet, InvalidToken

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
PRIVILEGES = {"operator": 3, "administrator": 4}
FENCING, FENCED, FAILED = "fencing", "fenced", "failed"


class BmcError(ValueError):
    """A BMC setting is unusable (one line for the user)."""


class ClusterKeyError(BmcError):
    """The cluster key is missing, unreadable, or not the one that encrypted a password."""


def check_address(address: str) -> str:
    address = (address or "").strip()
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if len(address) > 253 or not _HOSTNAME.match(address):
        raise BmcError(f"BMC address {address!r} is neither an IP address nor a host name")
    return address


def label(username: str, address: str, port: int) -> str:
    """How logs and `--vm-status` name a BMC (never with its password)."""
    return f"ipmilan:{username}@{address}:{port}"


@dataclass(frozen=True)
class BmcRecord:
    """One host's BMC; `password_token` is the password encrypted with the cluster key."""
    host_id: int
    address: str
    username: str
    password_token: str = field(repr=False)
    port: int = 623
    privilege: str = "administrator"

    def __post_init__(self):
        check_address(self.address)
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise BmcError(f"BMC port {self.port!r} is not a port number (1-65535)")
        if not self.username or len(self.username) > 16:
            raise BmcError("the BMC user name must be 1 to 16 characters (IPMI's limit)")
        if self.privilege not in PRIVILEGES:
            raise BmcError(f"BMC privilege {self.privilege!r}: expected one of {', '.join(PRIVILEGES)}")

    @property
    def label(self) -> str:
        return label(self.username, self.address, self.port)

    def public(self) -> dict:
        """What `--vm-status` and the broker's status show: never the password."""
        return {"address": self.address, "port": self.port, "username": self.username,
                "privilege": self.privilege}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "BmcRecord":
        d = json.loads(raw)
        return cls(host_id=int(d["host_id"]), address=str(d["address"]), username=str(d["username"]),
                   password_token=str(d["password_token"]), port=int(d.get("port", 623)),
                   privilege=str(d.get("privilege", "administrator")))


@dataclass(frozen=True)
class BmcCredentials:
    """A BMC record with its password decrypted: what `keel_common.ipmi` needs."""
    address: str
    port: int
    username: str
    password: str = field(repr=False)
    privilege: str = "administrator"

    @property
    def label(self) -> str:
        return label(self.username, self.address, self.port)

    @property
    def privlevel(self) -> int | None:
        return PRIVILEGES.get(self.privilege)


class ClusterKey:
    """The hosts' shared secret for BMC passwords (a Fernet key in a file)."""

    def __init__(self, path: str):
        self.path = path

    @staticmethod
    def create(path: str) -> "ClusterKey":
        """Write a new key (mode 0600); an existing key is kept."""
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key() + b"\n")
            os.replace(path + ".tmp", path)
        return ClusterKey(path)

    def _fernet(self) -> Fernet:
        try:
            with open(self.path, "rb") as f:
                return Fernet(f.read().strip())
        except FileNotFoundError:
            raise ClusterKeyError(f"the cluster key {self.path} is missing: copy it from another host "
                           "(it is written at deploy)") from None
        except (OSError, ValueError) as e:
            raise ClusterKeyError(f"the cluster key {self.path} is unusable: {e}") from None

    def encrypt(self, password: str) -> str:
        return self._fernet().encrypt(password.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet().decrypt(token.encode()).decode()
        except InvalidToken:
            raise ClusterKeyError(f"a BMC password in etcd does not decrypt with {self.path}: the hosts "
                           "hold different cluster keys") from None

    def credentials(self, rec: BmcRecord) -> BmcCredentials:
        return BmcCredentials(rec.address, rec.port, rec.username, self.decrypt(rec.password_token),
                              rec.privilege)


@dataclass(frozen=True)
class FenceRecord:
    """An agent's fence of a host (the engine's host, dead with the engine)."""
    host_id: int               # the fenced host
    by: int                    # the host whose agent fenced it
    state: str                 # fencing / fenced / failed
    generation: int            # the fenced host's sanlock host-id generation at the fence
    started: float
    ended: float | None = None
    detail: str = ""
    # The BMC that confirmed the power-off: how the engine knows which of its
    # hosts this was (the same BMC is that host's fence agent there).
    bmc_address: str = ""
    bmc_port: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "FenceRecord":
        d = json.loads(raw)
        if d.get("state") not in (FENCING, FENCED, FAILED):
            raise ValueError(f"unknown fence state {d.get('state')!r}")
        return cls(host_id=int(d["host_id"]), by=int(d["by"]), state=str(d["state"]),
                   generation=int(d.get("generation", 0)), started=float(d["started"]),
                   ended=None if d.get("ended") is None else float(d["ended"]),
                   detail=str(d.get("detail", "")), bmc_address=str(d.get("bmc_address", "")),
                   bmc_port=int(d.get("bmc_port", 0)))
