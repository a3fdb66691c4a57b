"""What oVirt's Ansible modules and SDK scripts ask of the API, on the
in-process engine with real SQLite: oVirt's search fields and case rule,
the management network, the sub-collections clients list before deciding,
the attached storage domain resource, and bodies whose every field is
either used or refused by name."""
import xml.etree.ElementTree as ET

import pytest
from alembic import command
from sqlalchemy import text

from harness.engineapp import admin_headers, engine_app_with_host
from keel_engine import db
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, DataCenter, Event, StorageDomain, Vm

API = "/ovirt-engine/api"
MiB = 2 ** 20


@pytest.fixture
def env(tmp_path):
    _cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.9.39")
    with sm() as s:
        dc, cl = s.query(DataCenter).one(), s.query(Cluster).one()
        sd = StorageDomain(name="data", path="/srv/keel-test-sd", status="active", data_center_id=dc.id)
        s.add(sd)
        for name, status in (("Web1", "up"), ("web2", "down"), ("db1", "down")):
            s.add(Vm(name=name, cluster_id=cl.id, template_id=BLANK_TEMPLATE_ID, memory=64 * MiB, status=status,
                     host_id=host_id if status == "up" else None))
        s.commit()
        ids = {"dc": dc.id, "sd": sd.id, "host": host_id, "cluster": cl.id,
               "vm": s.query(Vm).filter_by(name="Web1").one().id}
    return {"app": app, "c": app.test_client(), "h": admin_headers(app), "sm": sm, "ids": ids}


def get(env, path, **params):
    r = env["c"].get(API + path, headers={**env["h"], "Accept": "application/json"}, query_string=params)
    return r


def names(env, path, item, **params):
    r = get(env, path, **params)
    assert r.status_code == 200, r.data
    return sorted(x["name"] for x in r.get_json().get(item, []))


def send(env, method, path, body, **params):
    return env["c"].open(API + path, method=method, data=body, query_string=params,
                         headers={**env["h"], "Content-Type": "application/xml", "Accept": "application/json"})


# ---- search ----------------------------------------------------------------------------
def test_the_template_lookup_ovirt_vm_sends_finds_blank_in_any_data_center(env):
    # ovirt_vm: templates_service.list(search='name=Blank and datacenter=Default')
    assert names(env, "/templates", "template", search="name=Blank and datacenter=Default") == ["Blank"]
    assert names(env, "/templates", "template", search='name="Blank" and datacenter="Nowhere"') == ["Blank"]


def test_searches_ignore_case_unless_case_sensitive_is_true(env):
    assert names(env, "/vms", "vm", search="name=web*") == ["Web1", "web2"]
    assert names(env, "/vms", "vm", search="name=web*", case_sensitive="false") == ["Web1", "web2"]
    assert names(env, "/vms", "vm", search="name=web*", case_sensitive="true") == ["web2"]
    assert names(env, "/vms", "vm", search="name=WEB1", case_sensitive="true") == []
    assert get(env, "/vms", search="name=x", case_sensitive="maybe").status_code == 400


def test_the_fields_the_modules_send(env):
    assert names(env, "/datacenters", "data_center", search="Clusters.name=Default") == ["Default"]
    assert names(env, "/datacenters", "data_center", search="storage=data") == ["Default"]
    assert names(env, "/datacenters", "data_center", search="Clusters.name=other") == []
    assert names(env, "/vms", "vm", search="status=down and cluster=Default") == ["db1", "web2"]
    assert names(env, "/vms", "vm", search="host=hx") == ["Web1"]
    assert names(env, "/vms", "vm", search=f"id={env['ids']['vm']}") == ["Web1"]
    assert names(env, "/vms", "vm", search="datacenter=Default and name!=db*") == ["Web1", "web2"]
    assert names(env, "/hosts", "host", search="status=up and datacenter=Default") == ["hx"]
    assert names(env, "/storagedomains", "storage_domain", search="datacenter=Default") == ["data"]
    assert names(env, "/disks", "disk", search="disk_type=lun") == []
    assert names(env, "/users", "user", search="usrname=admin*") == ["admin"]
    # ovirt_user and ovirt_permission look users up as LOGIN@AUTHZ; oVirt's internal authz is internal-authz
    assert names(env, "/users", "user", search="usrname=admin@internal-authz") == ["admin"]
    assert names(env, "/users", "user", search="usrname=admin@internal") == ["admin"]
    assert names(env, "/users", "user", search="usrname=admin@example.org") == []


