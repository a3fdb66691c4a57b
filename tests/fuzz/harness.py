"""One fuzzing session, shared by the slow test and bench/fuzz.py: a seeded
engine in its private network namespace, the URI traps, the operations of
the served document, and the three ways to fuzz it (security cases, hostile
bodies, schemathesis), each returning its Stats and Findings."""
from __future__ import annotations

import logging
import os
import random
import time

from . import bodies, cases, enginelog, st_runner
from .engine import MAX_BODY_BYTES, FuzzEngine, seed
from .report import SECURITY, Stats
from .targeted import SLOW_BUDGET, SLOW_SECONDS, Runner, finding_for
from .traps import Traps

log = logging.getLogger("keel.fuzz")
# a program the engine runs, or a connection it makes, can happen after the
# answer (the worker polls hosts): look again after this long
LATE_TRAP_WAIT = 3.0


class FuzzSession:
    def __init__(self, workdir=None, keep_workdir=False):
        self.engine = FuzzEngine(workdir=workdir, keep_workdir=keep_workdir)
        self.traps = None
        self.ops = []
        self.seed_notes = []
        self._seeds = 0
        self.slow_ops = set()   # operations seen answering slowly (a BMC or libvirt deadline)
        self.slow_budget = SLOW_BUDGET   # seconds of plain cases a slow operation gets, per run

    def __enter__(self):
        self.engine.start()
        try:
            self.traps = Traps(self.engine.workdir).start()
            self.reseed()
            self.ops = bodies.operations(self.engine.document())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.traps is not None:
            self.traps.stop()
            self.traps = None
        self.engine.stop()

    def log_errors(self):
        """Lines for every distinct error the engine logged so far (its traceback summaries)."""
        with open(self.engine.serve_log, encoding="utf-8", errors="replace") as f:
            errors = enginelog.distinct_errors(f.read())
        return [f"  {count:6d} x {text}" for text, count in errors]

    @property
    def operation_keys(self):
        return [op.key for op in self.ops]

    def reseed(self):
        """Fresh inventory (a fuzzer may have removed objects); its ids go first."""
        self._seeds += 1
        self.engine.ensure_running("before seeding")
        self.seed_notes = seed(self.engine, tag=f"fz{self._seeds}")
        for note in self.seed_notes:
            log.info("%s", note)

    def _learn(self, runner):
        for op, n in runner.stats.by_operation.items():
            if n and runner.stats.seconds[op] / n >= SLOW_SECONDS:
                self.slow_ops.add(op)
        return runner

    # ---- targeted ------------------------------------------------------------------------
    def systematic_cases(self, xml_fields=None):
        return cases.systematic(self.ops, self.engine.ids, self.traps, MAX_BODY_BYTES, xml_fields)

    def run_security(self, deadline=None):
        """The cases with a specific expectation, one at a time."""
        runner = Runner(self.engine, self.traps, self.slow_budget)
        security = [c for c in self.systematic_cases() if c.expect]
        runner.run_sequential(security, deadline=deadline)
        seen = len(self.traps.tripped())
        time.sleep(LATE_TRAP_WAIT)
        late = self.traps.tripped()[seen:]
        probe = next((c for c in security if c.watched), None)
        if late and probe is not None:
            runner.findings.append(finding_for(probe, SECURITY, None, "after all answers: " + "; ".join(late)))
        return self._learn(runner)

    def run_hostile(self, deadline=None, limit=None, xml_fields=None):
        """Every plain targeted case, one at a time (5xx traced from the log as they happen);
        xml_fields: see cases.field_cases."""
        runner = Runner(self.engine, self.traps, self.slow_budget)
        plain = [c for c in self.systematic_cases(xml_fields) if not c.expect]
        runner.run_sequential(plain, deadline=deadline, limit=limit)
        return self._learn(runner)

    def run_random(self, seed_value, deadline=None, limit=None, workers=4):
        """Random hostile bodies in parallel until the deadline or limit (see Runner.run_parallel)."""
        rng = random.Random(seed_value)
        runner = Runner(self.engine, self.traps, self.slow_budget)
        ops, ids = self.ops, self.engine.ids

        def source():
            while True:
                yield cases.random_case(rng, ops, ids)
        runner.run_parallel(source(), workers=workers, deadline=deadline, limit=limit)
        return self._learn(runner)

    # ---- schemathesis ------------------------------------------------------------------------
    def run_schemathesis(self, max_examples=None, max_time=None, seed_value=None, timeout=600, workers=2,
                         checks="not_a_server_error"):
        """(Stats, findings, StRun); findings' tracebacks come from sending each distinct 5xx again."""
        outdir = os.path.join(self.engine.workdir, f"schemathesis-{int(time.time())}")
        run = st_runner.run(self.engine, self.ops, outdir, max_examples=max_examples, max_time=max_time,
                            workers=workers, seed=seed_value, timeout=timeout, checks=checks, slow=self.slow_ops)
        stats, findings = Stats(), []
        if run.cassette:
            stats, findings = st_runner.read_results(run.cassette, self.ops, self.engine.base)
        if run.timed_out:
            log.warning("schemathesis stopped after %.0f s (its time limit)", run.seconds)
        runner = Runner(self.engine, self.traps, self.slow_budget)
        runner.findings = list(findings)
        runner.check_engine("after schemathesis")   # a dead engine is restarted, and a finding
        runner.trace_untraced()
        return stats, runner.findings, run
