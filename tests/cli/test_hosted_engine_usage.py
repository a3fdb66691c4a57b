"""`hosted-engine` bad input: one line, a documented exit code, no traceback."""
import os
import subprocess
import sys

import pytest

HE = os.path.join(os.path.dirname(sys.executable), "hosted-engine")


def run(*args):
    r = subprocess.run([HE, *args], capture_output=True, text=True, timeout=30)
    assert "Traceback" not in r.stderr
    return r


@pytest.mark.parametrize("args, code, needle", [
    ((), 2, "one of the arguments --deploy --clean-deploy --join-bundle"),
    (("--vm-status", "--vm-start"), 2, "not allowed with argument"),
    (("--set-maintenance",), 2, "--set-maintenance needs --mode=global|local|none"),
    (("--set-maintenance", "--mode=sideways"), 2, "invalid choice: 'sideways'"),
    (("--vm-status", "--mode=global"), 2, "--mode goes with --set-maintenance"),
    (("--vm-start", "--json"), 2, "--json goes with --vm-status"),
    (("--clean-metadata", "--host-id", "x"), 2, "invalid int value: 'x'"),
    (("--clean-metadata", "--host-id", "0"), 2, "--host-id must be a positive integer"),
    (("--vm-status", "--host-id", "2"), 2, "--host-id goes with --clean-metadata, --set-bmc or --remove-bmc"),
    (("--vm-status", "--force-cleanup"), 2, "--force-cleanup goes with --clean-metadata"),
    (("--vm-status", "--bmc-address", "127.0.0.9"), 2, "--bmc-address goes with --set-bmc"),
    (("--set-bmc", "--remove-bmc"), 2, "not allowed with argument"),
    (("--set-bmc", "--bmc-port", "x"), 2, "invalid int value: 'x'"),
])
def test_usage_errors(args, code, needle, tmp_path):
    r = run("--config", str(tmp_path / "none.conf"), *args)
    assert r.returncode == code
    assert needle in r.stderr


def test_missing_config_is_exit_4(tmp_path):
    r = run("--config", str(tmp_path / "none.conf"), "--vm-status")
    assert r.returncode == 4
    assert r.stderr.strip() == (f"hosted-engine: {tmp_path}/none.conf: no such file; expected the host "
                                "configuration (see README, 'Configuring a host')")


def test_bad_config_value_is_exit_4(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[host]\nhost_id = 99999\n[etcd]\nendpoints = http://127.0.0.1:2379\n[storage]\n"
                    "shared_path = /srv\n[engine]\nhealth_url = http://x/\n[network]\ngateway = 127.0.0.1\n")
    r = run("--config", str(conf), "--vm-status")
    assert r.returncode == 4
    assert r.stderr.strip() == (f"hosted-engine: {conf}: [host] host_id = '99999' is invalid; "
                                "expected an integer from 1 to 2000")


def test_check_liveliness_reports_engine_not_up(tmp_path):
    conf = tmp_path / "ok.conf"
    conf.write_text("[host]\nhost_id = 1\n[etcd]\nendpoints = http://127.0.3.1:9\n[storage]\n"
                    "shared_path = /srv\n[engine]\nhealth_url = http://127.0.3.1:9/health\n"
                    "[network]\ngateway = 127.0.0.1\n")
    r = run("--config", str(conf), "--check-liveliness")
    assert r.returncode == 1 and r.stdout.strip() == "Hosted Engine is not up!"


def test_help_documents_exit_codes():
    r = run("--help")
    assert r.returncode == 0 and "Exit codes: 0 done; 1 refused or failed; 2 bad usage" in r.stdout


@pytest.mark.parametrize("cmd", ["keel-ha-broker", "keel-ha-agent"])
def test_daemons_reject_bad_config_with_one_line(cmd, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), cmd)
    r = subprocess.run([exe, "--config", str(tmp_path / "none.conf")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "none.conf: no such file" in r.stderr


def test_cluster_key_is_generated_once_and_never_replaced(tmp_path):
    from harness.hostconf import write_host_config
    key = tmp_path / "keel" / "cluster.key"
    conf = write_host_config(str(tmp_path / "he.conf"), 1, etcd_url="http://127.0.0.1:1", shared=str(tmp_path),
                             state_root=str(tmp_path / "state"), extra={"host": {"cluster_key_file": str(key)}})
    r = run("--config", conf, "--generate-cluster-key")
    assert r.returncode == 0 and "Copy it to every host" in r.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    first = key.read_bytes()
    r = run("--config", conf, "--generate-cluster-key")
    assert r.returncode == 1 and "exists already" in r.stderr
    assert key.read_bytes() == first


def test_set_bmc_without_the_cluster_key_is_a_config_error(tmp_path):
    from harness.hostconf import write_host_config
    conf = write_host_config(str(tmp_path / "he.conf"), 1, etcd_url="http://127.0.0.1:1", shared=str(tmp_path),
                             state_root=str(tmp_path / "state"),
                             extra={"host": {"cluster_key_file": str(tmp_path / "missing.key")}})
    env = dict(os.environ, KEEL_BMC_PASSWORD="pw")
    r = subprocess.run([HE, "--config", conf, "--set-bmc", "--bmc-address", "127.0.0.9", "--bmc-user", "admin"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 4 and "cluster key" in r.stderr and "missing" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("uri, code, needle", [
    # libvirt's built-in test driver: no daemon, and no engine VM defined there
    ("test:///default", 1, "the engine VM HostedEngine does not run on this host; hosted-engine --vm-status"),
    ("qemu+unix:///system?socket=/nonexistent/keel-test-sock", 3, "cannot reach libvirt at"),
])
def test_console_needs_the_engine_vm_here(tmp_path, uri, code, needle):
    conf = tmp_path / "ok.conf"
    conf.write_text("[host]\nhost_id = 1\n[etcd]\nendpoints = http://127.0.3.1:9\n[storage]\n"
                    "shared_path = /srv\n[engine]\nhealth_url = http://127.0.3.1:9/health\n"
                    f"libvirt_uri = {uri}\n[network]\ngateway = 127.0.0.1\n")
    r = run("--config", str(conf), "--console")
    assert r.returncode == code and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("args, needle", [
    (("--vm-status", "--config-append", "/tmp/a.ini"), "--config-append goes with --deploy"),
    (("--vm-status", "--generate-answer", "/tmp/a.ini"), "--generate-answer goes with --deploy"),
    (("--clean-deploy", "--answer-file-passwords"), "--answer-file-passwords goes with --deploy"),
])
def test_deploy_options_only_with_deploy(args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr
