"""Polling with a generous deadline: tests must pass on a loaded 2-core machine."""
from __future__ import annotations

import time


def wait_for(pred, timeout: float = 60, what: str = "condition", interval: float = 0.2, ignore=(Exception,)):
    """Return pred()'s first truthy value; fail naming `what` and the last
    value (or error) seen once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except ignore as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"{what}: not true after {timeout} s (last: {last!r})")
