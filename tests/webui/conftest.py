"""For the browser tests: two private libvirtd hosts, the engine (gunicorn,
its worker and its console proxy; SQLite) with a data center, a cluster,
both hosts and a storage domain, shared by the module."""

import os

import pytest

from engine import enginestack
from harness.browser import chromium

# Two runs can share a machine: KEEL_WEBUI_NET=127.0.13 KEEL_WEBUI_HOST_INDEX=6
NET = os.environ.get("KEEL_WEBUI_NET", "127.0.11")
HOST_INDEX = int(os.environ.get("KEEL_WEBUI_HOST_INDEX", "2"))
HOST_ADDRESSES = [f"{NET}.21", f"{NET}.22"]
LISTEN = f"{NET}.20:8080"
CONSOLE_PROXY = f"{NET}.20:6100"
ADMIN_PASSWORD = "keel-test-pw"


@pytest.fixture(scope="module")
def ui_engine():
    # first_index: migration ports apart from the engine tests' hosts
    with enginestack.engine_with_hosts(f"keel-webui-{HOST_INDEX}-", HOST_ADDRESSES, LISTEN, first_index=HOST_INDEX,
                                       console_proxy=True,
                                       console__proxy_listen=CONSOLE_PROXY) as eng:
        eng.ui = f"http://{LISTEN}/ui"
        eng.setup = _cluster(eng)
        yield eng


def _cluster(eng):
    import ovirtsdk4
    import ovirtsdk4.types as t
    conn = ovirtsdk4.Connection(url=eng.url, username="admin@internal", password=ADMIN_PASSWORD)
    try:
        system = conn.system_service()
        dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
        system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
        hosts = [system.hosts_service().add(t.Host(name=f"h{i + 1}", address=a, root_password="unused",
                                                   cluster=t.Cluster(name="Default")))
                 for i, a in enumerate(HOST_ADDRESSES)]
        system.storage_domains_service().add(t.StorageDomain(
            name="data", type=t.StorageDomainType.DATA, data_center=t.DataCenter(id=dc.id),
            storage=t.HostStorage(type=t.StorageType.POSIXFS, path=eng.storage), host=t.Host(name="h1")))
        return {"hosts": {h.name: h.id for h in hosts}}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def browser(ui_engine, tmp_path_factory):
    """One Chromium for a module's browser tests, on the module's engine."""
    with chromium(str(tmp_path_factory.mktemp("chromium"))) as driver:
        yield driver
