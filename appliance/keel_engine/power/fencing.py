"""Fence a host through its agents, in order, with retries and an event per step.

Rules (as oVirt and Pacemaker users expect them):
- agents are tried in their configured order; the first that succeeds wins;
- wrong credentials are a configuration error: reported once, never retried
  (retrying could lock the BMC account), and the next agent is tried;
- an unreachable, timed-out or erroring BMC is retried with exponential
  back-off, then the next agent is tried;
- 'off' succeeds only when the BMC confirms the power is off; a BMC that
  accepts 'off' but keeps reporting 'on' is a failed fence.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from keel_common import ipmi
from .agents import FenceAgentSpec, ordered

log = logging.getLogger(__name__)

ACTIONS = ("status", "on", "off", "restart")
# emit(severity, message): severity is 'normal', 'warning' or 'error' (oVirt's levels)
Emit = Callable[[str, str], None]


@dataclass(frozen=True)
class FenceAttempt:
    agent: str
    result: ipmi.IpmiResult


@dataclass
class FenceOutcome:
    action: str
    ok: bool
    power: str | None = None
    agent: str | None = None          # label of the agent that succeeded
    message: str = ""
    attempts: list[FenceAttempt] = field(default_factory=list)

    @property
    def confirmed_off(self) -> bool:
        return self.ok and self.action == "off" and self.power == "off"

    @property
    def config_errors(self) -> list[FenceAttempt]:
        return [a for a in self.attempts if a.result.kind == ipmi.AUTH]


def fence_through_agents(agents: list[FenceAgentSpec], action: str, *, host: str = "host",
                         retries: int = 2, backoff: float = 1.0, deadline: float | None = None,
                         emit: Emit | None = None,
                         run: Callable[..., ipmi.IpmiResult] = ipmi.run_operation,
                         sleep: Callable[[float], None] = time.sleep) -> FenceOutcome:
    """Run ``action`` on the host's BMCs; see the module docstring for the rules."""
    if action not in ACTIONS:
        raise ValueError(f"unknown fence action {action!r} (expected one of {', '.join(ACTIONS)})")
    emit = emit or (lambda severity, message: None)
    outcome = FenceOutcome(action=action, ok=False)
    agents = ordered(agents)
    if not agents:
        outcome.message = f"host {host} has no fence agents configured"
        return outcome
    for spec in agents:
        for attempt in range(retries + 1):
            result = run(spec, action, deadline)
            outcome.attempts.append(FenceAttempt(spec.label, result))
            if result.ok:
                outcome.ok, outcome.power, outcome.agent = True, result.power, spec.label
                outcome.message = f"{action} on host {host} through {spec.label}: {result.message}"
                log.info("%s", outcome.message)
                return outcome
            outcome.power = result.power or outcome.power
            if result.kind == ipmi.AUTH:
                emit("error", f"Fence agent {spec.label} of host {host} rejected the credentials "
                              f"({result.message}): configuration error, not retried")
                break
            if result.kind == ipmi.NOT_CONFIRMED:
                emit("error", f"Fence agent {spec.label} of host {host}: {result.message}")
                break
            if attempt < retries:
                delay = backoff * (2 ** attempt)
                emit("warning", f"Fence agent {spec.label} of host {host}: {action} attempt "
                                f"{attempt + 1} failed ({result.kind}: {result.message}); "
                                f"retrying in {delay:g} s")
                sleep(delay)
            else:
                emit("warning", f"Fence agent {spec.label} of host {host}: {action} failed "
                                f"{retries + 1} times ({result.kind}: {result.message}); giving up on this agent")
    outcome.message = (f"{action} on host {host} failed through all {len(agents)} fence agent(s): "
                       + "; ".join(f"{a.agent}: {a.result.kind}" for a in outcome.attempts))
    log.warning("%s", outcome.message)
    return outcome
