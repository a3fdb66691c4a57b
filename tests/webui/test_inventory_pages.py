"""The administration portal's inventory pages (data centers, clusters,
storage domains, networks, templates, disks) and its jobs pages, through
Flask's test client on an in-process engine (SQLite): what each page shows,
who may open it, the create, edit and remove forms and their refusals, and
a host's hosted-engine HA record on its page."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from harness import ui
from harness.engineapp import admin_headers, engine_app_with_host
from keel_engine.models import (Cluster, DataCenter, Disk, DiskAttachment, HaCluster, HaHost, Host, Job, Network,
                                Nic, Role, Step, StorageDomain, Template, Vm, utcnow)
from keel_engine.services import Context, roles, users
from keel_engine.services.ha_host import record_of

from .test_pages import PASSWORD, _alert, admin_client, sign_in

GIB = 1024 ** 3
API = "/ovirt-engine/api"
HOST_ADDRESS = "127.0.11.95"


@pytest.fixture
def engine(tmp_path):
    cfg, app, sm, host = engine_app_with_host(tmp_path, HOST_ADDRESS)
    return cfg, app, sm, {**_seed(sm), "host": host}


def _api(app, path):
    """An object as the REST API reads it back (JSON)."""
    r = app.test_client().get(API + path, headers={**admin_headers(app), "Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.get_json()


def _disk(s, name, domain_id, **attach):
    """A disk on the domain; attached to a VM or a template when given (vm_id=, template_id=)."""
    d = Disk(name=name, storage_domain_id=domain_id, provisioned_size=2 * GIB, active_volume=f"{name}.qcow2")
    s.add(d)
    s.flush()
    if attach:
        s.add(DiskAttachment(id=d.id, disk_id=d.id, bootable=True, **attach))
    return d.id


def _seed(sm):
    """Beside the harness's Default data center, cluster and host: a storage
    domain, a network with a VM's NIC on it, a template with a disk, a VM made
    from it with a disk, a floating disk, a template nothing uses, a running
    job with two steps and a failed one."""
    with sm() as s:
        dc, cluster = s.scalar(select(DataCenter.id)), s.scalar(select(Cluster.id))
        sd = StorageDomain(name="data", path="/srv/keel-data", data_center_id=dc, status="active",
                           used=3 * GIB, available=40 * GIB)
        net = Network(name="vmnet", data_center_id=dc, vlan=42, description="guest traffic")
        tpl = Template(name="tpl1", cluster_id=cluster, description="base image")
        unused = Template(name="unused", cluster_id=cluster)
        s.add_all([sd, net, tpl, unused])
        s.flush()
        vm = Vm(name="web1", cluster_id=cluster, template_id=tpl.id, memory=GIB)
        s.add(vm)
        s.flush()
        s.add(Nic(vm_id=vm.id, name="nic1", mac="56:6f:00:00:01:01", network_id=net.id))
        ids = {"dc": dc, "cluster": cluster, "sd": sd.id, "net": net.id, "tpl": tpl.id, "unused": unused.id,
               "vm": vm.id, "tpl_disk": _disk(s, "tpl1_Disk1", sd.id, template_id=tpl.id),
               "vm_disk": _disk(s, "web1_Disk1", sd.id, vm_id=vm.id), "spare": _disk(s, "spare", sd.id)}
        running = Job(description="Migrating VM web1", status="started")
        failed = Job(description="Adding storage domain old", status="failed", end_time=utcnow(),
                     fault_status=409, fault_reason="Operation Failed", fault_detail="mount the export first")
        s.add_all([running, failed])
        s.flush()
        s.add_all([Step(job_id=running.id, number=1, description="Checking host h2", status="finished",
                        end_time=utcnow()),
                   Step(job_id=running.id, number=2, description="Copying memory to host h2",
                        start_time=utcnow() + timedelta(seconds=1))])
        ids.update(running=running.id, failed=failed.id)
        s.commit()
        return ids


def _count(sm, model, *where):
    with sm() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def _token(page, action):
    """The security token in the page's form that posts to `action`: what a browser sends."""
    form = re.search(rf'<form[^>]*action="{re.escape(action)}"[^>]*>(.*?)</form>', page, re.S).group(1)
    return ui.form_token(form)


def _disk_links(page):
    """Links to disks' own pages (not the New disk form)."""
    return len(re.findall(r'href="/ui/disks/[0-9a-f-]{36}"', page))


