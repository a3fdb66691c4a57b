"""The API through the official oVirt Python SDK (ovirtsdk4 4.6)."""
import ovirtsdk4
import ovirtsdk4.types as t
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]
MiB = 2 ** 20


def test_api_root(sdk):
    api = sdk.system_service().get()
    assert api.product_info.name == "Keel"
    assert api.product_info.version.major == 4
    assert api.special_objects.blank_template.id == "00000000-0000-0000-0000-000000000000"
    assert api.time is not None
    assert api.summary.hosts.total >= 0


def test_blank_template_is_built_in(sdk):
    templates = sdk.system_service().templates_service().list(search="name=Blank")
    assert [x.name for x in templates] == ["Blank"]


def test_cluster_setup_through_sdk(sdk, cluster_setup):
    system = sdk.system_service()
    hosts = system.hosts_service().list()
    assert sorted(h.name for h in hosts) == ["h1", "h2"]
    assert all(h.status == t.HostStatus.UP for h in hosts)
    assert all(h.memory > 0 for h in hosts)
    sd = system.storage_domains_service().storage_domain_service(cluster_setup["sd"].id).get()
    assert sd.status == t.StorageDomainStatus.ACTIVE
    assert sd.storage.type == t.StorageType.POSIXFS
    dcs = system.data_centers_service().list(search="name=Def*")
    assert [d.name for d in dcs] == ["Default"]
    attached = system.data_centers_service().data_center_service(dcs[0].id).storage_domains_service().list()
    assert [x.name for x in attached] == ["data"]


def test_duplicate_name_is_409_fault(sdk, cluster_setup):
    with pytest.raises(ovirtsdk4.Error) as e:
        sdk.system_service().data_centers_service().add(t.DataCenter(name="Default"))
    assert e.value.code == 409
    assert "already exists" in e.value.fault.detail


def test_unknown_id_is_404(sdk):
    with pytest.raises(ovirtsdk4.NotFoundError):
        sdk.system_service().vms_service().vm_service("no-such-vm").get()


def test_host_with_unreachable_libvirt_is_refused(sdk, cluster_setup):
    with pytest.raises(ovirtsdk4.Error) as e:
        sdk.system_service().hosts_service().add(
            t.Host(name="ghost", address="127.0.1.19", cluster=t.Cluster(name="Default")))
    assert e.value.code == 409
    assert "cannot reach host ghost" in e.value.fault.detail
    assert not sdk.system_service().hosts_service().list(search="name=ghost")


def test_vm_crud_nics_disks_and_search(sdk, cluster_setup):
    vms = sdk.system_service().vms_service()
    vm = vms.add(t.Vm(name="crud1", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                      memory=96 * MiB, description="first"))
    assert vm.status == t.VmStatus.DOWN and vm.memory == 96 * MiB
    svc = vms.vm_service(vm.id)
    att = svc.disk_attachments_service().add(t.DiskAttachment(
        disk=t.Disk(name="crud1_boot", provisioned_size=64 * MiB, format=t.DiskFormat.COW,
                    storage_domains=[t.StorageDomain(id=cluster_setup["sd"].id)]),
        interface=t.DiskInterface.VIRTIO, bootable=True, active=True))
    assert att.bootable is True
    nic = svc.nics_service().add(t.Nic(name="nic1", interface=t.NicInterface.VIRTIO))
    assert nic.mac.address.startswith("56:6f:")
    updated = svc.update(t.Vm(description="second", memory=80 * MiB))
    assert updated.description == "second" and updated.memory == 80 * MiB
    found = vms.list(search="name=crud* and status=down and cluster=Default")
    assert [v.name for v in found] == ["crud1"]
    assert vms.list(search="name=crud* and status=up") == []
    assert len(vms.list(max=0)) == 0
    full = svc.get(follow="disk_attachments,nics")
    assert [n.name for n in full.nics] == ["nic1"]
    assert full.disk_attachments[0].disk.provisioned_size == 64 * MiB
    disks = sdk.system_service().disks_service().list()
    assert "crud1_boot" in [d.name for d in disks]
    svc.remove()
    assert not vms.list(search="name=crud1")
    assert "crud1_boot" not in [d.name for d in sdk.system_service().disks_service().list()]


def test_starting_a_down_vm_twice_and_stopping_a_down_vm(sdk, cluster_setup):
    vms = sdk.system_service().vms_service()
    vm = vms.add(t.Vm(name="idle1", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                      memory=64 * MiB))
    with pytest.raises(ovirtsdk4.Error) as e:
        vms.vm_service(vm.id).stop()
    assert e.value.code == 409
    vms.vm_service(vm.id).remove()


def test_events_newest_first_max_from_search_and_custom(sdk, cluster_setup):
    events = sdk.system_service().events_service()
    listed = events.list(max=5)
    assert len(listed) == 5
    ids = [int(e.id) for e in listed]
    assert ids == sorted(ids, reverse=True)
    added = events.add(t.Event(description="hello from a test", severity=t.LogSeverity.WARNING,
                               origin="pytest", custom_id=4242))
    newer = events.list(from_=ids[0])
    assert int(added.id) in [int(e.id) for e in newer]
    assert all(int(e.id) > ids[0] for e in newer)
    hits = events.list(search="severity=warning and description=hello*")
    assert [e.custom_id for e in hits] == [4242]
    host_events = events.list(search="host=h1")
    assert host_events and all(e.host.id == cluster_setup["hosts"][0].id for e in host_events)


def test_users_roles_permissions(sdk):
    users = sdk.system_service().users_service().list()
    assert [u.user_name for u in users] == ["admin@internal"]
    roles = {r.name for r in sdk.system_service().roles_service().list()}
    assert "SuperUser" in roles
    perms = sdk.system_service().permissions_service().list() if hasattr(
        sdk.system_service(), "permissions_service") else None
    if perms is not None:
        assert any(p.user.id == users[0].id for p in perms)


def test_networks_and_vnic_profiles(sdk, cluster_setup):
    nets = sdk.system_service().networks_service()
    # every data center has oVirt's management network from the start
    assert "ovirtmgmt" in [n.name for n in nets.list(search="datacenter=Default")]
    net = nets.add(t.Network(name="vmnet1", data_center=t.DataCenter(name="Default")))
    assert net.data_center.id == cluster_setup["dc"].id
    profiles = sdk.system_service().vnic_profiles_service().list()
    assert net.id in [p.id for p in profiles]
    with pytest.raises(ovirtsdk4.Error) as e:
        nets.add(t.Network(name="vmnet1", data_center=t.DataCenter(name="Default")))
    assert e.value.code == 409
