"""POST /hosts/{id}/fenceagents/{agent}/test (oVirt UI's "Test" on a fence agent):
the in-process engine app with its real database and power module, against a
real BMC simulator (ipmi_sim) on 127.0.4.x."""

import json
import logging
import time
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

from harness.engineapp import ADMIN_PASSWORD, engine_app_with_host, running_worker
from keel_engine.power.settings import PowerSettings
from keel_engine.power.failover import EV_AGENT_TEST
from keel_engine.models import Event, Host

from .conftest import make_bmc, needs_ipmi_sim

API = "/ovirt-engine/api"
BMC_ADDRESS, BMC_PORT = "127.0.4.11", 16411
DEADLINE = 3   # status_deadline in the test engine's [power]


@pytest.fixture(scope="module")
def bmc(tmp_path_factory):
    b, chassis = make_bmc(tmp_path_factory.mktemp("agent-test"), "tbmc", BMC_ADDRESS, BMC_PORT)
    b.start()
    yield b, chassis
    b.stop()


@pytest.fixture
def api(tmp_path):
    # nothing listens at 127.0.4.9: the host's libvirt is asked once, at the worker's
    # first monitor cycle (one failure is not enough to act on; the next is an hour away)
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.4.9", monitor_interval=3600,
                                                 power=PowerSettings(status_deadline=DEADLINE))
    client = app.test_client()
    tok = client.post("/ovirt-engine/sso/oauth/token",
                      data={"grant_type": "password", "username": "admin@internal",
                            "password": ADMIN_PASSWORD}).get_json()["access_token"]
    with running_worker(cfg):
        yield client, {"Authorization": f"Bearer {tok}"}, sm, host_id


def add_agent(client, h, host_id, password="s3cret", address=BMC_ADDRESS, port=BMC_PORT):
    r = client.post(f"{API}/hosts/{host_id}/fenceagents", headers=h, data=(
        f"<agent><type>ipmilan</type><address>{address}</address><port>{port}</port>"
        f"<username>admin</username><password>{password}</password><order>1</order>"
        "<options><option><name>lanplus</name><value>1</value></option></options></agent>"))
    assert r.status_code == 201, r.data
    return ET.fromstring(r.data).get("id")


def press_test(client, h, host_id, agent_id, as_json=False):
    if as_json:
        return client.post(f"{API}/hosts/{host_id}/fenceagents/{agent_id}/test", data="{}",
                           headers={**h, "Accept": "application/json", "Content-Type": "application/json"})
    return client.post(f"{API}/hosts/{host_id}/fenceagents/{agent_id}/test", headers=h, data="<action/>")


def agent_events(sm):
    with sm() as s:
        return [(e.severity, e.description, e.user_id)
                for e in s.scalars(select(Event).where(Event.code == EV_AGENT_TEST).order_by(Event.id))]


def all_event_text(sm):
    with sm() as s:
        return " ".join(e.description for e in s.scalars(select(Event)))


@needs_ipmi_sim
@pytest.mark.slow
def test_reports_the_power_state_the_bmc_reports(api, bmc, caplog):
    caplog.set_level(logging.DEBUG)
    client, h, sm, host_id = api
    _b, chassis = bmc
    agent_id = add_agent(client, h, host_id)
    chassis.set("on")
    r = press_test(client, h, host_id, agent_id)
    assert r.status_code == 200, r.data
    doc = ET.fromstring(r.data)
    assert doc.tag == "action" and doc.findtext("status") == "complete"
    assert doc.findtext("power_management/status") == "on"
    assert doc.find("fault") is None
    assert f"the BMC at {BMC_ADDRESS}:{BMC_PORT} reports power on" in doc.findtext("description")

    chassis.set("off")
    r = press_test(client, h, host_id, agent_id, as_json=True)
    assert r.status_code == 200 and r.content_type == "application/json"
    body = r.get_json()
    assert body["status"] == "complete" and body["power_management"] == {"status": "off"}
    assert chassis.power() == "off", "a test only asks, it never changes the power"

    evs = agent_events(sm)
    assert len(evs) == 2
    assert all(sev == "normal" and user is not None for sev, _d, user in evs)
    assert evs[0][1].startswith(f"Fence agent ipmilan:admin@{BMC_ADDRESS}:{BMC_PORT} of host hx tested "
                                "by user admin: Test succeeded")
    assert "reports power on" in evs[0][1] and "reports power off" in evs[1][1]
    assert "s3cret" not in all_event_text(sm) and "s3cret" not in caplog.text
    assert b"s3cret" not in r.data


