"""`hosted-engine` against real brokers (real etcd, real sanlock)."""
import json
import os
import subprocess
import sys

import pytest

from harness.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]
HE = os.path.join(os.path.dirname(sys.executable), "hosted-engine")


def he(broker, *args):
    r = subprocess.run([HE, "--config", broker.config_path, *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def test_vm_status_json_has_ovirts_shape_and_every_host_live(cluster):
    b1, _ = cluster["brokers"]

    def both_live():
        code, out, _ = he(b1, "--vm-status", "--json")
        data = json.loads(out) if code == 0 else {}
        return data if all(data.get(h, {}).get("live-data") for h in ("1", "2")) else None
    data = wait_for(both_live, 30, "both hosts live in --vm-status --json")
    assert set(data) == {"1", "2", "global_maintenance"}
    for hid in ("1", "2"):
        h = data[hid]
        assert set(h) == {"host-id", "host-ts", "score", "engine-status", "hostname", "maintenance",
                          "stopped", "live-data", "extra"}
        assert set(h["engine-status"]) == {"vm", "health", "detail", "reason"}
        assert h["host-id"] == int(hid) and h["hostname"] == f"host{hid}"
    assert data["global_maintenance"] is False


def test_vm_status_text_and_global_maintenance_banner(cluster):
    b1, b2 = cluster["brokers"]
    code, out, _ = he(b1, "--set-maintenance", "--mode=global")
    assert code == 0 and "Global maintenance is on" in out
    try:
        wait_for(lambda: "GLOBAL MAINTENANCE" in he(b2, "--vm-status")[1], 10, "banner on host2")
        code, out, _ = he(b2, "--vm-status")
        assert "--== Host host1 (id: 1) status ==--" in out and "--== Host host2 (id: 2) status ==--" in out
    finally:
        assert he(b1, "--set-maintenance", "--mode=none")[0] == 0


def test_local_maintenance_refused_when_engine_would_be_stranded_is_not_triggered_without_engine(cluster):
    b1, _ = cluster["brokers"]
    # No engine VM runs on host1, so local maintenance is accepted.
    code, out, err = he(b1, "--set-maintenance", "--mode=local")
    assert code == 0, err
    assert b1.client.call("status")["local_maintenance"] is True
    assert he(b1, "--set-maintenance", "--mode=none")[0] == 0


def test_shared_config_and_requests(cluster):
    b1, b2 = cluster["brokers"]
    assert he(b1, "--set-shared-config", "mykey", "v1")[0] == 0
    code, out, _ = he(b2, "--get-shared-config", "mykey")
    assert code == 0 and out.strip() == "mykey : v1"
    code, _, err = he(b2, "--get-shared-config", "never-set")
    assert code == 1 and err.strip() == "hosted-engine: never-set is not set"
    # No engine runs here: shutdown is refused with a reason, not queued.
    code, _, err = he(b1, "--vm-shutdown")
    assert code == 1 and "not running on this host" in err


def test_clean_metadata_refuses_live_host_then_cleans_with_force(cluster):
    b1, b2 = cluster["brokers"]
    code, _, err = he(b1, "--clean-metadata", "--host-id", "2")
    assert code == 1 and "record is live" in err
    code, _, err = he(b1, "--reinitialize-lockspace")
    assert code == 1 and "only in global maintenance" in err


def test_broker_down_is_exit_3_with_one_line(cluster, tmp_path):
    b1, _ = cluster["brokers"]
    conf = tmp_path / "other.conf"
    text = open(b1.config_path).read().replace(b1.cfg.broker_socket, str(tmp_path / "nobroker.sock"))
    conf.write_text(text)
    r = subprocess.run([HE, "--config", str(conf), "--vm-status"], capture_output=True, text=True)
    assert r.returncode == 3
    assert r.stderr.strip() == f"hosted-engine: the HA broker is not running (no socket at {tmp_path}/nobroker.sock)"
