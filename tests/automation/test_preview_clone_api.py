"""Snapshot preview/commit/undo, VM clone, clone=true and template update
as the API takes them, on the in-process engine with real SQLite (no
worker: what the request itself decides and records). The disk work is
tested on real libvirt in tests/engine (test_snapshot_preview.py,
test_vm_clone.py, test_template_update.py)."""
from datetime import timedelta

from keel_engine.models import (BLANK_TEMPLATE_ID, Disk, DiskAttachment, Event, Job, Nic, Snapshot, Template, Vm,
                                 utcnow)
from keel_engine.services.snapshots import unneeded_volumes

from .test_api_compat import MiB, env, get, send   # noqa: F401  (env is a fixture)


def ids_of(env, name, model=Vm):
    with env["sm"]() as s:
        return s.query(model).filter_by(name=name).one().id


def add_snapshot(env, vm_id, description, status="ok", age=0):
    with env["sm"]() as s:
        x = Snapshot(vm_id=vm_id, description=description, volumes={}, memory=64 * MiB, cpus=1, status=status,
                     date=utcnow() - timedelta(seconds=age))
        s.add(x)
        s.commit()
        return x.id


def detail(r):
    return r.get_json()["detail"]


# ---- pure logic -------------------------------------------------------------------------------
def test_unneeded_volumes_are_those_no_chain_reaches_topmost_first():
    vols = {"base": None, "s1": "base", "s2": "s1", "prev": "base", "stray": "prev"}
    order = unneeded_volumes(vols, ["prev"])
    assert set(order) == {"s1", "s2", "stray"} and order.index("s2") < order.index("s1")
    assert unneeded_volumes(vols, ["stray", "s2"]) == []
    assert unneeded_volumes(vols, ["s2", None, "missing"]) == ["stray", "prev"]
    assert unneeded_volumes({}, ["x"]) == []


# ---- snapshot preview -------------------------------------------------------------------------
def test_preview_refusals(env):
    up, down = env["ids"]["vm"], ids_of(env, "web2")
    snap_up, snap = add_snapshot(env, up, "on-up"), add_snapshot(env, down, "s1")
    r = send(env, "POST", f"/vms/{up}/previewsnapshot", f'<action><snapshot id="{snap_up}"/></action>')
    assert r.status_code == 409 and "is up; preview a snapshot while it is down" in detail(r)
    r = send(env, "POST", f"/vms/{down}/previewsnapshot",
             '<action><snapshot id="00000000-0000-4000-8000-000000000000"/></action>')
    assert r.status_code == 404, r.data
    r = send(env, "POST", f"/vms/{down}/previewsnapshot", f'<action><snapshot id="{snap_up}"/></action>')
    assert r.status_code == 404, r.data                   # another VM's snapshot
    r = send(env, "POST", f"/vms/{down}/previewsnapshot", "<action/>")
    assert r.status_code == 400 and detail(r).startswith("snapshot:")
    r = send(env, "POST", f"/vms/{down}/previewsnapshot",
             f'<action><snapshot id="{snap}"/><restore_memory>true</restore_memory></action>')
    assert r.status_code == 400 and detail(r).startswith("restore_memory:")
    r = send(env, "POST", f"/vms/{down}/previewsnapshot",
             f'<action><snapshot id="{snap}"/><lease><storage_domain id="x"/></lease></action>')
    assert r.status_code == 400 and "lease: not supported yet" in detail(r)
    for action in ("commitsnapshot", "undosnapshot"):
        r = send(env, "POST", f"/vms/{down}/{action}", "<action/>")
        assert r.status_code == 409 and "not previewing a snapshot" in detail(r)
    add_snapshot(env, down, "being taken", status="locked")
    r = send(env, "POST", f"/vms/{down}/previewsnapshot", f'<action><snapshot id="{snap}"/></action>')
    assert r.status_code == 409 and "'being taken' of VM web2 is being taken" in detail(r)
    assert get(env, f"/vms/{down}").get_json()["status"] == "down"
    r = send(env, "POST", "/vms/00000000-0000-4000-8000-000000000000/undosnapshot", "<action/>")
    assert r.status_code == 404


