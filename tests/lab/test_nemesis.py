"""A short nemesis run (bench/nemesis.py) in CI: 20 randomised faults over a
lab of its own, judged by the invariant observer. The long run (200 faults,
with the faults bounded by sanlock's expiry too) is a benchmark. The never-
two-engines property is the HA layer's, whatever the guest: this run boots
the small stand-in guest (`--engine none`), so twenty faults fit in CI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from lab_helpers import lab_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.lab, pytest.mark.root]
NEMESIS = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "nemesis.py")
# The faults that recover in seconds: the two bounded by sanlock's expiry
# (a dead BMC, a storage cut) have lab tests of their own.
QUICK = ("power-off,kill-vm,kill-agent,kill-broker,kill-sanlock,kill-libvirtd,kill-etcd,net-cut,"
         "bmc-lies-net-cut,local-maint,global-maint")


def test_twenty_random_faults_never_two_engines_and_always_back():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_dir = tempfile.mkdtemp(prefix="keel-nemesis-")
    out = os.path.join(lab_dir + "-result.json")
    try:
        cp = subprocess.run([sys.executable, NEMESIS, "--dir", lab_dir, "--faults", "20", "--seed", "7",
                             "--kinds", QUICK, "--engine", "none", "--json", out], capture_output=True, text=True, timeout=2400)
        print(cp.stdout[-4000:])
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
        result = json.load(open(out))
        assert len(result["faults"]) == 20
        assert result["multiple_engines"] == [] and result["starts_without_lease"] == []
        assert result["timed_out"] == 0
        assert len({f["kind"] for f in result["faults"]}) >= 6     # a mix, not one fault twenty times
    finally:
        subprocess.run([sys.executable, "-m", "keel_lab.cli", "down", "--dir", lab_dir],
                       capture_output=True, timeout=180)
        shutil.rmtree(lab_dir, ignore_errors=True)
        if os.path.exists(out):
            os.unlink(out)
