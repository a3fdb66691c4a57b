"""A real etcd cluster with TLS on both sides, started from etcd_member.argv:
the first member on 127.0.10.1, a second one joining on 127.0.10.2."""
import ssl
import subprocess
import time
import urllib.request

import pytest

from harness.procs import stop_group
from harness.wait import wait_for
from keel_common import etcdclient
from keel_common.config import EtcdConfig
from keel_installer.etcd_member import (EtcdMember, EtcdMemberError, add_member, argv,
                                        client_config, ensure_client_cert, ensure_member_cert,
                                        healthy, remove_member)
from keel_installer.pki import Pki

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CALL = 5          # seconds: the bound of every call to etcd here


class Host:
    """One simulated host: its PKI directory, its member, its etcd process."""

    def __init__(self, root, name, address):
        self.dir = root / name
        self.pki = Pki(str(self.dir / "pki"))
        self.member = EtcdMember(name, address, str(self.dir / "etcd"), self.pki)
        self.proc = None

    @property
    def config(self) -> EtcdConfig:
        return client_config(self.pki, [self.member.client_url])

    def certs(self):
        ensure_member_cert(self.member)
        ensure_client_cert(self.pki)

    def start(self, initial_cluster, state):
        with open(self.dir / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(argv(self.member, initial_cluster, state), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_for(lambda: self.proc.poll() is None and healthy(self.config, CALL)[0], 60,
                 f"{self.member.name} healthy (log: {self.dir / 'etcd.log'})")

    def stop(self):
        if self.proc is not None:
            stop_group(self.proc, grace=10)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    host = Host(tmp_path_factory.mktemp("etcd-tls"), "m1", "127.0.10.1")
    host.pki.create_ca()
    host.certs()
    t0 = time.monotonic()
    try:
        host.start({"m1": host.member.peer_url}, "new")
        host.started_in = time.monotonic() - t0
        yield host
    finally:
        host.stop()


def https_client(host):
    ctx = ssl.create_default_context(cafile=host.pki.ca_cert_path)
    ctx.load_cert_chain(*host.pki.leaf_paths("client"))
    return ctx


def refused(cfg, within=CALL):
    t0 = time.monotonic()
    ok, why = healthy(cfg, within)
    assert not ok, why
    assert time.monotonic() - t0 < within + 2, "the refusal took longer than the call's bound"
    return why


def test_first_member_tls_only(first, tmp_path):
    url = first.member.client_url
    ok, why = healthy(first.config, CALL)
    assert ok and "etcd 3." in why and "leader m1" in why, why
    with etcdclient.client(first.config, url, CALL) as c:
        c.put("/keel/test/a", b"1")
        assert c.get("/keel/test/a")[0] == b"1"
    # no client certificate
    refused(EtcdConfig(endpoints=(url,), ca_cert=first.pki.ca_cert_path))
    # a client certificate of another cluster's CA
    stranger = Pki(str(tmp_path / "stranger"))
    stranger.create_ca()
    ensure_client_cert(stranger)
    cert, key = stranger.leaf_paths("client")
    refused(EtcdConfig(endpoints=(url,), ca_cert=first.pki.ca_cert_path, cert=cert, key=key))
    # ... and that CA does not trust this server either
    refused(client_config(stranger, [url]))
    # cleartext gRPC and cleartext HTTP
    plain = url.replace("https://", "http://")
    refused(EtcdConfig(endpoints=(plain,)))
    with pytest.raises(OSError):
        with urllib.request.urlopen(plain + "/health", timeout=CALL) as r:
            pytest.fail(f"cleartext HTTP answered: {r.status} {r.read()[:100]!r}")
    # HTTPS: with the client leaf, and refused without a client certificate
    ctx = ssl.create_default_context(cafile=first.pki.ca_cert_path)
    with urllib.request.urlopen(url + "/health", timeout=CALL, context=https_client(first)) as r:
        assert b'"true"' in r.read()
    with pytest.raises(OSError):
        with urllib.request.urlopen(url + "/health", timeout=CALL, context=ctx) as r:
            pytest.fail(f"HTTPS without a client certificate answered: {r.status}")


def test_second_member_joins_and_leaves(first, tmp_path):
    second = Host(tmp_path, "m2", "127.0.10.2")
    # what --join does: the CA from the first host, the leaves issued here
    assert second.pki.import_bundle(first.pki.export_bundle(), first.pki.fingerprint())
    second.certs()
    try:
        t0 = time.monotonic()
        cluster = add_member(first.config, "m2", second.member.peer_url, CALL)
        assert cluster == {"m1": first.member.peer_url, "m2": second.member.peer_url}
        # a retried join does not add it twice
        assert add_member(first.config, "m2", second.member.peer_url, CALL) == cluster
        second.start(cluster, "existing")
        joined_in = time.monotonic() - t0
        both = client_config(first.pki, [first.member.client_url, second.member.client_url])
        ok, why = healthy(both, CALL)
        assert ok and why.count("leader") == 2, why
        with etcdclient.client(first.config, first.member.client_url, CALL) as c:
            c.put("/keel/test/joined", b"on m1")
        with etcdclient.client(second.config, second.member.client_url, CALL) as c:
            assert c.get("/keel/test/joined")[0] == b"on m1"
            c.put("/keel/test/back", b"on m2")
        with etcdclient.client(first.config, first.member.client_url, CALL) as c:
            assert c.get("/keel/test/back")[0] == b"on m2"
            assert sorted(m.name for m in c.members) == ["m1", "m2"]

        # a third host joining right after: etcd refuses ("unhealthy cluster")
        # while m2 has been connected for less than 5 s; the join waits that out
        third = Host(tmp_path, "m3", "127.0.10.3")
        assert third.pki.import_bundle(first.pki.export_bundle(), first.pki.fingerprint())
        third.certs()
        t2 = time.monotonic()
        three = add_member(both, "m3", third.member.peer_url, 20)
        third_added_in = time.monotonic() - t2
        assert three == {"m1": first.member.peer_url, "m2": second.member.peer_url, "m3": third.member.peer_url}
        # never started: it leaves again, and m1 and m2 keep their quorum
        assert wait_for(lambda: remove_member(first.config, "m3", CALL, third.member.peer_url), 30,
                        "m3 removed", interval=0.5, ignore=(EtcdMemberError,)) is True

        # etcd refuses ("unhealthy cluster") to remove a member connected for
        # less than 5 s: removing it must not cost the quorum
        t1 = time.monotonic()
        assert wait_for(lambda: remove_member(first.config, "m2", CALL), 30,
                        "m2 removed", interval=0.5, ignore=(EtcdMemberError,)) is True
        removed_in = time.monotonic() - t1
        assert remove_member(first.config, "m2", CALL) is False
        with etcdclient.client(first.config, first.member.client_url, CALL) as c:
            assert [m.name for m in c.members] == ["m1"]
        wait_for(lambda: second.proc.poll() is not None, 30, "the removed member exits")
        assert healthy(first.config, CALL)[0]
        print(f"\nfirst member healthy in {first.started_in:.1f} s; "
              f"second member added and healthy in {joined_in:.1f} s, a third added {third_added_in:.1f} s "
              f"after that, the second removed after "
              f"{removed_in:.1f} s of retries")
    finally:
        second.stop()