def test_events_by_type_and_vm_id(env):
    with env["sm"]() as s:
        s.add(Event(code=1152, description="vm started", vm_id=env["ids"]["vm"]))
        s.add(Event(code=1152, description="other vm", vm_id="x"))
        s.commit()
    r = get(env, "/events", search=f"type=1152 and vm.id={env['ids']['vm']}")
    assert [e["description"] for e in r.get_json()["event"]] == ["vm started"]


def test_an_unknown_search_field_is_a_400_naming_it(env):
    r = get(env, "/vms", search="name=x and colour=blue")
    assert r.status_code == 400 and "unknown field 'colour'" in r.get_json()["detail"]


# ---- the management network ----------------------------------------------------------------
def test_a_new_data_center_has_ovirtmgmt_with_its_vnic_profile(env):
    r = send(env, "POST", "/datacenters", "<data_center><name>dc2</name></data_center>")
    assert r.status_code == 201, r.data
    dc2 = r.get_json()["id"]
    nets = get(env, f"/datacenters/{dc2}/networks").get_json()["network"]
    assert [n["name"] for n in nets] == ["ovirtmgmt"]
    profile = get(env, f"/vnicprofiles/{nets[0]['id']}").get_json()
    assert profile["name"] == "ovirtmgmt" and profile["network"]["id"] == nets[0]["id"]
    r = env["c"].delete(f"{API}/networks/{nets[0]['id']}", headers=env["h"])
    assert r.status_code == 409 and b"management network" in r.data
    # ovirt_nic: the data center of a cluster, then the profile by name in it
    assert names(env, "/networks", "network", search="datacenter=dc2") == ["ovirtmgmt"]


def test_the_migration_gives_existing_data_centers_ovirtmgmt(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(db.alembic_config(url), "0004")
    eng = db.make_engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO datacenters (id, name, description, local, created) "
                              "VALUES ('dc', 'dc', '', 0, '2026-01-01')"))
        db.upgrade(url)
        with eng.connect() as conn:
            rows = conn.execute(text("SELECT name, data_center_id FROM networks")).all()
    finally:
        eng.dispose()
    assert [tuple(r) for r in rows] == [("ovirtmgmt", "dc")]


# ---- sub-collections --------------------------------------------------------------------------
@pytest.mark.parametrize("path,coll,tag", [
    ("numanodes", "vm_numa_nodes", "vm_numa_node"), ("watchdogs", "watchdogs", "watchdog"),
    ("hostdevices", "host_devices", "host_device"), ("sessions", "sessions", "session"),
    ("applications", "applications", "application")])
def test_what_keel_lacks_is_an_empty_collection_and_a_write_says_not_supported(env, path, coll, tag):
    vm = env["ids"]["vm"]
    r = get(env, f"/vms/{vm}/{path}")
    assert r.status_code == 200 and r.get_json().get(tag, []) == []
    xml = env["c"].get(f"{API}/vms/{vm}/{path}", headers=env["h"])
    root = ET.fromstring(xml.data)
    assert xml.status_code == 200 and root.tag == coll and len(root) == 0
    assert get(env, f"/vms/00000000-0000-0000-0000-00000000dead/{path}").status_code == 404
    r = send(env, "POST", f"/vms/{vm}/{path}", f"<{tag}/>")
    assert r.status_code == 400 and "not supported yet" in r.get_json()["detail"]


