"""Hot-plug requests against the in-process engine (SQLite; its one host's
libvirt answers nobody): what a request on an up VM records (the row as it
is until the job plugged it, the job), what it refuses (with the field and
the reason, nothing changed), the same changes on a down VM (the database
alone, seen by the domain at the next start), and a job that cannot reach
the host undoing its request. Real plugging: test_hotplug.py."""
import xml.etree.ElementTree as ET

import pytest

from harness.engineapp import admin_headers, assert_another_writer_gets_in, engine_app_with_host, running_worker
from harness.wait import wait_for
from keel_common import domainxml
from keel_engine.models import Cluster, Disk, DiskAttachment, Event, Job, Nic, Step, StorageDomain, Vm
from keel_engine.services import Context
from keel_engine.services import disks as disk_svc
from keel_engine.services import hotplug
from keel_engine.services import vms as vm_svc

API = "/ovirt-engine/api"
MiB = 2 ** 20


@pytest.fixture
def env(tmp_path):
    # nothing listens at this address: a job that reaches for the host fails at once
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.17.61", request_wait=1, unplug_timeout=1)
    with sm() as s:
        cluster = s.query(Cluster).one()
        sd = StorageDomain(name="data", path=str(tmp_path / "sd"), data_center_id=cluster.data_center_id,
                           status="active")
        s.add(sd)
        s.flush()
        vm = Vm(name="v1", cluster_id=cluster.id, template_id="00000000-0000-0000-0000-000000000000",
                memory=64 * MiB, status="up", host_id=host_id)
        s.add(vm)
        s.flush()
        disk = Disk(name="floating", storage_domain_id=sd.id, provisioned_size=16 * MiB,
                    active_volume="x.1.qcow2", status="ok")
        s.add(disk)
        s.add(Nic(vm_id=vm.id, name="nic1", mac="56:6f:00:00:00:01"))
        s.commit()
        ids = {"vm": vm.id, "sd": sd.id, "disk": disk.id, "host": host_id}
    return {"cfg": cfg, "c": app.test_client(), "h": admin_headers(app), "sm": sm, "ids": ids}


def send(env, method, path, body=None):
    return env["c"].open(API + path, method=method, data=body,
                         headers={**env["h"], "Content-Type": "application/xml", "Accept": "application/json"})


def counts(env):
    with env["sm"]() as s:
        return tuple(s.query(m).count() for m in (Nic, Disk, DiskAttachment, Job))


def set_vm(env, **values):
    with env["sm"]() as s:
        vm = s.get(Vm, env["ids"]["vm"])
        for k, v in values.items():
            setattr(vm, k, v)
        s.commit()


def events(env, code):
    with env["sm"]() as s:
        return [e.description for e in s.query(Event).filter_by(code=code).order_by(Event.id)]


def the_nic(env, name):
    with env["sm"]() as s:
        return s.query(Nic).filter_by(name=name).one_or_none()


# ---- the live domain's devices, read (pure) ------------------------------------------------
LIVE = """<domain><devices>
  <disk type='file' device='disk'><source file='/sd/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='/sd/c.qcow2'/><target dev='vdc' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
  <interface type='bridge'><mac address='56:6F:00:00:00:01'/><model type='virtio'/></interface>
</devices></domain>"""


def test_the_next_free_name_on_a_bus_and_devices_found_in_the_live_xml():
    assert domainxml.free_target(LIVE, "virtio") == "vdb"          # a gap is filled first
    assert domainxml.free_target(LIVE, "virtio_scsi") == "sda"
    assert domainxml.free_target(LIVE, "ide") == "hda"
    full = "<domain><devices>" + "".join(f"<disk><target dev='vd{chr(97 + i)}'/></disk>" for i in range(26)) \
        + "</devices></domain>"
    with pytest.raises(ValueError, match="virtio bus is taken"):
        domainxml.free_target(full, "virtio")
    assert domainxml.find_interface(LIVE, "56:6f:00:00:00:01").find("model").get("type") == "virtio"
    assert domainxml.find_interface(LIVE, "56:6f:00:00:00:02") is None
    assert domainxml.find_disk(LIVE, "/sd/c.qcow2").find("target").get("dev") == "vdc"
    assert domainxml.find_disk(LIVE, "/sd/b.qcow2") is None


