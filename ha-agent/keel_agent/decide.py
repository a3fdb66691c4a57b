"""The decision core: decide(snapshot, memory, constants) -> Decision.

Pure: no I/O, no clock but `snapshot.now`. Each cycle the agent takes one
step: global checks first (broker unreachable, global maintenance), then the
current state's rule (`rules.py`), which starts with the checks shared by
the running states (the VM vanishing, two engines, etcd loss, the claim).
Every state change carries a reason; waiting notes and alarms are logged
once, when they change.
"""
from __future__ import annotations

import re
from dataclasses import replace

from . import facts
from .rules import RULES, STOPPING_STATES, _Step
from .states import VM_RUNNING, VM_UNKNOWN, Decision, Memory, Snapshot, State

S = State


def decide(s: Snapshot, m: Memory, k: dict) -> Decision:
    if s.etcd_last_renewed is not None:
        m = replace(m, last_renewed=s.etcd_last_renewed)
    m = replace(m, failures=facts.recent_failures(m, s.now, k), fence_check_at=None)
    live = facts.live_records(s)
    score, reasons = facts.score(s, m, k, live)
    st = _Step(s, m, k)
    # Logged when the set of penalties changes, not at every wiggle of a
    # measured value (CPU load moves every cycle).
    key = re.sub(r"\d+(\.\d+)?(%| MiB)|\d+\.\d+", "#", ", ".join(reasons)) + ("" if score else " =0")
    if key != m.score_note:
        st.log.append(("info", f"score {score}" + (f" ({', '.join(reasons)})" if reasons else "")))
        st.m = replace(st.m, score_note=key)
    if not s.broker_ok and (m.state in (S.GlobalMaintenance, S.AgentStarting, S.ReInitialize) or (
            s.vm != VM_RUNNING and m.state not in (S.EngineStart,) + STOPPING_STATES)):
        # Without the broker the snapshot holds no cluster facts (no flags, no
        # records, no claim): hold still. Global maintenance stays in force, and
        # a freshly started agent does not stop a VM it knows nothing about
        # (it may be global maintenance; sanlock still bars a second engine).
        st.stay("HA broker unreachable: holding the current state")
    elif s.global_maintenance and m.state not in (S.GlobalMaintenance,) + STOPPING_STATES:
        st.go(S.GlobalMaintenance, "global maintenance is set: not touching the engine VM")
    else:
        RULES[m.state](st, live, score)
    health = facts.health(s)
    publish = {
        "score": score if st.m.state not in (S.LocalMaintenance,) else 0,
        "state": str(st.m.state),
        "engine": {"vm": "up" if s.vm == VM_RUNNING else ("unknown" if s.vm == VM_UNKNOWN else "down"),
                   "health": health, "detail": "Up" if s.vm == VM_RUNNING else "Down",
                   "reason": facts.health_reason(s)},
        "stopped": False,
        "extra": {"backoff_until": st.m.backoff_until} if st.m.backoff_until > s.now else {},
    }
    return Decision(memory=st.m, actions=st.actions, log=st.log, score=publish["score"], publish=publish)
