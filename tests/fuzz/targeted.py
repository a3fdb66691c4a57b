"""Runs hostile cases against the engine and turns answers into findings.

Security cases run one at a time (their checks look at the state before and
after). The bulk may run in parallel; a request that got a 5xx there is sent
again at once with nothing else in flight, so the engine's log shows which
traceback belongs to it."""
from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import requests

from . import enginelog
from .cases import Case
from .report import MALFORMED, NO_ANSWER, RESTARTED, SECURITY, SERVER_ERROR, Finding, Stats
from .send import malformed, send

# An operation whose answers take SLOW_SECONDS or more on average (a BMC
# that never answers, a libvirt deadline) gets plain cases only until it has
# used SLOW_BUDGET seconds (at least SLOW_MIN cases); security cases always run.
SLOW_SECONDS = 1.0
SLOW_BUDGET = 10.0
SLOW_MIN = 2


class Gate:
    """Many senders at once, or one request alone (to read its own log lines)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0
        self._alone = False

    @contextlib.contextmanager
    def shared(self):
        with self._cond:
            while self._alone:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self):
        with self._cond:
            while self._alone:
                self._cond.wait()
            self._alone = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


def finding_for(case, kind, status, detail="", trace=""):
    return Finding(kind, case.operation, status, case.method, case.path, case.content_type, case.body,
                   case.label, detail, trace, headers=dict(case.headers), accept=case.accept, auth=case.auth,
                   rule=case.security)


def count_named(engine, collection, name):
    """How many objects named `name` the collection lists (None if it cannot be read)."""
    try:
        r = engine.call("GET", collection, timeout=60)
        data = r.json() if r.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return sum(1 for items in data.values() if isinstance(items, list)
               for item in items if isinstance(item, dict) and item.get("name") == name)


class Runner:
    def __init__(self, engine, traps=None, slow_budget=SLOW_BUDGET):
        self.engine = engine
        self.traps = traps
        self.slow_budget = slow_budget
        self.stats = Stats()
        self.findings = []
        self._lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._gate = Gate()
        self._local = threading.local()

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.trust_env = False
        return s

    def _too_slow(self, case):
        n, spent = self.stats.by_operation[case.operation], self.stats.seconds[case.operation]
        if case.expect or n < SLOW_MIN or spent / n < SLOW_SECONDS or spent < self.slow_budget:
            return False
        with self._lock:
            self.stats.skipped[case.operation] += 1
        return True

    def _record(self, case, outcome, trace="", note=""):
        found = []
        if outcome.status is None:
            found.append(finding_for(case, NO_ANSWER, None, outcome.error))
        elif outcome.status >= 500:
            found.append(finding_for(case, SERVER_ERROR, outcome.status,
                                     outcome.body.decode("utf-8", "replace")[:300].replace("\n", " "), trace))
            found[-1].note = note
        bad_form = malformed(outcome)
        if bad_form:
            found.append(finding_for(case, MALFORMED, outcome.status, bad_form))
        with self._lock:
            self.stats.count(case.operation, outcome.status, case.body, outcome.elapsed)
            self.findings.extend(found)

    def check_engine(self, why):
        """Restart a dead engine (a finding), renew a lost token."""
        with self._health_lock:
            restarted = self.engine.ensure_running(why)
            if restarted:
                with self._lock:
                    self.findings.append(Finding(RESTARTED, "-", None, "-", "-", None, None, why, restarted,
                                                 enginelog.summary(self.engine.restarts[-1][1])))
                return
            try:
                if self.engine.call("GET", "", timeout=30).status_code == 401:
                    self.engine.login()
            except requests.RequestException:
                pass

    # ---- one at a time ---------------------------------------------------------------------
    def run_one(self, case):
        if self._too_slow(case):
            return None
        engine = self.engine
        before = count_named(engine, case.stored_in, case.stored_name) if case.stored_in else None
        tripped_before = len(self.traps.tripped()) if (case.watched and self.traps) else 0
        offset = engine.log_offset()
        outcome = send(self._session(), engine.base, case, engine.token)
        trace = enginelog.summary(engine.log_since(offset)) if (outcome.status or 0) >= 500 else ""
        self._record(case, outcome, trace)
        if outcome.status is None:
            self.check_engine(f"after {case.method} {case.path[:80]}")
        if case.expect:
            problems = []
            if outcome.status not in case.expect:
                problems.append(f"answered {outcome.status or outcome.error}, expected "
                                f"{' or '.join(map(str, case.expect))}")
            if case.stored_in:
                after = count_named(engine, case.stored_in, case.stored_name)
                if before is not None and after is not None and after > before:
                    problems.append(f"stored: an object named {case.stored_name!r} appeared in {case.stored_in}")
            if case.watched and self.traps:
                new = self.traps.tripped()[tripped_before:]
                if new:
                    problems.append("; ".join(new))
            if problems:
                with self._lock:
                    self.findings.append(finding_for(case, SECURITY, outcome.status, "; ".join(problems), trace))
        return outcome

    def run_sequential(self, cases, deadline=None, limit=None):
        for n, case in enumerate(cases, 1):
            if (deadline and time.monotonic() > deadline) or (limit is not None and self.stats.requests >= limit):
                break
            self.run_one(case)
            if n % 500 == 0:
                self.check_engine("periodic check")

    # ---- in parallel ---------------------------------------------------------------------------
    def _run_plain(self, case):
        if self._too_slow(case):
            return
        with self._gate.shared():
            outcome = send(self._session(), self.engine.base, case, self.engine.token)
        trace = note = ""
        if (outcome.status or 0) >= 500:
            trace, note = self._again_alone(case)
        self._record(case, outcome, trace, note)
        if outcome.status is None:
            self.check_engine(f"after {case.method} {case.path[:80]}")

    def _again_alone(self, case):
        """(traceback summary, note): the request sent again with no other in flight."""
        with self._gate.alone():
            offset = self.engine.log_offset()
            again = send(self._session(), self.engine.base, case, self.engine.token)
            if (again.status or 0) >= 500:
                return enginelog.summary(self.engine.log_since(offset)), ""
        return "", f"not reproduced when sent again alone: answered {again.status or again.error}"

    def run_parallel(self, case_source, workers=4, deadline=None, limit=None):
        """case_source: an iterator of plain (non-security) cases; stops at the
        deadline, or once `limit` requests with a body were sent."""
        sent = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fuzz") as pool:
            pending = set()
            for case in case_source:
                if (deadline and time.monotonic() > deadline) or \
                        (limit is not None and self.stats.with_body + len(pending) >= limit):
                    break
                pending.add(pool.submit(self._run_plain, case))
                sent += 1
                if len(pending) >= workers * 2:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        fut.result()
                if sent % 2000 == 0:
                    self.check_engine("periodic check")
            for fut in pending:
                fut.result()

    def trace_untraced(self):
        """Send each distinct untraced 5xx again, alone, and attach what the
        engine logged for it (schemathesis' findings come in without one)."""
        seen = {}
        for f in self.findings:
            if f.kind != SERVER_ERROR or f.trace or f.note:
                continue
            key = (f.operation, f.status, f.method, f.path, f.body, tuple(sorted(f.headers.items())))
            if key not in seen:
                case = Case(f.operation, f.method, f.path, f.body, f.content_type, f.label, accept=f.accept,
                            headers=dict(f.headers), auth=f.auth)
                seen[key] = self._again_alone(case)
            f.trace, f.note = seen[key]
