"""The engine lease is held by the engine VM itself: a real libvirtd with
the sanlock lock driver and a real sanlock daemon, in a private mount and
network namespace, start the VM from the agent's domain XML (qemu TCG)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from harness.daemons import build_shim
from harness.hostconf import write_host_config

pytestmark = [pytest.mark.slow, pytest.mark.root]
HERE = os.path.dirname(__file__)
# libvirt probes qemu's capabilities on first use (~1 min under TCG); keep its
# cache between runs so only the first run pays.
CAPS_CACHE = "/var/tmp/keel-agent-libvirt-cache"


def test_engine_vm_holds_the_lease_and_a_second_start_is_refused():
    if os.geteuid() != 0 or not shutil.which("libvirtd") or not shutil.which("sanlock"):
        pytest.skip("needs root, libvirtd and sanlock")
    work = tempfile.mkdtemp(prefix="keel-agent-lv-", dir="/var/tmp")
    try:
        os.chmod(work, 0o755)
        shared = os.path.join(work, "shared")
        os.makedirs(shared)
        shutil.chown(shared, "sanlock", "sanlock")
        os.makedirs(CAPS_CACHE, exist_ok=True)
        os.symlink(CAPS_CACHE, os.path.join(work, "cache-libvirt"))
        shim = build_shim(os.path.join(work, "shim"))
        write_host_config(os.path.join(work, "host1.conf"), 1, etcd_url="http://127.0.0.1:1", shared=shared,
                          state_root=os.path.join(work, "state"), libvirt_uri="qemu:///system")
        out = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", sys.executable,
                              os.path.join(HERE, "libvirt_lease_probe.py"), work, shim],
                             capture_output=True, text=True, timeout=400)
        found = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert "error" not in found, found
    assert found["start"]["ok"] and found["vm_state"] == "running"
    assert found["lease_held_by_qemu"], found          # sanlock lists the lease under qemu's pid
    assert found["live_owners"] == [1]
    assert found["second"].startswith("Failed to acquire lock"), found  # -> Outcome LOCK in the agent
    assert found["destroy"] and found["check_after"]  # the lease dies with qemu
    assert found["lease_free_after_destroy_s"] < 5
