"""An in-process engine app on a temporary SQLite file, with the Default data
center and cluster and one host whose libvirt nobody answers; and the engine
worker running beside it in a thread (the jobs requests record need it)."""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager

from keel_engine import db
from keel_engine.app import create_app
from keel_engine.config import EngineConfig
from keel_engine.models import Cluster, DataCenter, Host

ADMIN_PASSWORD = "pw12345"


def add_default_cluster(s, hosts: dict[str, str]) -> list[Host]:
    """The Default data center and cluster, and an 'up' host per name -> address
    (libvirt over TCP at that address); committed."""
    dc = DataCenter(name="Default")
    s.add(dc)
    s.flush()
    cl = Cluster(name="Default", data_center_id=dc.id)
    s.add(cl)
    s.flush()
    rows = [Host(name=name, address=address, libvirt_uri=f"qemu+tcp://{address}/system",
                 cluster_id=cl.id, status="up") for name, address in hosts.items()]
    s.add_all(rows)
    s.commit()
    return rows


def engine_app_with_host(tmp_path, address: str, **config):
    """(config, app, sessionmaker, host id) for host `hx` at `address`."""
    cfg = EngineConfig(database_url=f"sqlite:///{tmp_path}/e.db", admin_password=ADMIN_PASSWORD,
                       secret_key_file=str(tmp_path / "fence.key"), libvirt_timeout=3,
                       libvirt_uri_template="qemu+tcp://{address}/system", libvirt_transports=("tcp",),
                       **config)
    app = create_app(cfg)
    sm = app.config["KEEL_CTX"].sessionmaker
    with sm() as s:
        host, = add_default_cluster(s, {"hx": address})
        return cfg, app, sm, host.id


@contextmanager
def running_worker(cfg):
    """The engine worker in a thread of this process, as `keel-engine worker` runs it."""
    from keel_engine.worker.main import Worker
    worker = Worker(cfg)
    thread = threading.Thread(target=worker.run_forever, daemon=True, name="engine-worker")
    thread.start()
    try:
        yield worker
    finally:
        worker.stopping.set()
        thread.join(30)


def admin_headers(app) -> dict:
    """The Authorization header of a fresh admin@internal token for the in-process app."""
    tok = app.test_client().post("/ovirt-engine/sso/oauth/token", data={
        "grant_type": "password", "username": "admin@internal", "password": ADMIN_PASSWORD}).get_json()["access_token"]
    return {"Authorization": f"Bearer {tok}"}


def assert_another_writer_gets_in(cfg, wait: float = 5.0) -> None:
    """SQLite's write lock is free now (or within `wait` s): no transaction of
    the engine's holds it while waiting for something else."""
    other = sqlite3.connect(db.sqlite_path(cfg.database_url), timeout=wait)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
    finally:
        other.close()
