"""Snapshot preview, commit and undo on real libvirt: what the SDK calls do
to the disks' qcow2 chains in the storage domain, the snapshot list as oVirt
shows it, and what a started VM runs from."""
import os

import libvirt
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
import requests

from .test_vm_lifecycle import MiB, active_volume, cleanup, events_about, host_index, new_vm, qemu_img_info

pytestmark = [pytest.mark.slow, pytest.mark.root]


def call(engine, token, path, body):
    return requests.post(f"{engine.url}{path}", data=body, timeout=120,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml",
                                  "Accept": "application/xml"})


def backing(path):
    b = qemu_img_info(path).get("backing-filename")
    return os.path.basename(b) if b else None


def listed(snaps):
    return [(x.description, x.snapshot_status, x.snapshot_type) for x in snaps.list()]


def test_preview_then_undo_then_preview_then_commit(sdk, engine, token, cluster_setup):
    svc = new_vm(sdk, cluster_setup, "prev1")
    disks = sdk.system_service().disks_service()
    try:
        vm_id = svc.get().id
        disk_id = svc.disk_attachments_service().list()[0].disk.id
        disk = lambda: disks.disk_service(disk_id).get()   # noqa: E731
        base = active_volume(engine, disk())
        snaps = svc.snapshots_service()
        s1 = snaps.add(t.Snapshot(description="first"))
        top1 = active_volume(engine, disk())
        svc.update(t.Vm(memory=96 * MiB))
        s2 = snaps.add(t.Snapshot(description="second"))
        top2 = active_volume(engine, disk())
        assert backing(top2) == os.path.basename(top1) and backing(top1) == os.path.basename(base)

        # refused: an unknown snapshot, memory, a running VM
        r = call(engine, token, f"/vms/{vm_id}/previewsnapshot",
                 '<action><snapshot id="00000000-0000-0000-0000-00000000beef"/></action>')
        assert r.status_code == 404, r.text
        r = call(engine, token, f"/vms/{vm_id}/previewsnapshot",
                 f'<action><restore_memory>true</restore_memory><snapshot id="{s1.id}"/></action>')
        assert r.status_code == 400 and "restore_memory" in r.text, r.text
        r = call(engine, token, f"/vms/{vm_id}/previewsnapshot",
                 f'<action><snapshot id="{s1.id}"/><disks><disk id="{disk_id}"/></disks></action>')
        assert r.status_code == 400 and "disks: not supported yet" in r.text, r.text
        for action in ("commitsnapshot", "undosnapshot"):
            r = call(engine, token, f"/vms/{vm_id}/{action}", "<action/>")
            assert r.status_code == 409 and "not previewing a snapshot" in r.text, r.text
        svc.start()
        with pytest.raises(ovirtsdk4.Error) as e:
            svc.preview_snapshot(snapshot=t.Snapshot(id=s1.id), restore_memory=False)
        assert e.value.code == 409 and "while it is down" in str(e.value)
        svc.stop()

        # preview the first snapshot: a fresh overlay on its volume, the rest kept
        svc.preview_snapshot(snapshot=t.Snapshot(id=s1.id), restore_memory=False)
        preview = active_volume(engine, disk())
        assert preview not in (base, top1, top2)
        assert backing(preview) == os.path.basename(base)
        assert os.path.exists(top1) and os.path.exists(top2)
        assert listed(snaps) == [("first", t.SnapshotStatus.IN_PREVIEW, t.SnapshotType.REGULAR),
                                 ("second", t.SnapshotStatus.OK, t.SnapshotType.REGULAR),
                                 ("Active VM before the preview", t.SnapshotStatus.OK, t.SnapshotType.PREVIEW)]
        assert svc.get().memory == 64 * MiB                   # the snapshot's configuration
        assert events_about(sdk, "prev1", "is previewing snapshot 'first'")

        # refused while in preview: another preview, a snapshot, removing the previewed one
        with pytest.raises(ovirtsdk4.Error) as e:
            svc.preview_snapshot(snapshot=t.Snapshot(id=s2.id))
        assert e.value.code == 409 and "previewing snapshot 'first'" in str(e.value)
        with pytest.raises(ovirtsdk4.Error) as e:
            snaps.add(t.Snapshot(description="third"))
        assert e.value.code == 409
        with pytest.raises(ovirtsdk4.Error) as e:
            snaps.snapshot_service(s1.id).remove()
        assert e.value.code == 409

        # the VM runs from the preview
        svc.start()
        idx = host_index(cluster_setup, svc.get().host.id)
        conn = libvirt.open(engine.hosts[idx].uri)
        try:
            xml = conn.lookupByName("prev1").XMLDesc()
        finally:
            conn.close()
        assert preview in xml and top2 not in xml
        with pytest.raises(ovirtsdk4.Error) as e:
            svc.undo_snapshot()
        assert e.value.code == 409 and "while it is down" in str(e.value)
        svc.stop()

        # undo: back to the volumes and memory before the preview; the preview's layer is deleted
        svc.undo_snapshot()
        assert active_volume(engine, disk()) == top2
        assert not os.path.exists(preview)
        assert listed(snaps) == [("first", t.SnapshotStatus.OK, t.SnapshotType.REGULAR),
                                 ("second", t.SnapshotStatus.OK, t.SnapshotType.REGULAR)]
        assert svc.get().memory == 96 * MiB
        assert events_about(sdk, "prev1", "back where it was before the preview")

        # preview again, then commit: the first snapshot is where the VM is now
        svc.preview_snapshot(snapshot=t.Snapshot(id=s1.id), restore_memory=False)
        preview = active_volume(engine, disk())
        svc.commit_snapshot()
        assert active_volume(engine, disk()) == preview
        assert backing(preview) == os.path.basename(base)
        assert not os.path.exists(top1) and not os.path.exists(top2)   # only the dropped snapshot needed them
        assert os.path.exists(base)
        assert listed(snaps) == [("first", t.SnapshotStatus.OK, t.SnapshotType.REGULAR)]
        assert svc.get().memory == 64 * MiB
        assert events_about(sdk, "prev1", "was committed to snapshot 'first'; 1 later snapshot(s) removed")
        with pytest.raises(ovirtsdk4.Error) as e:
            svc.commit_snapshot()
        assert e.value.code == 409

        svc.start()   # boots from the committed chain
        assert svc.get().status == t.VmStatus.UP
    finally:
        cleanup(svc)


def test_preview_of_an_unknown_vm_is_404(engine, token, cluster_setup):
    r = call(engine, token, "/vms/00000000-0000-0000-0000-00000000dead/previewsnapshot",
             '<action><snapshot id="00000000-0000-0000-0000-00000000beef"/></action>')
    assert r.status_code == 404
