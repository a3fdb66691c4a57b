"""Run one BMC operation (status, on, off, restart, test) under a hard deadline:
the engine's fencing and the HA agents' fencing of the engine's host.

Each operation runs in a fresh ``python -m keel_common._ipmi_worker``
child: pyghmi can hang forever on a BMC that stops answering mid-session,
and a child process is the one thing that can always be killed on time.
The password travels on the child's stdin, never on its command line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class BmcSpec(Protocol):
    """How to reach one BMC: the engine's fence agents and the HA agents'
    shared BMC records both have this shape."""
    address: str
    port: int
    username: str
    password: str

    @property
    def label(self) -> str: ...

    @property
    def privlevel(self) -> int | None: ...


_forbidden: str | None = None


def forbid(reason: str) -> None:
    """No BMC traffic from this process from now on (the web workers)."""
    global _forbidden
    _forbidden = reason

OPERATIONS = ("status", "on", "off", "restart", "test")
DEFAULT_DEADLINES = {"status": 15.0, "test": 15.0, "on": 30.0, "off": 30.0, "restart": 60.0}

# Error kinds: what the caller should do next.
AUTH = "auth"                  # wrong user/password/privilege: config error, never retry
UNREACHABLE = "unreachable"    # no answer: retry with back-off, then the next agent
TIMEOUT = "timeout"            # the hard deadline killed the operation: like unreachable
BMC_ERROR = "bmc_error"        # the BMC answered with an error: retry, then next agent
NOT_CONFIRMED = "not_confirmed"  # BMC accepted the command, power state never followed
RETRYABLE = (UNREACHABLE, TIMEOUT, BMC_ERROR)


@dataclass(frozen=True)
class IpmiResult:
    op: str
    ok: bool
    power: str | None = None      # 'on' / 'off' as last reported by the BMC
    kind: str | None = None       # error kind when not ok
    message: str = ""
    elapsed: float = 0.0

    def describe(self) -> str:
        if self.ok:
            return f"{self.op}: {self.message}"
        return f"{self.op} failed ({self.kind}): {self.message}"


def run_operation(spec: BmcSpec, op: str, deadline: float | None = None) -> IpmiResult:
    """Run ``op`` against the agent's BMC; returns within ``deadline`` seconds (+ kill time)."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown power operation {op!r} (expected one of {', '.join(OPERATIONS)})")
    if _forbidden:
        raise RuntimeError(f"BMC operation '{op}' in a process that must not make any: {_forbidden}")
    budget = float(deadline if deadline is not None else DEFAULT_DEADLINES[op])
    request = json.dumps({"op": op, "address": spec.address, "port": spec.port,
                          "username": spec.username, "password": spec.password,
                          "privlevel": spec.privlevel, "budget": budget})
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "keel_common._ipmi_worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(request + "\n", timeout=budget)
    except subprocess.TimeoutExpired:
        _kill(proc)
        elapsed = time.monotonic() - started
        log.warning("BMC %s: %s killed after the %.0f s deadline", spec.label, op, budget)
        return IpmiResult(op, False, kind=TIMEOUT, elapsed=elapsed,
                          message=f"no result within the {budget:.0f} s deadline")
    elapsed = time.monotonic() - started
    try:
        answer = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        return IpmiResult(op, False, kind=BMC_ERROR, elapsed=elapsed,
                          message=f"IPMI worker failed (exit {proc.returncode}): {tail[0]}")
    return IpmiResult(op, bool(answer.get("ok")), power=answer.get("power"),
                      kind=None if answer.get("ok") else answer.get("kind", BMC_ERROR),
                      message=str(answer.get("message", "")), elapsed=elapsed)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: nothing else in the group
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def test_agent(spec: BmcSpec, deadline: float | None = None) -> IpmiResult:
    """oVirt's 'Test' button: what does the BMC say right now?"""
    return run_operation(spec, "test", deadline)
