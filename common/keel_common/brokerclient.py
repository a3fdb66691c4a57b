"""Client side of the broker's Unix-socket protocol (docs/ha-protocol.md)."""
from __future__ import annotations

import json
import socket


class BrokerError(Exception):
    """The broker could not be reached or refused a request; str() is for humans."""


class BrokerClient:
    def __init__(self, path: str, timeout: float = 10.0):
        self.path = path
        self.timeout = timeout

    def call(self, op: str, **fields) -> dict:
        req = dict(fields, op=op)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(json.dumps(req).encode() + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except FileNotFoundError:
            raise BrokerError(f"the HA broker is not running (no socket at {self.path})") from None
        except ConnectionRefusedError:
            raise BrokerError(f"the HA broker is not running (connection refused at {self.path})") from None
        except socket.timeout:
            raise BrokerError(f"the HA broker did not answer within {self.timeout:g} s") from None
        except OSError as e:
            raise BrokerError(f"cannot talk to the HA broker at {self.path}: {e.strerror or e}") from None
        if not buf:
            raise BrokerError("the HA broker closed the connection without answering")
        try:
            answer = json.loads(buf)
        except ValueError:
            raise BrokerError("the HA broker sent an answer that is not JSON") from None
        if not answer.get("ok"):
            raise BrokerError(answer.get("error") or f"the HA broker refused {op!r}")
        return answer