@needs_ipmi_sim
@pytest.mark.slow
def test_wrong_password_is_a_failed_result_not_an_error(api, bmc, caplog):
    caplog.set_level(logging.DEBUG)
    client, h, sm, host_id = api
    _b, chassis = bmc
    chassis.set("on")
    agent_id = add_agent(client, h, host_id, password="wrong-pw")
    for as_json in (False, True):
        r = press_test(client, h, host_id, agent_id, as_json=as_json)
        assert r.status_code == 200, r.data
        if as_json:
            body = r.get_json()
            status, detail = body["status"], body["fault"]["detail"]
            assert body["power_management"] == {"status": "unknown"}
        else:
            doc = ET.fromstring(r.data)
            status, detail = doc.findtext("status"), doc.findtext("fault/detail")
            assert doc.findtext("fault/reason") == "Operation Failed"
        assert status == "failed"
        assert (f"the BMC at {BMC_ADDRESS}:{BMC_PORT} rejected the user name, password or privilege level"
                in detail), detail
        assert "(auth:" in detail
        assert b"wrong-pw" not in r.data
    evs = agent_events(sm)
    assert [sev for sev, _d, _u in evs] == ["warning", "warning"]
    assert "tested by user admin: Test failed" in evs[0][1] and "rejected" in evs[0][1]
    assert "wrong-pw" not in all_event_text(sm) and "wrong-pw" not in caplog.text
    assert chassis.power() == "on"


@needs_ipmi_sim
@pytest.mark.slow
def test_unreachable_or_hung_bmc_fails_within_the_deadline(api, bmc):
    client, h, sm, host_id = api
    b, _chassis = bmc
    # nothing listens at 127.0.4.19:16419
    nowhere = add_agent(client, h, host_id, address="127.0.4.19", port=16419)
    started = time.monotonic()
    r = press_test(client, h, host_id, nowhere, as_json=True)
    elapsed = time.monotonic() - started
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "failed", body
    assert "127.0.4.19:16419" in body["fault"]["detail"]
    assert "(timeout:" in body["fault"]["detail"] or "(unreachable:" in body["fault"]["detail"]
    assert elapsed < DEADLINE + 5   # the deadline plus killing the worker, on a loaded box

    hung = add_agent(client, h, host_id)
    b.pause()   # receives packets, never answers
    try:
        started = time.monotonic()
        r = press_test(client, h, host_id, hung)
        elapsed = time.monotonic() - started
    finally:
        b.resume()
    doc = ET.fromstring(r.data)
    assert r.status_code == 200 and doc.findtext("status") == "failed"
    assert "did not answer in time" in doc.findtext("fault/detail")
    assert elapsed < DEADLINE + 5
    assert len(agent_events(sm)) == 2


def test_unknown_host_or_agent_is_404(api):
    client, h, sm, host_id = api
    agent_id = add_agent(client, h, host_id)
    with sm() as s:   # a second host: its id with the first host's agent is not found either
        other = Host(name="hy", address="127.0.4.8", libvirt_uri="qemu+tcp://127.0.4.8/system",
                     cluster_id=s.get(Host, host_id).cluster_id, status="up")
        s.add(other)
        s.commit()
        other_id = other.id
    for path, what in [(f"hosts/{host_id}/fenceagents/no-such-agent", "fence agent 'no-such-agent'"),
                       (f"hosts/no-such-host/fenceagents/{agent_id}", "host 'no-such-host'"),
                       (f"hosts/{other_id}/fenceagents/{agent_id}", f"fence agent '{agent_id}'")]:
        r = client.post(f"{API}/{path}/test", headers=h, data="<action/>")
        assert r.status_code == 404, (path, r.data)
        doc = ET.fromstring(r.data)
        assert doc.tag == "fault" and what in doc.findtext("detail")
    assert agent_events(sm) == []
    r = client.post(f"{API}/hosts/{host_id}/fenceagents/{agent_id}/test", headers=h, data="<action")
    assert r.status_code == 400


def test_the_route_is_documented_as_an_action(api):
    client, h, sm, host_id = api
    doc = json.loads(client.get("/ovirt-engine/api-docs/openapi.json").data)
    op = doc["paths"][f"{API}/hosts/{{ident}}/fenceagents/{{agent}}/test"]["post"]
    assert "201" not in op["responses"] and "404" in op["responses"]
    assert [p["name"] for p in op["parameters"] if p["in"] == "path"] == ["ident", "agent"]
    assert "202" in op["responses"]   # async clients get the job at once
