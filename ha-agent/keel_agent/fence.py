"""Fencing the engine's dead host: the one procedure, with its steps passed
in, so that its safety rule is tested on its own: a host's lease is released
ONLY after its BMC confirmed the power-off.

The decision to fence is the rules' (`rules._fence_or_wait`): the host holds
the engine lease, its record is stale, its storage lease stands still, it has
a BMC, and we hold the engine claim (so no other agent fences at the same
time). Each step is logged once and recorded in etcd (`FenceRecord`), so
`hosted-engine --vm-status` and the engine see it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from keel_common.bmc import FAILED, FENCED, FENCING, BmcCredentials, FenceRecord

from .states import ERROR, FENCE_HOST, Outcome

log = logging.getLogger("keel-ha-agent")


@dataclass(frozen=True)
class PowerOff:
    """What the BMC answered to a power-off: confirmed is True only when it
    reported the power state off after the command."""
    confirmed: bool
    detail: str


@dataclass
class FenceSteps:
    """The side effects of a fence, in the order they may happen."""
    generation: Callable[[int], int]                  # the target's sanlock generation now
    bmc: Callable[[int], BmcCredentials]              # the target's BMC; raises when there is none
    power_off: Callable[[BmcCredentials], PowerOff]   # through that BMC, under a hard deadline
    release_lease: Callable[[int], None]              # sanlock direct release_id; raises on failure
    record: Callable[[FenceRecord], None]             # to etcd through the broker
    clock: Callable[[], float]


def fence_host(me: int, target: int, reason: str, steps: FenceSteps) -> Outcome:
    started = steps.clock()
    try:
        generation = steps.generation(target)
    except Exception as e:
        return Outcome(FENCE_HOST, False, ERROR, f"cannot read host {target}'s storage lease: {e}")
    try:
        bmc = steps.bmc(target)
    except Exception as e:
        return Outcome(FENCE_HOST, False, ERROR, f"host {target}'s BMC is unusable: {e}")

    def record(state: str, detail: str) -> None:
        ended = None if state == FENCING else steps.clock()
        try:
            steps.record(FenceRecord(target, me, state, generation, started, ended, detail,
                                     bmc_address=bmc.address, bmc_port=bmc.port))
        except Exception as e:  # the fence goes on: the record is for people and the engine
            log.warning("could not record the fence of host %d (%s): %s", target, state, e)

    log.warning("fencing host %d: %s", target, reason)
    record(FENCING, reason)
    try:
        off = steps.power_off(bmc)
    except Exception as e:
        off = PowerOff(False, f"{e.__class__.__name__}: {e}")
    if not off.confirmed:
        detail = f"power-off not confirmed by the BMC: {off.detail}"
        log.error("fencing host %d failed: %s; its lease is NOT released", target, detail)
        record(FAILED, detail)
        return Outcome(FENCE_HOST, False, ERROR, f"host {target}: {detail}")
    log.warning("host %d is off (confirmed by its BMC: %s); releasing its sanlock host lease", target, off.detail)
    try:
        steps.release_lease(target)
    except Exception as e:
        detail = f"powered off, but its host lease was not released: {e}"
        log.error("fencing host %d: %s", target, detail)
        record(FAILED, detail)
        return Outcome(FENCE_HOST, False, ERROR, f"host {target}: {detail}")
    log.warning("host %d fenced: power off confirmed, host lease released", target)
    record(FENCED, "power off confirmed by the BMC; host lease released")
    return Outcome(FENCE_HOST, True, detail=f"host {target}")
