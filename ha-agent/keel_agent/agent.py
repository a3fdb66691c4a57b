"""One agent: observe, decide, act, publish — the imperative shell around
the pure `decide`. Shared by the daemon and the simulator so that the
scenarios run exactly the logic that runs on hosts."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from .decide import decide
from .env import Environment
from .states import LOST, Decision, Memory, Outcome

LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Agent:
    def __init__(self, env: Environment, constants: dict,
                 emit: Callable[[str, str], None]):
        self.env = env
        self.k = constants
        self.emit = emit              # (level, message): logger or scenario log
        self.memory = Memory()
        self.outcomes: tuple[Outcome, ...] = ()
        self._last_failed: tuple[Outcome, ...] = ()

    def cycle(self) -> Decision:
        snap = replace(self.env.observe(), outcomes=self.outcomes)
        d = decide(snap, self.memory, self.k)
        for level, msg in d.log:
            self.emit(level, msg)
        self.outcomes = self.env.execute(d.actions)
        # A failure repeated every cycle (a busy lease while waiting for it)
        # is logged once, not once per cycle.
        failed = tuple(o for o in self.outcomes if not o.ok)
        if failed and failed != self._last_failed:
            for o in failed:
                # Losing the claim race to another host is the protocol working.
                level = "info" if o.code == LOST else "warning"
                self.emit(level, f"{o.kind} failed ({o.code}): {o.detail}")
        self._last_failed = failed
        self.env.publish(d.publish)
        self.memory = d.memory
        return d


def logger_emit(log: logging.Logger) -> Callable[[str, str], None]:
    return lambda level, msg: log.log(LEVELS.get(level, logging.INFO), msg)
