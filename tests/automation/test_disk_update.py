"""A disk's update as oVirt's SDK sends it (DiskService.update: PUT /disks/{id})
and as ovirt.ovirt's ovirt_disk does it, against a real engine and real
libvirt hosts: a rename read back, a down VM's disk grown through the
storage pool, a running VM's disk grown through its domain (qemu's own view
of the disk changes), a shrink refused with nothing changed. What happened is checked where it happened: the qcow2
file's virtual size and libvirt's block info of the running domain."""
import json
import os
import subprocess
import textwrap

import libvirt
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
import requests

from harness.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]
MiB = 2 ** 20
PASSWORD = "keel-test-pw"


@pytest.fixture(scope="module")
def sdk(auto_engine):
    conn = ovirtsdk4.Connection(url=auto_engine.url, username="admin@internal", password=PASSWORD)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def storage_domain(auto_engine, sdk):
    """The Default data center with both hosts up and the storage domain
    `data`: the ones the admin playbook made if it ran first; else made here
    and removed again afterwards, so that the playbook finds the engine empty."""
    system = sdk.system_service()
    made_here = not system.data_centers_service().list(search="name=Default")
    if made_here:
        dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
        system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
        for i, host in enumerate(auto_engine.hosts):
            system.hosts_service().add(t.Host(name=f"h{i + 1}", address=host.address, root_password="unused",
                                              cluster=t.Cluster(name="Default")))
    hosts = system.hosts_service()
    wait_for(lambda: len([h for h in hosts.list() if h.status == t.HostStatus.UP]) == 2, 120, what="hosts up")
    dc, = system.data_centers_service().list(search="name=Default")
    sds = system.storage_domains_service().list(search="name=data")
    if not sds:
        sds = [system.storage_domains_service().add(t.StorageDomain(
            name="data", type=t.StorageDomainType.DATA, data_center=t.DataCenter(id=dc.id),
            storage=t.HostStorage(type=t.StorageType.POSIXFS, path=auto_engine.storage), host=t.Host(name="h1")))]
    attached = system.data_centers_service().data_center_service(dc.id).storage_domains_service() \
        .storage_domain_service(sds[0].id)
    wait_for(lambda: attached.get().status == t.StorageDomainStatus.ACTIVE, 120, what="storage domain active")
    yield sds[0]
    if not made_here:
        return
    attached.deactivate()
    wait_for(lambda: attached.get().status == t.StorageDomainStatus.MAINTENANCE, 120, what="storage maintenance")
    attached.remove()
    system.storage_domains_service().storage_domain_service(sds[0].id).remove()
    for host in hosts.list():
        hosts.host_service(host.id).deactivate()
    wait_for(lambda: all(h.status == t.HostStatus.MAINTENANCE for h in hosts.list()), 120, what="hosts maintenance")
    for host in hosts.list():
        hosts.host_service(host.id).remove()
    cluster, = system.clusters_service().list(search="name=Default")
    system.clusters_service().cluster_service(cluster.id).remove()
    system.data_centers_service().data_center_service(dc.id).remove()
    # a later storage domain on the same directory finds the removed one's
    # transient pool on the hosts and drops it (virt.ensure_pool)


@pytest.fixture
def vm_with_disk(sdk, storage_domain, request):
    """A down VM (Blank) with one 32 MiB disk; (VM service, disk service)."""
    name = f"rs-{request.node.name[5:20].replace('_', '-')}"
    vms = sdk.system_service().vms_service()
    vm = vms.add(t.Vm(name=name, cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                      memory=64 * MiB))
    vm_service = vms.vm_service(vm.id)
    att = vm_service.disk_attachments_service().add(t.DiskAttachment(
        disk=t.Disk(name=f"{name}_d1", provisioned_size=32 * MiB, format=t.DiskFormat.COW,
                    storage_domains=[t.StorageDomain(id=storage_domain.id)]),
        interface=t.DiskInterface.VIRTIO, bootable=True, active=True))
    disk_service = sdk.system_service().disks_service().disk_service(att.disk.id)
    wait_for(lambda: disk_service.get().status == t.DiskStatus.OK, 120, what="disk ok")
    wait_for(lambda: vm_service.get().status == t.VmStatus.DOWN, 120, what="VM down")
    yield vm_service, disk_service
    try:
        if vm_service.get().status != t.VmStatus.DOWN:
            vm_service.stop()
            wait_for(lambda: vm_service.get().status == t.VmStatus.DOWN, 120, what="VM down")
        vm_service.remove()
    except ovirtsdk4.NotFoundError:
        pass


def volume_file(auto_engine, disk):
    return os.path.join(auto_engine.storage, f"{disk.id}.{disk.image_id}.qcow2")


def virtual_size(path):
    # -U: a running qemu holds the image's lock
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["virtual-size"]


def events_of_type(sdk, code):
    return sdk.system_service().events_service().list(search=f"type={code}", max=500)


