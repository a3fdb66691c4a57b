"""Directory sign-in against a real OpenLDAP slapd (Debian's, unprivileged,
on 127.0.8.40) through the engine's own API and command line: StartTLS and
LDAPS checked against the test CA, users found and added from the domain,
a group's permissions reaching its members, a wrong password, a disabled
(ppolicy-locked) account, and a directory that does not answer (a clear 503
within its timeout, while internal users go on signing in)."""
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from harness import ui
from harness.access import build
from harness.slapd import ENGINE_DN, ENGINE_PW, SUFFIX, Slapd, free_port
from keel_engine.models import Directory, Group
from keel_engine.services import directory

pytestmark = [pytest.mark.slow, pytest.mark.root]     # slapd is started as root, runs as nobody
ADDRESS = "127.0.8.40"
CLI = os.path.join(os.path.dirname(sys.executable), "keel-engine")


@pytest.fixture(scope="module")
def slapd():
    root = tempfile.mkdtemp(prefix="keel-slapd-")
    sd = Slapd(root, ADDRESS, free_port(ADDRESS), free_port(ADDRESS)).start()
    jdoe = sd.add_user("jdoe", "jdoe-pw-1", "John", "Doe")
    sd.add_user("alice", "alice-pw-1", "Alice", "Liddell")
    carol = sd.add_user("carol", "carol-pw-1", "Carol", "Locked")
    sd.add_group("vmusers", [jdoe, carol])
    sd.add_group("others", [carol])
    sd.lock(carol)
    yield sd
    sd.stop()
    shutil.rmtree(root, ignore_errors=True)


def spec(sd, **kw):
    base = dict(name="example.org", profile="openldap", urls=(sd.url,), base_dn=SUFFIX, tls="starttls",
                ca_file=sd.ca, bind_dn=ENGINE_DN, bind_password=ENGINE_PW, timeout=3.0)
    base.update(kw)
    return directory.DirectorySpec(**base)


@pytest.fixture
def w(tmp_path, slapd):
    w = build(tmp_path)
    with w.sm() as s:
        s.query(Directory).delete()          # the world's placeholder directory and group
        s.query(Group).delete()
        directory.add_directory(w.engine, s, spec(slapd))
        s.commit()
    return w


def sign_in(w, user, password):
    return w.client().post("/ovirt-engine/sso/oauth/token", data={
        "grant_type": "password", "username": user, "password": password})


def domain_id(w, h):
    return next(d["id"] for d in w.get(h, "/domains").get_json()["domain"] if d["name"] == "example.org")


def test_a_directory_group_gives_its_members_their_vms(w):
    admin = w.admin()
    r = w.send(admin, "POST", "/groups", {"name": "vmusers", "domain": {"name": "example.org"}})
    assert r.status_code == 201, r.get_data()
    gid = r.get_json()["id"]
    r = w.send(admin, "POST", f"/groups/{gid}/permissions", {"role": {"name": "UserRole"},
                                                             "vm": {"id": w.ids["vm:a1"]}})
    assert r.status_code == 201, r.get_data()
    r = sign_in(w, "jdoe@example.org", "jdoe-pw-1")
    assert r.status_code == 200, r.get_json()
    h = {"Authorization": f"Bearer {r.get_json()['access_token']}", "Accept": "application/json"}
    assert w.names(h, "/vms", "vm") == ["a1"]
    assert w.send(h, "PUT", f"/vms/{w.ids['vm:a1']}", {"description": "x"}).status_code == 403
    me = w.get(h, "/users").get_json()["user"]
    assert [(u["user_name"], u["name"], u["last_name"]) for u in me] == [("jdoe@example.org", "John", "Doe")]
    basic = {"Authorization": "Basic " + base64.b64encode(b"jdoe@example.org:jdoe-pw-1").decode(),
             "Accept": "application/json"}
    assert w.names(basic, "/vms", "vm") == ["a1"]
    # the web UI: the same sign-in, the VM portal shows what the group gives
    web = w.client()
    r = ui.sign_in(web, "jdoe@example.org", "jdoe-pw-1")
    assert r.status_code == 303 and r.headers["Location"] == "/ui/portal/"
    portal = web.get("/ui/portal/").text
    assert ">a1</a>" in portal and ">a2</a>" not in portal and ">b1</a>" not in portal
    assert web.get(f"/ui/vms/{w.ids['vm:b1']}").status_code == 404


def test_wrong_password_and_unknown_user_are_refused_alike(w):
    for user, pw in (("jdoe@example.org", "wrong-pw"), ("nosuch@example.org", "x-pw-123"),
                     ("jdoe@example.org", "")):
        r = sign_in(w, user, pw or "x")
        if pw == "":
            # an empty password would be an anonymous bind to LDAP: never even tried
            assert directory.authenticate(w.cfg, _dir(w), "jdoe", "example.org", "") is None
            continue
        assert r.status_code == 401 and "wrong user name or password" in r.get_json()["error"], r.get_json()


def _dir(w):
    with w.sm() as s:
        d = directory.find(s, "example.org")
        s.expunge(d)
        return d


