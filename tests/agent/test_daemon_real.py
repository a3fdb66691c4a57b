"""The keel-ha-agent daemon as a process against the real brokers: systemd
notifications, one-line log per state change, clean SIGTERM that leaves the
engine VM alone, one-line config errors."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from keel_common.brokerclient import BrokerClient
from keel_common.config import load_host_config

from .conftest import wait_for

BIN = os.path.dirname(sys.executable)
pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_bad_config_is_one_line(tmp_path):
    missing = subprocess.run([os.path.join(BIN, "keel-ha-agent"), "--config", str(tmp_path / "nope.conf")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("[host]\nhost_id = zero\n")
    out = subprocess.run([os.path.join(BIN, "keel-ha-agent"), "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1


def test_daemon_notifies_claims_and_stops_cleanly(agent_cluster, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(0.5)
    procs = []
    try:
        for path in agent_cluster["configs"]:
            log = open(tmp_path / f"agent{len(procs) + 1}.log", "w")
            procs.append(subprocess.Popen(
                [os.path.join(BIN, "keel-ha-agent"), "--config", path],
                stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="10000000")))
        cfg1 = load_host_config(agent_cluster["configs"][0])
        broker = BrokerClient(cfg1.broker_socket, timeout=5)
        # Exactly one host wins the claim through the real etcd compare-and-swap.
        owner = wait_for(lambda: broker.call("status")["owner"], 60, "engine claimed")
        messages = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ({"READY=1"} <= set(messages)
                                                   and any(m.startswith("WATCHDOG=1") for m in messages)):
            try:
                messages.extend(sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                pass
        assert "READY=1" in messages
        assert any(m.startswith("WATCHDOG=1") for m in messages)
        states = {hid: rec["state"] for hid, rec in broker.call("status")["hosts"].items()}
        winner = str(owner["host_id"])
        wait_for(lambda: broker.call("status")["hosts"][winner]["state"] in
                 ("EngineStarting", "EngineUp"), 30, f"host {winner} running the engine ({states})")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        # the unit's TimeoutStopSec: a cycle in progress (a start racing for
        # the claim) finishes first, which takes longer on a loaded machine
        codes = [p.wait(30) for p in procs]
        sock.close()
    assert codes == [0, 0]
    text = (tmp_path / f"agent{owner['host_id']}.log").read_text()
    assert "EngineDown -> EngineStart" in text
    assert "received SIGTERM: stopping the agent (the engine VM is left running)" in text
    assert "Traceback" not in text
    # Every state change is logged once: no transition line repeats back to back.
    lines = [ln.split(": ", 1)[-1] for ln in text.splitlines() if " -> " in ln]
    assert all(a != b for a, b in zip(lines, lines[1:]))
