"""A real OpenLDAP server for the directory tests: Debian's slapd, started
unprivileged (as nobody) on a loopback address with a slapd.conf (back_mdb,
the ppolicy overlay), plain LDAP with StartTLS and LDAPS, a certificate
signed by a CA made here; and its accounts and groups, written as the
directory's administrator."""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness.procs import stop_group

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "slapd-root-pw"
ENGINE_DN = f"cn=engine,ou=services,{SUFFIX}"
ENGINE_PW = "engine-bind-pw"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def _pem(obj):
    return obj.public_bytes(serialization.Encoding.PEM)


def make_certs(root, address):
    """(ca file, cert file, key file): a CA, and a server certificate for `address`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Keel test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(root, n) for n in ("ca.pem", "server.pem", "server.key")]
    for path, data in zip(paths, (_pem(ca), _pem(cert), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    return paths


def free_port(address):
    """A port free on `address` now, for slapd's two listeners."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Slapd:
    def __init__(self, root, address, port, tls_port):
        self.root, self.address, self.port, self.tls_port = root, address, port, tls_port
        self.proc = None
        self.url = f"ldap://{address}:{port}"
        self.ldaps_url = f"ldaps://{address}:{tls_port}"

    def _conf(self):
        db = os.path.join(self.root, "db")
        os.makedirs(db)
        self.ca, cert, key = make_certs(self.root, self.address)
        includes = "".join(f"include /etc/ldap/schema/{n}.schema\n" for n in SCHEMAS)
        conf = os.path.join(self.root, "slapd.conf")
        with open(conf, "w") as f:
            f.write(f"""{includes}modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {self.root}/slapd.pid
TLSCACertificateFile {self.ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {db}
index objectClass,uid,cn,member,memberUid eq
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{SUFFIX}"
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="{ENGINE_DN}" read by self read by * none
""")
        for path in (self.root, db, conf, cert, key, self.ca):
            shutil.chown(path, "nobody", "nogroup")
        os.chmod(self.root, 0o755)
        return conf

    def start(self, deadline=30):
        conf = self._conf()
        subprocess.run(["slaptest", "-u", "-f", conf], check=True, capture_output=True)
        self.log = open(os.path.join(self.root, "slapd.log"), "wb")
        self.proc = subprocess.Popen(
            ["slapd", "-d", "0", "-u", "nobody", "-g", "nogroup", "-f", conf,
             "-h", f"{self.url}/ {self.ldaps_url}/"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + deadline
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: see {self.log.name}")
            try:
                self.admin().unbind()
                break
            except ldap3.core.exceptions.LDAPException:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        self._base()
        return self

    def admin(self):
        return ldap3.Connection(ldap3.Server(self.url, connect_timeout=2), ROOT_DN, ROOT_PW, auto_bind=True,
                                raise_exceptions=True, receive_timeout=5)

    def _base(self):
        c = self.admin()
        c.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
        for ou in ("people", "groups", "services", "policies"):
            c.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
        c.add(ENGINE_DN, ["person", "simpleSecurityObject"], {"cn": "engine", "sn": "engine",
                                                             "userPassword": ENGINE_PW})
        c.add(f"cn=default,ou=policies,{SUFFIX}", ["device", "pwdPolicy"],
              {"cn": "default", "pwdAttribute": "userPassword", "pwdLockout": "TRUE"})
        c.unbind()

    def add_user(self, uid, password, first="Test", last="User"):
        dn = f"uid={uid},ou=people,{SUFFIX}"
        c = self.admin()
        c.add(dn, ["inetOrgPerson"], {"uid": uid, "cn": f"{first} {last}", "givenName": first, "sn": last,
                                       "mail": f"{uid}@example.org", "userPassword": password})
        c.unbind()
        return dn

    def add_group(self, name, member_dns):
        dn = f"cn={name},ou=groups,{SUFFIX}"
        c = self.admin()
        c.add(dn, ["groupOfNames"], {"cn": name, "member": list(member_dns)})
        c.unbind()
        return dn

    def lock(self, dn):
        """The ppolicy overlay's permanent lock: slapd refuses the account's binds."""
        c = self.admin()
        c.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["000001010000Z"])]})
        c.unbind()

    def stop(self):
        if self.proc is None:
            return
        stop_group(self.proc)
        self.proc = None
        self.log.close()
