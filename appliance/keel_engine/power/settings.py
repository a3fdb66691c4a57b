"""Power-management settings: the [power] section of the engine's config
file (read by keel_engine.config, like every other section)."""

from __future__ import annotations

from dataclasses import dataclass


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
    # their own lease in it ('' = VMs hold no lease; see services/vm_leases.py)
    vm_lease_lockspace: str = ""

    def deadline(self, op: str) -> float:
        return {"off": self.off_deadline, "on": self.on_deadline,
                "restart": self.off_deadline + self.on_deadline}.get(op, self.status_deadline)

    def problem(self) -> tuple[str, str] | None:
        """(key, what is wrong) for a rule that spans keys, or None."""
        if not 0 < self.max_unresponsive_share <= 1:
            return "max_unresponsive_share", "must be above 0 and at most 1"
        if self.vm_lease_lockspace and not self.lockspace_path:
            return "vm_lease_lockspace", ("needs lockspace_path (the file of that lockspace, to tell "
                                          "when a failed host's leases expire)")
        if len(self.vm_lease_lockspace.encode()) > 48 or ":" in self.vm_lease_lockspace:
            return "vm_lease_lockspace", "must be a sanlock lockspace name (at most 48 bytes, no ':')"
        for key in ("status_deadline", "off_deadline", "on_deadline", "recheck_interval"):
            if getattr(self, key) <= 0:
                return key, "must be above 0"
        return None
