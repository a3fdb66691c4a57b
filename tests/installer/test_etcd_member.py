"""etcd's command line and client settings for a member (no daemon; the real
cluster is in test_etcd_tls)."""
import time

import pytest

from keel_installer.etcd_member import (EtcdMember, EtcdMemberError, add_member, argv,
                                        client_config, ensure_client_cert, ensure_member_cert,
                                        healthy, remove_member)
from keel_installer.pki import Pki, PkiError


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(str(tmp_path_factory.mktemp("pki") / "pki"))
    p.create_ca()
    ensure_client_cert(p)
    return p


def flags(args):
    """{--flag: value or True}"""
    out, i = {}, 1
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[args[i]] = args[i + 1]
            i += 2
        else:
            out[args[i]] = True
            i += 1
    return out


def test_urls_and_validation(pki):
    m = EtcdMember("host1", "192.0.2.1", "/var/lib/etcd", pki)
    assert (m.client_url, m.peer_url) == ("https://192.0.2.1:2379", "https://192.0.2.1:2380")
    v6 = EtcdMember("host2", "2001:db8::2", "/d", pki, client_port=12379, peer_port=12380)
    assert v6.peer_url == "https://[2001:db8::2]:12380"
    with pytest.raises(PkiError, match="not an IP address"):
        EtcdMember("host1", "host1.example", "/d", pki)
    with pytest.raises(PkiError, match="clients' certificate"):
        EtcdMember("client", "192.0.2.1", "/d", pki)
    with pytest.raises(PkiError, match="bad certificate name"):
        EtcdMember("Host_1/x", "192.0.2.1", "/d", pki)


def test_argv_tls_on_both_sides(pki):
    m = EtcdMember("host1", "192.0.2.1", "/var/lib/etcd", pki)
    with pytest.raises(PkiError, match="host1.pem is missing"):
        argv(m, {"host1": m.peer_url}, "new")
    cert, key = ensure_member_cert(m)
    args = argv(m, {"host1": m.peer_url, "host0": "https://192.0.2.9:2380"}, "existing",
                etcd="/usr/bin/etcd")
    f = flags(args)
    assert args[0] == "/usr/bin/etcd"
    assert f["--listen-client-urls"] == f["--advertise-client-urls"] == "https://192.0.2.1:2379"
    assert f["--listen-peer-urls"] == f["--initial-advertise-peer-urls"] == "https://192.0.2.1:2380"
    assert f["--initial-cluster"] == "host0=https://192.0.2.9:2380,host1=https://192.0.2.1:2380"
    assert f["--initial-cluster-state"] == "existing"
    assert f["--initial-cluster-token"] == "keel"
    assert f["--cert-file"] == f["--peer-cert-file"] == cert
    assert f["--key-file"] == f["--peer-key-file"] == key
    assert f["--trusted-ca-file"] == f["--peer-trusted-ca-file"] == pki.ca_cert_path
    assert f["--client-cert-auth"] is True and f["--peer-client-cert-auth"] is True
    assert (f["--logger"], f["--log-level"]) == ("zap", "warn")
    assert int(f["--election-timeout"]) >= 10 * int(f["--heartbeat-interval"])
    assert not any(a.startswith("http://") for a in args)
    assert pki.leaf_problem("host1", ips=["192.0.2.1", "127.0.0.1"]) is None


@pytest.mark.parametrize("cluster, state, needle", [
    ({"host1": "https://192.0.2.1:2380"}, "fresh", "state must be"),
    ({}, "new", "must map host1"),
    ({"host1": "https://192.0.2.99:2380"}, "new", "must map host1"),
])
def test_argv_refusals(pki, cluster, state, needle):
    m = EtcdMember("host1", "192.0.2.1", "/d", pki)
    with pytest.raises(ValueError, match=needle):
        argv(m, cluster, state)


def test_client_config(pki):
    cfg = client_config(pki, ["https://192.0.2.1:2379", "https://192.0.2.2:2379"])
    assert cfg.endpoints == ("https://192.0.2.1:2379", "https://192.0.2.2:2379")
    assert cfg.ca_cert == pki.ca_cert_path
    assert (cfg.cert, cfg.key) == pki.leaf_paths("client")
    assert pki.leaf_problem("client", server=False, client=True) is None


def test_calls_to_nothing_fail_within_their_bound(pki):
    # nothing listens there: each call fails, one line, within its timeout
    cfg = client_config(pki, ["https://127.0.10.9:2379", "https://127.0.10.9:2479"])
    t0 = time.monotonic()
    ok, why = healthy(cfg, 1.5)
    assert not ok and why.count("https://127.0.10.9") == 2 and "\n" not in why
    with pytest.raises(EtcdMemberError, match="cannot add etcd member h2") as e:
        add_member(cfg, "h2", "https://127.0.10.8:2380", 1.5)
    assert "\n" not in str(e.value)
    with pytest.raises(EtcdMemberError, match="cannot remove etcd member h2"):
        remove_member(cfg, "h2", 1.5)
    assert time.monotonic() - t0 < 3 * 1.5 + 3
