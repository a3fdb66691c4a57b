"""`keel-engine init-cluster --fence-agent`: the real command against a real
SQLite database (no libvirt needed: the host row is written directly, as if
an earlier `init-cluster --host` had added it)."""
import os
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import select

from keel_engine import config, db
from keel_engine.models import DataCenter, FenceAgent, Host
from keel_engine.services import hosts as host_svc

from harness.engineapp import add_default_cluster

CLI = os.path.join(os.path.dirname(sys.executable), "keel-engine")
PASSWORD = "bmc-Secret-42"


@pytest.fixture
def env(tmp_path):
    conf = tmp_path / "engine.conf"
    conf.write_text(f"[database]\nurl = sqlite:///{tmp_path}/e.db\n"
                    f"[engine]\nsecret_key_file = {tmp_path}/fence.key\n")
    assert run(conf, "db-upgrade").returncode == 0
    cfg = config.load(str(conf))
    with db.make_sessionmaker(db.make_engine(cfg.database_url))() as s:
        add_default_cluster(s, {f"h{n}": f"127.0.9.{n}" for n in (1, 2)})
    pw = tmp_path / "bmc-password"
    pw.write_text(PASSWORD + "\n")
    return {"conf": conf, "cfg": cfg, "pw": pw, "db": tmp_path / "e.db"}


def run(conf, *args):
    return subprocess.run([CLI, "--config", str(conf), *args], capture_output=True, text=True, timeout=60)


def agent_arg(env, host="h1", port=6231, extra=",lanplus=1,cipher=3", pw=None):
    return ["--fence-agent", f"{host}=ipmilan,address=198.51.100.1,port={port},username=admin,"
                             f"password_file={pw or env['pw']}{extra}"]


def agents(env, host="h1"):
    with db.make_sessionmaker(db.make_engine(env["cfg"].database_url))() as s:
        host_id = s.scalar(select(Host.id).where(Host.name == host))
        return host_svc.fence_agents_for_host(s, host_id, env["cfg"])


def test_adds_agent_once_with_encrypted_password(env):
    r = run(env["conf"], "init-cluster", *agent_arg(env), *agent_arg(env, "h2", 6232))
    assert r.returncode == 0, r.stderr
    assert "added ipmilan agent admin@198.51.100.1:6231 of host h1" in r.stdout
    (a,) = agents(env)
    assert (a["address"], a["port"], a["username"], a["password"], a["order"]) == \
        ("198.51.100.1", 6231, "admin", PASSWORD, 1)
    assert a["options"] == {"lanplus": "1", "cipher": "3"}
    assert [x["port"] for x in agents(env, "h2")] == [6232]
    # Idempotent: the same command again changes nothing.
    again = run(env["conf"], "init-cluster", *agent_arg(env), *agent_arg(env, "h2", 6232))
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stdout and "added" not in again.stdout
    assert len(agents(env)) == 1 and len(agents(env, "h2")) == 1
    # Encrypted at rest: the clear password is nowhere in the database file or its rows.
    with sqlite3.connect(env["db"]) as c:
        stored = c.execute("select password_encrypted from fence_agents").fetchall()
    assert len(stored) == 2 and all(PASSWORD not in row[0] for row in stored)
    for f in os.listdir(env["db"].parent):
        if f.startswith("e.db"):
            assert PASSWORD.encode() not in (env["db"].parent / f).read_bytes()


def test_changed_password_updates_the_same_agent(env, tmp_path):
    assert run(env["conf"], "init-cluster", *agent_arg(env)).returncode == 0
    new_pw = tmp_path / "new-password"
    new_pw.write_text("other-pw\n")
    r = run(env["conf"], "init-cluster", *agent_arg(env, pw=new_pw, extra=""))
    assert r.returncode == 0, r.stderr
    assert "updated ipmilan agent" in r.stdout
    (a,) = agents(env)
    assert a["password"] == "other-pw" and a["options"] == {}


@pytest.mark.parametrize("value,needle", [
    ("h1", "--fence-agent expects HOST=TYPE,"),
    ("h1=password=keel-lab,address=198.51.100.1", "--fence-agent expects"),
    ("h1=address=198.51.100.1,username=admin,password_file={pw}", "--fence-agent expects"),
    ("h1=ipmilan,address=198.51.100.1,username=admin,password=keel-lab", "password_file=PATH, never"),
    ("h1=ipmilan,address=198.51.100.1,password_file={pw}", "missing username"),
    ("h1=ipmilan,address=198.51.100.1,username=admin,password_file=/nonexistent/pw", "cannot read"),
    ("h1=ipmilan,address=198.51.100.1,username=admin,password_file={pw},port=x", "port 'x' is not a number"),
    ("h1=ipmilan,address=198.51.100.1,username=admin,password_file={pw},cipher=1", "only cipher suite 3"),
    ("h1=ipmilan,address=198.51.100.1,username=admin,password_file={pw},colour=blue", "unknown fence agent option"),
    ("h1=redfish,address=198.51.100.1,username=admin,password_file={pw}", "'redfish' is not supported"),
    ("h1=ipmilan,address=198.51.100.1,address=1.2.3.4,username=admin,password_file={pw}", "'address' given twice"),
    ("h9=ipmilan,address=198.51.100.1,username=admin,password_file={pw}", "no host named h9"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(env, value, needle):
    r = run(env["conf"], "init-cluster", "--data-center", "Other", "--fence-agent",
            value.format(pw=env["pw"]))
    errors = [line for line in r.stderr.splitlines() if line.startswith("keel-engine: error:")]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "keel-lab" not in r.stderr and PASSWORD not in r.stderr
    with db.make_sessionmaker(db.make_engine(env["cfg"].database_url))() as s:
        assert s.scalars(select(FenceAgent)).all() == []
        # checked before anything was created
        assert s.scalar(select(DataCenter).where(DataCenter.name == "Other")) is None
