"""One real 3-host lab per test module, shared by its scenarios (see
lab_helpers.LabDriver). Each scenario leaves the lab healthy for the next."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from lab_helpers import KEEL_LAB, LabDriver, lab_unavailable


@pytest.fixture(scope="module")
def lab():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_dir = tempfile.mkdtemp(prefix="keel-lab-test-")
    driver = LabDriver(lab_dir)
    try:
        # Started from a shell whose SANLOCK_RUN_DIR points elsewhere (other
        # tests, other tools): every host must still use its own sanlock.
        stray = dict(os.environ, SANLOCK_RUN_DIR="/nonexistent/keel-stray-sanlock-dir")
        driver.cli("up", "--hosts", "3", "--timeout", "300", timeout=420, env=stray)
        yield driver
    finally:
        subprocess.run(KEEL_LAB + ["down", "--dir", lab_dir], capture_output=True, timeout=120)
        shutil.rmtree(lab_dir, ignore_errors=True)
