"""The engine worker, never a web worker, talks to BMCs; and a long fence
does not hold the web workers: the engine runs as `keel-engine serve` (ONE
gunicorn worker, two threads) plus `keel-engine worker`, against a real BMC
(ipmi_sim) that hangs mid-fence."""
import os
import threading
import time

import pytest
import requests
from sqlalchemy import create_engine, text

from engine import enginestack

from .conftest import make_bmc, needs_ipmi_sim

pytestmark = [needs_ipmi_sim, pytest.mark.slow, pytest.mark.root]
LISTEN = "127.0.2.50:16350"
BMC_ADDRESS, BMC_PORT = "127.0.2.51", 16351
WORKER_MARK = "keel_common._ipmi_worker"


def ipmi_workers():
    """{pid: parent pid} of every running IPMI worker child."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if WORKER_MARK.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                out[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return out


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


@pytest.fixture
def stack(tmp_path):
    bmc, chassis = make_bmc(tmp_path, "bmc", BMC_ADDRESS, BMC_PORT)
    bmc.start()
    url = f"sqlite:///{tmp_path}/engine.db"
    conf = tmp_path / "engine.conf"
    # one web worker with two threads; the worker polls its (unreachable) host once, then not for an hour;
    # fences retry a hung BMC for a while, so one fence job takes tens of seconds
    enginestack.write_config(str(conf), url, LISTEN, str(tmp_path), engine__workers=1, engine__threads=2,
                             monitor__interval=3600, power__status_deadline=4, power__off_deadline=6,
                             power__fence_retries=2, power__fence_backoff=1)
    import subprocess
    subprocess.run([os.path.join(enginestack.VENV_BIN, "keel-engine"), "--config", str(conf), "db-upgrade"],
                   check=True, capture_output=True, timeout=120)
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("INSERT INTO datacenters (id, name, description, local, created) "
                       "VALUES ('dc', 'Default', '', 0, '2026-01-01')"))
        c.execute(text("INSERT INTO clusters (id, name, description, data_center_id, scheduling_policy, created) "
                       "VALUES ('cl', 'Default', '', 'dc', 'evenly_distributed', '2026-01-01')"))
        c.execute(text("INSERT INTO hosts (id, name, address, libvirt_uri, cluster_id, status, status_detail, "
                       "maintenance_requested, created) VALUES ('h1', 'h1', '127.0.2.52', "
                       "'qemu+tcp://127.0.2.52/system', 'cl', 'up', '', 0, '2026-01-01')"))
    eng.dispose()
    engine = enginestack.Engine(str(conf), LISTEN, str(tmp_path))
    engine.start()
    token = requests.post(engine.url.replace("/api", "/sso/oauth/token"), timeout=30, data={
        "grant_type": "password", "username": "admin@internal", "password": "keel-test-pw"}).json()["access_token"]
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml", "Accept": "application/json"}
    r = requests.post(f"{engine.url}/hosts/h1/fenceagents", headers=h, timeout=30, data=(
        f"<agent><type>ipmilan</type><address>{BMC_ADDRESS}</address><port>{BMC_PORT}</port>"
        "<username>admin</username><password>s3cret</password><order>1</order></agent>"))
    assert r.status_code == 201, r.text
    yield engine, h, bmc, chassis
    engine.stop()
    bmc.stop()


def test_only_the_engine_worker_talks_to_the_bmc_and_a_hung_fence_holds_no_web_worker(stack):
    engine, h, bmc, chassis = stack
    serve_pid, worker_pid = engine.procs["serve"][0].pid, engine.procs["worker"][0].pid
    gunicorn = {serve_pid, *children(serve_pid)}
    worker = {worker_pid, *children(worker_pid)}
    assert worker_pid not in gunicorn

    # a status through the BMC: answered by a job the worker runs
    seen = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.update(ipmi_workers())
            time.sleep(0.02)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = requests.post(f"{engine.url}/hosts/h1/fence", headers=h, timeout=60,
                          data="<action><fence_type>status</fence_type></action>")
        assert r.status_code == 200 and r.json()["power_management"]["status"] == "on", r.text

        # the BMC hangs: the fence job takes tens of seconds, asked for async and in the normal way
        bmc.pause()
        started = time.monotonic()
        r = requests.post(f"{engine.url}/hosts/h1/fence?async=true", headers=h, timeout=30,
                          data="<action><fence_type>stop</fence_type></action>")
        assert r.status_code == 202 and r.json()["status"] == "pending", r.text
        assert time.monotonic() - started < 5
        job_id = r.json()["job"]["id"]
        waiting = {}
        sync = threading.Thread(target=lambda: waiting.update(r=requests.post(
            f"{engine.url}/hosts/h1/fence", headers=h, timeout=120,
            data="<action><fence_type>status</fence_type></action>")), daemon=True)
        sync.start()        # holds one of the web worker's two threads while it waits for its job
        answered = []
        for _ in range(20):  # the other thread keeps serving
            t0 = time.monotonic()
            g = requests.get(f"{engine.url}/jobs/{job_id}", headers=h, timeout=30)
            assert g.status_code == 200
            answered.append(time.monotonic() - t0)
        assert g.json()["status"] == "started", "the fence should still be running against the hung BMC"
        assert max(answered) < 5, answered
        bmc.resume()
        sync.join(120)
        final = requests.get(f"{engine.url}/jobs/{job_id}", headers=h, timeout=30).json()
        deadline = time.monotonic() + 120
        while final["status"] == "started" and time.monotonic() < deadline:
            time.sleep(1)
            final = requests.get(f"{engine.url}/jobs/{job_id}", headers=h, timeout=30).json()
        assert final["status"] in ("finished", "failed"), final
    finally:
        stop.set()
        watcher.join(5)
        bmc.resume()
    # (other engines on this machine have IPMI workers of their own: only this engine's count)
    parents = {pp for pp in seen.values() if pp in gunicorn | worker}
    assert parents, "no IPMI worker of this engine was seen at all"
    assert parents <= worker, f"BMC traffic from web workers {parents & gunicorn}"
