"""NFS storage domains as oVirt users enter them (server + export path):
refused input against the in-process engine app, then adding, reading back
and the host-side advice against the real engine with real libvirt hosts.
The hosts are on this machine: a test "mounts" an export by making its
mount point (under the engine's [storage] nfs_mount_root) a directory."""
import json
import os
import xml.etree.ElementTree as ET

import pytest
import requests
from sqlalchemy import create_engine, text

from harness.engineapp import admin_headers, engine_app_with_host
from keel_common import nfs
from keel_engine.models import StorageDomain

API = "/ovirt-engine/api"
SERVER = "198.51.100.1"


# ---- refused input: the in-process app (nothing listens at the host's address) ----------------
@pytest.fixture
def app_env(tmp_path):
    cfg, app, sm, _host_id = engine_app_with_host(tmp_path, "127.0.1.29", nfs_mount_root=str(tmp_path / "mnt"))
    return {"cfg": cfg, "client": app.test_client(), "sm": sm, "h": admin_headers(app)}


def post(env, body, ctype="application/json"):
    data = body if isinstance(body, str) else json.dumps(body)
    return env["client"].post(API + "/storagedomains", data=data,
                              headers={**env["h"], "Content-Type": ctype, "Accept": "application/json"})


def domain_count(env):
    with env["sm"]() as s:
        return s.execute(text("SELECT count(*) FROM storage_domains")).scalar()


def nfs_body(name="n1", **storage):
    return {"name": name, "type": "data", "storage": {"type": "nfs", **storage},
            "data_center": {"name": "Default"}, "host": {"name": "hx"}}


@pytest.mark.parametrize("storage,detail", [
    ({"path": "/shared"}, "storage.address: give the NFS server's host name or IP address"),
    ({"address": "", "path": "/shared"}, "storage.address: give the NFS server's host name or IP address"),
    ({"address": "nfs server", "path": "/shared"}, "storage.address: 'nfs server' is not a host name or IP address"),
    ({"address": "198.51.100.1:/shared", "path": "/shared"}, "is not a host name or IP address"),
    ({"address": SERVER, "path": "shared"}, "storage.path: 'shared' is not an absolute path; expected the export's"),
    ({"address": SERVER, "path": "/a/../etc"}, "storage.path: '/a/../etc' must not contain '.' or '..'"),
    ({"address": SERVER, "path": "/a/./b"}, "must not contain '.' or '..' components"),
    ({"address": SERVER, "path": "/"}, "storage.path: '/' is the server's root; give the exported directory"),
    ({"address": SERVER, "path": "//"}, "is the server's root"),
    ({"address": SERVER}, "storage.path"),
])
def test_bad_nfs_input_is_a_one_line_400_and_stores_nothing(app_env, storage, detail):
    r = post(app_env, nfs_body(**storage))
    assert r.status_code == 400, r.data
    assert detail in r.get_json()["detail"] and "\n" not in r.get_json()["detail"]
    assert domain_count(app_env) == 0


def test_bad_nfs_input_in_xml_is_refused_the_same_way(app_env):
    r = post(app_env, "<storage_domain><name>n1</name><type>data</type><storage><type>nfs</type>"
                      "<address>198.51.100.1</address><path>/</path></storage>"
                      "<host><name>hx</name></host></storage_domain>", ctype="application/xml")
    assert r.status_code == 400 and "is the server's root" in r.get_json()["detail"]
    assert domain_count(app_env) == 0


def add_row(env, **columns):
    with env["sm"]() as s:
        s.add(StorageDomain(status="active", **columns))
        s.commit()


@pytest.mark.parametrize("address,export", [(SERVER, "/shared"), (SERVER, "//shared/"), ("NFS.example.TEST", "/x")])
def test_a_second_domain_on_the_same_export_is_409(app_env, address, export):
    server = nfs.server_address(address)
    canonical = nfs.export_path(export)
    add_row(app_env, name="first", storage_type="nfs", address=server, export_path=canonical,
            path=nfs.mount_point(app_env["cfg"].nfs_mount_root, server, canonical))
    r = post(app_env, nfs_body(address=address, path=export))
    assert r.status_code == 409, r.data
    assert r.get_json()["detail"] == f"storage: {server}:{canonical} is already storage domain first"
    assert domain_count(app_env) == 1


def test_an_nfs_domain_at_a_posixfs_domains_path_is_409(app_env):
    point = nfs.mount_point(app_env["cfg"].nfs_mount_root, SERVER, "/shared")
    add_row(app_env, name="local", storage_type="posixfs", path=point)
    r = post(app_env, nfs_body(address=SERVER, path="/shared"))
    assert r.status_code == 409 and r.get_json()["detail"] == f"storage.path: {point} is already storage domain local"
    assert domain_count(app_env) == 1


