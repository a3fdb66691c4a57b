"""The browser console's websocket proxy (`keel-engine console-proxy`).

A browser's noVNC speaks VNC over a websocket; this process relays it to one
VM's VNC display on its host. It relays nothing but what a proxy ticket
names: a token the web UI signs for one VM's display (host address and
port), valid for a minute, HMAC-signed with a key derived from the engine's
secret key file. Without a valid ticket the websocket is closed before any
connection is made, so the proxy is never a relay to arbitrary host:port.
The VNC password (the libvirt ticket, valid for two minutes) is a second,
separate lock on the display itself."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

log = logging.getLogger("keel.engine.console")
PURPOSE = b"keel console proxy ticket v1"
TICKET_SECONDS = 60


@dataclass(frozen=True)
class Target:
    vm_id: str
    host: str
    port: int
    expires: int      # Unix time


class BadTicket(ValueError):
    """Why a proxy ticket was refused (for the log, never for the client)."""


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, vm_id: str, host: str, port: int, now: float | None = None) -> str:
    body = json.dumps({"vm": vm_id, "host": host, "port": int(port),
                       "exp": int((now if now is not None else time.time()) + TICKET_SECONDS)},
                      separators=(",", ":"), sort_keys=True).encode()
    return _b64(body) + "." + _b64(hmac.new(_key(secret), body, hashlib.sha256).digest())


def verify(secret: bytes, token: str, now: float | None = None) -> Target:
    if not token or len(token) > 1024 or token.count(".") != 1:
        raise BadTicket("malformed ticket")
    body_text, _, mac_text = token.partition(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except ValueError:
        raise BadTicket("malformed ticket") from None
    if not hmac.compare_digest(mac, hmac.new(_key(secret), body, hashlib.sha256).digest()):
        raise BadTicket("bad signature")
    try:
        d = json.loads(body)
        target = Target(str(d["vm"]), str(d["host"]), int(d["port"]), int(d["exp"]))
    except (ValueError, KeyError, TypeError):
        raise BadTicket("malformed ticket") from None
    if target.expires < (now if now is not None else time.time()):
        raise BadTicket(f"ticket for VM {target.vm_id} expired")
    if not 1 <= target.port <= 65535:
        raise BadTicket("bad port")
    return target


def secret_of(cfg) -> bytes:
    """The engine's secret key file (made on first use, as for fence agents)."""
    from .services.hosts import fernet
    fernet(cfg)
    with open(cfg.secret_key_file, "rb") as f:
        return f.read().strip()


def _plugin(secret: bytes):
    from websockify.token_plugins import BasePlugin

    class SignedTickets(BasePlugin):
        def lookup(self, token):
            try:
                t = verify(secret, token)
            except BadTicket as e:
                log.warning("console connection refused: %s", e)
                return None
            log.info("console of VM %s: relaying to %s:%d", t.vm_id, t.host, t.port)
            return t.host, str(t.port)
    return SignedTickets(None)


def serve(cfg) -> None:
    from websockify.websocketproxy import WebSocketProxy
    host, _, port = cfg.console_proxy_listen.rpartition(":")
    log.info("console proxy listening on %s", cfg.console_proxy_listen)
    server = WebSocketProxy(listen_host=host, listen_port=int(port), token_plugin=_plugin(secret_of(cfg)),
                            verbose=False, daemon=False, web=None, heartbeat=30)
    server.start_server()
