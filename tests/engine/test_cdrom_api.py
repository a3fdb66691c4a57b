"""ISO images and the CD-ROM as the API takes them, on the in-process
engine with SQLite and the engine worker in a thread; the hosts' view of a
storage domain's directory is stood in for (services/isos.read), so what is
tested here is the API's and the services' part: shapes, refusals, what
changes and what does not. The real thing (libvirt, a running drive):
test_cdrom.py."""
import xml.etree.ElementTree as ET

import ovirtsdk4.types as t
import pytest
from ovirtsdk4.writer import Writer

from harness.engineapp import admin_headers, engine_app_with_host, running_worker
from keel_common import domainxml
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, DataCenter, Event, Job, StorageDomain, Vm
from keel_engine.services import isos
from keel_engine.services import vms as vm_svc

API = "/ovirt-engine/api"
MiB = 2 ** 20
CDROM = BLANK_TEMPLATE_ID
FILES = {"debian.iso": 3 * MiB, "tools.iso": MiB}


@pytest.fixture
def env(tmp_path, monkeypatch):
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.16.61", request_wait=30)
    with sm() as s:
        dc, cl = s.query(DataCenter).one(), s.query(Cluster).one()
        sd = StorageDomain(name="data", path="/srv/keel-cd-sd", status="active", data_center_id=dc.id)
        s.add(sd)
        s.add(Vm(name="down1", cluster_id=cl.id, template_id=BLANK_TEMPLATE_ID, memory=64 * MiB))
        s.add(Vm(name="up1", cluster_id=cl.id, template_id=BLANK_TEMPLATE_ID, memory=64 * MiB, status="up",
                 host_id=host_id))
        s.commit()
        ids = {"sd": sd.id, "host": host_id, "down": s.query(Vm).filter_by(name="down1").one().id,
               "up": s.query(Vm).filter_by(name="up1").one().id}
    reads = []

    def fake_read(ctx, s, sd):     # what a host's pool of the domain lists
        reads.append(sd.name)
        return [isos.IsoImage(name, size, sd.id) for name, size in sorted(FILES.items())]
    monkeypatch.setattr(isos, "read", fake_read)
    with running_worker(cfg):
        yield {"c": app.test_client(), "h": admin_headers(app), "sm": sm, "ids": ids, "reads": reads}


def send(env, method, path, body, **params):
    return env["c"].open(API + path, method=method, data=body, query_string=params,
                         headers={**env["h"], "Content-Type": "application/xml", "Accept": "application/json"})


def get(env, path, **params):
    return env["c"].get(API + path, query_string=params, headers={**env["h"], "Accept": "application/json"})


def cd_columns(env, vm_id):
    with env["sm"]() as s:
        vm = s.get(Vm, vm_id)
        return vm.cdrom_file, vm.cdrom_storage_domain_id


def test_a_storage_domain_lists_its_iso_images_as_files_and_as_iso_disks(env):
    sd = env["ids"]["sd"]
    r = get(env, f"/storagedomains/{sd}/files")
    assert r.status_code == 200, r.data
    files = r.get_json()["file"]
    assert [(f["id"], f["name"], f["type"]) for f in files] == [("debian.iso", "debian.iso", "iso"),
                                                                ("tools.iso", "tools.iso", "iso")]
    assert files[0]["storage_domain"]["id"] == sd
    assert get(env, f"/storagedomains/{sd}/files/tools.iso").get_json()["name"] == "tools.iso"
    assert get(env, f"/storagedomains/{sd}/files/other.iso").status_code == 404
    assert [f["id"] for f in get(env, f"/storagedomains/{sd}/files", max=1).get_json()["file"]] == ["debian.iso"]
    # what ovirt_vm's cd_iso looks for on a data domain: disks of content_type iso, by name or id
    disks = get(env, f"/storagedomains/{sd}/disks").get_json()["disk"]
    assert [(d["name"], d["id"], d["content_type"]) for d in disks] == [
        ("debian.iso", "debian.iso", "iso"), ("tools.iso", "tools.iso", "iso")]
    assert disks[0]["provisioned_size"] == str(3 * MiB)
    # a search is run on the disks alone
    assert get(env, f"/storagedomains/{sd}/disks", search="name=debian*").get_json().get("disk", []) == []
    links = {x["rel"] for x in get(env, f"/storagedomains/{sd}").get_json()["link"]}
    assert {"disks", "files"} <= links
    with env["sm"]() as s:
        listed = s.query(Job).filter_by(kind="storage_domain.files").all()
        assert listed and all(j.status == "finished" for j in listed)
        assert listed[0].description == "Listing the ISO images of storage domain data"


