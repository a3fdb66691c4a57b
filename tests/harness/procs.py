"""Ending the daemons a test started in a process group of their own."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20) -> None:
    """Send `sig` to proc's process group, wait `grace` seconds, then SIGKILL
    the group; a group that is already gone is fine."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
