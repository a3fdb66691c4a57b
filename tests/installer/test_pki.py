"""The cluster CA and its leaves: pure crypto, no daemon."""
import ipaddress
import json
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from keel_installer.pki import Pki, PkiError


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(str(tmp_path_factory.mktemp("pki") / "pki"))
    p.create_ca()
    return p


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Another cluster's CA."""
    p = Pki(str(tmp_path_factory.mktemp("other") / "pki"))
    p.create_ca()
    return p


def load(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def copy(src, dst):
    with open(src, "rb") as s, open(dst, "wb") as d:
        d.write(s.read())


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def verifies(cert, ca_cert):
    try:
        ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                    ec.ECDSA(cert.signature_hash_algorithm))
    except Exception:
        return False
    return cert.issuer == ca_cert.subject


def test_ca_files_and_extensions(pki):
    ca = load(pki.ca_cert_path)
    assert mode(pki.directory) == 0o700
    assert mode(pki.ca_key_path) == 0o600
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert 3649 <= (ca.not_valid_after - ca.not_valid_before).days <= 3651
    assert verifies(ca, ca)
    assert sorted(os.listdir(pki.directory)) == ["ca.key", "ca.pem"]   # no temporary left


def test_create_ca_is_strict_ensure_ca_idempotent(pki):
    before = open(pki.ca_cert_path, "rb").read()
    with pytest.raises(PkiError, match="exists already") as e:
        pki.create_ca()
    assert "\n" not in str(e.value)
    assert pki.ensure_ca() is False
    assert open(pki.ca_cert_path, "rb").read() == before


def test_ensure_ca_creates_then_refuses_a_half_ca(tmp_path):
    p = Pki(str(tmp_path / "pki"))
    assert p.ensure_ca() is True
    assert p.ensure_ca() is False
    os.unlink(p.ca_cert_path)
    with pytest.raises(PkiError, match="missing"):
        p.ensure_ca()
    assert os.path.exists(p.ca_key_path)               # a key is never overwritten


def test_a_key_of_another_ca_is_refused(tmp_path, other):
    p = Pki(str(tmp_path / "pki"))
    p.create_ca()
    copy(other.ca_key_path, p.ca_key_path)
    with pytest.raises(PkiError, match="does not belong"):
        p.ensure_ca()


