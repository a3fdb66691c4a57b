"""Hot-plug end to end: a real engine (serve and worker) with two real libvirtd
hosts, VMs made and started through the REST API (oVirt's SDK). A NIC and a
disk are plugged into a running test guest (keel_lab.guest_image, booted
directly) and out again, each way oVirt's clients ask (POST, PUT plugged /
active, the activate and deactivate actions, DELETE); what happened is
checked where it happened: the domain's live XML on the VM's host, and the
guest itself through its agent. A VM with no operating system ignores an
unplug request: the request is a 409 saying so and the NIC stays."""
import json
import subprocess
import time
import xml.etree.ElementTree as ET

import libvirt
import libvirt_qemu
import ovirtsdk4
import ovirtsdk4.types as t
import pytest

from keel_common import domainxml

from . import enginestack
from harness.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]
MiB = 2 ** 20
HOSTS = ["127.0.17.11", "127.0.17.12"]
LISTEN = "127.0.17.10:8080"
BRIDGE = "keelhp17"
PASSWORD = "keel-test-pw"
UNPLUG_TIMEOUT = 40         # s the engine waits for a guest to release a device
BOOT_DEADLINE = 300         # s: a TCG guest on a loaded 2-core machine, to its agent


@pytest.fixture(scope="module")
def guest_image():
    from keel_lab import guest_image
    return guest_image.build()


@pytest.fixture(scope="module")
def bridge():
    """A bridge without addresses or ports: NICs on ovirtmgmt plug into it."""
    subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)   # a killed run's
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    yield BRIDGE
    subprocess.run(["ip", "link", "del", BRIDGE], check=False)


@pytest.fixture(scope="module")
def engine(bridge):
    with enginestack.engine_with_hosts("keel-hp-", HOSTS, LISTEN, first_index=10,
                                       libvirt__bridge_map=f"ovirtmgmt:{bridge}", monitor__interval=2,
                                       engine__request_wait=120, vms__unplug_timeout=UNPLUG_TIMEOUT) as eng:
        yield eng


@pytest.fixture(scope="module")
def sdk(engine):
    """Default data center and cluster, both hosts up, the storage domain `data` active."""
    conn = ovirtsdk4.Connection(url=engine.url, username="admin@internal", password=PASSWORD)
    system = conn.system_service()
    dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
    system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
    for i, address in enumerate(HOSTS):
        system.hosts_service().add(t.Host(name=f"h{i + 1}", address=address, root_password="unused",
                                          cluster=t.Cluster(name="Default")))
    hosts = system.hosts_service()
    wait_for(lambda: all(h.status == t.HostStatus.UP for h in hosts.list()), 180, what="hosts up")
    sd = system.storage_domains_service().add(t.StorageDomain(
        name="data", type=t.StorageDomainType.DATA, data_center=t.DataCenter(id=dc.id),
        storage=t.HostStorage(type=t.StorageType.POSIXFS, path=engine.storage), host=t.Host(name="h1")))
    attached = system.data_centers_service().data_center_service(dc.id).storage_domains_service() \
        .storage_domain_service(sd.id)
    wait_for(lambda: attached.get().status == t.StorageDomainStatus.ACTIVE, 180, what="storage domain active")
    yield conn
    conn.close()


def new_vm(sdk, name, boot=None):
    """A VM from Blank with one NIC (nic1) on ovirtmgmt, started; its service once it is up."""
    system = sdk.system_service()
    vms = system.vms_service()
    vm = vms.add(t.Vm(name=name, cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                      memory=256 * MiB, os=boot))
    svc = vms.vm_service(vm.id)
    svc.nics_service().add(t.Nic(name="nic1", vnic_profile=t.VnicProfile(id=mgmt(sdk).id)))
    svc.start()
    wait_for(lambda: svc.get().status == t.VmStatus.UP, 180, what=f"VM {name} up")
    return svc


def mgmt(sdk):
    net, = sdk.system_service().networks_service().list(search="name=ovirtmgmt")
    return net


def remove_vm(svc):
    try:
        if svc.get().status != t.VmStatus.DOWN:
            svc.stop()
            wait_for(lambda: svc.get().status == t.VmStatus.DOWN, 120, what="VM down")
        svc.remove()
    except ovirtsdk4.NotFoundError:
        pass


class Live:
    """The VM's domain on its host, as libvirt has it now."""

    def __init__(self, sdk, svc):
        vm = svc.get()
        address = next(h.address for h in sdk.system_service().hosts_service().list() if h.id == vm.host.id)
        self.conn = libvirt.open(f"qemu+tcp://{address}/system")
        self.dom = self.conn.lookupByUUIDString(vm.id)

    def xml(self):
        return self.dom.XMLDesc(0)

    def macs(self):
        return {m.get("address") for m in ET.fromstring(self.xml()).findall("devices/interface/mac")}

    def disk(self, path):
        el = domainxml.find_disk(self.xml(), path)
        return None if el is None else el.find("target").get("dev")

    def agent(self, command, timeout=10):
        return json.loads(libvirt_qemu.qemuAgentCommand(self.dom, json.dumps({"execute": command}), timeout,
                                                        0))["return"]

    def guest_macs(self):
        return {i.get("hardware-address") for i in self.agent("guest-network-get-interfaces")}

    def close(self):
        self.conn.close()


def events(sdk, code, vm_name):
    return [e.description for e in sdk.system_service().events_service().list(search=f"type={code}", max=500)
            if f"VM {vm_name}" in e.description]


