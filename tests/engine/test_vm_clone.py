"""VM clone (POST /vms/{id}/clone) and clone=true from a template on real
libvirt: the new VM's disks are whole qcow2 files with no backing file, the
source stays as it was, and the copy runs from its own volumes."""
import json
import os
import subprocess

import libvirt
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
import requests

from .test_vm_lifecycle import MiB, active_volume, cleanup, events_about, host_index, new_vm

pytestmark = [pytest.mark.slow, pytest.mark.root]


def chain(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def post(engine, token, path, body):
    return requests.post(f"{engine.url}{path}", data=body, timeout=120, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/xml", "Accept": "application/xml"})


def vm_by_name(sdk, name):
    found = sdk.system_service().vms_service().list(search=f"name={name}")
    return sdk.system_service().vms_service().vm_service(found[0].id) if found else None


def disk_files(sdk, engine, svc):
    disks = sdk.system_service().disks_service()
    return [active_volume(engine, disks.disk_service(a.disk.id).get())
            for a in svc.disk_attachments_service().list()]


def domain_xml(engine, cluster_setup, svc, name):
    conn = libvirt.open(engine.hosts[host_index(cluster_setup, svc.get().host.id)].uri)
    try:
        return conn.lookupByName(name).XMLDesc()
    finally:
        conn.close()


def test_clone_a_down_vm(sdk, engine, token, cluster_setup):
    src = new_vm(sdk, cluster_setup, "csrc")
    copy = None
    try:
        src_id = src.get().id
        src.nics_service().add(t.Nic(name="nic1", interface=t.NicInterface.VIRTIO))
        src.snapshots_service().add(t.Snapshot(description="layer"))   # a chain of two to flatten
        src_file, = disk_files(sdk, engine, src)
        assert len(chain(src_file)) == 2

        src.start()
        with pytest.raises(ovirtsdk4.Error) as e:
            src.clone(vm=t.Vm(name="cdst"))
        assert e.value.code == 409 and "while it is down" in str(e.value)
        src.stop()

        # refused: no name, a name in use, oVirt's fields Keel lacks, an unknown VM
        r = post(engine, token, f"/vms/{src_id}/clone", "<action><vm/></action>")
        assert r.status_code == 400 and "vm.name" in r.text, r.text
        r = post(engine, token, f"/vms/{src_id}/clone", "<action><vm><name>csrc</name></vm></action>")
        assert r.status_code == 409 and "already exists" in r.text, r.text
        r = post(engine, token, f"/vms/{src_id}/clone",
                 "<action><vm><name>cdst</name></vm><discard_snapshots>true</discard_snapshots></action>")
        assert r.status_code == 400 and "discard_snapshots: not supported yet" in r.text, r.text
        r = post(engine, token, "/vms/00000000-0000-0000-0000-00000000dead/clone",
                 "<action><vm><name>cdst</name></vm></action>")
        assert r.status_code == 404
        assert vm_by_name(sdk, "cdst") is None

        src.clone(vm=t.Vm(name="cdst"))
        copy = vm_by_name(sdk, "cdst")
        got, orig = copy.get(), src.get()
        assert got.status == t.VmStatus.DOWN and orig.status == t.VmStatus.DOWN
        assert (got.memory, got.cpu.topology.sockets, got.template.id) == \
            (orig.memory, orig.cpu.topology.sockets, orig.template.id)
        copy_file, = disk_files(sdk, engine, copy)
        copied = chain(copy_file)
        assert len(copied) == 1 and "backing-filename" not in copied[0]   # whole, on its own
        assert copied[0]["virtual-size"] == 32 * MiB
        assert copy_file != src_file and len(chain(src_file)) == 2       # the source is as it was
        disk, = [sdk.system_service().disks_service().disk_service(a.disk.id).get()
                 for a in copy.disk_attachments_service().list()]
        assert disk.status == t.DiskStatus.OK and disk.name == "cdst_Disk1"
        nic, = copy.nics_service().list()
        src_nic, = src.nics_service().list()
        assert nic.name == "nic1" and nic.mac.address != src_nic.mac.address
        assert events_about(sdk, "cdst", "created as a clone of VM csrc")
        job, = [j for j in sdk.system_service().jobs_service().list() if j.description == "Cloning VM csrc as cdst"]
        assert job.status == t.JobStatus.FINISHED

        # the copy does not need the source: remove it, start the copy
        cleanup(src)
        assert not os.path.exists(src_file)
        copy.start()
        xml = domain_xml(engine, cluster_setup, copy, "cdst")
        assert copy_file in xml and src_file not in xml
    finally:
        cleanup(src)
        if copy is not None:
            cleanup(copy)


def test_vm_from_template_with_clone_true(sdk, engine, token, cluster_setup):
    src = new_vm(sdk, cluster_setup, "ctsrc")
    system = sdk.system_service()
    templates, vms = system.templates_service(), system.vms_service()
    made = []
    tpl = None
    try:
        tpl = templates.add(t.Template(name="ctpl", vm=t.Vm(id=src.get().id)))
        tdisk, = templates.template_service(tpl.id).disk_attachments_service().list()
        tfile = active_volume(engine, system.disks_service().disk_service(tdisk.disk.id).get())

        thin = vms.add(t.Vm(name="ctthin", cluster=t.Cluster(name="Default"), template=t.Template(name="ctpl")))
        made.append(vms.vm_service(thin.id))
        full = vms.add(t.Vm(name="ctfull", cluster=t.Cluster(name="Default"), template=t.Template(name="ctpl")),
                       clone=True)
        made.append(vms.vm_service(full.id))
        thin_file, = disk_files(sdk, engine, made[0])
        full_file, = disk_files(sdk, engine, made[1])
        assert os.path.basename(chain(thin_file)[0]["backing-filename"]) == os.path.basename(tfile)
        copied = chain(full_file)
        assert len(copied) == 1 and "backing-filename" not in copied[0]
        assert made[1].get().template.id == tpl.id and made[1].get().status == t.VmStatus.DOWN

        r = post(engine, token, "/vms?clone=true&clone_permissions=true",
                 "<vm><name>ctperm</name><cluster><name>Default</name></cluster>"
                 "<template><name>ctpl</name></template></vm>")
        assert r.status_code == 400 and "clone_permissions" in r.text, r.text
        assert vm_by_name(sdk, "ctperm") is None

        made[1].start()
        xml = domain_xml(engine, cluster_setup, made[1], "ctfull")
        assert full_file in xml and tfile not in xml
    finally:
        for svc in made:
            cleanup(svc)
        if tpl is not None:
            try:
                templates.template_service(tpl.id).remove()
            except ovirtsdk4.Error:
                pass
        cleanup(src)
