"""What the guest agent reported, as oVirt's API shows it (columns set
directly, in-process engine on SQLite): a VM's fqdn, guest_operating_system
and guest_time_zone; its reported devices, a NIC's (matched by MAC address),
one by id, and inline when followed; read back through oVirt's SDK readers
the way ovirt_vm_info and ovirt_nic_info read them. Nothing before a report,
and nothing once the VM is down."""
import io
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest
from ovirtsdk4 import readers, types
from ovirtsdk4 import xml as sdk_xml

from harness.engineapp import admin_headers, engine_app_with_host
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, Nic, Vm

API = "/ovirt-engine/api"
MiB = 2 ** 20
OS = {"id": "debian", "name": "Debian GNU/Linux", "pretty_name": "Debian GNU/Linux 12 (bookworm)",
      "version": "12 (bookworm)", "version_id": "12", "kernel_release": "6.1.0-18-amd64", "machine": "x86_64",
      "timezone": {"name": "IST", "offset": 19800}}
ETH0 = {"name": "eth0", "mac": "52:54:00:aa:bb:01",
        "ips": [{"address": "198.51.100.15", "prefix": 24, "version": "v4"},
                {"address": "fe80::5054:ff:feaa:bb01", "prefix": 64, "version": "v6"}]}
ETH1 = {"name": "eth1", "mac": "52:54:00:aa:bb:02", "ips": []}


@pytest.fixture
def env(tmp_path):
    _cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.14.62")
    with sm() as s:
        cl = s.query(Cluster).one()
        vm = Vm(name="g1", cluster_id=cl.id, template_id=BLANK_TEMPLATE_ID, memory=64 * MiB, status="up",
                host_id=host_id)
        s.add(vm)
        s.flush()
        nics = [Nic(vm_id=vm.id, name="nic1", mac="52:54:00:aa:bb:01"), Nic(vm_id=vm.id, name="nic2",
                                                                             mac="52:54:00:aa:bb:03")]
        s.add_all(nics)
        s.commit()
        ids = {"vm": vm.id, "nic1": nics[0].id, "nic2": nics[1].id}
    return {"c": app.test_client(), "h": admin_headers(app), "sm": sm, "ids": ids}


def _report(env, fqdn="g1.example.test", os=OS, interfaces=(ETH0, ETH1)):
    with env["sm"]() as s:
        vm = s.get(Vm, env["ids"]["vm"])
        vm.guest_fqdn, vm.guest_os, vm.guest_interfaces = fqdn, os, list(interfaces)
        vm.guest_reported_at = datetime.now(timezone.utc)
        s.commit()


def get(env, path, **params):
    r = env["c"].get(API + path, headers={**env["h"], "Accept": "application/json"}, query_string=params)
    assert r.status_code == 200, r.data
    return r.get_json()


def sdk(env, path, reader, **params):
    """The XML answer as the SDK reads it (what ovirt_vm_info and ovirt_nic_info see)."""
    r = env["c"].get(API + path, headers=env["h"], query_string=params)
    assert r.status_code == 200, r.data
    return reader(sdk_xml.XmlReader(io.BytesIO(r.data)))


def test_a_vm_shows_its_guest_s_name_os_and_time_zone_as_ovirt_does(env):
    _report(env)
    vm = get(env, f"/vms/{env['ids']['vm']}")
    assert vm["fqdn"] == "g1.example.test"
    assert vm["guest_operating_system"] == {
        "architecture": "x86_64", "codename": "bookworm", "distribution": "Debian GNU/Linux", "family": "Linux",
        "kernel": {"version": {"full_version": "6.1.0-18-amd64", "major": "6", "minor": "1", "build": "0",
                               "revision": "18"}},
        "version": {"full_version": "12", "major": "12"}}
    assert vm["guest_time_zone"] == {"name": "IST", "utc_offset": "+05:30"}
    assert {"rel": "reporteddevices", "href": f"{API}/vms/{env['ids']['vm']}/reporteddevices"} in vm["link"]
    v = sdk(env, f"/vms/{env['ids']['vm']}", readers.VmReader.read_one)
    assert v.fqdn == "g1.example.test" and v.guest_time_zone.utc_offset == "+05:30"
    assert v.guest_operating_system.distribution == "Debian GNU/Linux"
    assert v.guest_operating_system.kernel.version.revision == 18 and v.guest_operating_system.version.major == 12
    assert v.reported_devices.href == f"{API}/vms/{env['ids']['vm']}/reporteddevices"   # what fetch_nested follows


