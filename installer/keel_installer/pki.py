"""The cluster's small certificate authority: one CA per Keel cluster, and the
leaf certificates etcd's members and clients present to each other.

Files in the directory (default /etc/keel/pki, mode 0700):

  ca.pem, ca.key          the cluster CA (EC P-256, 10 years); ca.key is secret
  NAME.pem, NAME.key      a leaf signed by the CA (EC P-256); NAME.key is secret

Keys are created 0600 from the start and every file is written atomically (a
temporary file in the same directory, then rename), so a crash leaves either
the old file or the new one. A leaf's key is written before its certificate:
a crash between the two leaves a pair that does not match, which
ensure_leaf() notices and re-issues.

A host joining the cluster receives export_bundle() (the CA certificate and
its key, one JSON document; see import_bundle) and issues its own leaves.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import tempfile

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DIR = "/etc/keel/pki"
CA_DAYS = 3650
BUNDLE_FORMAT = "keel-pki-bundle/1"
# Leaves closer than this to their end are re-issued by ensure_leaf().
RENEW_BEFORE = datetime.timedelta(days=30)
# Certificates start a little in the past: the hosts' clocks may differ a bit.
BACKDATE = datetime.timedelta(minutes=5)
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_RESERVED = ("ca",)


class PkiError(Exception):
    """str() is one line: what is wrong and what to do about it."""


def _now() -> datetime.datetime:
    return datetime.datetime.utcnow()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _same_public_key(cert: x509.Certificate, key) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _sans(cert: x509.Certificate) -> tuple[frozenset, frozenset]:
    san = _ext(cert, x509.SubjectAlternativeName)
    if san is None:
        return frozenset(), frozenset()
    return (frozenset(san.get_values_for_type(x509.IPAddress)),
            frozenset(d.lower() for d in san.get_values_for_type(x509.DNSName)))


def _usages(server: bool, client: bool) -> frozenset:
    return frozenset(([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) +
                     ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []))


def _is_ca_cert(cert: x509.Certificate) -> bool:
    bc, ku = _ext(cert, x509.BasicConstraints), _ext(cert, x509.KeyUsage)
    return bool(bc and bc.ca and ku and ku.key_cert_sign)


class Pki:
    def __init__(self, directory: str = DEFAULT_DIR):
        self.directory = directory

    # ---- paths -------------------------------------------------------------

    @property
    def ca_cert_path(self) -> str:
        return os.path.join(self.directory, "ca.pem")

    @property
    def ca_key_path(self) -> str:
        return os.path.join(self.directory, "ca.key")

    def leaf_paths(self, name: str) -> tuple[str, str]:
        """(certificate, key) paths of leaf `name` (they may not exist yet)."""
        _check_name(name)
        return (os.path.join(self.directory, f"{name}.pem"),
                os.path.join(self.directory, f"{name}.key"))

    # ---- files -------------------------------------------------------------

    def _prepare_dir(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def _write(self, path: str, data: bytes, mode: int) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")  # mkstemp: 0600 from the start
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _read(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PkiError(f"{path}: cannot read it ({e.strerror}); check its permissions "
                           f"(run as root)") from None

    # ---- the CA ------------------------------------------------------------

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
        """The CA pair, None if neither file exists; PkiError if only one
        exists or they are not a valid CA pair."""
        cert_pem, key_pem = self._read(self.ca_cert_path), self._read(self.ca_key_path)
        if cert_pem is None and key_pem is None:
            return None
        return _parse_ca(cert_pem, key_pem, self.directory,
                         f"restore both from a backup or from another host's bundle, or remove "
                         f"{self.directory} to start a new cluster CA")

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca = self._load_ca()
        if ca is None:
            raise PkiError(f"{self.directory}: no cluster CA; create one (first host) or import "
                           f"the cluster's bundle (joining host)")
        return ca

    def create_ca(self, common_name: str = "Keel cluster CA") -> None:
        """Create the cluster CA; refuses if any CA file exists already."""
        if os.path.exists(self.ca_cert_path) or os.path.exists(self.ca_key_path):
            raise PkiError(f"{self.directory}: a cluster CA exists already; keep it (ensure_ca) "
                           f"or remove {self.ca_cert_path} and {self.ca_key_path} to start over "
                           f"(every leaf must then be re-issued)")
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        self._prepare_dir()
        self._write(self.ca_key_path, _key_pem(key), 0o600)
        self._write(self.ca_cert_path, _cert_pem(cert), 0o644)

    def ensure_ca(self, common_name: str = "Keel cluster CA") -> bool:
        """Create the CA unless a valid one is here; True if it was created.
        A half-present or broken CA is a PkiError, never overwritten."""
        if self._load_ca() is not None:
            return False
        self.create_ca(common_name)
        return True

    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate, as `openssl x509 -noout -fingerprint
        -sha256` prints it (AA:BB:...): what an admin compares on a joining host."""
        return _fingerprint(self._ca()[0])

    # ---- leaves ------------------------------------------------------------

    def issue(self, name: str, *, ips=(), dns=(), server: bool = True, client: bool = True,
              days: int = 1825) -> tuple[str, str]:
        """Issue (or replace) leaf `name` with a new key: SANs for `ips` and
        `dns`, extended key usages serverAuth/clientAuth as asked. Its end is
        capped at the CA's. Returns (certificate path, key path)."""
        cert_path, key_path = self.leaf_paths(name)
        ip_values, dns_values = _san_values(ips, dns)
        if not (server or client):
            raise PkiError(f"leaf {name!r}: a leaf must be for server or client use (or both)")
        if days < 1:
            raise PkiError(f"leaf {name!r}: days must be at least 1, not {days}")
        ca_cert, ca_key = self._ca()
        key = _new_key()
        now = _now()
        not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca_cert.subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - BACKDATE)
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False,
                                                crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(sorted(_usages(server, client),
                                                               key=lambda o: o.dotted_string)),
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False))
        if ip_values or dns_values:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(a) for a in ip_values] + [x509.DNSName(d) for d in dns_values]),
                critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        self._prepare_dir()
        self._write(key_path, _key_pem(key), 0o600)
        self._write(cert_path, _cert_pem(cert), 0o644)
        return cert_path, key_path

    def leaf_problem(self, name: str, *, ips=(), dns=(), server: bool = True,
                     client: bool = True) -> str | None:
        """Why leaf `name` is not fit for use with these SANs and usages (a
        short phrase), or None if it is."""
        cert_path, key_path = self.leaf_paths(name)
        ip_values, dns_values = _san_values(ips, dns)
        ca_cert, _ = self._ca()
        cert_pem, key_pem = self._read(cert_path), self._read(key_path)
        if cert_pem is None or key_pem is None:
            return "missing"
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError:
            return "unreadable"
        if not _same_public_key(cert, key):
            return "its key does not match its certificate"
        if not _signed_by(cert, ca_cert):
            return "not signed by this CA"
        if cert.not_valid_after - _now() < RENEW_BEFORE:
            return "expired or about to expire"
        if _sans(cert) != (frozenset(ip_values), frozenset(dns_values)):
            return "its SANs differ"
        eku = _ext(cert, x509.ExtendedKeyUsage)
        if eku is None or frozenset(eku) != _usages(server, client):
            return "its key usages differ"
        return None

    def ensure_leaf(self, name: str, ips=(), dns=(), *, server: bool = True, client: bool = True,
                    days: int = 1825) -> tuple[str, str]:
        """Issue leaf `name` unless a fit one is here (see leaf_problem).
        Returns (certificate path, key path)."""
        if self.leaf_problem(name, ips=ips, dns=dns, server=server, client=client) is None:
            return self.leaf_paths(name)
        return self.issue(name, ips=ips, dns=dns, server=server, client=client, days=days)

    # ---- the bundle a joining host receives --------------------------------

    def export_bundle(self) -> bytes:
        """The CA certificate and key as one JSON document (UTF-8):
        {"format": "keel-pki-bundle/1", "ca_cert": PEM, "ca_key": PEM}.
        It holds the CA's private key: copy it only over an authenticated,
        encrypted channel (ssh) and do not leave it lying around."""
        self._ca()
        return json.dumps({"format": BUNDLE_FORMAT,
                           "ca_cert": self._read(self.ca_cert_path).decode(),
                           "ca_key": self._read(self.ca_key_path).decode()},
                          indent=1).encode() + b"\n"

    def import_bundle(self, data: bytes, expected_fingerprint: str | None = None) -> bool:
        """Install the CA from export_bundle()'s output; True if installed,
        False if this very CA is here already. Refuses a bundle that is not
        valid, whose fingerprint differs from `expected_fingerprint` (when
        given), or whose CA differs from one already here."""
        try:
            doc = json.loads(data)
            if doc.get("format") != BUNDLE_FORMAT:
                raise ValueError
            cert_pem, key_pem = doc["ca_cert"].encode(), doc["ca_key"].encode()
        except (ValueError, TypeError, KeyError, AttributeError):
            raise PkiError(f"not a Keel PKI bundle ({BUNDLE_FORMAT}); export it again on a "
                           f"cluster host") from None
        cert, _ = _parse_ca(cert_pem, key_pem, "the bundle", "export it again on a cluster host")
        got = _fingerprint(cert)
        if expected_fingerprint is not None and \
                _norm_fingerprint(expected_fingerprint) != _norm_fingerprint(got):
            raise PkiError(f"the bundle's CA has fingerprint {got}, not the expected "
                           f"{expected_fingerprint}; check that it comes from the right cluster")
        here = self._load_ca()
        if here is not None:
            if _fingerprint(here[0]) == got:
                return False
            raise PkiError(f"{self.directory} holds another cluster CA ({_fingerprint(here[0])}); "
                           f"remove {self.directory} if this host leaves its old cluster")
        self._prepare_dir()
        self._write(self.ca_key_path, key_pem, 0o600)
        self._write(self.ca_cert_path, cert_pem, 0o644)
        return True


