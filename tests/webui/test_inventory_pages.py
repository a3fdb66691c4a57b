"""The administration portal's inventory pages (data centers, clusters,
storage domains, networks, templates, disks) and its jobs pages, through
Flask's test client on an in-process engine (SQLite): what each page shows,
who may open it, the create and remove forms and their refusals."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from harness import ui
from harness.engineapp import engine_app_with_host
from keel_engine.models import (Cluster, DataCenter, Disk, DiskAttachment, Job, Network, Nic, Role, Step,
                                StorageDomain, Template, Vm, utcnow)
from keel_engine.services import Context, roles, users

from .test_pages import PASSWORD, _alert, admin_client, sign_in

GIB = 1024 ** 3


@pytest.fixture
def engine(tmp_path):
    cfg, app, sm, _host = engine_app_with_host(tmp_path, "127.0.1.95")
    return cfg, app, sm, _seed(sm)


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
    assert second.count('href="/ui/disks/') == 50 and 'rel="next"' in second
    assert last.count('href="/ui/disks/') == 103 - 100 and 'rel="prev"' in last and 'rel="next"' not in last
    assert "No data centers match this search" in c.get("/ui/datacenters?search=name%3Dnothing*").text
    r = c.get("/ui/clusters?search=colour%3Dred")
    assert r.status_code == 400 and "unknown field 'colour'" in _alert(r.text).replace("&#39;", "'")
    # the storage domain's page lists its first disks and links to all of them
    page = c.get(f"/ui/storagedomains/{ids['sd']}").text
    assert "Disks (103)" in page and page.count('href="/ui/disks/') == 100
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
             (f"/ui/templates/{ids['unused']}/remove", {}), (f"/ui/disks/{ids['spare']}/remove", {})]
    for path, data in posts:
        for token in (None, "0" * 64):
            r = c.post(path, data=data if token is None else {"csrf": token, **data})
            assert r.status_code == 403 and "security token does not match" in r.text, path
    assert (_count(sm, DataCenter), _count(sm, Cluster), _count(sm, Template), _count(sm, Job)) == (1, 1, 3, 2)
    assert _count(sm, Disk, Disk.status == "locked") == 0


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
                 f"/ui/jobs/{ids['running']}/detail"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["Location"] == "/ui/portal/", path
    token = ui.form_token(c.get("/ui/portal/").text)
    for path, data in (("/ui/datacenters/new", {"name": "dc2"}),
                       ("/ui/clusters/new", {"name": "cl2", "data_center": ids["dc"]}),
                       (f"/ui/datacenters/{ids['dc']}/remove", {}), (f"/ui/clusters/{ids['cluster']}/remove", {}),
                       (f"/ui/templates/{ids['unused']}/remove", {}), (f"/ui/disks/{ids['spare']}/remove", {})):
        assert c.post(path, data={"csrf": token, **data}).status_code == 403, path
    assert (_count(sm, DataCenter), _count(sm, Cluster), _count(sm, Template), _count(sm, Job)) == (1, 1, 3, 2)
    with sm() as s:
        assert s.get(Disk, ids["spare"]).status == "ok"
