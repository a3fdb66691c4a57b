"""A new VM from a snapshot (POST /vms with <snapshots>) as the API takes
it, on the in-process engine with SQLite: what the request decides and
records (no worker: async), what it refuses, and how the job's end unlocks
the snapshot and the source's disks. The copies themselves, on real
libvirt: test_clone_from_snapshot.py."""
from datetime import timedelta

import ovirtsdk4.types as t
import pytest
from ovirtsdk4.writer import Writer

from harness.engineapp import admin_headers, engine_app_with_host, running_worker
from keel_engine.models import (BLANK_TEMPLATE_ID, Cluster, DataCenter, Disk, DiskAttachment, Event, Job, Nic,
                                Snapshot, StorageDomain, Template, Vm, Volume, utcnow)

API = "/ovirt-engine/api"
MiB = 2 ** 20


@pytest.fixture
def env(tmp_path):
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.16.62", request_wait=30)
    with sm() as s:
        dc, cl = s.query(DataCenter).one(), s.query(Cluster).one()
        sd = StorageDomain(name="data", path="/srv/keel-snapclone-sd", status="active", data_center_id=dc.id)
        tpl = Template(name="tpl", cluster_id=cl.id)
        s.add_all([sd, tpl])
        s.flush()
        src = Vm(name="src", cluster_id=cl.id, template_id=tpl.id, memory=128 * MiB, cpus=2, status="up",
                 host_id=host_id, description="the source", os_type="other_linux", high_availability=True,
                 kernel_path="/boot/vmlinuz", cdrom_file="tools.iso", cdrom_storage_domain_id=sd.id)
        s.add(src)
        s.flush()
        s.add(Nic(vm_id=src.id, name="nic1", mac="56:6f:00:00:00:01"))
        disks = []
        for i, name in enumerate(("src_d1", "src_d2")):
            d = Disk(name=name, storage_domain_id=sd.id, provisioned_size=32 * MiB, active_volume=f"{name}.top",
                     description=f"disk {i + 1}")
            s.add(d)
            s.flush()
            s.add_all([Volume(name=f"{name}.base", disk_id=d.id), Volume(name=f"{name}.top", disk_id=d.id,
                                                                         backing=f"{name}.base")])
            s.add(DiskAttachment(id=d.id, disk_id=d.id, vm_id=src.id, interface="virtio", bootable=i == 0,
                                 position=i))
            disks.append(d)
        # taken when the VM had 64 MiB and one CPU, before its second disk was attached
        snap = Snapshot(vm_id=src.id, description="before", volumes={disks[0].id: "src_d1.base"},
                        memory=64 * MiB, cpus=1, date=utcnow() - timedelta(minutes=5))
        other_dc = DataCenter(name="dc2")
        s.add_all([snap, other_dc])
        s.flush()
        s.add(Cluster(name="far", data_center_id=other_dc.id))
        s.commit()
        ids = {"src": src.id, "snap": snap.id, "d1": disks[0].id, "d2": disks[1].id, "sd": sd.id, "tpl": tpl.id,
               "host": host_id}
    return {"cfg": cfg, "app": app, "c": app.test_client(), "h": admin_headers(app), "sm": sm, "ids": ids}


def post(env, body, **params):
    return env["c"].post(f"{API}/vms", data=body, query_string=params, headers={
        **env["h"], "Content-Type": "application/xml", "Accept": "application/json"})


def body(env, name="copy", extra=""):
    return (f"<vm><name>{name}</name><cluster><name>Default</name></cluster>{extra}"
            f"<snapshots><snapshot id=\"{env['ids']['snap']}\"/></snapshots></vm>")


def status_of(env, model, ident):
    with env["sm"]() as s:
        return s.get(model, ident).status


