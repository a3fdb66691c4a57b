"""Fixtures: two private libvirtd hosts (shared by the whole session), one
database backend per parametrization (SQLite file, then a private
PostgreSQL server), and the engine + its worker running against it."""
import os
import shutil
import tempfile

import pytest

from . import enginestack, libvirt_hosts

HOST_ADDRESSES = ["127.0.1.11", "127.0.1.12"]
ENGINE_LISTEN = {"sqlite": "127.0.1.10:8080", "postgres": "127.0.1.10:8081"}
BACKENDS = os.environ.get("KEEL_TEST_BACKENDS", "sqlite,postgres").split(",")


@pytest.fixture(scope="session")
def libvirt_pair():
    root = tempfile.mkdtemp(prefix="keel-engine-hosts-")
    hosts = libvirt_hosts.start_hosts(root, HOST_ADDRESSES)
    yield hosts
    for h in hosts:
        h.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    pg = enginestack.Postgres()
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def engine(request, backend, libvirt_pair):
    workdir = tempfile.mkdtemp(prefix=f"keel-engine-{backend}-")
    if backend == "postgres":
        url = request.getfixturevalue("postgres_server").create_db("keel")
    else:
        url = f"sqlite:///{workdir}/engine.db"
    storage = os.path.join(workdir, "storage")
    os.makedirs(storage)
    # where the test hosts (on this machine) "have" NFS exports mounted: tests
    # make the mount point a directory instead of mounting anything
    nfs_mount_root = os.path.join(workdir, "nfs-mnt")
    cfg = os.path.join(workdir, "engine.conf")
    enginestack.write_config(cfg, url, ENGINE_LISTEN[backend], workdir, storage__nfs_mount_root=nfs_mount_root)
    eng = enginestack.Engine(cfg, ENGINE_LISTEN[backend], workdir)
    eng.db_url, eng.storage, eng.backend, eng.hosts = url, storage, backend, libvirt_pair
    eng.nfs_mount_root = nfs_mount_root
    eng.start()
    yield eng
    eng.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def sdk(engine):
    import ovirtsdk4
    conn = ovirtsdk4.Connection(url=engine.url, username="admin@internal", password="keel-test-pw")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def token(engine):
    import requests
    r = requests.post(engine.url.replace("/api", "/sso/oauth/token"),
                      data={"grant_type": "password", "username": "admin@internal",
                            "password": "keel-test-pw", "scope": "ovirt-app-api"}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


@pytest.fixture(scope="session")
def cluster_setup(engine, sdk):
    """Default data center and cluster, both libvirt hosts, a data storage domain."""
    import ovirtsdk4.types as t
    system = sdk.system_service()
    dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
    cl = system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
    hosts = [system.hosts_service().add(t.Host(name=f"h{i + 1}", address=a, root_password="unused",
                                               cluster=t.Cluster(name="Default")))
             for i, a in enumerate(HOST_ADDRESSES)]
    sd = system.storage_domains_service().add(t.StorageDomain(
        name="data", type=t.StorageDomainType.DATA, data_center=t.DataCenter(id=dc.id),
        storage=t.HostStorage(type=t.StorageType.POSIXFS, path=engine.storage), host=t.Host(name="h1")))
    return {"dc": dc, "cluster": cl, "hosts": hosts, "sd": sd}
