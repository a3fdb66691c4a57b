"""Storage domains from the administration portal, through Flask's test
client on an in-process engine (SQLite): an NFS export added with the new
storage domain form (as the API's POST /storagedomains with storage type
nfs, up to the job a host runs), and a domain attached to a data center,
put into maintenance, activated and detached from its page (as the API's
datacenters/{id}/storagedomains); each read back through the API, their
refusals, forms without their security token and users without an
administrative role."""
import pytest
from sqlalchemy import select

from harness import ui
from harness.engineapp import admin_headers, engine_app_with_host
from keel_engine.models import Job, Role, StorageDomain, Vm
from keel_engine.services import Context, roles, users

from .test_inventory_pages import _accessible, _count, _seed, _token
from .test_pages import PASSWORD, _alert, admin_client, sign_in

API = "/ovirt-engine/api"
HOST_ADDRESS = "127.0.13.92"     # the host's libvirt: nobody answers there
NFS_SERVER = "127.0.13.93"       # only stored: no worker runs the job here


@pytest.fixture
def engine(tmp_path):
    cfg, app, sm, host = engine_app_with_host(tmp_path, HOST_ADDRESS)
    ids = _seed(sm)
    with sm() as s:
        loose = StorageDomain(name="loose", path="/srv/keel-loose", status="unattached")
        s.add(loose)
        s.commit()
        ids["loose"] = loose.id
    return cfg, app, sm, {**ids, "host": host}


