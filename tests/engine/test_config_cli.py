"""Config file errors and the keel-engine command line: one clear line, never a traceback."""
import os
import subprocess
import sys

import pytest

from keel_engine import config

CLI = os.path.join(os.path.dirname(sys.executable), "keel-engine")


def write(tmp_path, text):
    p = tmp_path / "engine.conf"
    p.write_text(text)
    return str(p)


def test_defaults_and_values(tmp_path):
    cfg = config.load(write(tmp_path, "[engine]\nlisten = 0.0.0.0:9000\n[libvirt]\nbridge_map = ovirtmgmt:br0\n"))
    assert cfg.listen == "0.0.0.0:9000"
    assert cfg.bridge_map == {"ovirtmgmt": "br0"}
    assert cfg.token_lifetime == 3600


@pytest.mark.parametrize("text,needle", [
    ("[engine]\nworkers = many\n", "[engine] workers = 'many' is invalid; expected a positive integer"),
    ("[engine]\nlisten = nowhere\n", "expected HOST:PORT"),
    ("[libvirt]\nuri_template = qemu:///system\n", "expected qemu+TRANSPORT://{address}/system"),
    ("[libvirt]\nuri_template = qemu+ext://{address}/system?command=/bin/sh\n", "expected qemu+TRANSPORT://"),
    ("[libvirt]\nuri_template = qemu+tcp://{address}/system\n", "uses transport 'tcp', which [libvirt] transports"),
    ("[libvirt]\ntransports = tls,unix\n", "[libvirt] transports = 'tls,unix' is invalid"),
    ("[power]\ngrace_period = soon\n", "[power] grace_period = 'soon' is invalid; expected a number >= 0"),
    ("[power]\ncolour = blue\n", "unknown key [power] colour"),
    ("[elsewhere]\nx = 1\n", "unknown section [elsewhere]"),
    ("[engine]\ncolour = blue\n", "unknown key [engine] colour"),
    ("not an ini file", "not a valid INI file"),
    ("[monitor]\ninterval = -1\n", "expected seconds, a positive number"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert needle in str(e.value) and path in str(e.value)


def test_cli_reports_config_error_in_one_line(tmp_path):
    path = write(tmp_path, "[engine]\nworkers = 0\n")
    r = subprocess.run([CLI, "--config", path, "db-upgrade"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "workers" in r.stderr and "Traceback" not in r.stderr


def test_cli_missing_config_file(tmp_path):
    r = subprocess.run([CLI, "--config", str(tmp_path / "nope.conf"), "db-upgrade"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "no such config file" in r.stderr and "Traceback" not in r.stderr


def test_db_upgrade_and_create_admin(tmp_path):
    db = tmp_path / "e.db"
    path = write(tmp_path, f"[database]\nurl = sqlite:///{db}\n[engine]\nsecret_key_file = {tmp_path}/k\n")
    r = subprocess.run([CLI, "--config", path, "db-upgrade"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw\n")
    r = subprocess.run([CLI, "--config", path, "create-admin", "--password-file", str(pw)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    from keel_engine.app import create_app
    app = create_app(config.load(path))
    r = app.test_client().post("/ovirt-engine/sso/oauth/token",
                               data={"grant_type": "password", "username": "admin@internal", "password": "s3cret-pw"})
    assert r.status_code == 200 and r.get_json()["access_token"]


def test_nfs_mount_root_defaults_to_ovirts_and_is_normalised(tmp_path):
    assert config.load(write(tmp_path, "")).nfs_mount_root == "/rhev/data-center/mnt"
    cfg = config.load(write(tmp_path, "[storage]\nnfs_mount_root = /srv//keel/mnt/\n"))
    assert cfg.nfs_mount_root == "/srv/keel/mnt"


@pytest.mark.parametrize("value", ["mnt", "./mnt", "/"])
def test_nfs_mount_root_must_be_an_absolute_directory(tmp_path, value):
    path = write(tmp_path, f"[storage]\nnfs_mount_root = {value}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert str(e.value) == (f"{path}: [storage] nfs_mount_root = {value!r} is invalid; "
                            "expected an absolute directory path, e.g. /rhev/data-center/mnt")
