"""`keel-lab up` (the default, `--engine installed`): bare hosts, then Keel
installed on them by the real `hosted-engine --deploy` on host1 and the real
join on host2, their progress in `up`'s output. What `make demo` runs.
One 2-host lab for the module."""
from __future__ import annotations

import pytest

from keel_installer.engine_api import Api
from keel_lab import deploy as lab_deploy, hosts
from keel_lab.layout import ENGINE_VM_ADDRESS
from lab_helpers import module_lab, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.root]


@pytest.fixture(scope="module")
def lab():
    with module_lab("keel-lab-inst-", "--engine", "installed", hosts=2) as driver:
        yield driver


def test_up_shows_the_installers_own_progress(lab):
    out = lab.up_output
    assert "$ keel-lab exec host1 -- hosted-engine --deploy --config-append=" in out
    for n in range(1, 13):
        assert f"[{n}/12]" in out, n
    assert "The hosted engine is deployed" in out
    assert "$ keel-lab exec host1 -- hosted-engine --join-bundle=" in out
    assert "$ keel-lab exec host2 -- hosted-engine --deploy --join=" in out
    assert "host2 joined the cluster as host id 2" in out
    assert "Traceback" not in out


def test_status_reads_the_installers_etcd_with_its_certificates(lab):
    d = lab.status()
    assert sorted(d["etcd"]["endpoints"]) == ["https://198.51.100.11:2379", "https://198.51.100.12:2379"]
    assert [m["healthy"] for m in d["etcd"]["members"]] == [True, True]
    # every host's record, read from that etcd: the agents publish their scores there
    wait_for("both hosts' HA records", lambda: all(h["score"] for h in lab.status()["hosts"]), 60)
    d = lab.status()
    assert {h["name"]: h["ha_state"] is not None for h in d["hosts"]} == {"host1": True, "host2": True}
    assert len(d["engine"]["running_on"]) == 1 and d["engine"]["health_ok"]
    assert "keel-ha-agent.service" in d["hosts"][1]["daemons"]
    assert "keel-etcd" in lab.cli("status").stdout


def test_the_engine_has_both_hosts_and_the_storage_from_the_installer(lab):
    with open(lab_deploy.path(lab.layout, lab_deploy.ADMIN_PASSWORD)) as f:
        api = Api("admin@internal", f.readline().strip(), f"http://{ENGINE_VM_ADDRESS}")
    for name in ("host1", "host2"):
        wait_for(f"{name} up in the engine", lambda: (api.find("hosts", name) or {}).get("status") == "up", 120)
    assert api.find("storagedomains", "shared")["status"] == "active"


def test_the_web_ui_in_the_engine_vm_shows_the_hosted_engine_as_the_agents_report_it(lab):
    import re

    import requests
    with open(lab_deploy.path(lab.layout, lab_deploy.ADMIN_PASSWORD)) as f:
        password = f.readline().strip()
    ui = f"http://{ENGINE_VM_ADDRESS}/ui"
    web = requests.Session()
    nonce = re.search(r'name="csrf" value="([^"]+)"', web.get(ui + "/signin", timeout=30).text).group(1)
    r = web.post(ui + "/signin", data={"csrf": nonce, "username": "admin@internal", "password": password,
                                      "next": "/ui/"}, timeout=30)
    assert r.status_code == 200 and "Dashboard" in r.text, r.text[:300]
    engine_host = lab.single_engine()
    assert engine_host
    # the engine worker copies the agents' records from the hosts' etcd (over TLS) every cycle
    panel = wait_for("the HA panel with both hosts", lambda: (
        lambda text: text if f"Engine VM runs on <strong>{engine_host}" in text
        and text.count("status-up\">runs here") == 1 and "host2" in text else None)(
            web.get(ui + "/ha", timeout=30).text), 120)
    assert "Cannot read" not in panel and "GLOBAL MAINTENANCE" not in panel
    assert "htmx" in web.get(ui + "/static/vendor/htmx.min.js", timeout=30).text[:2000]


def test_up_again_installs_nothing_twice(lab):
    inits = {h.name: hosts.init_pid(h) for h in lab.layout.all_hosts()}
    engine = lab.engine_hosts()
    cp = lab.cli("up", "--hosts", "2", "--engine", "installed", "--timeout", "300", timeout=420)
    assert "$ keel-lab exec" not in cp.stdout and "Try next:" in cp.stdout
    assert {h.name: hosts.init_pid(h) for h in lab.layout.all_hosts()} == inits
    assert lab.engine_hosts() == engine
    assert "OK: never two engines" in lab.cli("check").stdout
