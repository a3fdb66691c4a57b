"""The one interface through which the agent touches the world: etcd (via
the broker), sanlock, libvirt and the clock. `realenv.RealEnvironment`
talks to the real ones; `simenv.SimHostEnvironment` to the simulator."""
from __future__ import annotations

from typing import Protocol

from .states import Action, Outcome, Snapshot


class Environment(Protocol):
    def observe(self) -> Snapshot:
        """Everything the decision needs, read now (outcomes left empty)."""

    def execute(self, actions: list[Action]) -> tuple[Outcome, ...]:
        """Run actions in order, stopping at the first failure (so a start
        never runs without the claim and a free lease before it)."""

    def publish(self, fields: dict) -> bool:
        """Hand this host's state/score/engine status to the broker."""
