"""A new VM from a snapshot (POST /vms with <snapshots>, as ovirt_vm sends it
with snapshot_vm and snapshot_name) on real libvirt: the new VM's disk is one
qcow2 file with no backing file and holds what the source's disk held when
the snapshot was taken (not what was written after), whether the source is
down or running; the source is untouched and the copy runs on its own."""
import json
import os
import subprocess

import ovirtsdk4
import ovirtsdk4.types as t
import pytest

from .cdstack import MiB, cd_engine, cleanup, live_xml

pytestmark = [pytest.mark.slow, pytest.mark.root]
BLANK = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def stack():
    with cd_engine() as found:
        yield found


def volume_of(eng, sdk, svc):
    att, = svc.disk_attachments_service().list()
    disk = sdk.system_service().disks_service().disk_service(att.disk.id).get()
    return os.path.join(eng.storage, f"{disk.id}.{disk.image_id}.qcow2")


def write(path, pattern, offset=0):
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} 1M", path], check=True,
                   capture_output=True)


def holds(path, pattern, offset=0) -> bool:
    """The 1 MiB at offset reads as `pattern` (shared: a running VM may have the file open)."""
    r = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern} {offset} 1M", path],
                       capture_output=True, text=True)
    return r.returncode == 0 and "Pattern verification failed" not in r.stdout + r.stderr


def chain(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def from_snapshot(sdk, name, snap_id, cluster="Default"):
    """What ovirt_vm sends: the cluster by name, the Blank template, the snapshot by id."""
    vms = sdk.system_service().vms_service()
    vm = vms.add(t.Vm(name=name, cluster=t.Cluster(name=cluster), template=t.Template(id=BLANK),
                      snapshots=[t.Snapshot(id=snap_id)]))
    return vms.vm_service(vm.id)


def test_clone_from_snapshots_of_a_down_and_of_a_running_vm(stack):
    eng, sdk, setup = stack
    system = sdk.system_service()
    vms = system.vms_service()
    src = vms.vm_service(vms.add(t.Vm(name="snapsrc", cluster=t.Cluster(name="Default"),
                                      template=t.Template(name="Blank"), memory=64 * MiB)).id)
    made = []
    try:
        src.nics_service().add(t.Nic(name="nic1", interface=t.NicInterface.VIRTIO))
        src.disk_attachments_service().add(t.DiskAttachment(
            disk=t.Disk(name="snapsrc_d1", provisioned_size=32 * MiB, format=t.DiskFormat.COW,
                        storage_domains=[t.StorageDomain(id=setup["sd"].id)]),
            interface=t.DiskInterface.VIRTIO, bootable=True, active=True))
        base = volume_of(eng, sdk, src)
        write(base, "0xaa")                                        # before the first snapshot
        s1 = src.snapshots_service().add(t.Snapshot(description="first"))
        top = volume_of(eng, sdk, src)
        assert top != base
        write(top, "0xbb")                                         # after it
        src.update(t.Vm(memory=96 * MiB))

        # the source down: a copy of the disk as it was at "first", with that snapshot's memory
        copy1 = from_snapshot(sdk, "fromfirst", s1.id)
        made.append(copy1)
        got = copy1.get()
        assert got.status == t.VmStatus.DOWN and got.memory == 64 * MiB
        f1 = volume_of(eng, sdk, copy1)
        layers = chain(f1)
        assert len(layers) == 1 and "backing-filename" not in layers[0]
        assert layers[0]["virtual-size"] == 32 * MiB
        assert holds(f1, "0xaa") and not holds(f1, "0xbb")
        assert holds(top, "0xbb")                                   # the source as it was
        nic, = copy1.nics_service().list()
        assert nic.name == "nic1" and nic.mac.address != src.nics_service().list()[0].mac.address
        assert [s.snapshot_status for s in src.snapshots_service().list()] == [t.SnapshotStatus.OK]

        # the source running: a live snapshot (after 0xbb), then copies of both snapshots while it runs
        src.start()
        s2 = src.snapshots_service().add(t.Snapshot(description="second"))
        copy2 = from_snapshot(sdk, "fromsecond", s2.id)
        made.append(copy2)
        copy3 = from_snapshot(sdk, "fromfirst2", s1.id)
        made.append(copy3)
        assert src.get().status == t.VmStatus.UP
        f2, f3 = volume_of(eng, sdk, copy2), volume_of(eng, sdk, copy3)
        assert holds(f2, "0xbb") and holds(f3, "0xaa") and not holds(f3, "0xbb")
        assert copy2.get().memory == 96 * MiB                        # "second" was taken with 96 MiB
        assert len(chain(f2)) == 1
        found = [e.description for e in system.events_service().list(search="vm=fromsecond", max=50)]
        assert "VM fromsecond was created from snapshot 'second' of VM snapsrc." in found
        job, = [j for j in system.jobs_service().list()
                if j.description == "Creating VM fromsecond from snapshot 'second' of VM snapsrc"]
        assert job.status == t.JobStatus.FINISHED
        disk = sdk.system_service().disks_service().disk_service(
            src.disk_attachments_service().list()[0].disk.id).get()
        assert disk.status == t.DiskStatus.OK                        # unlocked again

        # an unknown snapshot: a 400 naming the field, nothing made
        with pytest.raises(ovirtsdk4.Error) as e:
            from_snapshot(sdk, "nothing", "00000000-0000-4000-8000-00000000beef")
        assert e.value.code == 400 and "snapshots.snapshot" in str(e.value)
        assert not vms.list(search="name=nothing")

        # the copies need nothing of the source: remove it, start one
        src.stop()
        cleanup(src)
        assert not os.path.exists(base) and not os.path.exists(top)
        copy2.start()
        assert f2 in live_xml(eng, setup, copy2)
    finally:
        for svc in made:
            cleanup(svc)
        cleanup(src)