def test_a_preview_request_claims_the_vm_and_records_a_job(env):
    down = ids_of(env, "web2")
    snap = add_snapshot(env, down, "s1")
    r = send(env, "POST", f"/vms/{down}/previewsnapshot",
             f'<action><snapshot id="{snap}"/><restore_memory>false</restore_memory></action>', **{"async": "true"})
    assert r.status_code == 202, r.data
    assert get(env, f"/vms/{down}").get_json()["status"] == "image_locked"
    with env["sm"]() as s:
        job = s.query(Job).filter_by(kind="snapshot.preview").one()
        assert job.params == {"snapshot_id": snap, "vm_id": down}
    r = send(env, "POST", f"/vms/{down}/previewsnapshot", f'<action><snapshot id="{snap}"/></action>')
    assert r.status_code == 409, r.data


def test_while_in_preview_the_list_says_so_and_snapshot_changes_are_refused(env):
    down = ids_of(env, "web2")
    first = add_snapshot(env, down, "first", status="in_preview", age=20)
    second = add_snapshot(env, down, "second", age=10)
    add_snapshot(env, down, "Active VM before the preview", status="preview")
    listed = get(env, f"/vms/{down}/snapshots").get_json()["snapshot"]
    assert [(x["description"], x["snapshot_status"], x["snapshot_type"]) for x in listed] == [
        ("first", "in_preview", "regular"), ("second", "ok", "regular"),
        ("Active VM before the preview", "ok", "preview")]
    r = send(env, "POST", f"/vms/{down}/snapshots", "<snapshot><description>x</description></snapshot>")
    assert r.status_code == 409 and "previewing snapshot 'first'" in detail(r)
    r = send(env, "POST", f"/vms/{down}/snapshots/{second}/restore", "<action/>")
    assert r.status_code == 409 and "commit or undo the preview" in detail(r)
    r = send(env, "POST", f"/vms/{down}/previewsnapshot", f'<action><snapshot id="{second}"/></action>')
    assert r.status_code == 409
    r = env["c"].delete(f"/ovirt-engine/api/vms/{down}/snapshots/{first}", headers=env["h"])
    assert r.status_code == 409
    r = send(env, "POST", f"/vms/{down}/commitsnapshot", "<action/>", **{"async": "true"})
    assert r.status_code == 202, r.data
    with env["sm"]() as s:
        assert s.query(Job).filter_by(kind="snapshot.commit").one().params["snapshot_id"] == first


def test_a_disk_does_not_grow_while_its_vm_previews_a_snapshot(env):
    down = ids_of(env, "web2")
    with env["sm"]() as s:
        d = Disk(name="web2_d1", storage_domain_id=env["ids"]["sd"], provisioned_size=32 * MiB, active_volume="v1")
        s.add(d)
        s.flush()
        s.add(DiskAttachment(id=d.id, disk_id=d.id, vm_id=down))
        s.commit()
        disk_id = d.id
    add_snapshot(env, down, "first", status="in_preview")
    r = send(env, "PUT", f"/disks/{disk_id}", f"<disk><provisioned_size>{64 * MiB}</provisioned_size></disk>")
    assert r.status_code == 409 and "previewing a snapshot" in detail(r)


# ---- clone ------------------------------------------------------------------------------------
def test_clone_refusals(env):
    up, down = env["ids"]["vm"], ids_of(env, "web2")
    r = send(env, "POST", f"/vms/{up}/clone", "<action><vm><name>copy</name></vm></action>")
    assert r.status_code == 409 and "clone it while it is down" in detail(r)
    r = send(env, "POST", f"/vms/{down}/clone", "<action/>")
    assert r.status_code == 400 and detail(r).startswith("vm.name:")
    r = send(env, "POST", f"/vms/{down}/clone", "<action><vm><name>db1</name></vm></action>")
    assert r.status_code == 409 and "already exists" in detail(r)
    r = send(env, "POST", f"/vms/{down}/clone",
             "<action><vm><name>copy</name><description>x</description></vm></action>")
    assert r.status_code == 400 and "vm.description: not supported yet" in detail(r)
    r = send(env, "POST", f"/vms/{down}/clone",
             "<action><vm><name>copy</name></vm><storage_domain><name>data</name></storage_domain></action>")
    assert r.status_code == 400 and "storage_domain: not supported yet" in detail(r)
    r = send(env, "POST", "/vms", "<vm><name>perm</name><cluster><name>Default</name></cluster></vm>",
             clone="true", clone_permissions="true")
    assert r.status_code == 400 and detail(r).startswith("clone_permissions:")
    assert sorted(x["name"] for x in get(env, "/vms").get_json()["vm"]) == ["Web1", "db1", "web2"]