# ---- requests on an up VM ----------------------------------------------------------------
def test_a_nic_added_to_an_up_vm_is_a_job_and_shows_unplugged_until_it_ran(env):
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/nics?async=true",
             "<nic><name>nic2</name><interface>e1000</interface></nic>")
    assert r.status_code == 202, r.data
    got = r.get_json()
    assert (got["name"], got["interface"], got["plugged"]) == ("nic2", "e1000", "false")
    with env["sm"]() as s:
        job = s.query(Job).filter_by(kind="vm.nic_plug").one()
        assert job.params == {"vm_id": env["ids"]["vm"], "nic_id": got["id"], "action": "add"}
        assert job.description == "Plugging new network interface nic2 of VM v1"


def test_a_nic_asked_unplugged_is_added_at_once_without_a_job(env):
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/nics", "<nic><name>spare</name><plugged>false</plugged></nic>")
    assert r.status_code == 201, r.data
    assert r.get_json()["plugged"] == "false"
    assert counts(env)[3] == 0


@pytest.mark.parametrize("status", ["migrating", "wait_for_launch", "image_locked", "powering_down"])
def test_a_vm_neither_up_nor_down_takes_no_device_change(env, status):
    set_vm(env, status=status)
    before = counts(env)
    vm = env["ids"]["vm"]
    r = send(env, "POST", f"/vms/{vm}/nics", "<nic><name>nic2</name></nic>")
    assert r.status_code == 409
    assert r.get_json()["detail"] == f"VM v1 is {status}; network interfaces are added while it is up or down"
    r = send(env, "POST", f"/vms/{vm}/diskattachments",
             f"<disk_attachment><disk id='{env['ids']['disk']}'/><interface>virtio</interface></disk_attachment>")
    assert r.status_code == 409 and "disks are attached while it is up or down" in r.get_json()["detail"]
    nic = the_nic(env, "nic1")
    r = send(env, "PUT", f"/vms/{vm}/nics/{nic.id}", "<nic><plugged>false</plugged></nic>")
    assert r.status_code == 409 and "network interfaces are changed while it is up or down" in r.get_json()["detail"]
    assert counts(env) == before and the_nic(env, "nic1").plugged


@pytest.mark.parametrize("interface, why", [
    ("ide", "the IDE bus of the VMs' machine type (i440fx) cannot hot-plug devices"),
    ("sata", "has no SATA controller to plug a disk into"),
])
def test_a_disk_on_a_bus_that_cannot_hot_plug_is_refused_and_nothing_is_made(env, interface, why):
    before = counts(env)
    vm = env["ids"]["vm"]
    for body in (f"<disk id='{env['ids']['disk']}'/>",
                 f"<disk><name>new1</name><provisioned_size>{16 * MiB}</provisioned_size>"
                 f"<storage_domains><storage_domain id='{env['ids']['sd']}'/></storage_domains></disk>"):
        r = send(env, "POST", f"/vms/{vm}/diskattachments",
                 f"<disk_attachment>{body}<interface>{interface}</interface></disk_attachment>")
        assert r.status_code == 409, r.data
        detail = r.get_json()["detail"]
        assert detail.startswith("interface: VM v1 is up and ") and why in detail and "virtio" in detail
    assert counts(env) == before


def test_a_disk_on_an_inactive_storage_domain_is_not_plugged(env):
    with env["sm"]() as s:
        s.get(StorageDomain, env["ids"]["sd"]).status = "maintenance"
        s.commit()
    before = counts(env)
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/diskattachments",
             f"<disk_attachment><disk id='{env['ids']['disk']}'/></disk_attachment>")
    assert r.status_code == 409
    assert r.get_json()["detail"] == ("storage domain data of disk floating is maintenance; its disks are "
                                      "plugged into running VMs while it is active")
    assert counts(env) == before


def test_a_disk_attached_to_an_up_vm_is_inactive_until_its_job_plugged_it(env):
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/diskattachments?async=true",
             f"<disk_attachment><disk id='{env['ids']['disk']}'/><interface>virtio_scsi</interface>"
             "</disk_attachment>")
    assert r.status_code == 202, r.data
    got = r.get_json()
    assert (got["interface"], got["active"], got["disk"]["id"]) == ("virtio_scsi", "false", env["ids"]["disk"])
    with env["sm"]() as s:
        job = s.query(Job).filter_by(kind="vm.disk_plug").one()
        assert job.params["action"] == "add" and job.params["new"] is False
        assert job.description == "Attaching and plugging in disk floating of VM v1"


