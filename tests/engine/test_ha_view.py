"""The hosted engine's HA state as data: the engine worker copies the HA
agents' records from the hosts' etcd into `ha_hosts` / `ha_cluster` every
monitor cycle, the dashboard's panel reads the rows. Fast tests feed the
refresh records made with keel_common's schema (no etcd); the slow one
publishes through the broker's own etcd session into a real etcd and reads
the panel through the web UI."""
from __future__ import annotations

import logging
import shutil
import threading
import time
from datetime import datetime, timezone

import pytest

from harness.engineapp import engine_app_with_host, running_worker
from keel_common import etcdclient
from keel_common.config import PROFILES
from keel_common.keys import EngineStatus, HostRecord, Keys
from keel_engine import db
from keel_engine.config import EngineConfig
from keel_engine.services import Context
from keel_engine.services.ha_view import overview
from keel_engine.worker.ha_view import HaView

FAST = PROFILES["fast"]
NOW = 1_800_000_000.0
ETCD = ("http://127.0.12.1:23790",)


def record(host_id, age=1.0, **kw):
    kw.setdefault("hostname", f"host{host_id}")
    return HostRecord(host_id=host_id, timestamp=NOW - age, **kw)


def read_of(records, global_maintenance=False, raw=()):
    """What a read of etcd returns for these records: each one written as its
    broker writes it and read back with the one parser, plus raw (value, key)
    pairs as they could be found in etcd."""
    items = [(r.to_json().encode(), Keys().host(r.host_id).encode()) for r in records] + list(raw)
    hosts, malformed = etcdclient.parsed(items, HostRecord.from_json)
    return etcdclient.HaRecords(hosts, global_maintenance, malformed)


@pytest.fixture
def env(tmp_path):
    url = f"sqlite:///{tmp_path}/e.db"
    db.upgrade(url)
    cfg = EngineConfig(database_url=url, ha_etcd_endpoints=ETCD, ha_timing_profile="fast")
    sm = db.make_sessionmaker(db.make_engine(url), writes=True)
    return Context(config=cfg, sessionmaker=sm)


class Reads:
    """A stand-in for the etcd read: returns (or raises) what it is given."""
    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def __call__(self, etcd):
        self.calls.append(etcd.endpoints)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def look(ctx):
    with ctx.sessionmaker() as s:
        return overview(s, now=datetime.fromtimestamp(NOW, timezone.utc))


def test_each_record_becomes_a_row_stale_by_the_agents_rule_and_global_maintenance_is_a_column(env, caplog):
    caplog.set_level(logging.INFO, "keel.engine.ha")
    records = [
        record(1, score=3400.0, state="EngineUp", address="198.51.100.11",
               engine=EngineStatus(vm="up", health="good", detail="Up")),
        # exactly as old as the agents still count as live
        record(2, age=FAST.record_stale_after, score=2400.0, state="EngineDown",
               engine=EngineStatus(vm="down", health="bad", detail="Down", reason="health URL unreachable")),
        # a moment older: stale; its engine VM claim counts for nothing
        record(3, age=FAST.record_stale_after + 0.5, state="EngineUp", engine=EngineStatus(vm="up", health="good")),
        record(4, state="LocalMaintenance", maintenance=True, stopped=True),
    ]
    read = Reads(read_of(records, global_maintenance=True, raw=[(b"{not json", b"/keel/hosts/9")]))
    # a record that parses, with a time no date can be
    read.answer.hosts[5] = HostRecord(host_id=5, hostname="host5", timestamp=1e300)
    HaView(env, read=read, clock=lambda: NOW).refresh()

    assert read.calls == [ETCD]
    ha = look(env)
    assert ha.configured and ha.global_maintenance and ha.error is None
    assert ha.updated == datetime.fromtimestamp(NOW, timezone.utc)
    by_id = {h.host_id: h for h in ha.hosts}
    assert sorted(by_id) == [1, 2, 3, 4]
    h1, h2, h3, h4 = (by_id[i] for i in (1, 2, 3, 4))
    assert (h1.hostname, h1.address, h1.ha_state, h1.score, h1.engine_vm_running, h1.engine_health, h1.stale) == \
        ("host1", "198.51.100.11", "EngineUp", 3400, True, "good", False)
    assert h1.record_time == datetime.fromtimestamp(NOW - 1, timezone.utc) and h1.age == 1
    assert (h2.stale, h2.engine_vm_running, h2.engine_health, h2.engine_detail, h2.address) == \
        (False, False, "bad", "Down: health URL unreachable", None)
    assert h3.stale and h3.engine_vm_running
    assert h4.local_maintenance and h4.agent_stopped and not h4.stale
    assert ha.engine_host == "host1" and ha.engine_hosts == ("host1",)
    said = [r.getMessage() for r in caplog.records]
    assert any("global maintenance" in m for m in said)
    assert any("cannot be read: /keel/hosts/9, host 5" in m for m in said)


