"""VM lifecycle on real libvirt: two libvirtd daemons (own mount namespaces,
TCP on 127.0.1.11/12), domains of type 'qemu', qcow2 disks in a shared
directory pool, the engine and its worker as real processes."""
import json
import os
import subprocess
import threading

import libvirt
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
import requests

from harness.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]
MiB = 2 ** 20


def domains_on(engine):
    """{host index: set of running domain names}, straight from libvirt."""
    out = {}
    for i, h in enumerate(engine.hosts):
        conn = libvirt.open(h.uri)
        try:
            out[i] = {d.name() for d in conn.listAllDomains() if d.isActive()}
        finally:
            conn.close()
    return out


def host_index(cluster_setup, host_id):
    return [h.id for h in cluster_setup["hosts"]].index(host_id)


def new_vm(sdk, cluster_setup, name, disk=True, template="Blank"):
    vms = sdk.system_service().vms_service()
    vm = vms.add(t.Vm(name=name, cluster=t.Cluster(name="Default"), template=t.Template(name=template),
                      memory=64 * MiB))
    if disk:
        vms.vm_service(vm.id).disk_attachments_service().add(t.DiskAttachment(
            disk=t.Disk(name=f"{name}_d1", provisioned_size=32 * MiB, format=t.DiskFormat.COW,
                        storage_domains=[t.StorageDomain(id=cluster_setup["sd"].id)]),
            interface=t.DiskInterface.VIRTIO, bootable=True, active=True))
    return vms.vm_service(vm.id)


def vm_status(svc):
    return svc.get().status


def wait_status(svc, status, timeout=60):
    return wait_for(lambda: svc.get().status == status, timeout, what=f"VM status {status}")


def cleanup(svc):
    try:
        if svc.get().status != t.VmStatus.DOWN:
            svc.stop()
        svc.remove()
    except ovirtsdk4.NotFoundError:
        pass


