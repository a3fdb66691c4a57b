#!/usr/bin/env python3
"""Fuzzing benchmark: a real engine (gunicorn + worker, SQLite, its own
network namespace) under a large budget of hostile requests.

Phases, in order:
  security     the cases with a specific expectation (host URIs, storage
               paths, names like '..', DTDs, oversized bodies, credentials)
  hostile      every targeted case: one field hostile at a time, JSON and
               XML, hostile whole bodies, queries, headers and ids
  schemathesis every operation of the served OpenAPI document, for
               --schemathesis-seconds (needs scripts/setup-fuzz.sh)
  random       random hostile bodies in parallel until --requests requests
               with a body were sent in all, or --seconds ran out

and prints the number of requests, the 5xx answers (each distinct cause
with the engine's traceback summary, then each operation with a shortened
request), the operations covered out of the document's total, and the time.
Figures, not a test: run it by hand, as root:
    .venv/bin/python bench/fuzz.py [--requests 50000] [--seconds 1800] [--report FILE]
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))  # its harness

from tests.fuzz import st_runner  # noqa: E402
from tests.fuzz.harness import FuzzSession  # noqa: E402
from tests.fuzz.report import SERVER_ERROR, Stats, describe, summary_lines  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Fuzz the engine's API with a large budget and print figures.")
    p.add_argument("--requests", type=int, default=50_000, help="requests with a body to send in all (default 50000)")
    p.add_argument("--seconds", type=float, default=1800, help="time budget for the whole run (default 1800)")
    p.add_argument("--schemathesis-seconds", type=float, default=300,
                   help="time for schemathesis, within --seconds (default 300; 0 skips it)")
    p.add_argument("--workers", type=int, default=4, help="parallel clients in the random phase (default 4)")
    p.add_argument("--slow-budget", type=float, default=60,
                   help="seconds each slow operation (a BMC call) may use per phase (default 60)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    p.add_argument("--checks", default="not_a_server_error", help="schemathesis checks (default not_a_server_error)")
    p.add_argument("--report", help="also write the findings to this file")
    p.add_argument("--keep", action="store_true", help="keep the engine's directory (logs, database, cassette)")
    args = p.parse_args(argv)
    if args.requests < 0 or args.seconds <= 0 or args.workers < 1:
        p.error("--requests >= 0, --seconds > 0 and --workers >= 1 please")
    if os.geteuid() != 0:
        print("bench/fuzz.py: needs root (the engine runs in a network namespace of its own)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    seed_value = args.seed if args.seed is not None else random.randrange(2 ** 31)
    start = time.monotonic()
    deadline = start + args.seconds
    stats, findings = Stats(), []

    def phase(name, got_stats, got_findings, t0):
        stats.merge(got_stats)
        findings.extend(got_findings)
        five = sum(1 for f in got_findings if f.kind == SERVER_ERROR)
        print(f"  {name:<12} {got_stats.requests:7d} requests ({got_stats.with_body} with a body), "
              f"{five} 5xx, {time.monotonic() - t0:5.0f} s", file=sys.stderr, flush=True)

    try:
        session = FuzzSession(keep_workdir=args.keep).__enter__()
    except Exception as e:   # the engine would not start: say why in one line
        print(f"bench/fuzz.py: cannot start the engine: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 1
    session.slow_budget = args.slow_budget
    try:
        print(f"engine {session.engine.base}, workdir {session.engine.workdir}, seed {seed_value}",
              file=sys.stderr)
        for note in session.seed_notes:
            print(f"  seeding: {note[:160]}", file=sys.stderr)
        t0 = time.monotonic()
        r = session.run_security(deadline=deadline)
        phase("security", r.stats, r.findings, t0)
        t0 = time.monotonic()
        r = session.run_hostile(deadline=deadline)
        phase("hostile", r.stats, r.findings, t0)
        st_seconds = min(args.schemathesis_seconds, max(0.0, deadline - time.monotonic() - 30))
        if st_seconds >= 10 and st_runner.schemathesis_command():
            t0 = time.monotonic()
            session.reseed()
            st_stats, st_findings, _run = session.run_schemathesis(
                max_examples=100_000, max_time=st_seconds, seed_value=seed_value, timeout=st_seconds + 300,
                checks=args.checks)
            phase("schemathesis", st_stats, st_findings, t0)
        elif args.schemathesis_seconds:
            print("  schemathesis skipped: " + ("not installed (scripts/setup-fuzz.sh)"
                                                if not st_runner.schemathesis_command() else "no time left"),
                  file=sys.stderr)
        missing = args.requests - stats.with_body
        if missing > 0 and time.monotonic() < deadline:
            t0 = time.monotonic()
            session.reseed()
            r = session.run_random(seed_value, deadline=deadline, limit=missing, workers=args.workers)
            phase("random", r.stats, r.findings, t0)
        seconds = time.monotonic() - start
        lines = summary_lines(stats, session.operation_keys, findings, seconds)
        errors = session.log_errors()
        text = "\n".join(lines) + "\n\n" + (describe(findings) or "no findings")
        text += "\n\nerrors in the engine's log during the run (all requests, traced or not):\n" + \
            ("\n".join(errors) if errors else "  none")
        print(text)
        if args.report:
            with open(args.report, "w") as f:
                f.write(text + "\n")
        if session.engine.restarts:
            print(f"engine restarts: {len(session.engine.restarts)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("bench/fuzz.py: interrupted", file=sys.stderr)
        return 130
    except Exception as e:   # one line; --keep leaves the engine's logs to look at
        print(f"bench/fuzz.py: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