def test_an_unattached_domain_has_no_files_to_list(env):
    with env["sm"]() as s:
        s.get(StorageDomain, env["ids"]["sd"]).status = "maintenance"
        s.commit()
    r = get(env, f"/storagedomains/{env['ids']['sd']}/files")
    assert r.status_code == 409 and "while it is an active data domain" in r.get_json()["detail"]
    assert get(env, f"/storagedomains/{env['ids']['sd']}/disks").status_code == 200   # its disks still list
    assert env["reads"] == []


def test_set_a_cd_on_a_down_vm_as_the_sdk_sends_it_then_eject(env):
    vm = env["ids"]["down"]
    assert "file" not in get(env, f"/vms/{vm}/cdroms").get_json()["cdrom"][0]
    r = send(env, "PUT", f"/vms/{vm}/cdroms/{CDROM}", Writer.write(t.Cdrom(file=t.File(id="debian.iso"))))
    assert r.status_code == 200, r.data
    assert r.get_json()["file"]["id"] == "debian.iso"
    assert cd_columns(env, vm) == ("debian.iso", env["ids"]["sd"])
    cd, = get(env, f"/vms/{vm}/cdroms").get_json()["cdrom"]
    assert cd["id"] == CDROM and cd["file"] == {"id": "debian.iso", "storage_domain": {
        "id": env["ids"]["sd"], "href": f"{API}/storagedomains/{env['ids']['sd']}"}}
    # current=true of a VM that does not run: its configuration
    assert get(env, f"/vms/{vm}/cdroms/{CDROM}", current="true").get_json()["file"]["id"] == "debian.iso"
    # the domain it starts with has the drive, with the medium optional (a file deleted since: empty drive)
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        v.host_id = env["ids"]["host"]
        dom = ET.fromstring(domainxml.domain_xml(vm_svc.domain_of(None, s, v)))
    cds = dom.findall("devices/disk[@device='cdrom']")
    assert len(cds) == 1 and cds[0].find("target").get("bus") == "ide"
    assert cds[0].find("source").attrib == {"file": "/srv/keel-cd-sd/debian.iso", "startupPolicy": "optional"}
    # eject: an empty id (what ovirt_vm sends for cd_iso: "")
    r = send(env, "PUT", f"/vms/{vm}/cdroms/{CDROM}", Writer.write(t.Cdrom(file=t.File(id=""))))
    assert r.status_code == 200 and "file" not in r.get_json(), r.data
    assert cd_columns(env, vm) == ("", None)
    with env["sm"]() as s:
        said = [e.description for e in s.query(Event).filter(Event.vm_id == vm).order_by(Event.id)]
    assert said[-2:] == ["VM down1 has CD debian.iso in its CD-ROM drive when it starts.",
                         "VM down1 has an empty CD-ROM drive when it starts."]


def test_an_empty_vm_domain_has_an_empty_drive(env):
    with env["sm"]() as s:
        v = s.get(Vm, env["ids"]["down"])
        v.host_id = env["ids"]["host"]
        dom = ET.fromstring(domainxml.domain_xml(vm_svc.domain_of(None, s, v)))
    cd, = dom.findall("devices/disk[@device='cdrom']")
    assert cd.find("source") is None and cd.find("readonly") is not None