def test_what_ovirt_vm_sends_makes_a_vm_with_the_snapshot_s_configuration_and_a_copy_job(env):
    # ovirt_vm with snapshot_vm/snapshot_name: the cluster by name, the Blank template, the snapshot by id
    sent = Writer.write(t.Vm(name="copy", cluster=t.Cluster(name="Default"), template=t.Template(id=BLANK_TEMPLATE_ID),
                             snapshots=[t.Snapshot(id=env["ids"]["snap"])]))
    r = post(env, sent, **{"async": "true"})
    assert r.status_code == 202, r.data
    got = r.get_json()
    assert got["status"] == "image_locked" and got["memory"] == str(64 * MiB)
    assert got["cpu"]["topology"]["sockets"] == "1"                    # the snapshot's
    assert got["template"]["id"] == env["ids"]["tpl"]                  # the source's
    assert got["description"] == "the source" and got["os"]["kernel"] == "/boot/vmlinuz"
    assert got["high_availability"]["enabled"] == "true"
    with env["sm"]() as s:
        vm = s.get(Vm, got["id"])
        assert (vm.cdrom_file, vm.cdrom_storage_domain_id) == ("tools.iso", env["ids"]["sd"])
        assert vm.lease_storage_domain_id is None
        nic, = s.query(Nic).filter_by(vm_id=vm.id).all()
        assert nic.name == "nic1" and nic.mac != "56:6f:00:00:00:01"
        att, = s.query(DiskAttachment).filter_by(vm_id=vm.id).all()    # only the disk the snapshot has
        new = s.get(Disk, att.disk_id)
        assert (new.name, new.status, new.description, att.bootable) == ("copy_Disk1", "locked", "disk 1", True)
        job = s.query(Job).filter_by(kind="vm.from_snapshot").one()
        assert job.params == {"vm_id": vm.id, "copies": {new.id: "src_d1.base"}, "snapshot_id": env["ids"]["snap"],
                              "locked_disks": [env["ids"]["d1"]]}
        assert job.description == "Creating VM copy from snapshot 'before' of VM src"
        assert s.get(Snapshot, env["ids"]["snap"]).status == "locked"
        assert s.get(Disk, env["ids"]["d1"]).status == "locked" and s.get(Disk, env["ids"]["d2"]).status == "ok"
        assert s.get(Vm, env["ids"]["src"]).status == "up"             # the source runs on
        assert s.query(Event).filter_by(vm_id=vm.id).one().description == (
            "VM copy was created from snapshot 'before' of VM src.")


def test_fields_given_override_the_source_s(env):
    r = post(env, body(env, extra=f"<memory>{96 * MiB}</memory><description>mine</description>"
                                  "<high_availability><enabled>false</enabled></high_availability>"),
             **{"async": "true"})
    got = r.get_json()
    assert r.status_code == 202 and got["memory"] == str(96 * MiB) and got["description"] == "mine", r.data
    assert got["high_availability"]["enabled"] == "false"


def test_while_it_is_copied_the_snapshot_and_the_source_disk_are_protected(env):
    assert post(env, body(env), **{"async": "true"}).status_code == 202
    with env["sm"]() as s:
        s.get(Vm, env["ids"]["src"]).status, s.get(Vm, env["ids"]["src"]).host_id = "down", None
        s.commit()
    send = env["c"].open
    h = {**env["h"], "Content-Type": "application/xml", "Accept": "application/json"}
    src, snap = env["ids"]["src"], env["ids"]["snap"]
    r = send(f"{API}/vms/{src}/snapshots/{snap}/restore", method="POST", data="<action/>", headers=h)
    assert r.status_code == 409 and "snapshot 'before' is locked" in r.get_json()["detail"], r.data
    r = send(f"{API}/vms/{src}/previewsnapshot", method="POST", data=f'<action><snapshot id="{snap}"/></action>',
             headers=h)
    assert r.status_code == 409, r.data
    r = send(f"{API}/vms/{src}", method="DELETE", headers=h)
    assert r.status_code == 409 and "disk src_d1 of VM src is locked" in r.get_json()["detail"], r.data
    r = send(f"{API}/vms/{src}/snapshots/{snap}", method="DELETE", headers=h)
    assert r.status_code == 409, r.data
    r = post(env, body(env, name="copy2"), **{"async": "true"})      # one copy of a snapshot at a time
    assert r.status_code == 409 and "is being taken or copied to a new VM" in r.get_json()["detail"], r.data
    with env["sm"]() as s:
        assert s.query(Vm).filter_by(name="copy2").first() is None
        assert s.get(Vm, src).status == "down"


