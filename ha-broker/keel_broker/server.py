"""The broker's Unix socket: one JSON request per line, one answer per line."""
from __future__ import annotations

import json
import logging
import os
import socketserver

log = logging.getLogger("keel.broker.server")

MAX_REQUEST = 64 * 1024


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self):
        while True:
            try:
                line = self.rfile.readline(MAX_REQUEST + 1)
            except OSError:
                return
            if not line:
                return
            if len(line) > MAX_REQUEST:
                answer = {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
            else:
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("not an object")
                except ValueError:
                    answer = {"ok": False, "error": "request is not a JSON object"}
                else:
                    answer = self.server.broker.handle(req)
            try:
                self.wfile.write(json.dumps(answer).encode() + b"\n")
            except OSError:
                return


class BrokerServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, broker):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from a previous run
        self.broker = broker
        old = os.umask(0o077)  # root only: the socket can stop the engine
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        log.info("listening on %s", path)
