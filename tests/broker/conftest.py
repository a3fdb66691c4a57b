"""Two simulated hosts' brokers as real processes, against a real etcd and
real sanlock daemons (one per host), sharing a temporary 'shared storage'."""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from harness.daemons import EtcdProcess, SanlockDaemon, build_shim
from harness.hostconf import write_host_config
from harness.wait import wait_for
from keel_common.bmc import ClusterKey
from keel_common.brokerclient import BrokerClient, BrokerError
from keel_common.config import load_host_config

BIN = os.path.dirname(sys.executable)


class BrokerProc:
    def __init__(self, config_path):
        self.config_path = config_path
        self.cfg = load_host_config(config_path)
        self.proc = None
        self.client = BrokerClient(self.cfg.broker_socket, timeout=5)
        # Stands in for the agent: publishes while set (the broker releases a
        # claim whose agent went silent while no engine VM runs).
        self.agent_alive = threading.Event()
        self.agent_alive.set()
        self._gone = threading.Event()
        threading.Thread(target=self._agent_loop, daemon=True).start()

    def _agent_loop(self):
        while not self._gone.wait(0.5):
            if self.agent_alive.is_set():
                try:
                    self.client.call("publish", record={"state": "EngineDown", "score": 3400,
                                                        "engine": {"vm": "down", "health": "bad"}})
                except BrokerError:
                    pass

    def start(self):
        logf = open(os.path.join(self.cfg.state_dir, "broker.log"), "ab")
        self.proc = subprocess.Popen([os.path.join(BIN, "keel-ha-broker"), "--config", self.config_path],
                                     stdout=logf, stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(self.cfg.broker_socket) and self.client.call("ping"), 30,
                 "broker socket")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self._gone.set()
        self.stop()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="package")
def cluster():
    # Not under pytest's 0700 tmp dir: the sanlock daemon drops to the
    # sanlock user and must reach its run dir and the shared storage.
    root = Path(tempfile.mkdtemp(prefix="keel-brokers-", dir="/var/tmp"))
    root.chmod(0o755)
    shared = root / "shared"
    shared.mkdir()
    shutil.chown(shared, "sanlock", "sanlock")
    shim = build_shim(str(root / "shim"))
    etcd = EtcdProcess(str(root), client_port=23790, peer_port=23800).start()
    key = ClusterKey.create(str(root / "cluster.key"))   # one key, held by both hosts
    daemons, brokers = [], []
    try:
        for hid in (1, 2):
            d = SanlockDaemon(str(root), f"host{hid}", shim).start()
            daemons.append(d)
            path = write_host_config(str(root / f"host{hid}.conf"), hid, etcd_url=etcd.url, shared=str(shared),
                                     state_root=str(root / "state"), sanlock_run_dir=d.run_dir,
                                     extra={"host": {"cluster_key_file": key.path}})
            os.makedirs(load_host_config(path).state_dir, exist_ok=True)
        # Lockspace and lease on "shared storage", as deploy or the lab writes them.
        subprocess.run([sys.executable, "-c",
                        "import sys; from keel_common.config import load_host_config;"
                        "from keel_broker.lockspace import initialize_storage;"
                        "initialize_storage(load_host_config(sys.argv[1]))", str(root / "host1.conf")],
                       check=True, env=daemons[0].env)
        for hid in (1, 2):
            brokers.append(BrokerProc(str(root / f"host{hid}.conf")).start())
        yield {"etcd": etcd, "sanlock": daemons, "brokers": brokers, "root": root}
    finally:
        for b in brokers:
            b.close()
        for d in daemons:
            d.stop()
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)