def test_statistics_are_the_engine_s_own_figures(env):
    stats = {x["name"]: x for x in get(env, f"/vms/{env['ids']['vm']}/statistics").get_json()["statistic"]}
    assert stats["memory.installed"]["values"]["value"][0]["datum"] == str(64 * MiB)
    with env["sm"]() as s:
        from keel_engine.models import Host
        h = s.get(Host, env["ids"]["host"])
        h.memory_total, h.memory_free, h.cpus = 8 * 2 ** 30, 2 ** 30, 4
        s.commit()
    stats = {x["name"]: x["values"]["value"][0]["datum"]
             for x in get(env, f"/hosts/{env['ids']['host']}/statistics").get_json()["statistic"]}
    assert stats["memory.used"] == str(7 * 2 ** 30) and stats["cpu.current.total"] == "4"


def test_the_one_cdrom_and_the_vnc_console(env):
    vm = env["ids"]["vm"]
    cds = get(env, f"/vms/{vm}/cdroms").get_json()["cdrom"]
    assert len(cds) == 1 and get(env, f"/vms/{vm}/cdroms/{cds[0]['id']}").status_code == 200
    # changing the CD: tests/engine/test_cdrom_api.py, test_cdrom.py
    r = send(env, "PUT", f"/vms/{vm}/cdroms/{cds[0]['id']}", "<cdrom><file id='/etc/x.iso'/></cdrom>")
    assert r.status_code == 400 and r.get_json()["detail"].startswith("cdrom.file.id:")
    consoles = get(env, f"/vms/{vm}/graphicsconsoles").get_json()["graphics_console"]
    assert [c["protocol"] for c in consoles] == ["vnc"]


def test_host_and_template_sub_collections(env):
    for path, tag in (("nics", "host_nic"), ("storage", "host_storage"), ("devices", "host_device")):
        r = get(env, f"/hosts/{env['ids']['host']}/{path}")
        assert r.status_code == 200 and r.get_json().get(tag, []) == []
    assert get(env, f"/templates/{BLANK_TEMPLATE_ID}/nics").get_json().get("nic", []) == []


# ---- the attached storage domain -------------------------------------------------------------
def test_an_attached_domain_goes_into_maintenance_back_and_is_detached(env):
    dc, sd = env["ids"]["dc"], env["ids"]["sd"]
    base = f"/datacenters/{dc}/storagedomains/{sd}"
    assert get(env, base).get_json()["status"] == "active"
    assert send(env, "POST", base + "/deactivate", "<action/>").status_code == 200
    assert get(env, base).get_json()["status"] == "maintenance"
    r = send(env, "POST", "/vms/" + env["ids"]["vm"] + "/diskattachments",
             f"<disk_attachment><interface>virtio</interface><disk><provisioned_size>{MiB}</provisioned_size>"
             f"<storage_domains><storage_domain id='{sd}'/></storage_domains></disk></disk_attachment>",
             **{"async": "true"})
    assert r.status_code == 409
    assert send(env, "POST", base + "/activate", "<action/>").status_code == 200
    assert get(env, base).get_json()["status"] == "active"
    assert env["c"].delete(API + base, headers=env["h"]).status_code == 409     # active: not yet
    send(env, "POST", base + "/deactivate", "<action/>")
    assert env["c"].delete(API + base, headers=env["h"]).status_code == 200
    assert get(env, base).status_code == 404
    assert get(env, f"/storagedomains/{sd}").get_json()["status"] == "unattached"


def test_a_domain_of_a_running_vm_stays_active(env):
    with env["sm"]() as s:
        from keel_engine.models import Disk, DiskAttachment
        d = Disk(name="d", storage_domain_id=env["ids"]["sd"], provisioned_size=MiB, active_volume="v")
        s.add(d)
        s.flush()
        s.add(DiskAttachment(id=d.id, disk_id=d.id, vm_id=env["ids"]["vm"]))
        s.commit()
    r = send(env, "POST", f"/datacenters/{env['ids']['dc']}/storagedomains/{env['ids']['sd']}/deactivate",
             "<action/>")
    assert r.status_code == 409 and "Web1" in r.get_json()["detail"]


