"""The guest agent end to end: a real engine (serve and worker) with two real
libvirtd hosts, a VM made through the REST API that boots the test guest's
kernel directly (os.kernel, os.initrd, os.cmdline; no disk) with a NIC on
ovirtmgmt, whose qemu-guest-agent the worker's monitor asks. Its host name,
operating system and address appear on the VM, its reported devices and its
NIC's, as oVirt's SDK reads them; and are gone once the VM is stopped."""
import os
import subprocess

import libvirt
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
from keel_engine.services import guest_info

from . import enginestack
from harness.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]
MiB = 2 ** 20
HOSTS = ["127.0.14.11", "127.0.14.12"]
LISTEN = "127.0.14.10:8080"
BRIDGE = "keelga14"
# eth0 of the guest (keel.ip): on a bridge of its own, reaching nothing
GUEST_IP = "127.0.14.50"
PASSWORD = "keel-test-pw"


@pytest.fixture(scope="module")
def guest_image():
    from keel_lab import guest_image
    return guest_image.build()


@pytest.fixture(scope="module")
def bridge():
    """A bridge without addresses or ports: the VM's NIC on ovirtmgmt plugs into it."""
    subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)   # a killed run's
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    yield BRIDGE
    subprocess.run(["ip", "link", "del", BRIDGE], check=False)


@pytest.fixture(scope="module")
def engine(bridge):
    with enginestack.engine_with_hosts("keel-ga-", HOSTS, LISTEN, first_index=4,
                                       libvirt__bridge_map=f"ovirtmgmt:{bridge}", monitor__interval=2,
                                       engine__request_wait=60) as eng:
        yield eng


@pytest.fixture(scope="module")
def sdk(engine):
    conn = ovirtsdk4.Connection(url=engine.url, username="admin@internal", password=PASSWORD)
    system = conn.system_service()
    dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
    system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
    for i, address in enumerate(HOSTS):
        system.hosts_service().add(t.Host(name=f"h{i + 1}", address=address, root_password="unused",
                                          cluster=t.Cluster(name="Default")))
    hosts = system.hosts_service()
    wait_for(lambda: all(h.status == t.HostStatus.UP for h in hosts.list()), 180, what="hosts up")
    yield conn
    conn.close()


def _worker_log(engine, needle):
    with open(os.path.join(engine.root, "worker.log")) as f:
        return "".join(line for line in f if needle in line)


def _addresses(devices):
    return {ip.address for d in devices for ip in (d.ips or [])}


def test_what_the_guest_agent_reports_shows_on_the_vm_and_goes_when_it_stops(engine, sdk, guest_image):
    system = sdk.system_service()
    vms = system.vms_service()
    vm = vms.add(t.Vm(name="ga1", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                      memory=256 * MiB, os=t.OperatingSystem(
                          type="other_linux", kernel=guest_image.kernel, initrd=guest_image.initrd,
                          cmdline=f"{guest_image.cmdline} keel.ip={GUEST_IP}/24")))
    svc = vms.vm_service(vm.id)
    mgmt, = system.networks_service().list(search="name=ovirtmgmt")
    nic = svc.nics_service().add(t.Nic(name="nic1", vnic_profile=t.VnicProfile(id=mgmt.id)))
    nic_svc = svc.nics_service().nic_service(nic.id)
    try:
        svc.start()
        wait_for(lambda: svc.get().status == t.VmStatus.UP, 180, what="VM up")
        # the guest boots under TCG, then its agent starts; the monitor asks every few seconds
        try:
            got = wait_for(lambda: (lambda v: v if v.fqdn else None)(svc.get()), 300, interval=2,
                           what="the guest agent's report on the VM")
        except AssertionError as e:
            raise AssertionError(f"{e}\nworker's log on guest agents:\n{_worker_log(engine, 'keel.engine.guest')}")
        assert got.fqdn == "keel-guest"
        gos = got.guest_operating_system
        assert gos.distribution == "Keel test guest" and gos.family == "Linux"   # os-release NAME (ID keel-test-guest)
        assert gos.architecture == "x86_64" and gos.version.full_version == "1"
        assert gos.kernel.version.full_version.endswith("-cloud-amd64")
        assert (got.guest_time_zone.name, got.guest_time_zone.utc_offset) == ("UTC", "+00:00")
        devices = wait_for(lambda: (lambda d: d if GUEST_IP in _addresses(d) else None)(
            svc.reported_devices_service().list()), 120, interval=2, what="the guest's address reported")
        eth0, = [d for d in devices if GUEST_IP in _addresses([d])]
        assert eth0.type == t.ReportedDeviceType.NETWORK and eth0.mac.address == nic.mac.address
        assert (GUEST_IP, t.IpVersion.V4) in {(ip.address, ip.version) for ip in eth0.ips}
        assert [d.name for d in nic_svc.reported_devices_service().list()] == [eth0.name]
        # fetch_nested (ovirt_vm_info, ovirt_nic_info) follows the links the VM and its NICs carry
        assert GUEST_IP in _addresses(sdk.follow_link(svc.get().reported_devices))
        assert GUEST_IP in _addresses(sdk.follow_link(nic_svc.get().reported_devices))
        said = _worker_log(engine, "VM ga1: its guest agent answers").splitlines()
        assert len(said) == 1, said
        # the cheap look that spares agentless guests a failing call: libvirt tells the channel's state
        address = system.hosts_service().host_service(got.host.id).get().address
        conn = libvirt.open(next(h.uri for h in engine.hosts if h.address == address))
        try:
            assert guest_info.agent_connected(conn.lookupByUUIDString(vm.id).XMLDesc(0)) is True
        finally:
            conn.close()

        svc.stop()
        wait_for(lambda: svc.get().status == t.VmStatus.DOWN, 120, what="VM down")
        down = svc.get()
        assert down.fqdn is None and down.guest_operating_system is None and down.guest_time_zone is None
        assert svc.reported_devices_service().list() == []
        assert nic_svc.reported_devices_service().list() == []
    finally:
        if svc.get().status != t.VmStatus.DOWN:
            svc.stop()
        svc.remove()
