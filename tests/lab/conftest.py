"""One real 3-host lab per test module, shared by its scenarios (see
lab_helpers.LabDriver). Each scenario leaves the lab healthy for the next."""
from __future__ import annotations

import os

import pytest

from lab_helpers import module_lab


@pytest.fixture(scope="module")
def lab():
    # Started from a shell whose SANLOCK_RUN_DIR points elsewhere (other
    # tests, other tools): every host must still use its own sanlock.
    stray = dict(os.environ, SANLOCK_RUN_DIR="/nonexistent/keel-stray-sanlock-dir")
    with module_lab("keel-lab-test-", env=stray) as driver:
        yield driver


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # each phase's report on the item, for fixtures that act on a failure
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