def test_a_plugged_nics_model_does_not_change_while_the_vm_runs(env):
    nic = the_nic(env, "nic1")
    r = send(env, "PUT", f"/vms/{env['ids']['vm']}/nics/{nic.id}", "<nic><interface>e1000</interface></nic>")
    assert r.status_code == 409
    assert r.get_json()["detail"] == ("interface: network interface nic1 is plugged into running VM v1; unplug it "
                                      "first (plugged=false) or change it while the VM is down")
    assert the_nic(env, "nic1").interface == "virtio"
    # a new name is the database's alone: at once
    r = send(env, "PUT", f"/vms/{env['ids']['vm']}/nics/{nic.id}", "<nic><name>lan</name></nic>")
    assert r.status_code == 200 and r.get_json()["name"] == "lan"


def test_unplugging_a_nic_of_an_up_vm_is_a_job_and_the_nic_stays_until_it_ran(env):
    nic = the_nic(env, "nic1")
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/nics/{nic.id}/deactivate", "<action><async>true</async></action>")
    assert r.status_code == 202, r.data
    assert r.get_json()["status"] == "pending"
    r = send(env, "DELETE", f"/vms/{env['ids']['vm']}/nics/{nic.id}?async=true")
    assert r.status_code == 202, r.data
    with env["sm"]() as s:
        actions = [j.params["action"] for j in s.query(Job).filter_by(kind="vm.nic_plug").order_by(Job.start_time)]
    assert actions == ["unplug", "remove"]
    assert the_nic(env, "nic1").plugged


def test_an_attachments_update_does_not_change_its_disk(env):
    with env["sm"]() as s:
        vm = s.get(Vm, env["ids"]["vm"])
        vm.status, vm.host_id = "down", None
        disk_svc.attach(s, vm, s.get(Disk, env["ids"]["disk"]))
        s.commit()
    path = f"/vms/{env['ids']['vm']}/diskattachments/{env['ids']['disk']}"
    for body, says in (("<disk><name>other</name></disk>", "disk.name: an attachment's update does not change"),
                       (f"<disk><provisioned_size>{32 * MiB}</provisioned_size></disk>", "disk.provisioned_size"),
                       ("<disk><format>raw</format></disk>", "disk.format")):
        r = send(env, "PUT", path, f"<disk_attachment><interface>ide</interface>{body}</disk_attachment>")
        assert r.status_code == 400 and r.get_json()["detail"].startswith(says), r.data
        assert "PUT /disks/" in r.get_json()["detail"]
    with env["sm"]() as s:
        assert s.get(DiskAttachment, env["ids"]["disk"]).interface == "virtio"
    # the disk as it is (what ovirt_disk sends along) is fine
    r = send(env, "PUT", path, "<disk_attachment><interface>ide</interface><bootable>true</bootable>"
                               f"<disk><name>floating</name><provisioned_size>{16 * MiB}</provisioned_size>"
                               f"<storage_domains><storage_domain id='{env['ids']['sd']}'/></storage_domains>"
                               "</disk></disk_attachment>")
    assert r.status_code == 200, r.data
    assert (r.get_json()["interface"], r.get_json()["bootable"]) == ("ide", "true")


