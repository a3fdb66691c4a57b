"""Just enough of the RFB protocol (VNC, RFC 6143) to check a display's
password the way a VNC client does: version 3.8, security type 2 (VNC
authentication: the server's 16-byte challenge encrypted with DES under the
password), then the server's SecurityResult, and on success ClientInit /
ServerInit (the desktop's size and name)."""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

try:   # where newer `cryptography` keeps the old ciphers
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

VERSION = b"RFB 003.008\n"
VNC_AUTH = 2


class RfbError(Exception):
    pass


@dataclass
class Outcome:
    ok: bool
    reason: str = ""          # the server's reason, when it refused
    width: int = 0            # ServerInit, when it accepted
    height: int = 0
    name: str = ""


def _recv(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RfbError(f"the server closed the connection ({len(data)} of {n} bytes read)")
        data += chunk
    return data


def _reason(sock) -> str:
    (length,) = struct.unpack(">I", _recv(sock, 4))
    return _recv(sock, min(length, 4096)).decode("utf-8", "replace")


def des_response(password: str, challenge: bytes) -> bytes:
    """VNC's answer to a challenge: DES-ECB under the first 8 bytes of the
    password (NUL-padded), each key byte with its bits in reverse order."""
    key = password.encode("latin-1")[:8].ljust(8, b"\0")
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in key)
    # three-key DES with one key three times is single DES
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


def _offered(sock) -> list[int]:
    """The version handshake; the security types the server offers."""
    server = _recv(sock, 12)
    if not server.startswith(b"RFB 003."):
        raise RfbError(f"not an RFB server: {server!r}")
    sock.sendall(VERSION)
    (count,) = struct.unpack(">B", _recv(sock, 1))
    if count == 0:
        raise RfbError(f"the server offers no security type: {_reason(sock)}")
    return list(_recv(sock, count))


def authenticate(host: str, port: int, password: str, timeout: float = 10.0) -> Outcome:
    """Connect, offer VNC authentication with `password`: Outcome(ok=True, the
    desktop's size and name) or Outcome(ok=False, the server's reason)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        types = _offered(sock)
        if VNC_AUTH not in types:
            raise RfbError(f"the server does not ask for a password (security types {types})")
        sock.sendall(bytes([VNC_AUTH]))
        sock.sendall(des_response(password, _recv(sock, 16)))
        (result,) = struct.unpack(">I", _recv(sock, 4))
        if result != 0:
            return Outcome(ok=False, reason=_reason(sock))
        sock.sendall(b"\1")                        # ClientInit: share the desktop
        width, height = struct.unpack(">HH", _recv(sock, 4))
        _recv(sock, 16)                            # pixel format
        (length,) = struct.unpack(">I", _recv(sock, 4))
        return Outcome(ok=True, width=width, height=height, name=_recv(sock, length).decode("utf-8", "replace"))


def security_types(host: str, port: int, timeout: float = 10.0) -> list[int]:
    """The security types the server offers (2: VNC authentication, 1: none)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        return _offered(sock)
