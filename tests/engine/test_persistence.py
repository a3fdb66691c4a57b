"""No data loss: what the API acknowledged survives a crash of the engine
(SIGKILL of gunicorn and its workers) and a restart."""
import os
import signal
import subprocess
import sys

import ovirtsdk4.types as t
import pytest
import requests

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_acknowledged_changes_survive_a_crash(engine, sdk, token, cluster_setup):
    dc = sdk.system_service().data_centers_service().add(t.DataCenter(name="durable1", description="keep me"))
    engine.stop("serve", sig=signal.SIGKILL)
    with pytest.raises(requests.RequestException):
        requests.get(f"{engine.url}/datacenters", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    engine.start_serve()
    r = requests.get(f"{engine.url}/datacenters/{dc.id}", timeout=30,
                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    assert r.status_code == 200, r.text          # the bearer token survived too
    assert r.json()["description"] == "keep me"
    sdk.system_service().data_centers_service().data_center_service(dc.id).remove()


def test_sdk_demo_script_runs_end_to_end(engine, cluster_setup, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("keel-test-pw\n")
    demo = os.path.join(os.path.dirname(__file__), "..", "..", "appliance", "examples", "sdk_demo.py")
    r = subprocess.run([sys.executable, demo, "--url", engine.url, "--password-file", str(pw),
                        "--name", "demo1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "migrated to host" in r.stdout and "removed" in r.stdout


def test_init_cluster_is_idempotent(libvirt_pair, tmp_path):
    from .enginestack import write_config
    storage = tmp_path / "storage"
    storage.mkdir()
    # an NFS export "mounted" where the hosts (on this machine) must have it
    (tmp_path / "mnt" / "198.51.100.1:_exports_data").mkdir(parents=True)
    cfg = tmp_path / "engine.conf"
    write_config(str(cfg), f"sqlite:///{tmp_path}/e.db", "127.0.1.10:8089", str(tmp_path),
                 storage__nfs_mount_root=tmp_path / "mnt")
    cli = os.path.join(os.path.dirname(sys.executable), "keel-engine")
    argv = [cli, "--config", str(cfg), "init-cluster", "--host", "h1=127.0.1.11", "--host", "h2=127.0.1.12",
            "--storage", f"data={storage}", "--storage", "nfsdata=198.51.100.1:/exports/data"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "created data center Default" in first.stdout and "added host h2" in first.stdout
    assert "added storage domain data" in first.stdout
    assert "added storage domain nfsdata at 198.51.100.1:/exports/data" in first.stdout
    second = subprocess.run(argv[:-1] + ["nfsdata=198.51.100.1:/exports/data/"], capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout and "host h1 already present (up)" in second.stdout
    assert "storage domain nfsdata already present" in second.stdout
    moved = subprocess.run(argv[:-1] + ["nfsdata=198.51.100.1:/exports/other"], capture_output=True, text=True,
                           timeout=120)
    assert moved.returncode == 1 and "storage domain nfsdata exists with path" in moved.stderr
    bad = subprocess.run(argv[:4] + ["--host", "h1=127.0.1.99"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "exists with address 127.0.1.11" in bad.stderr
    assert "Traceback" not in bad.stderr