def _accessible(page):
    """One h1, every column header scoped, every visible control labelled."""
    assert page.count("<h1") == 1
    assert all('scope="col"' in th for th in re.findall(r"<th\b[^>]*>", page))
    labelled = set(re.findall(r'<label for="([^"]+)"', page))
    for control in re.findall(r"<(?:input|select)\b[^>]*>", page):
        if 'type="hidden"' not in control:
            assert re.search(r'id="([^"]+)"', control).group(1) in labelled, control


def test_every_inventory_page_shows_what_the_engine_has(engine):
    _cfg, app, _sm, ids = engine
    c = admin_client(app)
    expected = {
        "/ui/datacenters": ["Default"],
        f"/ui/datacenters/{ids['dc']}": ["Default", "vmnet", "data", ">Default</a>"],
        "/ui/clusters": ["Default", ">1</td>"],
        f"/ui/clusters/{ids['cluster']}": ["hx", "/ui/vms?search=cluster%3DDefault"],
        "/ui/storagedomains": ["data", "posixfs", "active", "40.0 GiB", "3072 MiB"],
        f"/ui/storagedomains/{ids['sd']}": ["/srv/keel-data", "Disks (3)", "spare", "none (floating)",
                                           "web1_Disk1", ">web1</a>", ">tpl1</a>"],
        "/ui/networks": ["vmnet", "42", "guest traffic"],
        f"/ui/networks/{ids['net']}": ["vnic profiles", "nic1", ">web1</a>", "56:6f:00:00:01:01"],
        "/ui/templates": ["Blank", "tpl1", "unused", "base image"],
        f"/ui/templates/{ids['tpl']}": ["tpl1_Disk1", ">web1</a>", "VMs made from it (1)"],
        "/ui/disks": ["tpl1_Disk1", "web1_Disk1", "spare", "2048 MiB"],
        f"/ui/disks/{ids['spare']}": ["none (floating)", ">data</a>", "Remove"],
        f"/ui/disks/{ids['vm_disk']}": [">web1</a>"],
        "/ui/jobs": ["Migrating VM web1", "Adding storage domain old"],
        f"/ui/jobs/{ids['running']}/detail": ["Checking host h2", "Copying memory to host h2",
                                              "1 of 2 steps ended"],
        f"/ui/jobs/{ids['failed']}/detail": ["mount the export first"],
        "/ui/datacenters/new": ["New data center"],
        "/ui/clusters/new": ['<option value="' + ids["dc"] + '"'],
    }
    for path, texts in expected.items():
        r = c.get(path)
        assert r.status_code == 200, path
        for text in texts:
            assert text.lower() in r.text.lower(), (path, text)
        _accessible(r.text)
    # an attached disk offers no Remove; a floating one does
    assert "Remove" not in c.get(f"/ui/disks/{ids['vm_disk']}").text
    assert c.get("/ui/datacenters/no-such-id").status_code == 404
    assert c.get("/ui/jobs/no-such-job/detail").status_code == 404


def test_lists_search_page_and_explain_a_bad_search(engine):
    _cfg, app, sm, ids = engine
    with sm() as s:
        for i in range(100):
            _disk(s, f"extra{i:02d}", ids["sd"])
        s.commit()
    c = admin_client(app)
    page = c.get("/ui/disks?search=vm.name%3Dweb1").text
    assert "web1_Disk1" in page and "spare" not in page and "tpl1_Disk1" not in page
    second, last = c.get("/ui/disks?page=2").text, c.get("/ui/disks?page=3").text
    assert _disk_links(second) == 50 and 'rel="next"' in second
    assert _disk_links(last) == 103 - 100 and 'rel="prev"' in last and 'rel="next"' not in last
    assert "No data centers match this search" in c.get("/ui/datacenters?search=name%3Dnothing*").text
    r = c.get("/ui/clusters?search=colour%3Dred")
    assert r.status_code == 400 and "unknown field 'colour'" in _alert(r.text).replace("&#39;", "'")
    # the storage domain's page lists its first disks and links to all of them
    page = c.get(f"/ui/storagedomains/{ids['sd']}").text
    assert "Disks (103)" in page and _disk_links(page) == 100
    assert 'href="/ui/disks?search=storage%3Ddata">all of them' in page
    jobs = c.get("/ui/jobs?status=failed").text
    assert "Adding storage domain old" in jobs and "Migrating VM web1" not in jobs
    assert "Migrating VM web1" in c.get("/ui/jobs?status=nonsense").text