def test_a_down_vms_disk_is_renamed_and_grows_through_the_pool(auto_engine, sdk, vm_with_disk):
    vm_service, disk_service = vm_with_disk
    before = disk_service.get()
    assert virtual_size(volume_file(auto_engine, before)) == 32 * MiB
    extended_before = len(events_of_type(sdk, 371))

    disk_service.update(t.Disk(name=f"{before.name}_big", description="grown once",
                               provisioned_size=64 * MiB))

    after = disk_service.get()
    assert (after.name, after.description, after.provisioned_size) == (f"{before.name}_big", "grown once",
                                                                        64 * MiB)
    assert after.status == t.DiskStatus.OK
    # the qcow2 the VM will boot from says so, not only the database
    assert virtual_size(volume_file(auto_engine, after)) == 64 * MiB
    assert vm_service.get().status == t.VmStatus.DOWN     # free again after the job
    assert len(events_of_type(sdk, 371)) == extended_before + 1
    assert any(f"{before.name}_big" in e.description for e in events_of_type(sdk, 88))

    # the rename is what a search finds (as ovirt_disk looks a disk up by name)
    found = sdk.system_service().disks_service().list(search=f"name={before.name}_big")
    assert [d.id for d in found] == [before.id]


def test_a_shrink_is_refused_and_nothing_changes(auto_engine, sdk, vm_with_disk):
    _vm_service, disk_service = vm_with_disk
    before = disk_service.get()
    with pytest.raises(ovirtsdk4.Error) as refused:
        disk_service.update(t.Disk(name=f"{before.name}_small", provisioned_size=16 * MiB))
    assert "409" in str(refused.value) and "shrink" in str(refused.value)
    after = disk_service.get()
    assert (after.name, after.provisioned_size, after.status) == (before.name, 32 * MiB, t.DiskStatus.OK)
    assert virtual_size(volume_file(auto_engine, after)) == 32 * MiB


def test_a_running_vms_disk_grows_live_through_its_domain(auto_engine, sdk, vm_with_disk):
    vm_service, disk_service = vm_with_disk
    vm_service.start()
    wait_for(lambda: vm_service.get().status == t.VmStatus.UP, 180, what="VM up")
    vm = vm_service.get()
    disk = disk_service.get()
    path = volume_file(auto_engine, disk)

    # JSON this time, as a script with requests would send it
    token = requests.post(auto_engine.url.replace("/api", "/sso/oauth/token"), timeout=30, data={
        "grant_type": "password", "username": "admin@internal", "password": PASSWORD}).json()["access_token"]
    r = requests.put(f"{auto_engine.url}/disks/{disk.id}", timeout=120,
                     json={"provisioned_size": str(96 * MiB)},
                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["provisioned_size"] == str(96 * MiB) and r.json()["status"] == "ok"

    # qemu itself sees the new size: the running domain's block info, from the host's libvirt
    host_address = next(h.address for h in sdk.system_service().hosts_service().list() if h.id == vm.host.id)
    conn = libvirt.open(f"qemu+tcp://{host_address}/system")
    try:
        capacity = conn.lookupByUUIDString(vm.id).blockInfo(path)[0]
    finally:
        conn.close()
    assert capacity == 96 * MiB
    assert virtual_size(path) == 96 * MiB
    assert vm_service.get().status == t.VmStatus.UP
    assert disk_service.get().provisioned_size == 96 * MiB


def test_ovirt_disk_renames_and_grows_a_vms_disk(auto_engine, ansible_playbook, sdk, vm_with_disk, tmp_path):
    vm_service, disk_service = vm_with_disk
    vm, disk = vm_service.get(), disk_service.get()
    playbook = tmp_path / "grow.yml"
    # the task as an administrator writes it for an attached disk: by VM and name, the new size
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - ovirt.ovirt.ovirt_auth:
                url: "{auto_engine.url}"
                username: admin@internal
                password: "{PASSWORD}"
                insecure: true
            - ovirt.ovirt.ovirt_disk:
                auth: "{{{{ ovirt_auth }}}}"
                id: "{disk.id}"
                name: "{disk.name}_grown"
                vm_name: "{vm.name}"
                size: 80MiB
                format: cow
                interface: virtio
                bootable: true
                storage_domain: data
              register: grown
            - ansible.builtin.copy:
                content: "{{{{ grown.changed }}}}"
                dest: "{tmp_path}/changed"
        """))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False",
           "ANSIBLE_PYTHON_INTERPRETER": os.path.join(os.path.dirname(ansible_playbook), "python")}
    run = subprocess.run([ansible_playbook, str(playbook)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert (tmp_path / "changed").read_text() == "True"
    after = disk_service.get()
    assert (after.name, after.provisioned_size, after.status) == (f"{disk.name}_grown", 80 * MiB, t.DiskStatus.OK)
    assert virtual_size(volume_file(auto_engine, after)) == 80 * MiB
    # the same task again changes nothing (what the module compares is what Keel reports)
    run = subprocess.run([ansible_playbook, str(playbook)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert (tmp_path / "changed").read_text() == "False"
    assert disk_service.get().provisioned_size == 80 * MiB
