"""The deploy's step runner: each step shown with its number, its name and
its elapsed time; every wait says what it waits for; a failure says which
step failed, why, and what to do; Ctrl-C stops between two checks.

A step is a function of the run's context. It fails by raising `StepFailed`
(what went wrong, in words) with the action the user should take; any other
exception is the deploy's own bug and is still reported as one paragraph,
never a traceback.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable


class StepFailed(Exception):
    def __init__(self, why: str, todo: str = ""):
        super().__init__(why)
        self.why, self.todo = why, todo


class Stopped(Exception):
    """Ctrl-C: the run stopped at the step named."""


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[["Progress"], None]


class Progress:
    """What a step uses to talk to the user: `note` for a line under the
    step, `wait` for a condition polled until a deadline."""

    def __init__(self, out=sys.stdout, clock=time.monotonic, sleep=time.sleep):
        self.out, self.clock, self.sleep = out, clock, sleep
        self._tty = hasattr(out, "isatty") and out.isatty()

    def note(self, text: str) -> None:
        print(f"      {text}", file=self.out, flush=True)

    def wait(self, what: str, check: Callable[[], object], timeout: float, interval: float = 1.0,
             todo: str = "") -> object:
        """Poll `check` until it returns something true; a string it raises
        as `StepFailed` ends the wait at once. The user sees what is awaited
        and for how long."""
        start = self.clock()
        deadline = start + timeout
        shown = -1
        while True:
            result = check()
            if result:
                if shown >= 0:
                    print(f"\r      waiting for {what}: done ({self.clock() - start:.0f} s)  ",
                          file=self.out, flush=True)
                return result
            now = self.clock()
            if now >= deadline:
                if shown >= 0:
                    print(file=self.out)
                raise StepFailed(f"{what} did not happen within {timeout:.0f} s", todo)
            elapsed = int(now - start)
            if elapsed != shown and (self._tty or elapsed % 10 == 0):
                # on a terminal the line counts up in place; in a log, every 10 s
                end = "" if self._tty else "\n"
                prefix = "\r" if self._tty else ""
                print(f"{prefix}      waiting for {what} ({elapsed} s of at most {timeout:.0f} s)",
                      end=end, file=self.out, flush=True)
                shown = elapsed
            self.sleep(interval)


def run_steps(steps: list[Step], progress: Progress, first: int = 0,
              on_done: Callable[[int, Step, float], None] = lambda i, s, t: None) -> float:
    """Run steps[first:] in order; returns the total elapsed time. Raises
    StepFailed (annotated with the step) or Stopped."""
    out, total_start = progress.out, progress.clock()
    n = len(steps)
    for i in range(first, n):
        step = steps[i]
        print(f"[{i + 1}/{n}] {step.name}", file=out, flush=True)
        t0 = progress.clock()
        try:
            step.run(progress)
        except KeyboardInterrupt:
            raise Stopped(f"step {i + 1}/{n} ({step.name})") from None
        except StepFailed as e:
            e.step = f"step {i + 1}/{n} ({step.name})"
            e.index = i
            raise
        elapsed = progress.clock() - t0
        print(f"      done in {elapsed:.1f} s", file=out, flush=True)
        on_done(i, step, elapsed)
    return progress.clock() - total_start
