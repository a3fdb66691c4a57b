"""This host's etcd member, TLS on both sides, and the calls the installer
makes to the cluster (health, member add and remove).

Certificates (see pki.py): the member presents leaf NAME (serverAuth and
clientAuth: etcd dials its peers and its own gRPC gateway with it) to clients
and to peers; every client (HA broker, HA agent, the engine, etcdctl) presents
the leaf `client` (clientAuth only). Both sides require a certificate signed
by the cluster CA (--client-cert-auth, --peer-client-cert-auth).

Choices:
- No loopback listener: every Keel part on a host reaches etcd on the host's
  address, so the endpoint list is the same everywhere. The member's
  certificate still holds 127.0.0.1: etcd checks that a peer's source address
  is among its certificate's IP SANs, and a member dialing another address
  of the same machine (tests, or several addresses on one host) comes from
  127.0.0.1.
- The `client` leaf has no SANs on purpose: etcd would then require the
  client's source address to be among them.
- Heartbeat 250 ms, election timeout 2.5 s (etcd's defaults are 100 ms and
  1 s): members share their host with VMs, and a slow fsync on a loaded disk
  delays the leader's heartbeats; 2.5 s rides out such stalls without a
  leader election, and stays far below what the HA brokers tolerate (the
  etcd lease TTL is 60 s; an agent starts to stop the engine after a quarter
  of it without renewal). A LAN's round trip (< 1 ms) is no constraint.
- Automatic compaction (periodic, 1 h): the brokers rewrite their records
  every cycle, and without compaction etcd's history would fill its 2 GiB
  quota within weeks and turn the cluster read-only.
"""
from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass
from typing import Callable

from keel_common import etcdclient
from keel_common.config import EtcdConfig

from .pki import Pki, PkiError

CLIENT_LEAF = "client"
LOOPBACK = "127.0.0.1"
HEARTBEAT_MS = 250
ELECTION_MS = 2500
CLUSTER_TOKEN = "keel"


class EtcdMemberError(Exception):
    """str() is one line: what failed and what to do."""


@dataclass
class EtcdMember:
    name: str
    address: str
    data_dir: str
    pki: Pki
    client_port: int = 2379
    peer_port: int = 2380
    # host names clients may use in their endpoints (they become DNS SANs)
    dns: tuple[str, ...] = ()

    def __post_init__(self):
        self.pki.leaf_paths(self.name)           # the name's rules are the certificate's
        if self.name == CLIENT_LEAF:
            raise PkiError(f"{CLIENT_LEAF!r} is the clients' certificate; name the member "
                           f"after its host")
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise PkiError(f"member {self.name}: {self.address!r} is not an IP address; give "
                           f"the host's address on the cluster network") from None

    def _url(self, port: int) -> str:
        ip = ipaddress.ip_address(self.address)
        return f"https://{f'[{ip}]' if ip.version == 6 else ip}:{port}"

    @property
    def client_url(self) -> str:
        return self._url(self.client_port)

    @property
    def peer_url(self) -> str:
        return self._url(self.peer_port)


def ensure_member_cert(member: EtcdMember) -> tuple[str, str]:
    """The member's leaf (server and client use; SANs: its address,
    127.0.0.1, its dns names), issued unless a fit one is there."""
    return member.pki.ensure_leaf(member.name, ips=[member.address, LOOPBACK], dns=member.dns)


def ensure_client_cert(pki: Pki) -> tuple[str, str]:
    """The clients' leaf (client use only, no SANs), issued unless a fit one is there."""
    return pki.ensure_leaf(CLIENT_LEAF, server=False, client=True)


def argv(member: EtcdMember, initial_cluster: dict[str, str], state: str,
         etcd: str = "etcd") -> list[str]:
    """etcd's command line for `member`. initial_cluster: {name: peer URL} of
    every member, this one included (add_member's answer on a joining host);
    state: "new" (the first member) or "existing" (a member added by
    add_member). The member's leaf must have been issued (ensure_member_cert)."""
    if state not in ("new", "existing"):
        raise ValueError(f"state must be 'new' or 'existing', not {state!r}")
    if initial_cluster.get(member.name) != member.peer_url:
        raise ValueError(f"initial_cluster must map {member.name} to {member.peer_url}")
    cert, key = member.pki.leaf_paths(member.name)
    ca = member.pki.ca_cert_path
    for path in (ca, cert, key):
        if not os.path.exists(path):
            raise PkiError(f"{path} is missing; create the CA (or import the cluster's bundle) "
                           f"and issue the member's certificate first")
    cluster = ",".join(f"{n}={u}" for n, u in sorted(initial_cluster.items()))
    return [etcd, "--name", member.name, "--data-dir", member.data_dir,
            "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", CLUSTER_TOKEN,
            "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
            "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
            "--peer-client-cert-auth",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
            "--logger", "zap", "--log-level", "warn"]


def client_config(pki: Pki, endpoints, prefix: str = "/keel") -> EtcdConfig:
    """The etcd settings of a Keel client (broker, agent, engine): the CA and
    the `client` leaf."""
    cert, key = pki.leaf_paths(CLIENT_LEAF)
    return EtcdConfig(endpoints=tuple(endpoints), prefix=prefix, ca_cert=pki.ca_cert_path,
                      cert=cert, key=key)


