"""etcd clients, made one way for every Keel part that talks to etcd: the
HA brokers (their session) and the engine worker (reading the agents'
fence records). Every call carries the client's timeout."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

# etcd3 0.12's generated protobuf code needs the pure-Python protobuf runtime.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3  # noqa: E402

from .bmc import FenceRecord  # noqa: E402
from .config import EtcdConfig  # noqa: E402
from .keys import Keys  # noqa: E402


class EtcdUnreachable(Exception):
    """No endpoint answered; str() names each endpoint and what went wrong."""


def client(cfg: EtcdConfig, url: str, timeout: float):
    u = urlsplit(url)
    return etcd3.client(host=u.hostname, port=u.port or 2379, timeout=timeout,
                        ca_cert=cfg.ca_cert if u.scheme == "https" else None,
                        cert_cert=cfg.cert, cert_key=cfg.key)


def on_first(cfg: EtcdConfig, timeout: float, fn):
    """fn(client) on the first endpoint that answers, tried in turn;
    EtcdUnreachable naming each endpoint's failure when none does."""
    errors = []
    for url in cfg.endpoints:
        c = None
        try:
            c = client(cfg, url, timeout)
            return fn(c)
        except Exception as e:  # grpc raises many kinds; all mean "not from here"
            errors.append(f"{url}: {e.__class__.__name__}")
        finally:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
    raise EtcdUnreachable("etcd unreachable (" + "; ".join(errors) + ")")


def read_fences(cfg: EtcdConfig, timeout: float) -> dict[int, FenceRecord]:
    """Every fence the HA agents recorded, {fenced host's id: record}; a
    malformed record is left out. Tries each endpoint in turn."""
    items = on_first(cfg, timeout, lambda c: list(c.get_prefix(Keys(cfg.prefix).fences_prefix)))
    out = {}
    for raw, _meta in items:
        try:
            rec = FenceRecord.from_json(raw)
        except (ValueError, KeyError, TypeError):
            continue
        out[rec.host_id] = rec
    return out
