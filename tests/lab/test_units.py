"""Fast tests of the lab's pure logic: the observer's verdict, host naming,
restart policies, the initramfs format and the CLI's one-line errors."""
from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys

import pytest

from keel_lab.hostinit import Daemon, unit_policy
from keel_lab.image import _newc_archive
from keel_lab.layout import LabError, LabLayout
from keel_lab.observer import _xml_has_lease, verdict


def ev(t, kind, host=None, **kw):
    return dict(t=t, event=kind, host=host, **kw)


def test_verdict_clean_failover_is_ok():
    events = [ev(0, "observer_started"), ev(1, "start", "host1"), ev(5, "stop", "host1"),
              ev(6, "start", "host2")]
    v = verdict(events)
    assert v["ok"] and v["multiple_engines"] == [] and v["running_now"] == ["host2"]
    assert v["engine_starts"] == 2 and v["engine_stops"] == 1


def test_verdict_reports_every_interval_with_two_engines():
    events = [ev(0, "observer_started"), ev(1, "start", "host1"), ev(2, "start", "host2"),
              ev(3.5, "stop", "host1"), ev(10, "start", "host3"), ev(12, "stop", "host3")]
    v = verdict(events)
    assert not v["ok"]
    assert [(o["from"], o["to"], o["hosts"]) for o in v["multiple_engines"]] == [
        (2, 3.5, ["host1", "host2"]), (10, 12, ["host2", "host3"])]


def test_verdict_open_overlap_and_unleased_start():
    events = [ev(1, "start", "host1"), ev(2, "start", "host2"),
              ev(3, "start_without_lease", "host2", lease={"owner": 1}, xml_lease=False)]
    v = verdict(events)
    assert v["multiple_engines"][0]["to"] is None
    assert v["starts_without_lease"][0]["host"] == "host2"
    assert not verdict(events, since=2.5)["multiple_engines"]  # judged from `since` on
    assert not verdict(events, since=2.5)["ok"]                # but the unleased start counts


def test_xml_lease_detection():
    with_lease = ("<domain><devices><lease><lockspace>hosted-engine</lockspace><key>engine</key>"
                  "<target path='/x' offset='0'/></lease></devices></domain>")
    assert _xml_has_lease(with_lease)
    assert not _xml_has_lease(with_lease.replace("engine</key>", "other</key>"))
    assert not _xml_has_lease("<domain><devices/></domain>")
    assert not _xml_has_lease("not xml")


def test_host_names_and_addresses():
    lab = LabLayout("/tmp/x", 3)
    assert lab.host("host2").address == "198.51.100.12"
    assert lab.host("host2").netns == "lab-h2" and lab.host(2).bmc_port == 6232
    assert lab.etcd_endpoints == ["http://198.51.100.11:2379", "http://198.51.100.12:2379",
                                  "http://198.51.100.13:2379"]
    assert [h.etcd_member for h in LabLayout("/tmp/x", 4).all_hosts()] == [True, True, True, False]
    for bad in ("host4", "host0", "hostx", "node1", ""):
        with pytest.raises(LabError, match="unknown host"):
            lab.host(bad)


@pytest.mark.parametrize("policy,status,restart", [
    ("always", 0, True), ("no", 9, False),
    ("on-failure", 1 << 8, True), ("on-failure", 0, False), ("on-failure", signal.SIGKILL, True),
    ("on-failure", signal.SIGTERM, False), ("on-abnormal", 1 << 8, False),
    ("on-abnormal", signal.SIGKILL, True),
])
def test_restart_policies_follow_systemd(policy, status, restart):
    # wait() statuses: exit code in the high byte, a signal number in the low bits.
    assert Daemon("d", ["x"], restart=policy).should_restart(status) is restart


def test_unit_policy_reads_restart_from_unit_file(tmp_path, monkeypatch):
    import keel_lab.hostinit as hi
    (tmp_path / "x.service").write_text("[Service]\nExecStart=/bin/x\nRestart=on-failure\nRestartSec=5s\n")
    monkeypatch.setattr(hi, "SYSTEMD_DIR", str(tmp_path))
    assert unit_policy("x.service", ("always", 1.0)) == ("on-failure", 5.0)
    assert unit_policy("missing.service", ("always", 1.0)) == ("always", 1.0)