def test_rows_follow_etcd_and_each_change_is_logged_once(env, caplog):
    caplog.set_level(logging.INFO, "keel.engine.ha")
    read = Reads(read_of([record(1, state="EngineUp", engine=EngineStatus(vm="up")), record(2)],
                         global_maintenance=True))
    view = HaView(env, read=read, clock=lambda: NOW)
    view.refresh()
    view.refresh()
    # host 2's etcd lease expired (its record is gone), global maintenance ended
    read.answer = read_of([record(1, state="EngineUp", engine=EngineStatus(vm="up"))])
    view.refresh()
    view.refresh()
    ha = look(env)
    assert [h.host_id for h in ha.hosts] == [1] and not ha.global_maintenance
    said = [r.getMessage() for r in caplog.records]
    assert sum("in global maintenance" in m for m in said) == 1
    assert sum("out of global maintenance" in m for m in said) == 1
    assert sum("every monitor cycle" in m for m in said) == 1


def test_a_failed_read_keeps_the_rows_of_the_last_good_one_and_says_why_once(env, caplog):
    caplog.set_level(logging.INFO, "keel.engine.ha")
    read = Reads(read_of([record(1, score=3400.0, state="EngineUp", engine=EngineStatus(vm="up"))]))
    clock = [NOW]
    view = HaView(env, read=read, clock=lambda: clock[0])
    view.refresh()
    read.answer = etcdclient.EtcdUnreachable("etcd unreachable (http://127.0.12.1:23790: ConnectionFailedError)")
    for _ in range(3):
        clock[0] += 5
        view.refresh()
    ha = look(env)
    assert ha.error == "etcd unreachable (http://127.0.12.1:23790: ConnectionFailedError)"
    assert ha.updated == datetime.fromtimestamp(NOW, timezone.utc)
    assert [(h.host_id, h.score, h.ha_state) for h in ha.hosts] == [(1, 3400, "EngineUp")]
    assert ha.engine_host == "host1"
    failures = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert "the dashboard shows those read at" in failures[0].getMessage()
    read.answer = read_of([record(1, score=1800.0, state="EngineUp", engine=EngineStatus(vm="up"))])
    view.refresh()
    view.refresh()
    ha = look(env)
    assert ha.error is None and ha.hosts[0].score == 1800
    assert sum("again" in r.getMessage() for r in caplog.records) == 1


def test_a_hung_read_is_cut_at_the_deadline_and_not_piled_up(env):
    release = threading.Event()
    calls = []

    def hung(etcd):
        calls.append(etcd)
        release.wait(10)
        return read_of([])
    view = HaView(env, read=hung, deadline=0.3)
    started = time.monotonic()
    view.refresh()
    assert time.monotonic() - started < 2
    assert "did not answer within 0.3 s" in look(env).error
    view.refresh()       # the first read still hangs: no second thread
    assert "has not answered an earlier call yet" in look(env).error and len(calls) == 1
    release.set()
    time.sleep(0.2)
    view.refresh()
    assert look(env).error is None and len(calls) == 2


def test_without_the_hosts_etcd_nothing_is_read_and_earlier_rows_go(env):
    HaView(env, read=Reads(read_of([record(1)])), clock=lambda: NOW).refresh()
    assert look(env).configured
    unconfigured = Context(config=EngineConfig(database_url=env.config.database_url), sessionmaker=env.sessionmaker)
    read = Reads(AssertionError("etcd must not be read"))
    view = HaView(unconfigured, read=read)
    view.refresh()
    view.refresh()
    assert read.calls == []
    assert look(env).configured is False and look(env).hosts == []


def test_the_hosts_etcd_is_the_configured_members_then_each_hosts_those_up_first(env):
    from harness.engineapp import add_default_cluster
    from keel_engine.services.hosts import hosts_etcd
    with env.sessionmaker() as s:
        h1, h2, h3 = add_default_cluster(s, {"h1": "127.0.12.21", "h2": "127.0.12.22", "h3": "127.0.12.23"})
        h1.status = "non_responsive"
        s.commit()
        config = EngineConfig(ha_etcd_endpoints=ETCD, ha_etcd_endpoint_template="http://{address}:2379")
        endpoints = hosts_etcd(s, config).endpoints
        assert endpoints[0] == ETCD[0] and endpoints[3] == "http://127.0.12.21:2379"
        assert set(endpoints[1:3]) == {"http://127.0.12.22:2379", "http://127.0.12.23:2379"}
        assert hosts_etcd(s, EngineConfig(ha_etcd_endpoint_template="http://{address}:2379")) is not None
        assert hosts_etcd(s, EngineConfig()) is None


