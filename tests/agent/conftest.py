"""A two-host cluster of real parts for the agent's integration tests: one
real etcd, one real sanlock daemon per host, the real broker daemons, and an
HTTP server standing in for the engine's health URL. The engine VM is
defined through libvirt's test driver (in the agent's own process): the
real libvirtd + qemu + sanlock lock driver path is exercised by the lab."""
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from harness.daemons import EtcdProcess, SanlockDaemon, build_shim
from harness.hostconf import write_host_config
from harness.wait import wait_for  # noqa: F401  (the agent tests import it from here)
from keel_common.brokerclient import BrokerClient
from keel_common.config import load_host_config

BIN = os.path.dirname(sys.executable)
ADDRESS = "127.0.3.1"         # see the report: 127.0.3.x ports 23890-23899 for these tests
ETCD_PORTS = (23890, 23900)




class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"DB Up!Welcome to Health Status!")

    def log_message(self, *args):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def agent_cluster():
    if os.geteuid() != 0 or shutil.which("etcd") is None or shutil.which("sanlock") is None:
        pytest.skip("needs root, etcd and sanlock")
    root = Path(tempfile.mkdtemp(prefix="keel-agent-", dir="/var/tmp"))
    root.chmod(0o755)
    shared = root / "shared"
    shared.mkdir()
    shutil.chown(shared, "sanlock", "sanlock")
    health = http.server.ThreadingHTTPServer((ADDRESS, _free_port()), _Health)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    health_url = f"http://{ADDRESS}:{health.server_address[1]}/health"
    shim = build_shim(str(root / "shim"))
    etcd = EtcdProcess(str(root), address=ADDRESS, client_port=ETCD_PORTS[0], peer_port=ETCD_PORTS[1],
                       name="agenttest").start()
    daemons, brokers, configs = [], [], []
    try:
        for hid in (1, 2):
            d = SanlockDaemon(str(root), f"host{hid}", shim).start()
            daemons.append(d)
            # test:///FILE gives each connection its own private "host"; test:///default
            # would share one set of domains between both agents in this process.
            node = root / f"libvirt-host{hid}.xml"
            node.write_text("<node><cpu><mhz>2000</mhz></cpu><memory>8388608</memory></node>\n")
            path = write_host_config(str(root / f"host{hid}.conf"), hid, etcd_url=etcd.url,
                                     shared=str(shared), state_root=str(root / "state"),
                                     sanlock_run_dir=d.run_dir, health_url=health_url,
                                     gateway=ADDRESS, libvirt_uri=f"test://{node}")
            configs.append(path)
            os.makedirs(load_host_config(path).state_dir, exist_ok=True)
        subprocess.run([sys.executable, "-c",
                        "import sys; from keel_common.config import load_host_config;"
                        "from keel_broker.lockspace import initialize_storage;"
                        "initialize_storage(load_host_config(sys.argv[1]))", configs[0]],
                       check=True, env=daemons[0].env)
        for path in configs:
            cfg = load_host_config(path)
            log = open(os.path.join(cfg.state_dir, "broker.log"), "ab")
            proc = subprocess.Popen([os.path.join(BIN, "keel-ha-broker"), "--config", path],
                                    stdout=log, stderr=subprocess.STDOUT)
            brokers.append(proc)
            client = BrokerClient(cfg.broker_socket, timeout=5)
            wait_for(lambda: os.path.exists(cfg.broker_socket) and client.call("ping"), 30, "broker socket")
            # The host-id lease takes a few io_timeouts to join.
            wait_for(lambda: client.call("status")["lockspace"]["held"], 60, "lockspace joined")
        yield {"root": root, "configs": configs, "etcd": etcd, "sanlock": daemons, "brokers": brokers}
    finally:
        for proc in brokers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for d in daemons:
            d.stop()
        etcd.stop()
        health.shutdown()
        shutil.rmtree(root, ignore_errors=True)