def qemu_img_info(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def active_volume(engine, disk):
    return os.path.join(engine.storage, f"{disk.id}.{disk.image_id}.qcow2")


def events_about(sdk, vm_name, text):
    return [e for e in sdk.system_service().events_service().list(search=f"vm={vm_name}", max=200)
            if text in e.description]


def test_start_runs_a_real_domain_and_stop_removes_it(sdk, engine, cluster_setup):
    svc = new_vm(sdk, cluster_setup, "life1")
    try:
        svc.start()
        vm = svc.get()
        assert vm.status == t.VmStatus.UP
        idx = host_index(cluster_setup, vm.host.id)
        assert "life1" in domains_on(engine)[idx]
        conn = libvirt.open(engine.hosts[idx].uri)
        xml = conn.lookupByName("life1").XMLDesc()
        conn.close()
        disk = svc.disk_attachments_service().list()[0].disk
        disk = sdk.system_service().disks_service().disk_service(disk.id).get()
        assert active_volume(engine, disk) in xml
        assert "type='qemu'" in xml or 'type="qemu"' in xml
        with pytest.raises(ovirtsdk4.Error) as e:
            svc.start()
        assert e.value.code == 409 and "only a down VM can be started" in e.value.fault.detail
        svc.stop()
        assert svc.get().status == t.VmStatus.DOWN
        assert "life1" not in domains_on(engine)[idx]
        assert events_about(sdk, "life1", "was started on host")
        assert events_about(sdk, "life1", "was powered off")
    finally:
        cleanup(svc)


def test_scheduler_spreads_vms_evenly(sdk, engine, cluster_setup):
    a, b = new_vm(sdk, cluster_setup, "even1", disk=False), new_vm(sdk, cluster_setup, "even2", disk=False)
    try:
        a.start()
        b.start()
        assert a.get().host.id != b.get().host.id
    finally:
        cleanup(a)
        cleanup(b)


def test_concurrent_starts_only_one_wins(sdk, engine, cluster_setup, token):
    svc = new_vm(sdk, cluster_setup, "race1", disk=False)
    vm_id = svc.get().id
    codes = []
    barrier = threading.Barrier(3)

    def start():
        barrier.wait()
        r = requests.post(f"{engine.url}/vms/{vm_id}/start", data="<action/>", timeout=120,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml"})
        codes.append(r.status_code)
    threads = [threading.Thread(target=start) for _ in range(3)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(codes) == [200, 409, 409]
        running = [i for i, names in domains_on(engine).items() if "race1" in names]
        assert len(running) == 1
    finally:
        cleanup(svc)


def test_shutdown_of_guest_that_ignores_acpi_ends_powered_off(sdk, engine, cluster_setup):
    # The guest has no OS, so it ignores the ACPI request; after the
    # configured shutdown timeout (4 s in the test config) the monitor powers it off.
    svc = new_vm(sdk, cluster_setup, "shut1", disk=False)
    try:
        svc.start()
        svc.shutdown()
        assert svc.get().status in (t.VmStatus.POWERING_DOWN, t.VmStatus.DOWN)
        wait_status(svc, t.VmStatus.DOWN, timeout=90)
        assert "shut1" not in set().union(*domains_on(engine).values())
        assert events_about(sdk, "shut1", "did not shut down within")
    finally:
        cleanup(svc)


def test_live_migration_between_hosts(sdk, engine, cluster_setup):
    svc = new_vm(sdk, cluster_setup, "mig1")
    h1, h2 = cluster_setup["hosts"]
    try:
        svc.start(vm=t.Vm(placement_policy=t.VmPlacementPolicy(hosts=[t.Host(id=h1.id)])))
        assert svc.get().host.id == h1.id
        svc.migrate(host=t.Host(id=h2.id))
        vm = svc.get()
        assert vm.status == t.VmStatus.UP and vm.host.id == h2.id
        on = domains_on(engine)
        assert "mig1" in on[1] and "mig1" not in on[0]
        svc.migrate()   # scheduler's choice: the only other host
        assert svc.get().host.id == h1.id
        assert len(events_about(sdk, "mig1", "completed")) == 2
    finally:
        cleanup(svc)


def test_monitor_notices_a_domain_killed_outside_keel(sdk, engine, cluster_setup):
    svc = new_vm(sdk, cluster_setup, "kill1", disk=False)
    try:
        svc.start()
        idx = host_index(cluster_setup, svc.get().host.id)
        conn = libvirt.open(engine.hosts[idx].uri)
        conn.lookupByName("kill1").destroy()
        conn.close()
        wait_status(svc, t.VmStatus.DOWN, timeout=60)
        evs = [e.description for e in sdk.system_service().events_service().list(max=15)]
        assert events_about(sdk, "kill1", "not running on host"), evs
    finally:
        cleanup(svc)


def test_snapshots_live_and_down_and_restore(sdk, engine, cluster_setup):
    svc = new_vm(sdk, cluster_setup, "snap1")
    disks = sdk.system_service().disks_service()
    try:
        disk_id = svc.disk_attachments_service().list()[0].disk.id
        base = active_volume(engine, disks.disk_service(disk_id).get())
        snaps = svc.snapshots_service()
        s1 = snaps.add(t.Snapshot(description="cold"))        # VM down: a new overlay
        svc.start()
        s2 = snaps.add(t.Snapshot(description="live"))        # VM up: libvirt pivots qemu
        top = active_volume(engine, disks.disk_service(disk_id).get())
        assert top != base
        idx = host_index(cluster_setup, svc.get().host.id)
        conn = libvirt.open(engine.hosts[idx].uri)
        assert top in conn.lookupByName("snap1").XMLDesc()    # the running qemu writes the new top
        conn.close()
        chain = qemu_img_info(top)
        assert chain["backing-filename"].endswith(".qcow2")
        assert [x.description for x in snaps.list()] == ["cold", "live"]
        with pytest.raises(ovirtsdk4.Error) as e:
            snaps.snapshot_service(s1.id).restore()
        assert e.value.code == 409
        svc.stop()
        snaps.snapshot_service(s1.id).restore()
        restored = active_volume(engine, disks.disk_service(disk_id).get())
        assert os.path.basename(qemu_img_info(restored)["backing-filename"]) == \
            os.path.basename(qemu_img_info(active_volume_after_cold(engine, disk_id, s1, base))["filename"])
        assert [x.description for x in snaps.list()] == ["cold"]   # later snapshot dropped
        assert not os.path.exists(top)                             # its layer was deleted
        snaps.snapshot_service(s1.id).remove()
        assert snaps.list() == []
        svc.start()   # still boots from the restored chain
        assert svc.get().status == t.VmStatus.UP
    finally:
        cleanup(svc)


def active_volume_after_cold(engine, disk_id, _snap, base):
    """The volume the cold snapshot froze is the disk's first volume (base)."""
    return base


def test_thin_template_and_vm_from_it(sdk, engine, cluster_setup):
    src = new_vm(sdk, cluster_setup, "tsrc1")
    templates = sdk.system_service().templates_service()
    disks = sdk.system_service().disks_service()
    vm2 = None
    try:
        tpl = templates.add(t.Template(name="tiny", vm=t.Vm(id=src.get().id)))
        tdisks = templates.template_service(tpl.id).disk_attachments_service().list()
        assert len(tdisks) == 1
        tvol = active_volume(engine, disks.disk_service(tdisks[0].disk.id).get())
        assert "backing-filename" not in qemu_img_info(tvol)      # a flat, independent copy
        vm2 = sdk.system_service().vms_service()
        made = vm2.add(t.Vm(name="fromtpl1", cluster=t.Cluster(name="Default"), template=t.Template(name="tiny")))
        vm2 = vm2.vm_service(made.id)
        assert made.memory == 64 * MiB
        d = vm2.disk_attachments_service().list()[0]
        assert d.bootable is True
        vol = active_volume(engine, disks.disk_service(d.disk.id).get())
        info = qemu_img_info(vol)
        assert info["backing-filename"] == tvol                   # thin: overlay on the template
        with pytest.raises(ovirtsdk4.Error) as e:
            templates.template_service(tpl.id).remove()
        assert e.value.code == 409 and "fromtpl1" in e.value.fault.detail
        vm2.start()
        assert vm2.get().status == t.VmStatus.UP
        cleanup(vm2)
        vm2 = None
        templates.template_service(tpl.id).remove()
        assert not os.path.exists(tvol)
    finally:
        if vm2 is not None:
            cleanup(vm2)
        cleanup(src)


def test_maintenance_migrates_vms_away_then_activate(sdk, engine, cluster_setup):
    h1, h2 = cluster_setup["hosts"]
    hosts = sdk.system_service().hosts_service()
    svc = new_vm(sdk, cluster_setup, "evac1")
    try:
        svc.start(vm=t.Vm(placement_policy=t.VmPlacementPolicy(hosts=[t.Host(id=h1.id)])))
        hosts.host_service(h1.id).deactivate()
        wait_for(lambda: hosts.host_service(h1.id).get().status == t.HostStatus.MAINTENANCE, 120,
                 what="h1 in maintenance")
        vm = svc.get()
        assert vm.status == t.VmStatus.UP and vm.host.id == h2.id
        assert "evac1" in domains_on(engine)[1]
        # h2 is now the only host: its VM has nowhere to go, so maintenance is refused
        with pytest.raises(ovirtsdk4.Error) as e:
            hosts.host_service(h2.id).deactivate()
        assert e.value.code == 409 and "no host can run VM evac1" in e.value.fault.detail
        assert hosts.host_service(h2.id).get().status == t.HostStatus.UP
        # a VM cannot be started on a host in maintenance
        with pytest.raises(ovirtsdk4.Error):
            svc.migrate(host=t.Host(id=h1.id))
        hosts.host_service(h1.id).activate()
        assert hosts.host_service(h1.id).get().status == t.HostStatus.UP
    finally:
        cleanup(svc)
        if hosts.host_service(h1.id).get().status != t.HostStatus.UP:
            hosts.host_service(h1.id).activate()


def test_host_goes_non_responsive_and_comes_back(sdk, engine, cluster_setup, tmp_path):
    from . import libvirt_hosts
    extra = libvirt_hosts.LibvirtHost(str(tmp_path / "h3"), "127.0.1.13", 3)
    extra.start()
    extra.wait_ready()
    hosts = sdk.system_service().hosts_service()
    h3 = None
    try:
        h3 = hosts.add(t.Host(name="h3", address="127.0.1.13", cluster=t.Cluster(name="Default")))
        extra.stop()
        wait_for(lambda: hosts.host_service(h3.id).get().status == t.HostStatus.NON_RESPONSIVE, 60,
                 what="h3 non_responsive")
        extra.start()
        extra.wait_ready()
        wait_for(lambda: hosts.host_service(h3.id).get().status == t.HostStatus.UP, 60, what="h3 up again")
        evs = [e.description for e in sdk.system_service().events_service().list(search="host=h3")]
        assert any("from up to non_responsive" in d for d in evs)
        assert any("from non_responsive to up" in d for d in evs)
    finally:
        if h3 is not None:
            svc = hosts.host_service(h3.id)
            if svc.get().status == t.HostStatus.UP:
                svc.deactivate()
                wait_for(lambda: svc.get().status == t.HostStatus.MAINTENANCE, 30, what="h3 maintenance")
            svc.remove()
        extra.stop()




def test_an_async_migration_answers_at_once_and_its_job_tells_the_end(sdk, engine, cluster_setup, token):
    """oVirt's async: the request records the migration and answers 202 with the
    job; the engine worker carries it out; the job says how it ended."""
    svc = new_vm(sdk, cluster_setup, "amig1", disk=False)
    h1, h2 = cluster_setup["hosts"]
    hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml", "Accept": "application/json"}
    try:
        svc.start(vm=t.Vm(placement_policy=t.VmPlacementPolicy(hosts=[t.Host(id=h1.id)])))
        vm_id = svc.get().id
        r = requests.post(f"{engine.url}/vms/{vm_id}/migrate", headers=hdr, timeout=30,
                          data=f'<action><async>true</async><host id="{h2.id}"/></action>')
        assert r.status_code == 202 and r.json()["status"] == "pending", r.text
        job_url = f"{engine.url}/jobs/{r.json()['job']['id']}"
        job = wait_for(lambda: (j := requests.get(job_url, headers=hdr, timeout=30).json())["status"] != "started"
                       and j, 120, what="the migration job to end")
        assert job["status"] == "finished", job
        assert [st["description"] for st in job["steps"]["step"]] == ["Live migration of VM amig1 to host h2"]
        assert svc.get().host.id == h2.id and "amig1" in domains_on(engine)[1]
        # a second async start of a running VM is refused at once, not queued
        r = requests.post(f"{engine.url}/vms/{vm_id}/start?async=true", headers=hdr, data="<action/>", timeout=30)
        assert r.status_code == 409 and "only a down VM can be started" in r.text
    finally:
        cleanup(svc)