def test_clone_of_a_vm_without_disks_copies_its_configuration_and_nics(env):
    down = ids_of(env, "web2")
    with env["sm"]() as s:
        vm = s.get(Vm, down)
        vm.cpus, vm.description = 2, "the second"
        s.add(Nic(vm_id=down, name="nic1", mac="56:6f:00:00:00:01"))
        s.commit()
    r = send(env, "POST", f"/vms/{down}/clone", "<action><vm><name>web3</name></vm></action>")
    assert r.status_code == 200, r.data
    new_id = r.get_json()["vm"]["id"]
    got = get(env, f"/vms/{new_id}").get_json()
    assert (got["name"], got["status"], got["description"], got["cpu"]["topology"]["sockets"]) == \
        ("web3", "down", "the second", "2")
    nic, = get(env, f"/vms/{new_id}/nics").get_json()["nic"]
    assert nic["name"] == "nic1" and nic["mac"]["address"] != "56:6f:00:00:00:01"
    assert get(env, f"/vms/{down}").get_json()["status"] == "down"
    with env["sm"]() as s:
        assert s.query(Event).filter(Event.description == "VM web3 was created as a clone of VM web2.").count() == 1


# ---- template update --------------------------------------------------------------------------
def test_template_update(env):
    with env["sm"]() as s:
        t = Template(name="tpl1", cluster_id=env["ids"]["cluster"], memory=64 * MiB, cpus=1,
                     source_vm_id=ids_of(env, "web2"))
        s.add(t)
        s.commit()
        tid = t.id
    r = send(env, "PUT", f"/templates/{tid}", "<template><name>tpl2</name><description>d</description>"
             "<memory>134217728</memory><cpu><topology><sockets>2</sockets><cores>2</cores></topology></cpu>"
             "<os><type>rhel_9x64</type></os><cluster><name>Default</name></cluster><vm><name>web2</name></vm>"
             "</template>")
    assert r.status_code == 200, r.data
    got = get(env, f"/templates/{tid}").get_json()
    assert (got["name"], got["description"], int(got["memory"]), got["cpu"]["topology"]["sockets"],
            got["os"]["type"]) == ("tpl2", "d", 128 * MiB, "4", "rhel_9x64")
    assert got["memory_policy"]["ballooning"] in (False, "false")
    for body, needle, code in (
            ("<template><stateless>true</stateless></template>", "stateless: not supported yet", 400),
            ("<template><colour>red</colour></template>", "colour: unknown field", 400),
            ("<template><memory>1</memory></template>", "memory", 400),
            ("<template><vm><name>db1</name></vm></template>", "vm:", 400),
            ("<template><name>Blank</name></template>", "already exists", 409)):
        r = send(env, "PUT", f"/templates/{tid}", body)
        assert r.status_code == code and needle in detail(r), (body, r.data)
    r = send(env, "PUT", f"/templates/{BLANK_TEMPLATE_ID}", "<template><description>x</description></template>")
    assert r.status_code == 409 and "Blank" in detail(r)
    with env["sm"]() as s:
        s.get(Template, tid).status = "locked"
        s.commit()
    r = send(env, "PUT", f"/templates/{tid}", "<template><description>y</description></template>")
    assert r.status_code == 409 and "locked" in detail(r)
    assert get(env, f"/templates/{tid}").get_json()["description"] == "d"