# ---- a down VM: the database alone -------------------------------------------------------
def test_on_a_down_vm_plugging_is_the_column_and_the_next_start_sees_it(env):
    set_vm(env, status="down", host_id=None)
    vm, nic = env["ids"]["vm"], the_nic(env, "nic1")
    r = send(env, "PUT", f"/vms/{vm}/nics/{nic.id}", "<nic><plugged>false</plugged><interface>e1000</interface></nic>")
    assert r.status_code == 200, r.data
    assert (r.get_json()["plugged"], r.get_json()["interface"]) == ("false", "e1000")
    assert events(env, 1014) == ["Network interface nic1 of VM v1 was unplugged (the VM is down: from its next "
                                 "start)."]
    r = send(env, "POST", f"/vms/{vm}/diskattachments",
             f"<disk_attachment><disk id='{env['ids']['disk']}'/><active>false</active></disk_attachment>")
    assert r.status_code == 201, r.data
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        v.host_id = env["ids"]["host"]
        xml = ET.fromstring(domainxml.domain_xml(vm_svc.domain_of(None, s, v)))
    assert xml.findall("devices/interface") == [] and xml.findall("devices/disk[@device='disk']") == []
    r = send(env, "POST", f"/vms/{vm}/nics/{nic.id}/activate", "<action/>")
    assert r.status_code == 200 and r.get_json()["status"] == "complete"
    r = send(env, "PUT", f"/vms/{vm}/diskattachments/{env['ids']['disk']}",
             "<disk_attachment><active>true</active></disk_attachment>")
    assert r.status_code == 200 and r.get_json()["active"] == "true"
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        v.host_id = env["ids"]["host"]
        xml = ET.fromstring(domainxml.domain_xml(vm_svc.domain_of(_ctx(env), s, v)))
    assert [m.get("address") for m in xml.findall("devices/interface/mac")] == ["56:6f:00:00:00:01"]
    assert xml.find("devices/interface/model").get("type") == "e1000"
    assert [t.get("dev") for t in xml.findall("devices/disk[@device='disk']/target")] == ["vda"]
    assert counts(env)[3] == 0     # no job: nothing was asked of a host


def _ctx(env):
    return Context(config=env["cfg"], sessionmaker=env["sm"])


# ---- the worker: a job that finds the VM down, a job that cannot reach the host --------------
def test_a_job_that_finds_the_vm_down_makes_the_change_for_the_next_start(env):
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/nics?async=true", "<nic><name>nic2</name></nic>")
    assert r.status_code == 202
    set_vm(env, status="down", host_id=None)
    with running_worker(env["cfg"]):
        wait_for(lambda: (the_nic(env, "nic2") or Nic(plugged=False)).plugged, 60, what="the job's end")
    assert events(env, 1012) == ["Network interface nic2 was added to VM v1 and plugged in (the VM is down: "
                                 "from its next start)."]


def test_a_plug_that_fails_undoes_its_request_and_says_why(env):
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/nics?async=true", "<nic><name>nic2</name></nic>")
    assert r.status_code == 202
    r = send(env, "POST", f"/vms/{env['ids']['vm']}/diskattachments?async=true",
             f"<disk_attachment><disk id='{env['ids']['disk']}'/></disk_attachment>")
    assert r.status_code == 202
    with running_worker(env["cfg"]):
        wait_for(lambda: len(events(env, 1013)) == 1 and len(events(env, 2001)) == 1, 60, what="both jobs failed")
    assert the_nic(env, "nic2") is None
    with env["sm"]() as s:
        assert s.query(DiskAttachment).count() == 0 and s.get(Disk, env["ids"]["disk"]).status == "ok"
        faults = sorted(j.fault_detail for j in s.query(Job).filter(Job.kind.in_(("vm.nic_plug", "vm.disk_plug"))))
    assert faults[0].startswith("cannot plug disk floating into VM v1: host hx does not answer")
    assert faults[0].endswith("; it was not attached")
    assert faults[1].startswith("cannot plug network interface nic2 into VM v1: host hx does not answer")
    assert faults[1].endswith("; it was not added")
    assert events(env, 1013)[0] == f"Failed to {faults[1][len('cannot '):]}."


def test_a_job_waiting_for_its_vms_lock_holds_no_database_lock(env):
    # Two device changes to one VM take turns on the VM's lock. One that waited
    # for it holding SQLite's write lock would deadlock with the one holding
    # it, which needs the write lock to record how it ended.
    vm = env["ids"]["vm"]
    r = send(env, "POST", f"/vms/{vm}/nics?async=true", "<nic><name>nic2</name></nic>")
    assert r.status_code == 202
    lock = hotplug._vm_lock(vm)
    lock.acquire()
    held = True
    try:
        with running_worker(env["cfg"]):
            def waiting_step():
                with env["sm"]() as s:
                    return s.query(Step).filter(Step.description.contains("network interface nic2"),
                                                Step.status == "started").count() == 1
            wait_for(waiting_step, 30, what="the job's step, committed before it waits for the VM's lock")
            assert_another_writer_gets_in(env["cfg"])
            lock.release()
            held = False
            wait_for(lambda: len(events(env, 1013)) == 1, 60, what="the job's end, once it has the VM's lock")
    finally:
        if held:
            lock.release()
    assert the_nic(env, "nic2") is None
