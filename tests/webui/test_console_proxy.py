"""The console proxy relays only what a signed, unexpired ticket names: the
tickets' rules (fast) and the real `keel-engine console-proxy` refusing a
forged ticket without ever connecting anywhere (slow)."""
import base64
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from harness.procs import stop_group
from harness.wait import wait_for
from keel_engine import console_proxy as cp

SECRET = b"k" * 44
VENV_BIN = os.path.dirname(sys.executable)


def test_a_ticket_names_one_display_until_it_expires():
    token = cp.sign(SECRET, "vm-1", "127.0.11.31", 5900, now=1000)
    assert cp.verify(SECRET, token, now=1000 + cp.TICKET_SECONDS) == cp.Target(
        "vm-1", "127.0.11.31", 5900, 1000 + cp.TICKET_SECONDS)
    with pytest.raises(cp.BadTicket, match="expired"):
        cp.verify(SECRET, token, now=1001 + cp.TICKET_SECONDS)


def _forge(token, **changes):
    body, _, mac = token.partition(".")
    d = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    d.update(changes)
    return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=") + "." + mac


@pytest.mark.parametrize("bad", [
    "", "no-dot", "a.b.c", "!!!.???", "x" * 2000,
    "forged-host", "forged-port", "other-secret",
])
def test_a_changed_or_foreign_ticket_is_refused(bad):
    token = cp.sign(SECRET, "vm-1", "127.0.11.31", 5900)
    token = {"forged-host": _forge(token, host="127.0.0.1"), "forged-port": _forge(token, port=22),
             "other-secret": cp.sign(b"another engine's key", "vm-1", "127.0.11.31", 5900)}.get(bad, bad)
    with pytest.raises(cp.BadTicket):
        cp.verify(SECRET, token)


def _upgrade(address, token):
    """A websocket upgrade to the proxy; the proxy's answer, until it closes."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((f"GET /?token={token} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        s.settimeout(5)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except socket.timeout:
            pass
        return data


@pytest.mark.slow
def test_the_proxy_never_relays_without_a_valid_ticket(tmp_path):
    target = socket.create_server(("127.0.11.31", 0))
    target.settimeout(0.5)
    port = target.getsockname()[1]
    listen = "127.0.11.30:6100"
    key = tmp_path / "secret.key"
    conf = tmp_path / "engine.conf"
    conf.write_text(f"[database]\nurl = sqlite:///{tmp_path}/e.db\n[engine]\nsecret_key_file = {key}\n"
                    f"[console]\nproxy_listen = {listen}\n")
    log = open(tmp_path / "proxy.log", "wb")
    proc = subprocess.Popen([os.path.join(VENV_BIN, "keel-engine"), "--config", str(conf), "console-proxy"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: socket.create_connection(("127.0.11.30", 6100), timeout=1).close() or True, 30,
                 what="the console proxy listening")
        secret = key.read_bytes().strip()
        for token in (_forge(cp.sign(secret, "vm-1", "127.0.11.31", 1), port=port),
                      cp.sign(b"not the engine's key", "vm-1", "127.0.11.31", port),
                      cp.sign(secret, "vm-1", "127.0.11.31", port, now=time.time() - 3600)):
            _upgrade(listen, token)
            with pytest.raises(socket.timeout):
                target.accept()[0].close()
        # the same display with a good ticket is reached: the refusals above were the ticket's
        _upgrade(listen, cp.sign(secret, "vm-1", "127.0.11.31", port))
        target.accept()[0].close()
    finally:
        stop_group(proc)
        log.close()
        target.close()
    text = (tmp_path / "proxy.log").read_text()
    assert text.count("console connection refused") == 3 and "relaying to 127.0.11.31" in text
