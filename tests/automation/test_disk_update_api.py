"""PUT /disks/{id} on the in-process engine with real SQLite: what ovirt_disk
and SDK scripts send (XML and JSON), a rename answered at once, a larger
size recorded as a job with the disk (and a down VM) claimed, and what is
refused with a 4xx that names the reason: shrinking, moving, unknown or
unimplemented fields, a locked disk, a template's disk, a user without the
permit. Nothing here reaches libvirt (no worker runs)."""
import json

import pytest

from harness.access import build
from keel_engine.models import Disk, Event, Job, Vm
from keel_engine.services import events, jobs

MiB = 2 ** 20


@pytest.fixture
def w(tmp_path):
    return build(tmp_path, address="127.0.9.38")


def put_xml(w, h, disk_id, xml, **params):
    return w.client().open(f"/ovirt-engine/api/disks/{disk_id}", method="PUT", data=xml, query_string=params,
                           headers={**h, "Content-Type": "application/xml", "Accept": "application/json"})


def put_json(w, h, disk_id, body, **params):
    return w.client().open(f"/ovirt-engine/api/disks/{disk_id}", method="PUT", data=json.dumps(body),
                           query_string=params, headers={**h, "Content-Type": "application/json",
                                                         "Accept": "application/json"})


def disk_row(w, key):
    with w.sm() as s:
        d = s.get(Disk, w.ids[key])
        s.expunge(d)
        return d


def test_a_rename_and_description_in_xml_are_stored_with_an_event(w):
    r = put_xml(w, w.admin(), w.ids["disk:floating"],
                "<disk><name>fd1-renamed</name><description>scratch space</description></disk>")
    assert r.status_code == 200, r.get_data()
    assert r.get_json()["name"] == "fd1-renamed" and r.get_json()["description"] == "scratch space"
    assert disk_row(w, "disk:floating").name == "fd1-renamed"
    with w.sm() as s:
        ev = s.query(Event).filter_by(code=events.DISK_UPDATED).one()
        assert "fd1" in ev.description and "fd1-renamed" in ev.description
        assert s.query(Job).filter_by(kind=jobs.DISK_RESIZE).count() == 0


def test_the_whole_disk_ovirt_disk_sends_in_json_is_accepted(w):
    d = disk_row(w, "disk:floating")
    body = {"id": d.id, "name": "fd1", "alias": "fd1", "description": "notes", "format": "cow",
            "content_type": "data", "sparse": "true", "provisioned_size": str(d.provisioned_size),
            "storage_domains": {"storage_domain": [{"id": w.ids["sd"]}]}}
    r = put_json(w, w.admin(), d.id, body)
    assert r.status_code == 200, r.get_data()
    assert r.get_json()["description"] == "notes"
    assert disk_row(w, "disk:floating").provisioned_size == d.provisioned_size


def test_an_empty_storage_domain_names_none(w):
    r = put_json(w, w.admin(), w.ids["disk:floating"], {"name": "fd1-new", "format": "cow",
                                                        "storage_domains": {"storage_domain": [{}]}})
    assert r.status_code == 200, r.get_data()
    assert disk_row(w, "disk:floating").name == "fd1-new"


def test_the_empty_storage_domain_element_the_sdk_writes_names_none(w):
    # ovirt_disk without storage_domain: the SDK writes <storage_domains><storage_domain/></storage_domains>
    r = put_xml(w, w.admin(), w.ids["disk:floating"],
                "<disk><name>fd1-sdk</name><storage_domains><storage_domain/></storage_domains></disk>")
    assert r.status_code == 200, r.get_data()
    assert disk_row(w, "disk:floating").name == "fd1-sdk"