def test_newc_archive_is_readable_by_cpio_tools(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "init").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "init", 0o755)
    (root / "bin" / "data").write_bytes(b"x" * 7)
    archive = tmp_path / "a.cpio.gz"
    archive.write_bytes(gzip.compress(_newc_archive(str(root))))
    # busybox's cpio is an independent reader of the format.
    out = subprocess.run(["busybox", "sh", "-c", f"zcat {archive} | busybox cpio -t"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert sorted(out) == ["bin", "bin/data", "init"]
    dest = tmp_path / "out"
    dest.mkdir()
    subprocess.run(["busybox", "sh", "-c", f"zcat {archive} | busybox cpio -id"], cwd=dest,
                   check=True, capture_output=True)
    assert (dest / "bin" / "data").read_bytes() == b"x" * 7
    assert os.access(dest / "init", os.X_OK)


@pytest.mark.parametrize("args,needle", [
    (["status"], "no lab in"),
    (["power", "host1", "off"], "no lab in"),
    (["power", "host1", "explode"], "invalid choice"),
    (["kill", "host1", "kernel"], "invalid choice"),
    (["up", "--hosts", "many"], "invalid int value"),
    (["exec", "host1", "--", "true"], "no lab in"),
    (["check"], "no lab in"),
    (["journal", "--", "-n", "5"], "no lab in"),
    (["up", "--engine", "vmware"], "invalid choice"),
    ([], "required"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, needle):
    cp = subprocess.run([sys.executable, "-m", "keel_lab.cli"] + args[:1] + (
        ["--dir", str(tmp_path / "nolab")] if args else []) + args[1:],
        capture_output=True, text=True, timeout=60)
    assert cp.returncode != 0
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], cp.stderr
    assert "Traceback" not in cp.stderr


def test_cli_rejects_out_of_range_hosts(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("up checks root first")
    cp = subprocess.run([sys.executable, "-m", "keel_lab.cli", "up", "--dir", str(tmp_path / "l"),
                         "--hosts", "12"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1 and cp.stderr.strip() == \
        "keel-lab: --hosts 12 is out of range; expected 1 to 9"


def test_the_storage_domain_is_the_nfs_export_at_ovirts_mount_point():
    from keel_lab import nfs
    from keel_lab.appliance import engine_settings
    lab = LabLayout("/tmp/x", 3)
    assert nfs.EXPORT == "198.51.100.1:/shared"
    assert lab.nfs_mount_root == "/tmp/x/mnt"
    assert lab.storage_domain_mount == "/tmp/x/mnt/198.51.100.1:_shared"
    settings = engine_settings(lab)
    assert settings["storage"] == {"nfs_mount_root": "/tmp/x/mnt"}
    # inside the engine VM only the mount point exists, not DIR/shared
    assert settings["power"]["lockspace_path"] == "/tmp/x/mnt/198.51.100.1:_shared/hosted-engine.lockspace"
    assert "Pseudo = /shared;" in nfs.config_text(lab) and "Path = /tmp/x/shared;" in nfs.config_text(lab)


def test_the_engine_vm_seed_mounts_the_export_at_the_mount_point_the_engine_computes():
    from keel_appliance.seed import NfsMount, SeedConfig, validate
    from keel_common.nfs import mount_point
    from keel_lab import nfs
    from keel_lab.appliance import engine_settings
    lab = LabLayout("/var/lib/keel-lab", 3)
    settings = engine_settings(lab)
    cfg = validate(SeedConfig(hostname="engine.lab.test", admin_password="secret-pw", engine_conf=settings,
                              storage=NfsMount(export=nfs.EXPORT, mount_point=lab.storage_domain_mount)))
    assert cfg.storage.mount_point == mount_point(settings["storage"]["nfs_mount_root"], "198.51.100.1", "/shared")


def test_the_mount_point_is_a_symlink_to_the_shared_dir_made_idempotently(tmp_path):
    from keel_lab.hostfiles import link_storage_domain_mount
    lab = LabLayout(str(tmp_path), 3)
    os.makedirs(lab.shared)
    (tmp_path / "shared" / "disk.img").write_text("x")
    link_storage_domain_mount(lab)
    link_storage_domain_mount(lab)
    assert os.readlink(lab.storage_domain_mount) == lab.shared
    assert open(os.path.join(lab.storage_domain_mount, "disk.img")).read() == "x"
    os.unlink(lab.storage_domain_mount)
    os.symlink(str(tmp_path / "elsewhere"), lab.storage_domain_mount)     # stale: replaced
    link_storage_domain_mount(lab)
    assert os.readlink(lab.storage_domain_mount) == lab.shared
    assert os.listdir(lab.nfs_mount_root) == ["198.51.100.1:_shared"]


def test_a_directory_at_the_mount_point_is_never_replaced(tmp_path):
    from keel_lab.hostfiles import link_storage_domain_mount
    lab = LabLayout(str(tmp_path), 3)
    os.makedirs(lab.storage_domain_mount)
    with pytest.raises(LabError, match="exists and is not the lab's link to"):
        link_storage_domain_mount(lab)
    assert os.path.isdir(lab.storage_domain_mount) and not os.path.islink(lab.storage_domain_mount)


def test_bare_hosts_get_their_answers_and_the_engine_settings_without_the_installers_sections(tmp_path):
    import configparser
    import stat
    from keel_lab import deploy
    from keel_lab.appliance import engine_settings, lab_engine_settings
    lab = LabLayout(str(tmp_path), 2, "fast", "bare")
    assert lab.bare and lab.storage_view(lab.host(2)) == str(tmp_path / "mnt" / "198.51.100.1:_shared")
    assert not LabLayout(str(tmp_path), 2).bare
    assert LabLayout(str(tmp_path), 2).storage_view(lab.host(2)) == lab.host(2).storage_mount
    a2 = deploy.deploy_answers(lab, lab.host(2), "/cache/images/k")
    assert a2["network"]["host_address"] == "198.51.100.12" and a2["host"]["name"] == "host2"
    assert a2["bmc"]["port"] == 6232
    answers = deploy.write_files(lab, "/cache/images/k")
    assert answers == str(tmp_path / "deploy" / "answers.ini")
    for name in ("answers.ini", "admin-password", "bmc-password"):
        assert stat.S_IMODE(os.stat(tmp_path / "deploy" / name).st_mode) == 0o600
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(answers)
    got = {s: dict(cp[s]) for s in cp.sections()}
    assert got["storage"] == {"connection": "198.51.100.1:/shared", "mount_root": str(tmp_path / "mnt"),
                              "domain_name": "shared"}
    assert got["engine_vm"] == {"name": "HostedEngine", "hostname": "engine.lab.test", "memory_mb": "1024",
                                "vcpus": "2", "mac": "52:54:00:6b:ee:01", "address": "198.51.100.100/24",
                                "appliance": "/cache/images/k", "domain_type": "qemu"}
    assert got["network"] == {"bridge": "br0", "gateway": "198.51.100.1", "host_address": "198.51.100.11"}
    assert got["host"] == {"name": "host1", "timing_profile": "fast"}
    assert got["engine"] == {"data_center": "Default", "cluster": "Default",
                             "admin_password_file": str(tmp_path / "deploy" / "admin-password"),
                             "extra_conf": str(tmp_path / "deploy" / "engine-extra.conf")}
    assert got["bmc"] == {"address": "198.51.100.1", "port": "6231", "user": "admin",
                          "password_file": str(tmp_path / "deploy" / "bmc-password"), "options": "lanplus=1,cipher=3"}
    password = (tmp_path / "deploy" / "admin-password").read_text()
    assert len(password.strip()) >= 12
    deploy.write_files(lab, "/cache/images/k")
    assert (tmp_path / "deploy" / "admin-password").read_text() == password    # made once
    assert (tmp_path / "deploy" / "bmc-password").read_text() == "keel-lab\n"
    extra = configparser.ConfigParser(interpolation=None)
    extra.read(tmp_path / "deploy" / "engine-extra.conf")
    assert sorted(extra.sections()) == ["libvirt", "monitor", "power"]
    assert {s: dict(extra[s]) for s in extra.sections()} == lab_engine_settings(lab)
    full = engine_settings(lab)
    assert {k: v for k, v in full.items() if k not in ("ha", "storage")} == lab_engine_settings(lab)
    bundle = tmp_path / "deploy" / "join.bundle"
    assert deploy.deploy_commands(lab) == [
        f"keel-lab exec --dir {tmp_path} host1 -- hosted-engine --deploy --config-append={answers}",
        f"keel-lab exec --dir {tmp_path} host1 -- hosted-engine --join-bundle={bundle}",
        f"keel-lab exec --dir {tmp_path} host2 -- hosted-engine --deploy --join={bundle} "
        f"--config-append={tmp_path / 'deploy' / 'answers-host2.ini'}"]