def _api(app, path):
    r = app.test_client().get(API + path, headers={**admin_headers(app), "Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.get_json()


def _refused(c, path, data, status, reason):
    r = c.post(path, data=data)
    assert r.status_code == status, (data, r.text)
    assert reason in _alert(r.text).replace("&#39;", "'"), (data, _alert(r.text))
    assert r.text.count("<h1") == 1 and "Traceback" not in r.text
    return r


def test_the_storage_domain_form_adds_an_nfs_export_as_the_api_does(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    page = c.get("/ui/storagedomains/new").text
    _accessible(page)
    assert '<option value="nfs" >an NFS export</option>' in page
    token = _token(page, "/ui/storagedomains/new")
    base = {"csrf": token, "name": "shared", "storage_type": "nfs", "address": NFS_SERVER,
            "export_path": "/exports/keel", "data_center": ids["dc"], "host": ids["host"], "description": "filer"}
    before = (_count(sm, StorageDomain), _count(sm, Job))
    for fields, status, reason in (({"address": ""}, 400, "NFS server: required"),
                                   ({"export_path": ""}, 400, "Export path: required"),
                                   ({"export_path": "exports/keel"}, 400, "'exports/keel' is not an absolute path"),
                                   ({"export_path": "/"}, 400, "is the server's root"),
                                   ({"address": "not a host!"}, 400, "is not a host name or IP address"),
                                   ({"name": "data"}, 409, "already exists")):
        data = {**base, **fields}
        r = _refused(c, "/ui/storagedomains/new", data, status, reason)
        for field in ("name", "address", "export_path", "description"):
            if data[field]:
                assert f'value="{data[field]}"' in r.text, field
        assert '<option value="nfs" selected>' in r.text
    assert (_count(sm, StorageDomain), _count(sm, Job)) == before

    r = c.post("/ui/storagedomains/new", data=base)
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/storagedomains?job=")
    job_id = r.headers["Location"].split("=")[1]
    with sm() as s:
        sd = s.scalar(select(StorageDomain).where(StorageDomain.name == "shared"))
        # the worker's job opens the export where every host has it mounted; until then it is locked
        assert s.get(Job, job_id).params == {"storage_domain_id": sd.id, "host_id": ids["host"]}
        mount = sd.path
    api = _api(app, f"/storagedomains/{sd.id}")
    assert (api["storage"]["type"], api["storage"]["address"], api["storage"]["path"], api["status"],
            api["description"]) == ("nfs", NFS_SERVER, "/exports/keel", "locked", "filer")
    assert mount.startswith("/") and mount != "/exports/keel"
    _refused(c, "/ui/storagedomains/new", {**base, "name": "again"}, 409,
             f"{NFS_SERVER}:/exports/keel is already storage domain shared")
    page = c.get(f"/ui/storagedomains/{sd.id}").text
    assert f"nfs: {NFS_SERVER}:/exports/keel, mounted at {mount}" in page


def _attached(app, dc, sd):
    return _api(app, f"/datacenters/{dc}/storagedomains/{sd}")["status"]


def test_a_domain_is_attached_put_into_maintenance_activated_and_detached_from_its_page(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    loose, dc = ids["loose"], ids["dc"]
    page = c.get(f"/ui/storagedomains/{loose}").text
    _accessible(page)
    assert '<label for="attach-data_center">Attach to data center</label>' in page and "Maintenance" not in page
    token = _token(page, f"/ui/storagedomains/{loose}/attach")
    _refused(c, f"/ui/storagedomains/{loose}/attach", {"csrf": token, "data_center": ""}, 400,
             "Data center: choose one")
    _refused(c, f"/ui/storagedomains/{loose}/maintenance", {"csrf": token}, 409,
             "storage domain loose is not attached to a data center")
    assert _api(app, f"/storagedomains/{loose}")["status"] == "unattached"

    r = c.post(f"/ui/storagedomains/{loose}/attach", data={"csrf": token, "data_center": dc})
    assert r.status_code == 303 and r.headers["Location"] == f"/ui/storagedomains/{loose}"
    assert _attached(app, dc, loose) == "active"
    page = c.get(f"/ui/storagedomains/{loose}").text
    assert "attach-data_center" not in page and f'action="/ui/storagedomains/{loose}/maintenance"' in page
    r = _refused(c, f"/ui/storagedomains/{loose}/detach", {"csrf": token}, 409,
                 "put it into maintenance before detaching it")
    assert "<h1>Storage domain loose" in r.text
    assert c.post(f"/ui/storagedomains/{loose}/maintenance", data={"csrf": token}).status_code == 303
    assert _attached(app, dc, loose) == "maintenance"
    page = c.get(f"/ui/storagedomains/{loose}").text
    assert f'action="/ui/storagedomains/{loose}/activate"' in page
    assert f'action="/ui/storagedomains/{loose}/detach"' in page
    assert c.post(f"/ui/storagedomains/{loose}/activate", data={"csrf": token}).status_code == 303
    assert _attached(app, dc, loose) == "active"
    c.post(f"/ui/storagedomains/{loose}/maintenance", data={"csrf": token})
    r = c.post(f"/ui/storagedomains/{loose}/detach", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == f"/ui/storagedomains/{loose}"
    api = _api(app, f"/storagedomains/{loose}")
    assert (api["status"], api["data_centers"].get("data_center", [])) == ("unattached", [])

    # a domain with disks: not into maintenance while a VM using it runs, never detached
    data = ids["sd"]
    with sm() as s:
        s.get(Vm, ids["vm"]).status = "up"
        s.commit()
    _refused(c, f"/ui/storagedomains/{data}/maintenance", {"csrf": token}, 409,
             "holds disks of running VMs: web1")
    assert _attached(app, dc, data) == "active"
    with sm() as s:
        s.get(Vm, ids["vm"]).status = "down"
        s.commit()
    assert c.post(f"/ui/storagedomains/{data}/maintenance", data={"csrf": token}).status_code == 303
    _refused(c, f"/ui/storagedomains/{data}/detach", {"csrf": token}, 409, "still holds disks")
    assert _attached(app, dc, data) == "maintenance"


def test_storage_forms_refused_without_the_token_or_an_administrative_role(engine):
    cfg, app, sm, ids = engine
    loose, data = ids["loose"], ids["sd"]
    writes = ((f"/ui/storagedomains/{loose}/attach", {"data_center": ids["dc"]}),
              (f"/ui/storagedomains/{data}/maintenance", {}), (f"/ui/storagedomains/{data}/detach", {}),
              ("/ui/storagedomains/new", {"name": "shared", "storage_type": "nfs", "address": NFS_SERVER,
                                          "export_path": "/exports/keel", "host": ids["host"]}))
    c = admin_client(app)
    for path, body in writes:
        r = c.post(path, data=body)
        assert r.status_code == 403 and "security token does not match" in r.text, path
    with sm() as s:      # pat uses one VM: the portal, and no administrative role
        pat = users.add_internal(Context(cfg, sm), s, "pat", PASSWORD)
        roles.add_permission(Context(cfg, sm), s, s.scalar(select(Role).where(Role.name == "UserRole")),
                             s.get(Vm, ids["vm"]), user=pat)
        s.commit()
    p = app.test_client()
    sign_in(p, "pat@internal", PASSWORD)
    token = ui.form_token(p.get("/ui/portal/").text)
    for path, body in writes:
        assert p.post(path, data={"csrf": token, **body}).status_code == 403, path
    assert _api(app, f"/storagedomains/{loose}")["status"] == "unattached"
    assert _api(app, f"/storagedomains/{data}")["status"] == "active"
    assert _count(sm, StorageDomain) == 2