def test_a_nic_and_a_disk_go_into_a_running_guest_and_out_again(engine, sdk, guest_image):
    svc = new_vm(sdk, "hp1", t.OperatingSystem(type="other_linux", kernel=guest_image.kernel,
                                               initrd=guest_image.initrd, cmdline=guest_image.cmdline))
    live = Live(sdk, svc)
    try:
        wait_for(lambda: live.agent("guest-ping", 5) == {}, BOOT_DEADLINE, interval=2, what="the guest's agent")
        nic1, = svc.nics_service().list()
        wait_for(lambda: nic1.mac.address in live.guest_macs(), 60, interval=2, what="eth0 in the guest")

        # a NIC: added to the running VM, in its domain and in the guest
        nics = svc.nics_service()
        nic2 = nics.add(t.Nic(name="nic2", vnic_profile=t.VnicProfile(id=mgmt(sdk).id),
                              interface=t.NicInterface.VIRTIO))
        assert nic2.plugged is True
        mac = nic2.mac.address
        plugged = domainxml.find_interface(live.xml(), mac)
        assert plugged.find("source").get("bridge") == BRIDGE and plugged.find("model").get("type") == "virtio"
        wait_for(lambda: mac in live.guest_macs(), 120, interval=2, what="the new NIC in the guest")
        assert len(events(sdk, 1012, "hp1")) == 1

        # a new disk: made, then plugged in on the next free name of its bus
        atts = svc.disk_attachments_service()
        att = atts.add(t.DiskAttachment(
            disk=t.Disk(name="hp1_data", provisioned_size=32 * MiB, format=t.DiskFormat.COW,
                        storage_domains=[t.StorageDomain(name="data")]),
            interface=t.DiskInterface.VIRTIO, bootable=False, active=True))
        assert att.active is True
        disk = sdk.system_service().disks_service().disk_service(att.disk.id).get()
        assert disk.status == t.DiskStatus.OK
        path = f"{engine.storage}/{disk.id}.{disk.image_id}.qcow2"
        assert live.disk(path) == "vda"        # the guest boots from no disk: the first name on the bus
        wait_for(lambda: any(d.get("name") == "/dev/vda" for d in live.agent("guest-get-disks")), 120,
                 interval=2, what="vda in the guest")
        assert any("Disk hp1_data was attached to VM hp1 and plugged in on host" in e and e.endswith("as vda.")
                   for e in events(sdk, 2000, "hp1"))

        # the disk out and in again (PUT active), then detached while the VM runs
        att_svc = atts.attachment_service(att.id)
        assert att_svc.update(t.DiskAttachment(active=False)).active is False
        assert live.disk(path) is None
        wait_for(lambda: not any(d.get("name") == "/dev/vda" for d in live.agent("guest-get-disks")), 60,
                 interval=2, what="vda gone from the guest")
        # a live snapshot meanwhile: the unplugged disk gets its new layer beside the running domain
        snap = svc.snapshots_service().add(t.Snapshot(description="one disk unplugged"))
        assert snap.snapshot_status == t.SnapshotStatus.OK
        disk = sdk.system_service().disks_service().disk_service(disk.id).get()
        path = f"{engine.storage}/{disk.id}.{disk.image_id}.qcow2"
        assert att_svc.update(t.DiskAttachment(active=True)).active is True
        assert live.disk(path) == "vda"
        att_svc.remove()
        assert live.disk(path) is None
        assert [a.id for a in atts.list()] == []
        assert sdk.system_service().disks_service().disk_service(disk.id).get().status == t.DiskStatus.OK
        assert len(events(sdk, 2002, "hp1")) == 2

        # the NIC out as ovirt_nic's state: unplugged does it (deactivate), back in (PUT plugged)
        nic2_svc = nics.nic_service(nic2.id)
        nic2_svc.deactivate()
        assert nic2_svc.get().plugged is False and mac not in live.macs()
        wait_for(lambda: mac not in live.guest_macs(), 60, interval=2, what="the NIC gone from the guest")
        assert nic2_svc.update(t.Nic(plugged=True)).plugged is True
        assert mac in live.macs()
        # removing a plugged NIC unplugs it first; the one the VM started with too
        nic2_svc.remove()
        nics.nic_service(nic1.id).remove()
        assert live.macs() == set() and nics.list() == []
        assert svc.get().status == t.VmStatus.UP
    finally:
        live.close()
        remove_vm(svc)


def test_a_guest_that_does_not_release_a_nic_keeps_it_and_the_request_says_why(engine, sdk):
    svc = new_vm(sdk, "hp2")        # no operating system: nothing answers the unplug request
    live = Live(sdk, svc)
    try:
        nic1, = svc.nics_service().list()
        nic_svc = svc.nics_service().nic_service(nic1.id)
        started = time.monotonic()
        with pytest.raises(ovirtsdk4.Error) as refused:
            nic_svc.remove()
        assert time.monotonic() - started >= UNPLUG_TIMEOUT
        said = str(refused.value)
        assert "409" in said and "the guest did not release network interface nic1" in said
        assert "it stays plugged in and is not removed" in said
        assert nic_svc.get().plugged is True
        assert nic1.mac.address in live.macs()
        failed, = events(sdk, 1015, "hp2")
        assert failed.startswith("Failed to unplug network interface nic1 from VM hp2: ")

        # IDE cannot hot-plug: refused before anything is made
        before = len(sdk.system_service().disks_service().list())
        with pytest.raises(ovirtsdk4.Error) as refused:
            svc.disk_attachments_service().add(t.DiskAttachment(
                disk=t.Disk(name="hp2_ide", provisioned_size=16 * MiB, format=t.DiskFormat.COW,
                            storage_domains=[t.StorageDomain(name="data")]),
                interface=t.DiskInterface.IDE, active=True))
        assert "409" in str(refused.value) and "IDE bus" in str(refused.value)
        assert len(sdk.system_service().disks_service().list()) == before
    finally:
        live.close()
        remove_vm(svc)
