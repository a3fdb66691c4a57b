"""The engine of the CD-ROM and clone-from-snapshot tests (test_cdrom.py,
test_clone_from_snapshot.py): `keel-engine serve` and `worker` on
127.0.16.10, two real libvirtd hosts on 127.0.16.11/12, the Default data
center and cluster, both hosts and a data storage domain, added as an SDK
script would. Each module starts its own (module scope: the first is gone
before the next starts, so they share the addresses)."""
from contextlib import contextmanager

import libvirt
import ovirtsdk4
import ovirtsdk4.types as t

from . import enginestack

ADDRESSES = ["127.0.16.11", "127.0.16.12"]
LISTEN = "127.0.16.10:8080"
MiB = 2 ** 20


@contextmanager
def cd_engine():
    """(engine, sdk connection, {"sd": storage domain, "hosts": [...]})."""
    with enginestack.engine_with_hosts("keel-cd-", ADDRESSES, LISTEN, first_index=8) as eng:
        sdk = ovirtsdk4.Connection(url=eng.url, username="admin@internal", password="keel-test-pw")
        try:
            system = sdk.system_service()
            dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
            system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
            hosts = [system.hosts_service().add(t.Host(name=f"h{i + 1}", address=a, root_password="unused",
                                                       cluster=t.Cluster(name="Default")))
                     for i, a in enumerate(ADDRESSES)]
            sd = system.storage_domains_service().add(t.StorageDomain(
                name="data", type=t.StorageDomainType.DATA, data_center=t.DataCenter(id=dc.id),
                storage=t.HostStorage(type=t.StorageType.POSIXFS, path=eng.storage), host=t.Host(name="h1")))
            yield eng, sdk, {"sd": sd, "hosts": hosts}
        finally:
            sdk.close()


def live_xml(eng, setup, vm_service) -> str:
    """The running domain's XML, from the libvirtd of the host it runs on."""
    vm = vm_service.get()
    index = [h.id for h in setup["hosts"]].index(vm.host.id)
    conn = libvirt.open(eng.hosts[index].uri)
    try:
        return conn.lookupByUUIDString(vm.id).XMLDesc(0)
    finally:
        conn.close()


def cleanup(vm_service):
    try:
        if vm_service.get().status != t.VmStatus.DOWN:
            vm_service.stop()
        vm_service.remove()
    except ovirtsdk4.NotFoundError:
        pass
