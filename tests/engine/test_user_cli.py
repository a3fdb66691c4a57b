"""`keel-engine user ...`: internal users from the command line, as oVirt's
ovirt-aaa-jdbc-tool does it; a disabled user cannot sign in and its tokens
stop at once; bad input is one line."""
import os
import subprocess
import sys

import pytest

from keel_engine import config
from keel_engine.app import create_app
from keel_engine.models import Permission, Role, User
from keel_engine.services import Context, roles

CLI = os.path.join(os.path.dirname(sys.executable), "keel-engine")
pytestmark = pytest.mark.slow     # a dozen command-line runs


def test_internal_users_from_the_command_line(tmp_path):
    conf = tmp_path / "engine.conf"
    conf.write_text(f"[database]\nurl = sqlite:///{tmp_path}/e.db\n[engine]\nsecret_key_file = {tmp_path}/k\n"
                    "admin_password = admin-pw-1\n")
    pw, pw2 = tmp_path / "pw", tmp_path / "pw2"
    pw.write_text("alice-pw-1\n")
    pw2.write_text("alice-pw-2\n")

    def cli(*args):
        return subprocess.run([CLI, "--config", str(conf), "user", *args], capture_output=True, text=True,
                              timeout=120)
    r = cli("add", "alice", "--password-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert cli("list").stdout.split("\n")[:2] == ["admin@internal", "alice@internal"]
    r = cli("add", "alice", "--password-file", str(pw))
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == \
        "keel-engine: error: user alice@internal already exists" and "Traceback" not in r.stderr
    r = cli("add", "bob", "--password-file", str(tmp_path / "missing"))
    assert r.returncode == 2 and "cannot read the password file" in r.stderr and "Traceback" not in r.stderr

    cfg = config.load(str(conf))
    app = create_app(cfg, migrate=False)
    c = app.test_client()
    sm = app.config["KEEL_CTX"].sessionmaker
    with sm() as s:   # a role, so alice may sign in at all
        alice = s.query(User).filter_by(name="alice").one()
        roles.add_permission(Context(cfg, sm), s, s.query(Role).filter_by(name="UserRole").one(), None, user=alice)
        s.commit()

    def token(password):
        return c.post("/ovirt-engine/sso/oauth/token", data={"grant_type": "password", "username": "alice@internal",
                                                             "password": password})
    tok = token("alice-pw-1").get_json()["access_token"]
    h = {"Authorization": f"Bearer {tok}"}
    assert c.get("/ovirt-engine/api/vms", headers=h).status_code == 200
    assert cli("disable", "alice").returncode == 0
    assert cli("list").stdout.split("\n")[1] == "alice@internal  (disabled)"
    assert c.get("/ovirt-engine/api/vms", headers=h).status_code == 401       # at once
    assert token("alice-pw-1").status_code == 401
    assert cli("enable", "alice").returncode == 0
    assert cli("password-reset", "alice", "--password-file", str(pw2)).returncode == 0
    assert token("alice-pw-1").status_code == 401 and token("alice-pw-2").status_code == 200
    assert cli("remove", "alice@internal").returncode == 0
    with sm() as s:
        assert s.query(User).filter_by(name="alice").count() == 0
        assert s.query(Permission).filter(Permission.user_id.is_(None), Permission.group_id.is_(None)).count() == 0
    r = cli("remove", "admin")
    assert r.returncode == 1 and "last user with SuperUser" in r.stderr