def test_the_create_forms_explain_bad_input_keep_the_answers_and_create_on_good_ones(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    token = _token(c.get("/ui/datacenters/new").text, "/ui/datacenters/new")
    assert _token(c.get("/ui/clusters/new").text, "/ui/clusters/new") == token
    bad = [("/ui/datacenters/new", {"name": ""}, 400, "Name: required"),
           ("/ui/datacenters/new", {"name": "my dc", "description": "kept"}, 400, "is not a valid name"),
           ("/ui/datacenters/new", {"name": "Default", "description": "kept"}, 409,
            "a data center named 'Default' already exists"),
           ("/ui/clusters/new", {"name": "cl2"}, 400, "Data center: choose one"),
           ("/ui/clusters/new", {"name": "cl2", "data_center": "no-such-dc"}, 400,
            "data center with id 'no-such-dc' does not exist"),
           ("/ui/clusters/new", {"name": "Default", "data_center": ids["dc"]}, 409, "already exists")]
    for path, fields, status, expected in bad:
        r = c.post(path, data={"csrf": token, **fields})
        assert r.status_code == status, (fields, r.text)
        assert expected in _alert(r.text).replace("&#39;", "'"), _alert(r.text)
        # the answers are still in the form
        assert f'value="{fields["name"]}"' in r.text and ('value="kept"' in r.text) == ("description" in fields)
        if fields.get("data_center") == ids["dc"]:
            assert f'value="{ids["dc"]}" selected' in r.text
    assert _count(sm, DataCenter) == 1 and _count(sm, Cluster) == 1

    r = c.post("/ui/datacenters/new", data={"csrf": token, "name": "dc2", "description": "the second"})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/datacenters"
    assert "dc2" in c.get("/ui/datacenters").text
    with sm() as s:
        dc2 = s.scalar(select(DataCenter).where(DataCenter.name == "dc2"))
        assert dc2.description == "the second"
        assert s.scalar(select(Network.name).where(Network.data_center_id == dc2.id)) == "ovirtmgmt"
    # the data center's page offers a new cluster in it
    assert f'value="{dc2.id}" selected' in c.get(f"/ui/clusters/new?data_center={dc2.id}").text
    r = c.post("/ui/clusters/new", data={"csrf": token, "name": "cl2", "data_center": dc2.id})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/clusters"
    assert "cl2" in c.get(f"/ui/datacenters/{dc2.id}").text


def test_remove_forms_remove_or_say_why_not(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    pages = {f"/ui/datacenters/{ids['dc']}": "/remove", f"/ui/clusters/{ids['cluster']}": "/remove",
             f"/ui/templates/{ids['tpl']}": "/remove", f"/ui/disks/{ids['spare']}": "/remove"}
    tokens = {_token(c.get(page).text, page + tail) for page, tail in pages.items()}
    assert len(tokens) == 1 and "" not in tokens
    token, = tokens

    # refused: the object's page again, with the service's reason, and nothing removed
    refusals = [(f"/ui/datacenters/{ids['dc']}/remove", 409, "still has clusters"),
                (f"/ui/clusters/{ids['cluster']}/remove", 409, "still has hosts"),
                (f"/ui/templates/{ids['tpl']}/remove", 409, "is used by VMs: web1"),
                (f"/ui/disks/{ids['vm_disk']}/remove", 409, "is attached to a VM or template")]
    for path, status, expected in refusals:
        r = c.post(path, data={"csrf": token})
        assert r.status_code == status, path
        assert expected in _alert(r.text), (path, _alert(r.text))
        assert r.text.count("<h1") == 1
    assert (_count(sm, DataCenter), _count(sm, Cluster), _count(sm, Template), _count(sm, Disk)) == (1, 1, 3, 3)
    assert c.post("/ui/templates/no-such-template/remove", data={"csrf": token}).status_code == 404

    r = c.post(f"/ui/templates/{ids['unused']}/remove", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/templates"
    assert _count(sm, Template, Template.id == ids["unused"]) == 0
    # a disk's volume is deleted by the engine worker: the list shows the job that does it
    r = c.post(f"/ui/disks/{ids['spare']}/remove", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/disks?job=")
    with sm() as s:
        assert s.get(Disk, ids["spare"]).status == "locked"
        assert s.scalar(select(Job.description).where(Job.id == r.headers["Location"].split("=")[1])) == \
            "Removing disk spare"
    assert "Removing disk spare" in c.get(r.headers["Location"]).text

    # an empty cluster, then its data center
    dc2 = DataCenter(name="dc2")
    with sm() as s:
        s.add(dc2)
        s.flush()
        s.add(Cluster(name="cl2", data_center_id=dc2.id))
        s.commit()
        cl2 = s.scalar(select(Cluster.id).where(Cluster.name == "cl2"))
        dc2_id = dc2.id
    assert c.post(f"/ui/clusters/{cl2}/remove", data={"csrf": token}).headers["Location"] == "/ui/clusters"
    assert c.post(f"/ui/datacenters/{dc2_id}/remove", data={"csrf": token}).headers["Location"] == "/ui/datacenters"
    assert _count(sm, DataCenter, DataCenter.id == dc2_id) == 0 and _count(sm, Cluster, Cluster.id == cl2) == 0


def test_remove_buttons_ask_first_with_the_name_safely_quoted(engine):
    _cfg, app, sm, ids = engine
    with sm() as s:
        s.get(Template, ids["unused"]).name = "it's"
        s.commit()
    page = admin_client(app).get(f"/ui/templates/{ids['unused']}").text
    form = re.search(r"<form method=\"post\" action=\"/ui/templates/[^\"]+/remove\"[^>]*>", page).group(0)
    assert "onsubmit='return confirm(\"Remove template it\\u0027s and its disks?\")'" in form


def test_forms_without_the_session_token_change_nothing(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    posts = [("/ui/datacenters/new", {"name": "dc2"}), ("/ui/clusters/new", {"name": "cl2", "data_center": ids["dc"]}),
             (f"/ui/templates/{ids['unused']}/remove", {}), (f"/ui/disks/{ids['spare']}/remove", {}),
             ("/ui/networks/new", {"name": "net2", "data_center": ids["dc"]}),
             ("/ui/storagedomains/new", {"name": "sd2", "path": "/srv/keel-sd2", "host": ids["host"]}),
             ("/ui/disks/new", {"name": "d2", "size": "1", "storage_domain": ids["sd"]}),
             (f"/ui/datacenters/{ids['dc']}/edit", {"name": "Renamed"}),
             (f"/ui/clusters/{ids['cluster']}/edit", {"name": "Renamed"}),
             (f"/ui/networks/{ids['net']}/remove", {}), (f"/ui/storagedomains/{ids['sd']}/remove", {})]
    for path, data in posts:
        for token in (None, "0" * 64):
            r = c.post(path, data=data if token is None else {"csrf": token, **data})
            assert r.status_code == 403 and "security token does not match" in r.text, path
    assert (_count(sm, DataCenter), _count(sm, Cluster), _count(sm, Template), _count(sm, Job)) == (1, 1, 3, 2)
    assert _count(sm, Disk, Disk.status == "locked") == 0
    assert (_count(sm, Network), _count(sm, StorageDomain), _count(sm, Disk)) == (1, 1, 3)
    assert _count(sm, DataCenter, DataCenter.name == "Default") == _count(sm, Cluster, Cluster.name == "Default") == 1


def test_a_user_without_an_administrative_role_gets_the_portal_and_no_writes(engine):
    cfg, app, sm, ids = engine
    with sm() as s:
        u = users.add_internal(Context(cfg, sm), s, "pat", PASSWORD)
        role = s.scalar(select(Role).where(Role.name == "UserRole"))
        roles.add_permission(Context(cfg, sm), s, role, s.get(Vm, ids["vm"]), user=u)
        s.commit()
    c = app.test_client()
    assert sign_in(c, "pat@internal", PASSWORD).status_code == 303
    for path in ("/ui/datacenters", f"/ui/datacenters/{ids['dc']}", "/ui/datacenters/new", "/ui/clusters",
                 f"/ui/clusters/{ids['cluster']}", "/ui/clusters/new", "/ui/storagedomains",
                 f"/ui/storagedomains/{ids['sd']}", "/ui/networks", f"/ui/networks/{ids['net']}", "/ui/templates",
                 f"/ui/templates/{ids['tpl']}", "/ui/disks", f"/ui/disks/{ids['spare']}", "/ui/jobs",
                 f"/ui/jobs/{ids['running']}/detail", "/ui/networks/new", "/ui/storagedomains/new", "/ui/disks/new",
                 f"/ui/datacenters/{ids['dc']}/edit", f"/ui/clusters/{ids['cluster']}/edit",
                 f"/ui/hosts/{ids['host']}/ha"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["Location"] == "/ui/portal/", path
    token = ui.form_token(c.get("/ui/portal/").text)
    for path, data in (("/ui/datacenters/new", {"name": "dc2"}),
                       ("/ui/clusters/new", {"name": "cl2", "data_center": ids["dc"]}),
                       (f"/ui/datacenters/{ids['dc']}/remove", {}), (f"/ui/clusters/{ids['cluster']}/remove", {}),
                       (f"/ui/templates/{ids['unused']}/remove", {}), (f"/ui/disks/{ids['spare']}/remove", {}),
                       ("/ui/networks/new", {"name": "net2", "data_center": ids["dc"]}),
                       ("/ui/storagedomains/new", {"name": "sd2", "path": "/srv/keel-sd2", "host": ids["host"]}),
                       ("/ui/disks/new", {"name": "d2", "size": "1", "storage_domain": ids["sd"]}),
                       (f"/ui/datacenters/{ids['dc']}/edit", {"name": "Renamed"}),
                       (f"/ui/clusters/{ids['cluster']}/edit", {"name": "Renamed"}),
                       (f"/ui/networks/{ids['net']}/remove", {}), (f"/ui/storagedomains/{ids['sd']}/remove", {})):
        assert c.post(path, data={"csrf": token, **data}).status_code == 403, path
    # the HA section's poll, as htmx asks it: the refusal goes to the page's message area, no HA record
    r = c.get(f"/ui/hosts/{ids['host']}/ha", headers={"HX-Request": "true"})
    assert r.headers.get("HX-Retarget") == "#messages" and "Hosted engine HA" not in r.text
    assert (_count(sm, DataCenter), _count(sm, Cluster), _count(sm, Template), _count(sm, Job)) == (1, 1, 3, 2)
    assert (_count(sm, Network), _count(sm, StorageDomain), _count(sm, Disk)) == (1, 1, 3)
    assert _count(sm, DataCenter, DataCenter.name == "Default") == _count(sm, Cluster, Cluster.name == "Default") == 1
    with sm() as s:
        assert s.get(Disk, ids["spare"]).status == "ok"


def _refused(c, path, data, status, reason):
    """A refused form: its status, the service's reason, the form again with the answers kept."""
    r = c.post(path, data=data)
    assert r.status_code == status, (data, r.text)
    assert reason in _alert(r.text).replace("&#39;", "'"), (data, _alert(r.text))
    assert r.text.count("<h1") == 1 and f'action="{path}"' in r.text
    for field in ("name", "description", "vlan", "mtu", "path", "size", "vm"):
        if data.get(field):
            assert f'value="{data[field]}"' in r.text, (field, data)
    for field in ("data_center", "host", "storage_domain"):
        if data.get(field) and f'value="{data[field]}"' in r.text:
            assert f'value="{data[field]}" selected' in r.text, (field, data)
    return r


def test_the_network_form_creates_one_as_the_api_does_or_says_why_not(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    page = c.get(f"/ui/networks/new?data_center={ids['dc']}").text
    _accessible(page)
    assert f'value="{ids["dc"]}" selected' in page
    token = _token(page, "/ui/networks/new")
    base = {"csrf": token, "name": "storage", "data_center": ids["dc"], "description": "iSCSI"}
    before = _count(sm, Network)
    _refused(c, "/ui/networks/new", {**base, "vlan": "5000"}, 400, "VLAN: from 1 to 4094, got 5000")
    _refused(c, "/ui/networks/new", {**base, "mtu": "big"}, 400, "MTU: a whole number")
    _refused(c, "/ui/networks/new", {**base, "mtu": "70000"}, 400, "MTU: from 0 to 65535")
    _refused(c, "/ui/networks/new", {**base, "name": "vmnet", "vlan": "7"}, 409, "already exists")
    _refused(c, "/ui/networks/new", {**base, "data_center": ""}, 400, "Data center: choose one")
    assert _count(sm, Network) == before

    r = c.post("/ui/networks/new", data={**base, "vlan": "100", "mtu": "9000"})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/networks"
    with sm() as s:
        net_id = s.scalar(select(Network.id).where(Network.name == "storage"))
    api = _api(app, f"/networks/{net_id}")
    assert (api["name"], api["description"], int(api["vlan"]["id"]), int(api["mtu"]), api["data_center"]["id"]) == \
        ("storage", "iSCSI", 100, 9000, ids["dc"])
    # no VLAN, the hosts' MTU: as the API's defaults
    assert c.post("/ui/networks/new", data={**base, "name": "plain"}).status_code == 303
    with sm() as s:
        plain = s.scalar(select(Network).where(Network.name == "plain"))
        assert (plain.vlan, plain.mtu) == (None, 0)
    assert "storage" in c.get("/ui/networks").text and "New network" in c.get("/ui/networks").text


def test_the_storage_domain_form_adds_a_directory_through_a_host_and_attaches_it(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    page = c.get(f"/ui/storagedomains/new?data_center={ids['dc']}").text
    _accessible(page)
    token = _token(page, "/ui/storagedomains/new")
    base = {"csrf": token, "name": "fast", "path": "/srv/keel-fast", "data_center": ids["dc"], "host": ids["host"],
            "description": "local SSD"}
    _refused(c, "/ui/storagedomains/new", {**base, "path": "srv/keel-fast"}, 400, "is not an absolute path")
    _refused(c, "/ui/storagedomains/new", {**base, "path": "/etc"}, 400, "is a system directory")
    _refused(c, "/ui/storagedomains/new", {**base, "path": "/srv/keel-data"}, 409,
             "/srv/keel-data is already storage domain data")
    _refused(c, "/ui/storagedomains/new", {**base, "name": "data"}, 409, "already exists")
    _refused(c, "/ui/storagedomains/new", {**base, "host": "no-such-host"}, 400, "host with id 'no-such-host'")
    _refused(c, "/ui/storagedomains/new", {**base, "path": ""}, 400, "Directory: required")
    assert (_count(sm, StorageDomain), _count(sm, Job)) == (1, 2)

    r = c.post("/ui/storagedomains/new", data=base)
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/storagedomains?job=")
    job_id = r.headers["Location"].split("=")[1]
    with sm() as s:
        sd_id = s.scalar(select(StorageDomain.id).where(StorageDomain.name == "fast"))
        job = s.get(Job, job_id)
        # the engine worker opens the directory on the chosen host; until then the domain is locked
        assert job.description == "Adding storage domain fast (/srv/keel-fast)"
        assert job.params == {"storage_domain_id": sd_id, "host_id": ids["host"]}
    api = _api(app, f"/storagedomains/{sd_id}")
    assert (api["name"], api["description"], api["storage"]["type"], api["storage"]["path"],
            api["data_centers"]["data_center"][0]["id"], api["status"]) == \
        ("fast", "local SSD", "posixfs", "/srv/keel-fast", ids["dc"], "locked")
    assert "Adding storage domain fast" in c.get(r.headers["Location"]).text


def test_the_disk_form_creates_a_floating_or_an_attached_disk_by_a_job(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    page = c.get(f"/ui/disks/new?storage_domain={ids['sd']}").text
    _accessible(page)
    assert f'value="{ids["sd"]}" selected' in page
    token = _token(page, "/ui/disks/new")
    base = {"csrf": token, "name": "scratch", "size": "3", "storage_domain": ids["sd"], "description": "tmp"}
    _refused(c, "/ui/disks/new", {**base, "size": "0"}, 400, "Size (GiB): from 1 to 16384, got 0")
    _refused(c, "/ui/disks/new", {**base, "size": "2.5"}, 400, "Size (GiB): a whole number")
    _refused(c, "/ui/disks/new", {**base, "size": ""}, 400, "Size (GiB): required")
    _refused(c, "/ui/disks/new", {**base, "storage_domain": ""}, 400, "Storage domain: choose one")
    _refused(c, "/ui/disks/new", {**base, "name": "no spaces"}, 400, "is not a valid name")
    assert (_count(sm, Disk), _count(sm, Job)) == (3, 2)

    r = c.post("/ui/disks/new", data=base)
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/disks?job=")
    with sm() as s:
        disk = s.scalar(select(Disk).where(Disk.name == "scratch"))
        assert s.get(Job, r.headers["Location"].split("=")[1]).description == \
            "Creating disk scratch on storage domain data"
    api = _api(app, f"/disks/{disk.id}")
    assert (int(api["provisioned_size"]), api["description"], api["storage_domains"]["storage_domain"][0]["id"]) \
        == (3 * GIB, "tmp", ids["sd"])
    assert _count(sm, DiskAttachment, DiskAttachment.disk_id == disk.id) == 0

    # attached to a VM: one that is down (or up: hot-plugged), named as it is
    with sm() as s:
        s.add(Vm(name="busy", cluster_id=ids["cluster"], template_id=ids["tpl"], memory=GIB, status="migrating"))
        s.commit()
    attach = {**base, "name": "web1_data", "bootable": "on"}
    _refused(c, "/ui/disks/new", {**attach, "vm": "nosuch"}, 400, "Attach to VM: VM named 'nosuch' does not exist")
    _refused(c, "/ui/disks/new", {**attach, "vm": "busy"}, 409, "VM busy is migrating; disks are attached while it is up or down")
    assert (_count(sm, Disk), _count(sm, DiskAttachment)) == (4, 2)
    r = c.post("/ui/disks/new", data={**attach, "vm": "web1"})
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/disks?job=")
    atts = _api(app, f"/vms/{ids['vm']}/diskattachments")["disk_attachment"]
    att, = [a for a in atts if a["disk"]["id"] != ids["vm_disk"]]
    assert att["bootable"] in (True, "true")
    with sm() as s:
        assert s.get(Disk, att["disk"]["id"]).name == "web1_data"


def test_data_centers_and_clusters_are_edited_as_the_api_puts_them(engine):
    _cfg, app, sm, ids = engine
    with sm() as s:
        s.add(Cluster(name="other", data_center_id=ids["dc"]))
        s.commit()
    c = admin_client(app)
    for kind, path, api_path in (("data center", f"/ui/datacenters/{ids['dc']}", f"/datacenters/{ids['dc']}"),
                                 ("cluster", f"/ui/clusters/{ids['cluster']}", f"/clusters/{ids['cluster']}")):
        assert f'href="{path}/edit"' in c.get(path).text
        page = c.get(path + "/edit").text
        _accessible(page)
        assert 'value="Default"' in page
        token = _token(page, path + "/edit")
        taken = "other" if kind == "cluster" else None
        _refused(c, path + "/edit", {"csrf": token, "name": "bad name", "description": "kept"}, 400,
                 "is not a valid name")
        _refused(c, path + "/edit", {"csrf": token, "name": "", "description": "kept"}, 400, "Name: required")
        if taken:
            _refused(c, path + "/edit", {"csrf": token, "name": taken, "description": "kept"}, 409,
                     f"a cluster named '{taken}' already exists")
        assert (_api(app, api_path)["name"], _api(app, api_path)["description"]) == ("Default", ""), kind

        r = c.post(path + "/edit", data={"csrf": token, "name": "Main", "description": "the first one"})
        assert r.status_code == 303 and r.headers["Location"] == path
        api = _api(app, api_path)
        assert (api["name"], api["description"]) == ("Main", "the first one"), kind
        assert "Main" in c.get(path).text
    assert c.get("/ui/clusters/no-such-cluster/edit").status_code == 404


def test_networks_and_storage_domains_are_removed_or_say_why_not(engine):
    _cfg, app, sm, ids = engine
    with sm() as s:
        mgmt_net = Network(name="ovirtmgmt", data_center_id=ids["dc"])
        spare_net = Network(name="spare", data_center_id=ids["dc"])
        empty = StorageDomain(name="empty", path="/srv/keel-empty", data_center_id=ids["dc"], status="active")
        s.add_all([mgmt_net, spare_net, empty])
        s.commit()
        mgmt, spare_id, empty_id = mgmt_net.id, spare_net.id, empty.id
    c = admin_client(app)
    # the management network offers no Remove; the others do
    assert "network_remove" not in c.get(f"/ui/networks/{mgmt}").text
    assert f'action="/ui/networks/{mgmt}/remove"' not in c.get(f"/ui/networks/{mgmt}").text
    assert "management network" in c.get(f"/ui/networks/{mgmt}").text
    token = _token(c.get(f"/ui/networks/{spare_id}").text, f"/ui/networks/{spare_id}/remove")
    # a domain holding disks offers none either
    assert f'action="/ui/storagedomains/{ids["sd"]}/remove"' not in c.get(f"/ui/storagedomains/{ids['sd']}").text
    assert f'action="/ui/storagedomains/{empty_id}/remove"' in c.get(f"/ui/storagedomains/{empty_id}").text
    for path, reason in ((f"/ui/networks/{mgmt}/remove", "is the data center's management network"),
                         (f"/ui/networks/{ids['net']}/remove", "is used by VM network interfaces"),
                         (f"/ui/storagedomains/{ids['sd']}/remove", "still holds disks")):
        r = c.post(path, data={"csrf": token})
        assert r.status_code == 409 and reason in _alert(r.text).replace("&#39;", "'"), path
        assert r.text.count("<h1") == 1
    assert (_count(sm, Network), _count(sm, StorageDomain)) == (3, 2)

    r = c.post(f"/ui/networks/{spare_id}/remove", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/networks"
    r = c.post(f"/ui/storagedomains/{empty_id}/remove", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/storagedomains"
    assert _count(sm, Network, Network.id == spare_id) == _count(sm, StorageDomain, StorageDomain.id == empty_id) == 0
    api = app.test_client().get(f"{API}/networks/{spare_id}", headers=admin_headers(app))
    assert api.status_code == 404


def _ha_rows(sm, *records, global_maintenance=False, error=None):
    with sm() as s:
        s.add(HaCluster(id=1, global_maintenance=global_maintenance, updated=utcnow(), error=error))
        s.add_all(records)
        s.commit()


def _ha_record(host_id, hostname, address=None, age=2, **kw):
    fields = dict(ha_state="EngineDown", score=3400, engine_vm_running=False, engine_health="bad",
                  engine_detail="", local_maintenance=False, agent_stopped=False, stale=False)
    fields.update(kw)
    return HaHost(host_id=host_id, hostname=hostname, address=address,
                  record_time=utcnow() - timedelta(seconds=age), **fields)


def _ha_section(c, host_id):
    """The host page's HA section, as the page has it and as its poll answers it."""
    page = c.get(f"/ui/hosts/{host_id}").text
    fragment = c.get(f"/ui/hosts/{host_id}/ha", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert f'hx-get="/ui/hosts/{host_id}/ha" hx-trigger="every 5s"' in page
    section = re.search(r'<section aria-labelledby="ha-host-heading".*?</section>', page, re.S).group(0)
    assert section == re.search(r"<section.*?</section>", fragment.text, re.S).group(0)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))


def test_the_host_page_shows_its_hosted_engine_ha_record(engine):
    _cfg, app, sm, ids = engine
    c = admin_client(app)
    assert "HA: not configured" in _ha_section(c, ids["host"])

    # another host's record only: this one is not a hosted-engine host
    _ha_rows(sm, _ha_record(2, "other.example", "127.0.11.96", engine_vm_running=True, engine_health="good",
                            ha_state="EngineUp"))
    text = _ha_section(c, ids["host"])
    assert "Not a hosted-engine host" in text and "EngineUp" not in text

    # its own record, matched by the address its broker publishes
    with sm() as s:
        s.add(_ha_record(1, "hx.example", HOST_ADDRESS, age=120, ha_state="LocalMaintenance", score=0,
                         engine_detail="Down", local_maintenance=True, stale=True))
        s.get(HaCluster, 1).global_maintenance = True
        s.commit()
    text = _ha_section(c, ids["host"])
    for expected in ("HA host id 1", "HA state LocalMaintenance", "Score 0", "Engine VM not here",
                     "reported running on other.example", "Engine health bad (Down)", "Local maintenance on",
                     "hosted-engine --set-maintenance --mode=none", "stale", "GLOBAL MAINTENANCE",
                     "Global maintenance on"):
        assert expected in text, (expected, text)
    assert re.search(r"Record age 1[23]\d s", text), text
    _accessible(c.get(f"/ui/hosts/{ids['host']}").text)

    # out of local maintenance, it says how to put it there (the engine has no call for it)
    with sm() as s:
        row = s.get(HaHost, 1)
        row.local_maintenance, row.stale, row.ha_state, row.engine_vm_running = False, False, "EngineUp", True
        s.get(HaCluster, 1).global_maintenance = False
        s.commit()
    text = _ha_section(c, ids["host"])
    assert "Local maintenance off" in text and "hosted-engine --set-maintenance --mode=local" in text
    assert "Engine VM runs here" in text and "GLOBAL MAINTENANCE" not in text and "Global maintenance off" in text


def test_a_host_record_is_matched_by_address_then_name_live_first(engine):
    _cfg, app, sm, ids = engine
    with sm() as s:
        host = s.get(Host, ids["host"])
    from keel_engine.services.ha_view import HaHostRow
    now = utcnow()

    def row(host_id, hostname, address=None, stale=False, age=1):
        return HaHostRow(host_id=host_id, hostname=hostname, address=address, ha_state="EngineDown", score=1,
                         engine_vm_running=False, engine_health=None, engine_detail="", local_maintenance=False,
                         agent_stopped=False, record_time=now, stale=stale, age=age)
    assert record_of([row(1, "elsewhere", "127.0.11.96")], host) is None
    assert record_of([row(1, "HX")], host).host_id == 1
    assert record_of([row(1, "hx"), row(2, "x", HOST_ADDRESS)], host).host_id == 2
    assert record_of([row(1, "a", HOST_ADDRESS, stale=True), row(2, "b", HOST_ADDRESS)], host).host_id == 2