def test_leaf_verifies_with_sans_and_usages(pki):
    cert_path, key_path = pki.issue("host1", ips=["192.0.2.10", "127.0.0.1"], dns=["Host1.example"])
    assert (cert_path, key_path) == pki.leaf_paths("host1")
    cert, ca = load(cert_path), load(pki.ca_cert_path)
    assert verifies(cert, ca)
    assert not verifies(cert, cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("192.0.2.10"),
                                                             ipaddress.ip_address("127.0.0.1")}
    assert san.get_values_for_type(x509.DNSName) == ["host1.example"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after <= ca.not_valid_after
    assert mode(key_path) == 0o600 and mode(cert_path) == 0o644
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_client_only_leaf(pki):
    cert = load(pki.issue("client-only", server=False, client=True)[0])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_leaf_days_capped_by_ca(pki):
    cert, ca = load(pki.issue("long", days=20000)[0]), load(pki.ca_cert_path)
    assert cert.not_valid_after == ca.not_valid_after


def test_ensure_leaf_idempotent_and_reissues_on_change(pki):
    path, _ = pki.ensure_leaf("host2", ["192.0.2.20"])
    first = load(path).serial_number
    assert load(pki.ensure_leaf("host2", ["192.0.2.20"])[0]).serial_number == first
    assert pki.leaf_problem("host2", ips=["192.0.2.21"]) == "its SANs differ"
    changed = load(pki.ensure_leaf("host2", ["192.0.2.21"])[0])
    assert changed.serial_number != first
    assert pki.leaf_problem("host2", ips=["192.0.2.21"], dns=["h2"]) == "its SANs differ"
    assert pki.leaf_problem("host2", ips=["192.0.2.21"], client=False) == "its key usages differ"
    assert pki.leaf_problem("host2", ips=["192.0.2.21"]) is None
    assert pki.leaf_problem("nothing-yet") == "missing"


def test_leaf_of_another_ca_is_detected_and_reissued(pki, other):
    cert_path, key_path = other.issue("host3", ips=["192.0.2.30"])
    mine_cert, mine_key = pki.leaf_paths("host3")
    copy(cert_path, mine_cert)
    copy(key_path, mine_key)
    assert pki.leaf_problem("host3", ips=["192.0.2.30"]) == "not signed by this CA"
    pki.ensure_leaf("host3", ["192.0.2.30"])
    assert verifies(load(mine_cert), load(pki.ca_cert_path))
    assert pki.leaf_problem("host3", ips=["192.0.2.30"]) is None


def test_key_not_matching_its_certificate_is_reissued(pki):
    pki.issue("host4")
    cert_path, key_path = pki.leaf_paths("host4")
    other_key = pki.issue("host4-spare")[1]
    copy(other_key, key_path)
    assert pki.leaf_problem("host4") == "its key does not match its certificate"
    pki.ensure_leaf("host4")
    assert pki.leaf_problem("host4") is None


def test_fingerprint_matches_the_certificate(pki, other):
    fp = pki.fingerprint()
    assert fp == ":".join(f"{b:02X}" for b in load(pki.ca_cert_path).fingerprint(hashes.SHA256()))
    assert len(fp) == 32 * 3 - 1
    assert fp != other.fingerprint()


def test_bundle_round_trip(pki, tmp_path):
    bundle = pki.export_bundle()
    doc = json.loads(bundle)
    assert doc["format"] == "keel-pki-bundle/1" and "PRIVATE KEY" in doc["ca_key"]
    joiner = Pki(str(tmp_path / "joiner"))
    assert joiner.import_bundle(bundle, expected_fingerprint="sha256:" + pki.fingerprint().lower())
    assert joiner.fingerprint() == pki.fingerprint()
    assert mode(joiner.ca_key_path) == 0o600 and mode(joiner.directory) == 0o700
    assert joiner.import_bundle(bundle) is False         # the same CA: nothing to do
    # a leaf issued on the joining host verifies against the first host's CA
    assert verifies(load(joiner.issue("host5", ips=["192.0.2.50"])[0]), load(pki.ca_cert_path))


def test_bundle_refusals(pki, other, tmp_path):
    joiner = Pki(str(tmp_path / "joiner"))
    with pytest.raises(PkiError, match="not the expected"):
        joiner.import_bundle(pki.export_bundle(), expected_fingerprint=other.fingerprint())
    for bad in (b"", b"{}", b"[1]", b"not json", json.dumps({"format": "keel-pki-bundle/1"}).encode()):
        with pytest.raises(PkiError, match="not a Keel PKI bundle"):
            joiner.import_bundle(bad)
    mixed = json.loads(pki.export_bundle())
    mixed["ca_key"] = json.loads(other.export_bundle())["ca_key"]
    with pytest.raises(PkiError, match="does not belong"):
        joiner.import_bundle(json.dumps(mixed).encode())
    assert not os.path.exists(joiner.directory)        # nothing written on a refusal
    with pytest.raises(PkiError, match="another cluster CA") as e:
        other.import_bundle(pki.export_bundle())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["", "Host1", "ca", "../x", "a/b", ".hidden", "x" * 64, "h 1", None])
def test_bad_names(pki, name):
    with pytest.raises(PkiError, match="bad certificate name") as e:
        pki.issue(name)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kw, needle", [
    (dict(ips=["host1"]), "give IP addresses in ips"),
    (dict(ips="192.0.2.1"), "not one string"),
    (dict(dns=["bad name"]), "not a DNS name"),
    (dict(server=False, client=False), "server or client"),
])
def test_bad_leaf_arguments(pki, kw, needle):
    with pytest.raises(PkiError, match=needle):
        pki.issue("fine", **kw)


def test_no_ca_yet(tmp_path):
    p = Pki(str(tmp_path / "empty"))
    for call in (lambda: p.issue("h"), p.fingerprint, p.export_bundle):
        with pytest.raises(PkiError, match="no cluster CA"):
            call()
