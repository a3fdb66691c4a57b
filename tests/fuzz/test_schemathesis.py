"""Fuzzing a real engine (gunicorn + worker, SQLite, in a private network
namespace): the security expectations, hostile bodies of our own, and
schemathesis over every operation of the served OpenAPI document.

Each test fails with the full list of what went wrong, grouped by cause:
the engine's traceback summary, then each operation with the exact request.
Set KEEL_FUZZ_SEED to repeat a schemathesis run."""
import os
import random
import time

import pytest

from . import st_runner
from .harness import FuzzSession
from .report import describe, summary_lines

pytestmark = [pytest.mark.slow, pytest.mark.root]

# Per operation; with schemathesis' own coverage cases, about 1.5 minutes
# for the 150-odd operations on a 2-core machine.
SCHEMATHESIS_EXAMPLES = 10
SCHEMATHESIS_TIMEOUT = 600
# Hostile values go in XML on the first few fields of each body only (all of
# them in JSON); bench/fuzz.py sends every field in both.
XML_FIELDS = 3


@pytest.fixture(scope="module")
def session():
    if os.geteuid() != 0:
        pytest.skip("needs root: the engine runs in a network namespace of its own")
    with FuzzSession() as s:
        yield s


def _report(title, session, stats, findings, seconds):
    lines = [title, *summary_lines(stats, session.operation_keys, findings, seconds)]
    errors = session.log_errors()
    return ("\n".join(lines) + "\n\n" + describe(findings)
            + ("\n\nerrors in the engine's log so far:\n" + "\n".join(errors) if errors else ""))


def test_security_expectations_hold(session):
    """Host addresses that are URIs, storage paths like '/', names like '..',
    DTDs in any encoding, bodies over the size limit, bad credentials: each
    refused with its status, nothing stored, no program run, no connection made."""
    start = time.monotonic()
    runner = session.run_security()
    seconds = time.monotonic() - start
    # the cases were really sent: every kind of security case reached the engine
    labels = " ".join(f"{op} {n}" for op, n in runner.stats.by_operation.items())
    assert runner.stats.requests >= 60 and "/hosts" in labels and "/storagedomains" in labels, labels
    if runner.findings:
        pytest.fail(_report("security expectations broken:", session, runner.stats, runner.findings, seconds),
                    pytrace=False)


def test_hostile_bodies_get_no_server_error(session):
    """Every POST/PUT with one field hostile at a time (JSON and XML), hostile
    whole bodies (10k-deep nesting, wrong types, wrong encodings), hostile
    query parameters, headers and ids: never a 5xx, never a dropped
    connection, always a well-formed answer."""
    start = time.monotonic()
    runner = session.run_hostile(xml_fields=XML_FIELDS)
    seconds = time.monotonic() - start
    body_ops = {op.key for op in session.ops if op.method in ("POST", "PUT")}
    assert body_ops, "the served document lists no POST/PUT operation"
    assert body_ops <= set(runner.stats.by_operation), sorted(body_ops - set(runner.stats.by_operation))
    if runner.findings:
        pytest.fail(_report("hostile requests the engine did not handle:", session, runner.stats,
                            runner.findings, seconds), pytrace=False)


def test_schemathesis_finds_no_server_error(session):
    """schemathesis (not_a_server_error) over every operation of the served
    document, bodies and parameters as the document declares them."""
    if st_runner.schemathesis_command() is None:
        pytest.skip(f"schemathesis is not installed in {st_runner.FUZZ_VENV}: run scripts/setup-fuzz.sh")
    seed_value = int(os.environ.get("KEEL_FUZZ_SEED") or random.randrange(2 ** 31))
    session.reseed()
    stats, findings, run = session.run_schemathesis(max_examples=SCHEMATHESIS_EXAMPLES, seed_value=seed_value,
                                                    timeout=SCHEMATHESIS_TIMEOUT)
    assert run.cassette, f"schemathesis recorded no request (exit {run.returncode}):\n{run.output_tail}"
    wanted = {k for k in session.operation_keys if k.split(" ", 1)[1] not in st_runner.EXCLUDED_PATHS}
    assert wanted <= set(stats.by_operation), sorted(wanted - set(stats.by_operation))
    if findings:
        pytest.fail(_report(f"schemathesis found server errors (seed {seed_value}):", session, stats, findings,
                            run.seconds), pytrace=False)
