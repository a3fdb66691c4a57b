"""The etcd key layout and the host-record schema: the one contract between
brokers, agents, the CLI and the engine.

    <prefix>/hosts/<host_id>            host record (JSON), bound to the host's etcd lease
    <prefix>/engine/owner               the engine claim (JSON), bound to the owner's etcd lease
    <prefix>/maintenance/global         "1" while global maintenance is on (no lease)
    <prefix>/shared-config/<key>        cluster-wide settings (`--set-shared-config`)
    <prefix>/shared-config-version      bumped on every shared-config change
    <prefix>/bmc/<host_id>              the host's BMC (JSON, password encrypted; `keel_common.bmc`)
    <prefix>/fencing/<host_id>          an agent fencing that host now, bound to the agent's etcd lease
    <prefix>/fences/<host_id>           the last fence of that host by an agent (JSON, no lease)
    <prefix>/host-ids/<host_id>         the host name holding that sanlock host id (the installer's, no lease)

Local maintenance is a host's own business: its broker keeps it in a file
under [host] state_dir (so it survives restarts) and publishes it in the
host's record (`maintenance`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

ENGINE_VM_STATES = ("up", "down", "unknown")
ENGINE_HEALTH = ("good", "bad", "unknown")
GLOBAL_MAINTENANCE_ON = "1"     # the value of <prefix>/maintenance/global while it is on


def global_maintenance_on(raw: bytes | None) -> bool:
    """The global maintenance key's value, as etcd returns it (None: no key)."""
    return raw == GLOBAL_MAINTENANCE_ON.encode()


class Keys:
    def __init__(self, prefix: str = "/keel"):
        self.prefix = prefix.rstrip("/")

    def host(self, host_id: int) -> str:
        return f"{self.prefix}/hosts/{int(host_id)}"

    @property
    def hosts_prefix(self) -> str:
        return f"{self.prefix}/hosts/"

    @property
    def engine_owner(self) -> str:
        return f"{self.prefix}/engine/owner"

    @property
    def global_maintenance(self) -> str:
        return f"{self.prefix}/maintenance/global"

    def shared_config(self, key: str) -> str:
        return f"{self.prefix}/shared-config/{key}"

    @property
    def shared_config_prefix(self) -> str:
        return f"{self.prefix}/shared-config/"

    @property
    def shared_config_version(self) -> str:
        return f"{self.prefix}/shared-config-version"

    def bmc(self, host_id: int) -> str:
        return f"{self.prefix}/bmc/{int(host_id)}"

    @property
    def bmc_prefix(self) -> str:
        return f"{self.prefix}/bmc/"

    def fencing(self, host_id: int) -> str:
        return f"{self.prefix}/fencing/{int(host_id)}"

    def fence(self, host_id: int) -> str:
        return f"{self.prefix}/fences/{int(host_id)}"

    @property
    def fences_prefix(self) -> str:
        return f"{self.prefix}/fences/"

    def host_id_claim(self, host_id: int) -> str:
        return f"{self.prefix}/host-ids/{int(host_id)}"

    @property
    def host_ids_prefix(self) -> str:
        return f"{self.prefix}/host-ids/"


@dataclass
class EngineStatus:
    """The engine as seen from one host, in oVirt's vocabulary."""
    vm: str = "unknown"        # up / down / unknown
    health: str = "unknown"    # good / bad / unknown
    detail: str = "unknown"    # e.g. Up, Down, Powering up, Paused
    reason: str = ""           # why bad/down, for humans

    @classmethod
    def from_dict(cls, d: dict | None) -> "EngineStatus":
        d = d or {}
        return cls(vm=str(d.get("vm", "unknown")), health=str(d.get("health", "unknown")),
                   detail=str(d.get("detail", "unknown")), reason=str(d.get("reason", "")))


@dataclass
class HostRecord:
    """One host's published metadata, rewritten every cycle by its broker."""
    host_id: int
    hostname: str
    timestamp: float            # wall clock of the publishing broker (unix seconds)
    score: float = 0.0
    state: str = "AgentStarting"
    engine: EngineStatus = field(default_factory=EngineStatus)
    maintenance: bool = False   # local maintenance
    stopped: bool = False       # agent not running / not taking part
    config_version: int = 1
    address: str = ""
    lockspace_held: bool = False  # this host holds its sanlock host-id lease
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "HostRecord":
        d = json.loads(text)
        return cls(host_id=int(d["host_id"]), hostname=str(d.get("hostname", "")),
                   timestamp=float(d.get("timestamp", 0.0)), score=float(d.get("score", 0)),
                   state=str(d.get("state", "")), engine=EngineStatus.from_dict(d.get("engine")),
                   maintenance=bool(d.get("maintenance", False)), stopped=bool(d.get("stopped", False)),
                   config_version=int(d.get("config_version", 1)), address=str(d.get("address", "")),
                   lockspace_held=bool(d.get("lockspace_held", False)),
                   extra=dict(d.get("extra") or {}))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EngineClaim:
    """Who may run the engine VM. Written by compare-and-swap, bound to the
    owner's etcd lease: if the owner stops renewing, the claim vanishes."""
    host_id: int
    hostname: str
    since: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "EngineClaim":
        d = json.loads(text)
        return cls(host_id=int(d["host_id"]), hostname=str(d.get("hostname", "")),
                   since=float(d.get("since", 0.0)))
