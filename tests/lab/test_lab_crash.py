"""`keel-lab down` cleans up after a `keel-lab up` that died half-way."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import shutil

import pytest

from keel_lab import net, procs
from keel_lab.layout import BRIDGE, LabLayout, load_state
from lab_helpers import KEEL_LAB, lab_unavailable, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.root]


def test_down_after_up_was_killed_leaves_nothing():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_dir = tempfile.mkdtemp(prefix="keel-lab-crash-")
    try:
        up = subprocess.Popen(KEEL_LAB + ["up", "--hosts", "2", "--dir", lab_dir,
                                          "--no-engine-process"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill it once the hosts are booting (their inits recorded), before it finishes.
        wait_for("the hosts booting", lambda: all(
            os.path.exists(os.path.join(lab_dir, "hosts", f"host{i}", "boot.json"))
            for i in (1, 2)), 120, 0.1)
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        state = load_state(lab_dir)
        layout = LabLayout(lab_dir, state["hosts"])
        inodes = [net.netns_inode(h.netns) for h in layout.all_hosts()]
        assert all(inodes)
        time.sleep(2)  # let the orphaned hosts start their daemons
        cp = subprocess.run(KEEL_LAB + ["down", "--dir", lab_dir], capture_output=True, text=True,
                            timeout=120)
        assert cp.returncode == 0, cp.stderr
        assert not any(os.path.exists(f"/run/netns/{h.netns}") for h in layout.all_hosts())
        assert not net.link_exists(BRIDGE)
        assert all(procs.pids_in_netns(i) == [] for i in inodes)
        assert not any(procs.alive(p) for p in (state.get("bmc_pids") or {}).values())
        assert not procs.alive(state.get("observer_pid"))
        assert not os.path.exists(lab_dir)
    finally:
        subprocess.run(KEEL_LAB + ["down", "--dir", lab_dir], capture_output=True, timeout=120)
        shutil.rmtree(lab_dir, ignore_errors=True)