def test_the_configuration_of_a_running_vm_changes_for_its_next_start(env):
    vm = env["ids"]["up"]
    r = send(env, "PUT", f"/vms/{vm}/cdroms/{CDROM}", '<cdrom><file id="tools.iso"/></cdrom>')
    assert r.status_code == 200, r.data
    assert cd_columns(env, vm) == ("tools.iso", env["ids"]["sd"])
    with env["sm"]() as s:
        assert s.query(Event).filter(Event.vm_id == vm).order_by(Event.id.desc()).first().description == (
            "VM up1 has CD tools.iso in its CD-ROM drive from its next start; the running VM keeps its CD "
            "until then.")


@pytest.mark.parametrize("vm_key, body, params, status, says", [
    ("down", '<cdrom><file id="nowhere.iso"/></cdrom>', {}, 404,
     "cdrom.file: ISO image 'nowhere.iso' does not exist in storage domain data"),
    ("down", '<cdrom><file id="../../etc/x.iso"/></cdrom>', {}, 400, "cdrom.file.id: '../../etc/x.iso' is not"),
    ("down", '<cdrom><file id="notes.txt"/></cdrom>', {}, 400, "cdrom.file.id: 'notes.txt' is not"),
    ("down", "<cdrom/>", {}, 400, "cdrom.file: required"),
    ("down", '<cdrom><file id="debian.iso"/></cdrom>', {"current": "true"}, 409,
     "VM down1 is down; current=true changes the CD of a running VM"),
    ("down", '<cdrom><file id="debian.iso"><colour>x</colour></file></cdrom>', {}, 400, "file.colour: unknown"),
    ("down", '<cdrom><file id="debian.iso"/><name>x</name></cdrom>', {}, 400, "name: not supported yet"),
    ("down", '<cdrom><file id="debian.iso"><storage_domain id="00000000-0000-4000-8000-000000000000"/>'
             "</file></cdrom>", {}, 400, "cdrom.file.storage_domain: storage domain with id"),
])
def test_a_bad_change_is_refused_by_name_and_changes_nothing(env, vm_key, body, params, status, says):
    vm = env["ids"][vm_key]
    r = send(env, "PUT", f"/vms/{vm}/cdroms/{CDROM}", body, **params)
    assert r.status_code == status and says in r.get_json()["detail"], r.data
    assert cd_columns(env, vm) == ("", None)


def test_an_unknown_vm_or_device_is_a_404(env):
    assert send(env, "PUT", f"/vms/00000000-0000-4000-8000-000000000000/cdroms/{CDROM}",
                '<cdrom><file id="debian.iso"/></cdrom>').status_code == 404
    assert send(env, "PUT", f"/vms/{env['ids']['down']}/cdroms/x", '<cdrom><file id="debian.iso"/></cdrom>'
                ).status_code == 404
    assert get(env, f"/vms/{env['ids']['down']}/cdroms/x").status_code == 404


def test_async_answers_at_once_with_a_job(env):
    vm = env["ids"]["down"]
    r = send(env, "PUT", f"/vms/{vm}/cdroms/{CDROM}", '<cdrom><file id="debian.iso"/></cdrom>', **{"async": "true"})
    assert r.status_code == 202 and r.get_json()["file"]["id"] == "debian.iso", r.data
    with env["sm"]() as s:
        job = s.query(Job).filter_by(kind="vm.change_cd").one()
        assert job.params == {"vm_id": vm, "file": "debian.iso", "current": False, "storage_domain_id": None}
        assert job.description == "Inserting debian.iso into VM down1"


def test_a_storage_domain_holding_a_vm_s_cd_is_not_removed(env):
    vm = env["ids"]["down"]
    assert send(env, "PUT", f"/vms/{vm}/cdroms/{CDROM}", '<cdrom><file id="debian.iso"/></cdrom>').status_code == 200
    with env["sm"]() as s:
        sd = s.get(StorageDomain, env["ids"]["sd"])
        sd.status, sd.data_center_id = "unattached", None
        s.commit()
    r = env["c"].delete(f"{API}/storagedomains/{env['ids']['sd']}", headers={**env["h"], "Accept": "application/json"})
    assert r.status_code == 409 and "CD-ROM of VM down1; eject those CDs first" in r.get_json()["detail"], r.data