# ---- the real engine and libvirt hosts ---------------------------------------------------------
def call(engine, token, method, path, body=None, ctype="application/json", accept="application/json"):
    h = {"Authorization": f"Bearer {token}", "Accept": accept, "Content-Type": ctype}
    return requests.request(method, f"{engine.url}{path}", data=body, headers=h, timeout=120)


def mounted(engine, export):
    """The export 'mounted' where the hosts must have it: a directory at its mount point."""
    point = nfs.mount_point(engine.nfs_mount_root, SERVER, export)
    os.makedirs(point, exist_ok=True)
    return point


def stored(engine, name):
    eng = create_engine(engine.db_url)
    try:
        with eng.connect() as c:
            return c.execute(text("SELECT storage_type, address, export_path, path, status FROM storage_domains "
                                  "WHERE name = :n"), {"n": name}).one_or_none()
    finally:
        eng.dispose()


@pytest.fixture
def remove_after(engine, token):
    ids = []
    yield ids
    for sd_id in ids:
        call(engine, token, "DELETE", f"/storagedomains/{sd_id}")


@pytest.mark.slow
@pytest.mark.root
def test_an_nfs_domain_added_as_json_reads_back_as_ovirt_shows_it(engine, token, cluster_setup, remove_after):
    point = mounted(engine, "/exports/json")
    r = call(engine, token, "POST", "/storagedomains", json.dumps(
        {**nfs_body("nfs-json", address=SERVER, path="/exports/json/"), "host": {"name": "h1"}}))
    assert r.status_code == 201, r.text
    remove_after.append(r.json()["id"])
    sd = call(engine, token, "GET", f"/storagedomains/{r.json()['id']}").json()
    assert sd["storage"] == {"type": "nfs", "address": SERVER, "path": "/exports/json"}
    assert sd["status"] == "active"
    # the hosts open the mount point; the export is a column of its own
    assert tuple(stored(engine, "nfs-json")) == ("nfs", SERVER, "/exports/json", point, "active")
    again = call(engine, token, "POST", "/storagedomains", json.dumps(
        {**nfs_body("nfs-json-2", address=SERVER, path="/exports/json"), "host": {"name": "h1"}}))
    assert again.status_code == 409 and "is already storage domain nfs-json" in again.json()["detail"]
    assert stored(engine, "nfs-json-2") is None


@pytest.mark.slow
@pytest.mark.root
def test_an_nfs_domain_added_as_xml_reads_back_as_xml(engine, token, cluster_setup, remove_after):
    mounted(engine, "/exports/xml")
    r = call(engine, token, "POST", "/storagedomains",
             "<storage_domain><name>nfs-xml</name><type>data</type><storage><type>nfs</type>"
             f"<address>{SERVER}</address><path>/exports/xml</path></storage>"
             "<data_center><name>Default</name></data_center><host><name>h1</name></host></storage_domain>",
             ctype="application/xml", accept="application/xml")
    assert r.status_code == 201, r.text
    sd_id = ET.fromstring(r.text).get("id")
    remove_after.append(sd_id)
    storage = ET.fromstring(call(engine, token, "GET", f"/storagedomains/{sd_id}", accept="application/xml").text
                            ).find("storage")
    assert (storage.findtext("type"), storage.findtext("address"), storage.findtext("path")) == \
        ("nfs", SERVER, "/exports/xml")


@pytest.mark.slow
@pytest.mark.root
def test_an_nfs_domain_added_through_the_sdk(engine, sdk, cluster_setup, remove_after):
    import ovirtsdk4.types as t
    mounted(engine, "/exports/sdk")
    sd = sdk.system_service().storage_domains_service().add(t.StorageDomain(
        name="nfs-sdk", type=t.StorageDomainType.DATA, data_center=t.DataCenter(name="Default"),
        storage=t.HostStorage(type=t.StorageType.NFS, address=SERVER, path="/exports/sdk"), host=t.Host(name="h2")))
    remove_after.append(sd.id)
    back = sdk.system_service().storage_domains_service().storage_domain_service(sd.id).get()
    assert (back.storage.type, back.storage.address, back.storage.path) == (t.StorageType.NFS, SERVER, "/exports/sdk")
    assert back.status == t.StorageDomainStatus.ACTIVE


@pytest.mark.slow
@pytest.mark.root
def test_an_export_not_mounted_on_the_host_says_where_to_mount_it(engine, token, cluster_setup):
    point = nfs.mount_point(engine.nfs_mount_root, SERVER, "/exports/nowhere")
    assert not os.path.exists(point)
    r = call(engine, token, "POST", "/storagedomains", json.dumps(
        {**nfs_body("nfs-unmounted", address=SERVER, path="/exports/nowhere"), "host": {"name": "h1"}}))
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (f"mount {SERVER}:/exports/nowhere at {point} on host h1 "
                                  "(Keel does not mount NFS exports on hosts)")
    assert stored(engine, "nfs-unmounted") is None