# ---- calls to the cluster: each bounded by `timeout` seconds in all ---------

def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("out of time")
    return left


def _why(e: BaseException) -> str:
    """One short line; etcd3 replaces gRPC's errors by its own without
    etcd's words, which are in the gRPC error it came from."""
    cause = e.__context__ if not callable(getattr(e, "details", None)) else e
    details = getattr(cause, "details", None)
    text = details() if callable(details) else str(e)
    return " ".join(f"{e.__class__.__name__}: {text}".split())[:300]


def _call(cfg: EtcdConfig, url: str, deadline: float, fn: Callable):
    """fn(client, tick) on endpoint `url`; fn calls tick() before each RPC
    to give the client the time left (TimeoutError when none is)."""
    c = etcdclient.client(cfg, url, _left(deadline))
    try:
        def tick():
            c.timeout = _left(deadline)
        return fn(c, tick)
    finally:
        try:
            c.close()
        except Exception:
            pass


def healthy(cfg: EtcdConfig, timeout: float) -> tuple[bool, str]:
    """(every endpoint answers a linearizable read, i.e. has a quorum behind
    it; one line per endpoint joined by '; ')."""
    deadline = time.monotonic() + timeout
    ok, lines = True, []

    def check(c, tick):
        tick()
        c.get(cfg.prefix.rstrip("/") + "/health")   # linearizable: needs the quorum
        tick()
        st = c.status()
        return f"etcd {st.version}, leader {st.leader.name if st.leader else '?'}"

    for url in cfg.endpoints:
        try:
            lines.append(f"{url}: {_call(cfg, url, deadline, check)}")
        except Exception as e:       # grpc raises many kinds; all mean "not healthy"
            ok = False
            lines.append(f"{url}: {_why(e)}")
    return ok, "; ".join(lines)


def _on_first(cfg: EtcdConfig, timeout: float, fn: Callable, what: str):
    """fn(client, tick) on each endpoint in turn until one succeeds."""
    deadline = time.monotonic() + timeout
    errors = []
    for url in cfg.endpoints:
        try:
            return _call(cfg, url, deadline, fn)
        except EtcdMemberError:
            raise
        except Exception as e:
            errors.append(f"{url}: {_why(e)}")
    raise EtcdMemberError(f"cannot {what} ({'; '.join(errors)}); check that the cluster's "
                          f"members run and are healthy")


def _add_when_ready(c, tick, name: str, peer_url: str) -> None:
    """etcd refuses a new member ("unhealthy cluster") until every started
    member has been connected for 5 s, so that the addition cannot cost the
    quorum: a host that joined just before this one is the usual cause, and
    a short wait the cure. Any other refusal, or the time running out, stays
    an error (with etcd's words)."""
    while True:
        try:
            tick()
        except TimeoutError:
            raise EtcdMemberError(f"etcd kept refusing to add {name} ('unhealthy cluster': one of its "
                                  f"members has not been connected for 5 s); check that every member "
                                  f"runs and reaches the others") from None
        try:
            c.add_member([peer_url])
            return
        except Exception as e:
            if "unhealthy cluster" not in _why(e):
                raise
        time.sleep(0.5)


def add_member(cfg: EtcdConfig, name: str, peer_url: str, timeout: float) -> dict[str, str]:
    """Add member `name` (not started yet) with `peer_url`; returns the
    initial_cluster for its argv(..., state="existing"). A member added
    earlier with this peer URL and not started yet is not added again (a
    retried join). The new member must start soon: a one-member cluster
    grown to two has no quorum until the second runs."""
    def add(c, tick):
        tick()
        members = list(c.members)
        mine = [m for m in members if peer_url in m.peer_urls]
        for m in members:
            if m.name == name and peer_url not in m.peer_urls:
                raise EtcdMemberError(f"a member named {name} exists with peer URL "
                                      f"{','.join(m.peer_urls)}; remove it first")
            if not m.name and peer_url not in m.peer_urls:
                raise EtcdMemberError(f"member {','.join(m.peer_urls)} was added but never "
                                      f"started; start it or remove it before adding {name}")
        if mine and mine[0].name not in ("", name):
            raise EtcdMemberError(f"peer URL {peer_url} belongs to member {mine[0].name}; "
                                  f"remove it first or use another address")
        if not mine:
            _add_when_ready(c, tick, name, peer_url)
            tick()
            members = list(c.members)
        cluster = {}
        for m in members:
            for u in m.peer_urls:
                cluster[m.name or name] = u
        return cluster

    return _on_first(cfg, timeout, add, f"add etcd member {name}")


def remove_member(cfg: EtcdConfig, name: str, timeout: float, peer_url: str | None = None) -> bool:
    """Remove member `name` (or the one with `peer_url`: a member added but
    never started has no name yet); False if there is no such member."""
    def remove(c, tick):
        tick()
        for m in c.members:
            if m.name == name or (peer_url is not None and peer_url in m.peer_urls):
                tick()
                c.remove_member(m.id)
                return True
        return False

    return _on_first(cfg, timeout, remove, f"remove etcd member {name}")
