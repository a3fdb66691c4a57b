"""Power-management settings: the [power] section of /etc/keel/power.conf.

A file of its own (path in KEEL_POWER_CONFIG) because the engine's config
loader rejects sections it does not know.

Every key has a default, so a missing section is valid; a bad value raises
PowerConfigError with a one-line message naming the key and what was expected.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, fields


class PowerConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PowerSettings:
    fencing_enabled: bool = True
    grace_period: float = 30.0            # s a host stays non_responsive before fencing
    max_unresponsive_share: float = 0.5   # above this share of a cluster: skip fencing
    fence_retries: int = 2                # extra attempts per agent when unreachable
    fence_backoff: float = 2.0            # s before the first retry, doubling
    status_deadline: float = 15.0         # s, hard deadline of one status call
    off_deadline: float = 30.0            # s, hard deadline of off + confirmation
    on_deadline: float = 30.0
    recheck_interval: float = 5.0         # s between passes over a failed host
    refence_interval: float = 60.0        # s before a failed fence is tried again
    boot_grace: float = 600.0             # s a host powered on by the engine may take to answer
    # the hosts' sanlock lockspace file on shared storage ('' = not watched):
    # liveness of a cut-off host, and lease expiry without a BMC
    lockspace_path: str = ""
    # the sanlock lockspace (its name) the hosts join in that file: HA VMs hold
    # their own lease in it ('' = VMs hold no lease; see power/vm_leases.py)
    vm_lease_lockspace: str = ""

    def deadline(self, op: str) -> float:
        return {"off": self.off_deadline, "on": self.on_deadline,
                "restart": self.off_deadline + self.on_deadline}.get(op, self.status_deadline)


def _bool(v: str) -> bool:
    low = v.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError


def settings_from_mapping(values: dict, source: str = "[power]") -> PowerSettings:
    known = {f.name: f for f in fields(PowerSettings)}
    kwargs = {}
    for key, raw in values.items():
        if key not in known:
            raise PowerConfigError(f"{source}: unknown key {key!r} (known: {', '.join(known)})")
        kind = known[key].type
        try:
            if kind == "str":
                value = str(raw).strip()
            elif kind == "bool":
                value = _bool(str(raw))
            elif kind == "int":
                value = int(raw)
                if value < 0:
                    raise ValueError
            else:
                value = float(raw)
                if value < 0:
                    raise ValueError
        except (TypeError, ValueError):
            expected = {"bool": "true or false", "int": "a whole number >= 0"}.get(kind, "a number >= 0")
            raise PowerConfigError(f"{source}: {key} = {raw!r}: expected {expected}") from None
        kwargs[key] = value
    settings = PowerSettings(**kwargs)
    if not 0 < settings.max_unresponsive_share <= 1:
        raise PowerConfigError(f"{source}: max_unresponsive_share must be above 0 and at most 1")
    if settings.vm_lease_lockspace and not settings.lockspace_path:
        raise PowerConfigError(f"{source}: vm_lease_lockspace needs lockspace_path (the file of that "
                               "lockspace, to tell when a failed host's leases expire)")
    if len(settings.vm_lease_lockspace.encode()) > 48 or ":" in settings.vm_lease_lockspace:
        raise PowerConfigError(f"{source}: vm_lease_lockspace must be a sanlock lockspace name "
                               "(at most 48 bytes, no ':')")
    for key in ("status_deadline", "off_deadline", "on_deadline", "recheck_interval"):
        if getattr(settings, key) <= 0:
            raise PowerConfigError(f"{source}: {key} must be above 0")
    return settings


DEFAULT_PATH = "/etc/keel/power.conf"


def load(path: str | None = None) -> PowerSettings:
    """Read [power]; a missing default file means all defaults, a missing explicit one is an error."""
    explicit = path is not None or bool(os.environ.get("KEEL_POWER_CONFIG"))
    path = path or os.environ.get("KEEL_POWER_CONFIG") or DEFAULT_PATH
    if not os.path.exists(path):
        if explicit:
            raise PowerConfigError(f"{path}: no such power config file")
        return PowerSettings()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise PowerConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    extra = [sec for sec in parser.sections() if sec != "power"]
    if extra:
        raise PowerConfigError(f"{path}: unknown section [{extra[0]}] (expected [power])")
    if not parser.has_section("power"):
        return PowerSettings()
    return settings_from_mapping(dict(parser.items("power")), f"{path} [power]")