def test_reported_devices_are_the_guest_s_interfaces_with_their_addresses(env):
    _report(env)
    vm = env["ids"]["vm"]
    devices = get(env, f"/vms/{vm}/reporteddevices")["reported_device"]
    assert [d["name"] for d in devices] == ["eth0", "eth1"]
    eth0 = devices[0]
    assert eth0["type"] == "network" and eth0["mac"] == {"address": "52:54:00:aa:bb:01"}
    assert eth0["ips"]["ip"] == [{"address": "198.51.100.15", "version": "v4", "netmask": "255.255.255.0"},
                                 {"address": "fe80::5054:ff:feaa:bb01", "version": "v6", "netmask": "64"}]
    assert eth0["vm"]["id"] == vm and "ips" not in devices[1]
    assert get(env, f"/vms/{vm}/reporteddevices/{eth0['id']}") == eth0
    assert get(env, f"/vms/{vm}/reporteddevices")["reported_device"][0]["id"] == eth0["id"]   # stable
    devs = sdk(env, f"/vms/{vm}/reporteddevices", readers.ReportedDeviceReader.read_many)
    assert devs[0].type == types.ReportedDeviceType.NETWORK and devs[0].mac.address == "52:54:00:aa:bb:01"
    assert [(ip.address, ip.version) for ip in devs[0].ips] == [
        ("198.51.100.15", types.IpVersion.V4), ("fe80::5054:ff:feaa:bb01", types.IpVersion.V6)]
    followed = get(env, f"/vms/{vm}", follow="reported_devices")
    assert [d["name"] for d in followed["reported_devices"]["reported_device"]] == ["eth0", "eth1"]
    listed = sdk(env, "/vms", readers.VmReader.read_many, follow="reported_devices")   # ovirt_vm_info's follow
    assert [d.name for d in listed[0].reported_devices] == ["eth0", "eth1"]
    r = env["c"].get(f"{API}/vms/{vm}/reporteddevices/00000000-0000-0000-0000-000000000001", headers=env["h"])
    assert r.status_code == 404


def test_a_nic_s_reported_devices_are_those_with_its_mac_address(env):
    _report(env)
    vm, nic1, nic2 = env["ids"]["vm"], env["ids"]["nic1"], env["ids"]["nic2"]
    mine = get(env, f"/vms/{vm}/nics/{nic1}/reporteddevices")["reported_device"]
    assert [d["name"] for d in mine] == ["eth0"]
    assert mine[0]["href"] == f"{API}/vms/{vm}/nics/{nic1}/reporteddevices/{mine[0]['id']}"
    assert get(env, f"/vms/{vm}/nics/{nic1}/reporteddevices/{mine[0]['id']}")["name"] == "eth0"
    assert get(env, f"/vms/{vm}/nics/{nic2}/reporteddevices").get("reported_device", []) == []
    nic = sdk(env, f"/vms/{vm}/nics/{nic1}", readers.NicReader.read_one)
    assert nic.reported_devices.href == f"{API}/vms/{vm}/nics/{nic1}/reporteddevices"   # fetch_nested follows it
    nics = sdk(env, f"/vms/{vm}/nics", readers.NicReader.read_many, follow="reported_devices")
    assert {n.name: [d.name for d in n.reported_devices] for n in nics} == {"nic1": ["eth0"], "nic2": []}
    one = get(env, f"/vms/{vm}/nics/{nic1}", follow="reported_devices")
    assert one["reported_devices"]["reported_device"][0]["ips"]["ip"][0]["address"] == "198.51.100.15"


def test_nothing_is_shown_before_a_report_or_once_the_vm_is_down(env):
    vm = env["ids"]["vm"]
    shown = get(env, f"/vms/{vm}")
    assert not {"fqdn", "guest_operating_system", "guest_time_zone"} & set(shown)
    xml = env["c"].get(f"{API}/vms/{vm}/reporteddevices", headers=env["h"])
    assert ET.fromstring(xml.data).tag == "reported_devices" and len(ET.fromstring(xml.data)) == 0
    _report(env)
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        v.status, v.host_id = "down", None
        s.commit()
    shown = get(env, f"/vms/{vm}")
    assert not {"fqdn", "guest_operating_system", "guest_time_zone"} & set(shown)
    assert get(env, f"/vms/{vm}/reporteddevices").get("reported_device", []) == []


def test_a_report_without_an_os_or_time_zone_shows_only_what_it_has(env):
    _report(env, os={"timezone": {"name": "", "offset": -3600}}, interfaces=())
    vm = get(env, f"/vms/{env['ids']['vm']}")
    assert "guest_operating_system" not in vm and vm["guest_time_zone"] == {"utc_offset": "-01:00"}


def test_reported_devices_cannot_be_added(env):
    r = env["c"].post(f"{API}/vms/{env['ids']['vm']}/reporteddevices", data="<reported_device/>",
                      headers={**env["h"], "Content-Type": "application/xml", "Accept": "application/json"})
    assert r.status_code == 400 and "guest agent reports" in r.get_json()["detail"]
