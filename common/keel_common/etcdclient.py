"""etcd clients, made one way for every Keel part that talks to etcd: the
HA brokers (their session) and the engine worker (reading the agents'
fence records and host records). Every call carries the client's timeout."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# etcd3 0.12's generated protobuf code needs the pure-Python protobuf runtime.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3  # noqa: E402

from .bmc import FenceRecord  # noqa: E402
from .config import EtcdConfig  # noqa: E402
from .keys import HostRecord, Keys, global_maintenance_on  # noqa: E402


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


def parsed(items, parse) -> tuple[dict, list[str]]:
    """({host id: record}, keys of the malformed ones) from (value, key)
    pairs, each value read with `parse`, the record's own parser."""
    out, malformed = {}, []
    for raw, key in items:
        try:
            rec = parse(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            malformed.append(key.decode(errors="replace"))
            continue
        out[rec.host_id] = rec
    return out, malformed


def read_fences(cfg: EtcdConfig, timeout: float) -> dict[int, FenceRecord]:
    """Every fence the HA agents recorded, {fenced host's id: record}; a
    malformed record is left out. Tries each endpoint in turn."""
    items = on_first(cfg, timeout, lambda c: [(v, m.key) for v, m in c.get_prefix(Keys(cfg.prefix).fences_prefix)])
    return parsed(items, FenceRecord.from_json)[0]


@dataclass
class HaRecords:
    """What the HA agents publish about their cluster, as one read saw it."""
    hosts: dict[int, HostRecord]
    global_maintenance: bool
    malformed: list[str] = field(default_factory=list)   # keys of host records that did not parse


def read_ha_records(cfg: EtcdConfig, timeout: float) -> HaRecords:
    """Every host record and the global maintenance flag (`hosted-engine
    --vm-status`'s data), from the first endpoint that answers."""
    keys = Keys(cfg.prefix)

    def read(c):
        hosts = [(v, m.key) for v, m in c.get_prefix(keys.hosts_prefix)]
        return hosts, c.get(keys.global_maintenance)[0]
    items, gm = on_first(cfg, timeout, read)
    hosts, malformed = parsed(items, HostRecord.from_json)
    return HaRecords(hosts, global_maintenance_on(gm), malformed)