# ---- bodies ---------------------------------------------------------------------------------
def test_a_field_ovirt_defines_but_keel_lacks_is_refused_by_name(env):
    body = ("<vm><name>ci</name><cluster><name>Default</name></cluster>"
            "<initialization><regenerate_ssh_keys>true</regenerate_ssh_keys></initialization></vm>")
    r = send(env, "POST", "/vms", body)
    assert r.status_code == 400 and r.get_json()["detail"].startswith(
        "initialization.regenerate_ssh_keys: not supported yet")
    with env["sm"]() as s:
        assert s.query(Vm).filter_by(name="ci").first() is None
    r = send(env, "POST", "/vms", "<vm><name>ci</name><cluster><name>Default</name></cluster>"
                                  "<cpu><topology><sockets>1</sockets></topology><mode>host_passthrough</mode></cpu></vm>")
    assert r.status_code == 400 and r.get_json()["detail"].startswith("cpu.mode: not supported yet")
    r = send(env, "POST", "/vms", "<vm><name>ci</name><cluster><name>Default</name></cluster><colour>b</colour></vm>")
    assert r.status_code == 400 and r.get_json()["detail"].startswith("colour: unknown field")
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/migrate", "<action><force>true</force><discard_snapshots>"
                                                               "true</discard_snapshots></action>")
    assert r.status_code == 400 and "discard_snapshots: not supported yet" in r.get_json()["detail"]


def test_what_the_sdk_sends_on_its_own_is_accepted(env):
    # ovirt_host always sends <ssh/> and often override_iptables; an empty element carries nothing
    r = send(env, "POST", "/hosts", "<host><name>h9</name><address>127.0.9.40</address><root_password>x"
                                    "</root_password><ssh><port>22</port></ssh><override_iptables>true"
                                    "</override_iptables><cluster><name>Default</name></cluster>"
                                    "<comment/></host>", **{"async": "true"})
    assert r.status_code == 202, r.data


def test_a_storage_path_already_in_use_is_a_conflict_naming_its_domain(env):
    body = ("<storage_domain><name>again</name><type>data</type><host><name>h1</name></host>"
            "<storage><type>posixfs</type><path>/srv/keel-test-sd</path></storage></storage_domain>")
    r = send(env, "POST", "/storagedomains", body)
    assert r.status_code == 409, r.data
    assert "already storage domain data" in r.get_json()["detail"]
    assert names(env, "/storagedomains", "storage_domain") == ["data"]


@pytest.mark.parametrize("path,action", [("vms", "suspend"), ("vms", "freezefilesystems"), ("vms", "export"),
                                         ("vms", "ticket"), ("hosts", "install"), ("hosts", "setupnetworks")])
def test_an_action_keel_lacks_is_refused_by_name_on_an_object_that_exists(env, path, action):
    ident = env["ids"]["vm" if path == "vms" else "host"]
    r = send(env, "POST", f"/{path}/{ident}/{action}", "<action/>")
    assert r.status_code == (409 if action == "suspend" else 400), r.data
    assert r.get_json()["detail"].startswith(f"{action}:")
    # an object that does not exist is still a 404
    r = send(env, "POST", f"/{path}/00000000-0000-4000-8000-000000000000/{action}", "<action/>")
    assert r.status_code == 404, r.data


def test_a_refused_suspend_leaves_the_vm_running_and_records_nothing(env):
    vm = env["ids"]["vm"]
    with env["sm"]() as s:
        events_before = s.query(Event).count()
    assert send(env, "POST", f"/vms/{vm}/suspend", "<action/>").status_code == 409
    assert get(env, f"/vms/{vm}").get_json()["status"] == "up"
    with env["sm"]() as s:
        assert s.query(Event).count() == events_before
