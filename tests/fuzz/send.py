"""Sending one hostile request and judging the answer's form.

Oversized bodies go over a raw socket: an engine that answers 413 early and
closes the connection must still be heard, where an HTTP library would only
report the broken pipe."""
from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import requests

TIMEOUT = 30.0


@dataclass
class Outcome:
    status: int | None
    content_type: str = ""
    body: bytes = b""
    error: str = ""        # no answer: why
    elapsed: float = 0.0


def headers_for(case, token):
    h = {"Accept": case.accept}
    if case.auth and token:
        h["Authorization"] = f"Bearer {token}"
    if case.content_type is not None:
        h["Content-Type"] = case.content_type
    h.update(case.headers)
    return h


def send(session: requests.Session, base: str, case, token, timeout=TIMEOUT) -> Outcome:
    if case.expect == (413,) or case.chunked:
        return send_raw(base, case, token, timeout)
    start = time.monotonic()
    for attempt in (1, 2):
        try:
            r = session.request(case.method, base + case.path, data=case.body, headers=headers_for(case, token),
                                timeout=timeout, allow_redirects=False)
        except requests.Timeout:
            return Outcome(None, error=f"no answer within {timeout:.0f} s", elapsed=time.monotonic() - start)
        except requests.ConnectionError as e:
            # A kept-alive connection the server had already closed fails like
            # this too: only a failure on a fresh connection counts.
            if attempt == 1:
                session.close()
                continue
            return Outcome(None, error=f"{type(e).__name__}: {str(e)[:200]}", elapsed=time.monotonic() - start)
        except requests.RequestException as e:
            return Outcome(None, error=f"{type(e).__name__}: {str(e)[:200]}", elapsed=time.monotonic() - start)
        return Outcome(r.status_code, r.headers.get("Content-Type", ""), r.content,
                       elapsed=time.monotonic() - start)


def _header_bytes(name, value):
    v = value if isinstance(value, bytes) else str(value).encode("latin-1", "replace")
    return name.encode() + b": " + v + b"\r\n"


def send_raw(base: str, case, token, timeout=TIMEOUT) -> Outcome:
    host, _, port = base.split("://", 1)[1].partition(":")
    start = time.monotonic()
    head = f"{case.method} {case.path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n".encode()
    for k, v in headers_for(case, token).items():
        head += _header_bytes(k, v)
    body = case.body or b""
    if case.chunked:
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        step = 64 * 1024
        payload = b"".join(b"%x\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n"
                           for i in range(0, len(body), step)) + b"0\r\n\r\n"
    else:
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        payload = body
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as e:
        return Outcome(None, error=f"connect: {e}", elapsed=time.monotonic() - start)
    with sock:
        try:
            sock.sendall(head)
            view = memoryview(payload)
            for i in range(0, len(view), 65536):
                sock.sendall(view[i:i + 65536])
        except OSError:
            pass   # the engine stopped reading: its answer may still be there
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            if not data:
                return Outcome(None, error=f"no answer within {timeout:.0f} s", elapsed=time.monotonic() - start)
        except OSError as e:
            if not data:
                return Outcome(None, error=f"connection: {e}", elapsed=time.monotonic() - start)
    elapsed = time.monotonic() - start
    head_raw, _, resp_body = data.partition(b"\r\n\r\n")
    lines = head_raw.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Outcome(None, error=f"not an HTTP answer: {data[:80]!r}", elapsed=elapsed)
    ctype = ""
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-type":
            ctype = v.strip().decode("latin-1")
        if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
            resp_body = _dechunk(resp_body)
    return Outcome(status, ctype, resp_body, elapsed=elapsed)


def _dechunk(data):
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def malformed(outcome: Outcome) -> str:
    """Why the answer's body does not parse as the content type it claims ('' if it does)."""
    if outcome.status is None or not outcome.body.strip():
        return ""
    ctype = outcome.content_type.lower()
    try:
        if "json" in ctype:
            json.loads(outcome.body)
        elif "xml" in ctype:
            ET.fromstring(outcome.body)
    except (ValueError, ET.ParseError) as e:
        return f"answer is not well-formed {('JSON' if 'json' in ctype else 'XML')}: {str(e)[:120]}"
    return ""
