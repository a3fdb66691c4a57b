"""The fence action and fence agents through the oVirt Python SDK, against the
engine app (served on 127.0.2.40) and a real BMC simulator."""

import threading

import pytest
from werkzeug.serving import make_server

from harness.engineapp import engine_app_with_host, running_worker
from keel_engine.models import Event

from .conftest import needs_ipmi_sim

ovirtsdk4 = pytest.importorskip("ovirtsdk4")
types = ovirtsdk4.types
pytestmark = [needs_ipmi_sim, pytest.mark.slow]


@pytest.fixture
def api(tmp_path, bmc1):
    bmc, chassis = bmc1
    # nothing listens at 127.0.2.41: the host itself is unreachable, its BMC is not
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.2.41", monitor_interval=3600)
    server = make_server("127.0.2.40", 16340, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = ovirtsdk4.Connection(url="http://127.0.2.40:16340/ovirt-engine/api",
                                username="admin@internal", password="pw12345", timeout=120)
    with running_worker(cfg):
        yield conn, conn.system_service().hosts_service().host_service(host_id), bmc, chassis, sm
    conn.close()
    server.shutdown()


def test_fence_through_the_sdk(api):
    conn, host_service, bmc, chassis, sm = api
    agents = host_service.fence_agents_service()
    agent = agents.add(types.Agent(address=bmc.address, port=bmc.port, username="admin",
                                   password="s3cret", type="ipmilan", order=1,
                                   options=[types.Option(name="lanplus", value="1")]))
    assert agent.password is None   # never returned
    pm = host_service.fence(fence_type="status")
    assert pm.status == types.PowerManagementStatus.ON
    host_service.fence(fence_type="stop")
    assert chassis.power() == "off"
    assert host_service.get().status == types.HostStatus.DOWN
    pm = host_service.fence(fence_type="status")
    assert pm.status == types.PowerManagementStatus.OFF
    host_service.fence(fence_type="start")
    assert chassis.power() == "on"
    with sm() as s:
        text = " ".join(e.description for e in s.query(Event).all())
    assert "s3cret" not in text
    assert "powered on by user admin" in text


def test_wrong_password_is_a_clear_error(api):
    conn, host_service, bmc, chassis, sm = api
    host_service.fence_agents_service().add(types.Agent(address=bmc.address, port=bmc.port,
                                                        username="admin", password="nope", type="ipmilan",
                                                        order=1))
    with pytest.raises(ovirtsdk4.Error) as err:
        host_service.fence(fence_type="stop")
    assert "power-off not confirmed" in str(err.value)
    assert chassis.power() == "on"
    with sm() as s:
        text = " ".join(e.description for e in s.query(Event).all())
    assert "rejected the credentials" in text and "configuration error" in text