def test_a_disabled_account_cannot_sign_in(w):
    admin = w.admin()
    gid = w.send(admin, "POST", "/groups", {"name": "vmusers", "domain": {"name": "example.org"}}).get_json()["id"]
    w.send(admin, "POST", f"/groups/{gid}/permissions", {"role": {"name": "UserRole"}, "vm": {"id": w.ids["vm:a1"]}})
    r = sign_in(w, "carol@example.org", "carol-pw-1")
    assert r.status_code == 401 and "access_token" not in r.get_json()


def test_administrators_find_directory_users_and_give_them_roles(w):
    admin = w.admin()
    did = domain_id(w, admin)
    found = w.get(admin, f"/domains/{did}/users?search=usrname%3Dj*").get_json()["user"]
    assert [u["user_name"] for u in found] == ["jdoe@example.org"]
    groups = w.get(admin, f"/domains/{did}/groups").get_json()["group"]
    assert sorted(g["name"] for g in groups) == ["others", "vmusers"]
    assert sign_in(w, "alice@example.org", "alice-pw-1").status_code == 401   # no role yet
    r = w.send(admin, "POST", "/users", {"user_name": "alice@example.org", "domain": {"id": did}})
    assert r.status_code == 201, r.get_data()
    uid = r.get_json()["id"]
    w.send(admin, "POST", f"/users/{uid}/permissions", {"role": {"name": "UserRole"}, "vm": {"id": w.ids["vm:a2"]}})
    r = sign_in(w, "alice@example.org", "alice-pw-1")
    assert r.status_code == 200, r.get_json()
    h = {"Authorization": f"Bearer {r.get_json()['access_token']}", "Accept": "application/json"}
    assert w.names(h, "/vms", "vm") == ["a2"]
    assert w.get(h, "/domains").get_json().get("domain", []) == []       # not for users


def test_ldaps_with_the_ca_and_a_wrong_ca_refused(w, slapd, tmp_path):
    with w.sm() as s:
        directory.add_directory(w.engine, s, spec(slapd, name="tls.example.org", urls=(slapd.ldaps_url,),
                                                  tls="ldaps"))
        other_ca = tmp_path / "other-ca"
        other_ca.mkdir()
        from harness.slapd import make_certs
        wrong, _c, _k = make_certs(str(other_ca), ADDRESS)
        directory.add_directory(w.engine, s, spec(slapd, name="bad.example.org", ca_file=wrong))
        s.commit()
        good, bad = directory.find(s, "tls.example.org"), directory.find(s, "bad.example.org")
        assert [a.login for a in directory.search_users(w.cfg, good, "alice")] == ["alice"]
        with pytest.raises(directory.Unreachable) as e:
            directory.search_users(w.cfg, bad, "alice")
    assert "certificate" in str(e.value).lower()


def test_a_directory_that_does_not_answer_is_a_clear_error_and_internal_users_still_sign_in(w, slapd):
    hung = socket.socket()
    hung.bind((ADDRESS, 0))
    hung.listen(8)          # accepts connections, never answers: only the timeout ends the wait
    try:
        with w.sm() as s:
            directory.add_directory(w.engine, s, spec(slapd, name="hung.example.org", tls="none",
                                                      urls=(f"ldap://{ADDRESS}:{hung.getsockname()[1]}",),
                                                      ca_file=None, timeout=1.0))
            s.commit()
        t0 = time.monotonic()
        r = sign_in(w, "jdoe@hung.example.org", "jdoe-pw-1")
        took = time.monotonic() - t0
        assert r.status_code == 503 and "directory hung.example.org does not answer" in r.get_json()["error"]
        assert took < 15, took
        assert sign_in(w, "admin@internal", "pw12345").status_code == 200
    finally:
        hung.close()


def test_directory_command_line(tmp_path, slapd):
    conf = tmp_path / "engine.conf"
    conf.write_text(f"[database]\nurl = sqlite:///{tmp_path}/e.db\n[engine]\nsecret_key_file = {tmp_path}/k\n")
    pw = tmp_path / "bind-pw"
    pw.write_text(ENGINE_PW + "\n")
    upw = tmp_path / "user-pw"
    upw.write_text("jdoe-pw-1\n")

    def cli(*args):
        return subprocess.run([CLI, "--config", str(conf), *args], capture_output=True, text=True, timeout=120)
    r = cli("directory", "add", "example.org", "--profile", "openldap", "--url", slapd.url, "--base-dn", SUFFIX,
            "--ca-file", slapd.ca, "--bind-dn", ENGINE_DN, "--bind-password-file", str(pw), "--timeout", "3")
    assert r.returncode == 0, r.stderr
    r = cli("directory", "list")
    assert "example.org  openldap" in r.stdout and ENGINE_PW not in r.stdout
    r = cli("directory", "test", "example.org", "--user", "jdoe", "--password-file", str(upw))
    assert r.returncode == 0, r.stderr
    assert "password accepted" in r.stdout and "vmusers" in r.stdout
    r = cli("directory", "add", "x.org", "--profile", "openldap", "--url", "ldaps://h", "--base-dn", "dc=x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not fit tls = starttls" in r.stderr
    r = cli("directory", "remove", "example.org")
    assert r.returncode == 0 and cli("directory", "list").stdout == ""