def test_a_larger_size_is_a_job_that_locks_the_disk_and_its_down_vm(w):
    r = put_xml(w, w.admin(), w.ids["disk:a1"],
                f"<disk><provisioned_size>{64 * MiB}</provisioned_size></disk>", **{"async": "true"})
    assert r.status_code == 202, r.get_data()
    assert r.get_json()["status"] == "locked"
    with w.sm() as s:
        job = s.query(Job).filter_by(kind=jobs.DISK_RESIZE).one()
        assert job.params == {"disk_id": w.ids["disk:a1"], "provisioned_size": 64 * MiB,
                              "vm_id": w.ids["vm:a1"], "live": False}
        assert s.get(Vm, w.ids["vm:a1"]).status == "image_locked"
        # the size changes when the worker has grown the volume, not before
        assert s.get(Disk, w.ids["disk:a1"]).provisioned_size == 1 * MiB
    # a locked disk takes no other change
    r = put_xml(w, w.admin(), w.ids["disk:a1"], "<disk><name>other</name></disk>")
    assert r.status_code == 409 and b"locked" in r.get_data()


def test_a_smaller_size_is_refused_and_nothing_changes(w):
    with w.sm() as s:
        s.get(Disk, w.ids["disk:floating"]).provisioned_size = 8 * MiB
        s.commit()
    r = put_xml(w, w.admin(), w.ids["disk:floating"],
                f"<disk><name>shrunk</name><provisioned_size>{4 * MiB}</provisioned_size></disk>")
    assert r.status_code == 409, r.get_data()
    assert b"cannot shrink" in r.get_data() and b"provisioned_size" in r.get_data()
    d = disk_row(w, "disk:floating")
    assert (d.name, d.provisioned_size, d.status) == ("fd1", 8 * MiB, "ok")
    with w.sm() as s:
        assert s.query(Job).filter_by(kind=jobs.DISK_RESIZE).count() == 0


@pytest.mark.parametrize("xml, detail", [
    ("<disk><provisioned_size>lots</provisioned_size></disk>", b"provisioned_size"),
    (f"<disk><provisioned_size>{2 ** 50}</provisioned_size></disk>", b"provisioned_size"),
    ("<disk><shareable>true</shareable></disk>", b"shareable: not supported yet"),
    ("<disk><colour>red</colour></disk>", b"colour: unknown field"),
    ("<disk><format>raw</format></disk>", b"disk.format"),
    ("<disk><sparse>false</sparse></disk>", b"disk.sparse"),
    ("<disk><name>bad name!</name></disk>", b"name"),
])
def test_bad_fields_are_a_400_naming_them(w, xml, detail):
    r = put_xml(w, w.admin(), w.ids["disk:floating"], xml)
    assert r.status_code == 400, r.get_data()
    assert detail in r.get_data()
    assert disk_row(w, "disk:floating").name == "fd1"


def test_moving_to_another_storage_domain_is_refused(w, tmp_path):
    from keel_engine.models import StorageDomain
    with w.sm() as s:
        other = StorageDomain(name="sd2", path=str(tmp_path / "sd2"), status="active",
                              data_center_id=s.get(StorageDomain, w.ids["sd"]).data_center_id)
        s.add(other)
        s.commit()
    r = put_xml(w, w.admin(), w.ids["disk:floating"],
                "<disk><storage_domains><storage_domain><name>sd2</name></storage_domain></storage_domains></disk>")
    assert r.status_code == 400 and b"not supported" in r.get_data()


def test_a_templates_disk_does_not_grow(w):
    r = put_xml(w, w.admin(), w.ids["disk:tA"], f"<disk><provisioned_size>{4 * MiB}</provisioned_size></disk>")
    assert r.status_code == 409 and b"template" in r.get_data()
    assert disk_row(w, "disk:tA").status == "ok"


def test_the_permit_is_edit_disk_properties(w):
    w.user("ulla", [("UserRole", "vm:a1")])          # sees a1's disk, may not change it
    w.user("vera", [("UserVmManager", "vm:a1")])     # may
    body = "<disk><description>mine</description></disk>"
    assert put_xml(w, w.token("ulla"), w.ids["disk:a1"], body).status_code == 403
    assert disk_row(w, "disk:a1").description == ""
    r = put_xml(w, w.token("vera"), w.ids["disk:a1"], body)
    assert r.status_code == 200, r.get_data()
    assert disk_row(w, "disk:a1").description == "mine"


def test_an_unknown_disk_is_a_404(w):
    r = put_xml(w, w.admin(), "0b1c1e2a-0000-4000-8000-000000000000", "<disk><name>x</name></disk>")
    assert r.status_code == 404