def _check_name(name) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
        raise PkiError(f"bad certificate name {name!r}: use 1-63 of a-z 0-9 . _ - starting "
                       f"with a letter or digit (not 'ca')")


def _san_values(ips, dns) -> tuple[list, list]:
    if isinstance(ips, str) or isinstance(dns, str):
        raise PkiError("ips and dns are lists of names, not one string; wrap it in a list")
    try:
        ip_values = sorted({ipaddress.ip_address(a) for a in ips}, key=lambda a: (a.version, a))
    except ValueError as e:
        raise PkiError(f"{e}; give IP addresses in ips and host names in dns") from None
    dns_values = sorted({d.lower().rstrip(".") for d in dns})
    for d in dns_values:
        if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*",
                            d):
            raise PkiError(f"{d!r} is not a DNS name; give host names in dns and IP addresses "
                           f"in ips")
    return ip_values, dns_values


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    if cert.issuer != ca_cert.subject:
        return False
    try:
        ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                    ec.ECDSA(cert.signature_hash_algorithm))
    except (InvalidSignature, TypeError, AttributeError):
        return False
    return True


def _parse_ca(cert_pem: bytes | None, key_pem: bytes | None, where: str, todo: str):
    if cert_pem is None or key_pem is None:
        raise PkiError(f"{where}: the CA certificate or key is missing; {todo}")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{where}: the CA certificate or key cannot be read; {todo}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_public_key(cert, key):
        raise PkiError(f"{where}: the CA key does not belong to the CA certificate; {todo}")
    if not _is_ca_cert(cert):
        raise PkiError(f"{where}: the CA certificate is not a CA (basic constraints, key "
                       f"usage); {todo}")
    if cert.not_valid_after < _now():
        raise PkiError(f"{where}: the CA expired on {cert.not_valid_after:%Y-%m-%d}; {todo}")
    return cert, key


def _fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _norm_fingerprint(fp: str) -> str:
    fp = fp.strip().upper()
    for prefix in ("SHA256 FINGERPRINT=", "SHA256:"):   # openssl's output, or a tagged one
        if fp.startswith(prefix):
            fp = fp[len(prefix):]
    return fp.replace(":", "")
