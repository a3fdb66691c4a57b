"""Hosts' BMCs and the agents' fence records through real brokers and a
real etcd: entered with `hosted-engine --set-bmc` on one host, known to the
other, the password encrypted with the cluster key and never shown; each
broker reads every host's storage lease from the shared storage."""
import json
import os
import subprocess
import sys
import time

import pytest

from harness.wait import wait_for
from keel_common.bmc import FENCED, BmcRecord, ClusterKey, FenceRecord

pytestmark = [pytest.mark.slow, pytest.mark.root]
HE = os.path.join(os.path.dirname(sys.executable), "hosted-engine")
PASSWORD = "s3cret-bmc-pw"


def he(broker, *args, env=None):
    r = subprocess.run([HE, "--config", broker.config_path, *args], capture_output=True, text=True,
                       timeout=60, env=env)
    assert "Traceback" not in r.stderr
    return r.returncode, r.stdout, r.stderr


def test_bmc_set_on_one_host_is_known_to_the_other_without_its_password(cluster, tmp_path):
    b1, b2 = cluster["brokers"]
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    code, out, err = he(b1, "--set-bmc", "--host-id", "2", "--bmc-address", "127.0.3.200",
                        "--bmc-port", "6230", "--bmc-user", "admin", "--bmc-password-file", str(pw))
    assert code == 0, err
    assert "BMC of host 2 set" in out and PASSWORD not in out
    try:
        def shown():
            code, out, _ = he(b2, "--vm-status")
            return out if code == 0 and "ipmilan:admin@127.0.3.200:6230" in out else None
        out = wait_for(shown, 15, "host 2's BMC in host 2's --vm-status")
        assert PASSWORD not in out
        status = b2.client.call("status")
        assert status["bmcs"]["2"] == {"address": "127.0.3.200", "port": 6230, "username": "admin",
                                       "privilege": "administrator"}
        assert PASSWORD not in json.dumps(status)
        # The agent that fences asks for the record; only the cluster key opens it.
        rec = BmcRecord.from_json(json.dumps(b2.client.call("bmc", host_id=2)["record"]))
        assert PASSWORD not in rec.password_token
        key = ClusterKey(b2.cfg.cluster_key_file)
        assert key.credentials(rec).password == PASSWORD
        # A host with another key cannot read it: one line, not a traceback.
        other = ClusterKey.create(str(tmp_path / "other.key"))
        with pytest.raises(ValueError, match="different cluster keys"):
            other.credentials(rec)
    finally:
        code, out, _ = he(b1, "--remove-bmc", "--host-id", "2")
        assert code == 0 and "removed" in out
    assert b1.client.call("bmc", host_id=2)["record"] is None
    code, out, _ = he(b1, "--remove-bmc", "--host-id", "2")
    assert code == 0 and "had no BMC set" in out


@pytest.mark.parametrize("args, needle", [
    (("--bmc-user", "admin", "--bmc-password-file", "/dev/null"), "--set-bmc needs --bmc-address and --bmc-user"),
    (("--bmc-address", "no such host!", "--bmc-user", "a"), "neither an IP address nor a host name"),
    (("--bmc-address", "127.0.3.200", "--bmc-user", "a", "--bmc-port", "70000"), "not a port number"),
    (("--bmc-address", "127.0.3.200", "--bmc-user", "a"), "no BMC password"),
    (("--bmc-address", "127.0.3.200", "--bmc-user", "a", "--bmc-password-file", "/nonexistent"),
     "cannot read --bmc-password-file"),
])
def test_bad_bmc_settings_are_one_line_usage_errors_and_change_nothing(cluster, args, needle):
    b1, _ = cluster["brokers"]
    env = {k: v for k, v in os.environ.items() if k != "KEEL_BMC_PASSWORD"}
    code, out, err = he(b1, "--set-bmc", *args, env=env)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert b1.client.call("status")["bmcs"] == {}


def test_password_longer_than_ipmi_allows_is_refused(cluster):
    b1, _ = cluster["brokers"]
    env = dict(os.environ, KEEL_BMC_PASSWORD="x" * 21)
    code, _, err = he(b1, "--set-bmc", "--bmc-address", "127.0.3.200", "--bmc-user", "a", env=env)
    assert code == 2 and "20 bytes" in err


def test_fence_record_is_kept_and_shown(cluster):
    b1, b2 = cluster["brokers"]
    now = time.time()
    rec = FenceRecord(host_id=2, by=1, state=FENCED, generation=3, started=now - 2, ended=now,
                      detail="power off confirmed by the BMC; host lease released")
    b1.client.call("fence_record", record=rec.__dict__)
    def shown():
        code, out, _ = he(b2, "--vm-status")
        return out if "fenced by host 1" in out else None
    out = wait_for(shown, 15, "the fence in host 2's --vm-status")
    assert "host lease released" in out
    assert b2.client.call("status")["fences"]["2"]["state"] == FENCED


def test_each_broker_reads_every_hosts_storage_lease(cluster):
    b1, _ = cluster["brokers"]

    def both():
        leases = b1.client.call("status")["peer_leases"]
        return leases if {"1", "2"} <= set(leases) else None
    leases = wait_for(both, 30, "both hosts' storage leases read by host 1's broker")
    # Both sanlock daemons renew: neither lease stands still for long.
    io_timeout = b1.cfg.timing.io_timeout
    assert all(silence < 4 * io_timeout + 2 for silence, _ in leases.values())
    assert all(gen >= 1 for _, gen in leases.values())