def test_the_panel_of_an_engine_without_the_hosts_etcd_says_so(tmp_path):
    from webui.test_pages import admin_client
    _cfg, app, _sm, _h = engine_app_with_host(tmp_path, "127.0.12.9")
    r = admin_client(app).get("/ui/ha", headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert '<section aria-label="Hosted engine"' in r.text and "HA: not configured" in r.text
    # signed out, a poll sends the page to the sign-in form
    assert app.test_client().get("/ui/ha", headers={"HX-Request": "true"}).headers["HX-Redirect"] == "/ui/signin"


def test_the_panel_warns_when_the_engine_vm_runs_nowhere_or_twice(tmp_path):
    from webui.test_pages import admin_client
    cfg, app, sm, _h = engine_app_with_host(tmp_path, "127.0.12.9", ha_etcd_endpoints=ETCD, ha_timing_profile="fast")
    read = Reads(read_of([record(1, state="EngineDown"),
                          record(2, age=60, state="EngineUp", engine=EngineStatus(vm="up", health="good"))]))
    view = HaView(Context(config=cfg, sessionmaker=sm), read=read, clock=lambda: NOW)
    view.refresh()
    client = admin_client(app)
    page = client.get("/ui/ha", headers={"HX-Request": "true"}).text
    # a stale record saying the engine VM runs there does not count
    assert "Engine VM: not running anywhere" in page and page.count('class="ha-stale"') == 1
    assert "GLOBAL MAINTENANCE" not in page and "Cannot read" not in page
    read.answer = read_of([record(1, state="EngineUp", engine=EngineStatus(vm="up")),
                           record(2, state="EngineUp", engine=EngineStatus(vm="up"))])
    view.refresh()
    page = client.get("/ui/ha", headers={"HX-Request": "true"}).text
    assert "Engine VM reported running on host1 and host2" in page and 'class="ha-stale"' not in page


# ---- a real etcd, records published by the brokers' own session ------------------------
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("etcd") is None, reason="needs the etcd binary")
def test_records_published_in_a_real_etcd_reach_the_panel(tmp_path):
    from harness.daemons import EtcdProcess
    from keel_broker.etcdsession import EtcdSession
    from keel_common.bmc import FenceRecord
    from keel_common.config import EtcdConfig
    from webui.test_pages import admin_client

    etcd = EtcdProcess(str(tmp_path), address="127.0.12.1", client_port=23790, peer_port=23800,
                       name="ha-view").start()
    sessions = []
    try:
        def publish(rec):
            # each host's broker has its own etcd lease, its record bound to it
            s = EtcdSession(EtcdConfig(endpoints=(etcd.url,)), ttl=30, timeout=2.0)
            assert s.keepalive()
            s.put_record(rec)
            sessions.append(s)
            return s
        now = time.time()
        first = publish(HostRecord(host_id=1, hostname="host1", timestamp=now, score=3400.0, state="EngineUp",
                                   engine=EngineStatus(vm="up", health="good", detail="Up"),
                                   address="127.0.12.11", lockspace_held=True))
        publish(HostRecord(host_id=2, hostname="host2", timestamp=now - 60, score=3400.0, state="EngineDown",
                           engine=EngineStatus(vm="down", health="good", detail="Down")))
        first.set_global_maintenance(True)
        # the agents' fences share the reading code: one read through the same parser
        first.put_fence(FenceRecord(host_id=2, by=1, state="fenced", generation=4, started=now - 9, ended=now - 8))
        assert etcdclient.read_fences(EtcdConfig(endpoints=(etcd.url,)), 2.0)[2].generation == 4

        cfg, app, sm, _h = engine_app_with_host(tmp_path, "127.0.12.5", ha_etcd_endpoints=(etcd.url,),
                                                ha_timing_profile="fast")
        ctx = Context(config=cfg, sessionmaker=sm)
        view = HaView(ctx)
        view.refresh()
        with sm() as s:
            ha = overview(s)
        assert ha.error is None and ha.global_maintenance and ha.engine_host == "host1"
        assert [(h.host_id, h.ha_state, h.score, h.engine_vm_running, h.stale, h.address) for h in ha.hosts] == [
            (1, "EngineUp", 3400, True, False, "127.0.12.11"), (2, "EngineDown", 3400, False, True, None)]
        as_of = ha.updated.strftime("%H:%M:%S")

        client = admin_client(app)
        page = client.get("/ui/ha", headers={"HX-Request": "true"}).text
        assert "GLOBAL MAINTENANCE" in page and "Engine VM runs on <strong>host1</strong>" in page
        assert "EngineUp" in page and "EngineDown" in page and "3400" in page
        assert page.count('class="ha-stale"') == 1 and f"As of {as_of} UTC" in page

        # etcd hangs: the refresh gives up at its deadline, the rows stay, the panel says why
        etcd.pause()
        try:
            started = time.monotonic()
            view.refresh()
            took = time.monotonic() - started
        finally:
            etcd.resume()
        assert took < view.deadline + 1
        page = client.get("/ui/ha", headers={"HX-Request": "true"}).text
        assert "Cannot read the hosts' etcd:</strong> etcd unreachable" in page and f"as of {as_of} UTC" in page
        assert "Engine VM runs on <strong>host1</strong>" in page

        # the engine worker's monitor loop does the same by itself, every cycle
        first.set_global_maintenance(False)
        with running_worker(cfg):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with sm() as s:
                    ha = overview(s)
                if ha.error is None and not ha.global_maintenance:
                    break
                time.sleep(0.2)
        assert ha.error is None and not ha.global_maintenance
        page = client.get("/ui/ha", headers={"HX-Request": "true"}).text
        assert "GLOBAL MAINTENANCE" not in page and "Cannot read" not in page
    finally:
        for s in sessions:
            s.revoke()
            s.close()
        etcd.stop()