@pytest.mark.parametrize("extra, snap, status, says", [
    ("", "00000000-0000-4000-8000-000000000000", 400, "snapshots.snapshot: snapshot with id"),
    ("", "not-a-uuid", 400, "snapshots.snapshot: snapshot with id 'not-a-uuid' does not exist"),
    ("<template><name>tpl2</name></template>", None, 400, "template: template named 'tpl2'"),
    ("<template id=\"TPL\"/>", None, None, None),                         # the source's template: fine
    ("<cluster><name>far</name></cluster>", None, 400, "cluster: a VM made from a snapshot of VM src is in"),
    ("<memory>1</memory>", None, 400, "memory: must be at least"),
    ("<os><initrd>/boot/i</initrd></os>", None, 400, "os.initrd: an initramfs needs os.kernel too"),
])
def test_a_bad_request_is_refused_by_name_and_makes_nothing(env, extra, snap, status, says):
    extra = extra.replace("TPL", env["ids"]["tpl"])
    b = body(env, extra=extra).replace("<cluster><name>Default</name></cluster><cluster>", "<cluster>")
    if snap:
        b = b.replace(env["ids"]["snap"], snap)
    if "<cluster><name>far" in extra:
        b = b.replace("<cluster><name>Default</name></cluster>", "", 1)
    if "<os><initrd>" in extra:    # the source boots a kernel: clearing it leaves the initramfs alone
        b = b.replace("<os><initrd>", "<os><kernel></kernel><initrd>")
    r = post(env, b, **{"async": "true"})
    if status is None:
        assert r.status_code == 202, r.data
        return
    assert r.status_code == status and says in r.get_json()["detail"], r.data
    with env["sm"]() as s:
        assert s.query(Vm).filter_by(name="copy").first() is None
        assert s.get(Snapshot, env["ids"]["snap"]).status == "ok"
        assert s.get(Disk, env["ids"]["d1"]).status == "ok"


def test_a_locked_snapshot_or_name_in_use_is_a_409(env):
    r = post(env, body(env, name="src"), **{"async": "true"})
    assert r.status_code == 409 and "already exists" in r.get_json()["detail"]
    with env["sm"]() as s:
        s.get(Snapshot, env["ids"]["snap"]).status = "in_preview"
        s.commit()
    r = post(env, body(env), **{"async": "true"})
    assert r.status_code == 409 and "snapshot 'before' of VM src is part of a preview" in r.get_json()["detail"]


def test_a_snapshot_of_a_vm_without_disks_makes_a_down_vm_at_once(env):
    with env["sm"]() as s:
        s.query(DiskAttachment).delete()
        s.commit()
    r = post(env, body(env))
    assert r.status_code == 201 and r.get_json()["status"] == "down", r.data
    assert status_of(env, Snapshot, env["ids"]["snap"]) == "ok"
    with env["sm"]() as s:
        assert "1 disk(s) of the snapshot are no longer the VM's" in s.query(Event).filter_by(
            vm_id=r.get_json()["id"]).one().description


def test_a_failed_copy_removes_the_new_vm_and_unlocks_the_snapshot_and_the_disk(env):
    # the host's libvirt does not answer here: the copy fails
    with running_worker(env["cfg"]):
        r = post(env, body(env))
    assert r.status_code == 409, r.data
    assert status_of(env, Snapshot, env["ids"]["snap"]) == "ok"
    assert status_of(env, Disk, env["ids"]["d1"]) == "ok"
    with env["sm"]() as s:
        assert s.query(Vm).filter_by(name="copy").first() is None
        assert s.query(Job).filter_by(kind="vm.from_snapshot").one().status == "failed"
