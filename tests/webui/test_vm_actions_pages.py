"""A VM's page and the templates pages, through Flask's test client on an
in-process engine (SQLite): a template made from a down VM, a VM cloned,
a snapshot previewed then committed or undone. Each form makes the service
call the API makes (read back: the job it submitted, the rows, the VM's
status); their refusals show the service's reason and change nothing; a
form without its security token, and a user whose roles lack the permit,
are refused. No worker runs here: the preview, commit and undo jobs (of a
VM without disks: no storage is touched) are run in-process as the engine
worker runs them."""
import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from harness import ui
from harness.engineapp import engine_app_with_host
from keel_engine.models import (Cluster, Disk, DiskAttachment, Job, Role, Snapshot, StorageDomain, Template,
                                Vm, utcnow)
from keel_engine.services import Context, jobs, roles, users
from keel_engine.services import snapshots as snap_svc
from keel_engine.services import templates as tpl_svc
from keel_engine.worker.runner import JobRunner

from .test_inventory_pages import _accessible
from .test_pages import PASSWORD, _add_vm, _alert, admin_client, sign_in

NOBODY = "127.0.13.81"       # the host's libvirt: nobody answers there
HTMX = {"HX-Request": "true"}


@pytest.fixture
def engine(tmp_path):
    return engine_app_with_host(tmp_path, NOBODY)


def _reason(page_text):
    """What a refused form's page (or message) says, as text."""
    found = _alert(page_text)
    return html.unescape(found) if found else ""


def _add_disk(sm, vm_id, tmp_path, name="d1"):
    """A disk attached to the VM, on a storage domain; its volume is never read here (no job runs on it)."""
    with sm() as s:
        sd = s.scalar(select(StorageDomain).where(StorageDomain.name == "data"))
        if sd is None:
            sd = StorageDomain(name="data", path=str(tmp_path / "sd"), status="active",
                               data_center_id=s.scalar(select(Cluster.data_center_id)))
            s.add(sd)
            s.flush()
        d = Disk(name=name, storage_domain_id=sd.id, provisioned_size=2 ** 30, active_volume=f"{name}.v")
        s.add(d)
        s.flush()
        s.add(DiskAttachment(id=d.id, disk_id=d.id, vm_id=vm_id, bootable=True))
        s.commit()
        return d.id


def _set_status(sm, vm_id, status):
    with sm() as s:
        s.get(Vm, vm_id).status = status
        s.commit()


def _status(sm, vm_id):
    with sm() as s:
        return s.get(Vm, vm_id).status


def _count(sm, model, *where):
    with sm() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def _jobs(sm):
    with sm() as s:
        return [(j.kind, j.params) for j in s.scalars(select(Job).order_by(Job.start_time))]


def _user(cfg, sm, name, grants):
    """An internal user with (role name, VM id or None for the system) permissions."""
    with sm() as s:
        u = users.add_internal(Context(cfg, sm), s, name, PASSWORD)
        for role_name, vm_id in grants:
            role = s.scalar(select(Role).where(Role.name == role_name))
            roles.add_permission(Context(cfg, sm), s, role, s.get(Vm, vm_id) if vm_id else None, user=u)
        s.commit()
        return u.id


def _client(app, name):
    c = app.test_client()
    assert sign_in(c, f"{name}@internal", PASSWORD).status_code == 303
    return c


def _run_jobs(cfg, sm, kinds):
    """Every waiting job of these kinds, run as the engine worker runs it; their ids."""
    runner = JobRunner(Context(cfg, sm), kinds, threads=1)
    with sm() as s:
        ids = s.scalars(select(Job.id).where(Job.status == "started", Job.claimed_by.is_(None),
                                             Job.kind.in_(list(kinds)))).all()
    try:
        for job_id in ids:
            runner.run_one(job_id)
    finally:
        runner.shutdown()
    with sm() as s:
        assert [s.get(Job, i).status for i in ids] == ["finished"] * len(ids)
    return ids


def _labelled(page, *ids):
    """Every control named has a label."""
    for ident in ids:
        assert f'id="{ident}"' in page and f'<label for="{ident}">' in page, ident


# ---- make a template ------------------------------------------------------------------
def test_a_template_made_from_a_down_vm_page(engine, tmp_path):
    cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "src")
    _add_disk(sm, vm_id, tmp_path)
    c = admin_client(app)
    page = c.get(f"/ui/vms/{vm_id}").text
    token = ui.form_token(page)
    assert "Make a template" in page and f'action="/ui/vms/{vm_id}/template"' in page
    _labelled(page, "template-name", "template-description", "clone-name")
    _accessible(page)

    # refused: no security token, a name the API refuses; nothing stored, the answers kept
    r = c.post(f"/ui/vms/{vm_id}/template", data={"template_name": "tpl1"})
    assert r.status_code == 403 and "security token" in _reason(r.text)
    r = c.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "bad name!",
                                                  "template_description": "golden"})
    assert r.status_code == 400 and "Template name: 'bad name!' is not a valid name" in _reason(r.text)
    assert 'value="bad name!"' in r.text and 'value="golden"' in r.text
    assert _count(sm, Template, Template.name != "Blank") == 0 and _jobs(sm) == []

    # made: the service call of the API's POST /templates with this VM, its job shown in place
    r = c.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "tpl1",
                                                  "template_description": "golden"}, headers=HTMX)
    assert r.status_code == 200 and "Creating template tpl1 from VM src" in r.text and 'role="status"' in r.text
    with sm() as s:
        t = s.scalar(select(Template).where(Template.name == "tpl1"))
        assert (t.description, t.status, t.source_vm_id) == ("golden", "locked", vm_id)
        t_id = t.id
    assert _jobs(sm) == [("template.create", {"template_id": t_id, "vm_id": vm_id})]
    assert _status(sm, vm_id) == "image_locked"
    listed = c.get("/ui/templates").text
    assert f'href="/ui/templates/{t_id}">tpl1</a>' in listed
    # an image-locked VM's page offers no copy, and one posted anyway is refused with the service's reason
    assert "Make a template" not in c.get(f"/ui/vms/{vm_id}").text
    r = c.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "tpl2"})
    assert r.status_code == 409 and "VM src is image_locked; a template is made from a down VM" in _reason(r.text)
    assert _count(sm, Template, Template.name == "tpl2") == 0 and len(_jobs(sm)) == 1


def test_a_running_vm_is_not_made_a_template_and_its_page_says_why(engine):
    _cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "busy")
    _set_status(sm, vm_id, "up")
    c = admin_client(app)
    page = c.get(f"/ui/vms/{vm_id}").text
    assert "Make a template" not in page and "made from a VM that is down" in page
    token = ui.form_token(page)
    r = c.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "tpl-up"}, headers=HTMX)
    # htmx: the reason goes to the page's message area
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#messages"
    assert "VM busy is up; a template is made from a down VM" in _reason(r.text)
    assert _count(sm, Template, Template.name == "tpl-up") == 0 and _jobs(sm) == [] and _status(sm, vm_id) == "up"


def test_a_template_made_without_disks_is_ready_once_its_job_ran(engine):
    cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "bare")
    c = admin_client(app)
    token = ui.form_token(c.get(f"/ui/vms/{vm_id}").text)
    r = c.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "bare-tpl"})
    assert r.status_code == 303
    job_id = r.headers["Location"].split("job=")[1]
    assert r.headers["Location"] == f"/ui/vms/{vm_id}?job={job_id}"
    assert "Creating template bare-tpl from VM bare" in c.get(r.headers["Location"]).text
    _run_jobs(cfg, sm, {jobs.TEMPLATE_CREATE: tpl_svc.run_create})
    with sm() as s:
        assert s.scalar(select(Template.status).where(Template.name == "bare-tpl")) == "ok"
    assert _status(sm, vm_id) == "down"
    # the name is now taken
    r = c.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "bare-tpl"})
    assert r.status_code == 409 and "a template named 'bare-tpl' already exists" in _reason(r.text)


def test_new_template_from_the_templates_list(engine):
    _cfg, app, sm, _h = engine
    down = _add_vm(sm, "down1")
    up = _add_vm(sm, "up1")
    _set_status(sm, up, "up")
    c = admin_client(app)
    listed = c.get("/ui/templates").text
    assert 'href="/ui/templates/new"' in listed and "New template" in listed
    page = c.get(f"/ui/templates/new?vm={down}").text
    token = ui.form_token(page)
    _labelled(page, "name", "vm", "description")
    _accessible(page)
    # only down VMs are offered, the one asked for chosen
    assert f'<option value="{down}" selected>down1</option>' in page and "up1" not in page
    # refused: a VM that is up (posted anyway), a name the API refuses; the answers kept, nothing stored
    r = c.post("/ui/templates/new", data={"csrf": token, "name": "t-up", "vm": up, "description": "d"})
    assert r.status_code == 409 and "VM up1 is up; a template is made from a down VM" in _reason(r.text)
    assert 'value="t-up"' in r.text
    r = c.post("/ui/templates/new", data={"csrf": token, "name": "t 1", "vm": down})
    assert r.status_code == 400 and "is not a valid name" in _reason(r.text)
    r = c.post("/ui/templates/new", data={"csrf": token, "name": "t1"})
    assert r.status_code == 400 and "VM: choose one" in _reason(r.text)
    assert _count(sm, Template, Template.name != "Blank") == 0 and _jobs(sm) == []
    r = c.post("/ui/templates/new", data={"name": "t1", "vm": down})
    assert r.status_code == 403 and _count(sm, Template, Template.name == "t1") == 0
    r = c.post("/ui/templates/new", data={"csrf": token, "name": "t1", "vm": down, "description": "first"})
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/templates?job=")
    with sm() as s:
        t = s.scalar(select(Template).where(Template.name == "t1"))
        assert (t.status, t.source_vm_id, t.description) == ("locked", down, "first")
    assert _jobs(sm) == [("template.create", {"template_id": t.id, "vm_id": down})]
    assert _status(sm, down) == "image_locked"
    page = c.get(r.headers["Location"]).text
    assert "Creating template t1 from VM down1" in page and ">t1</a>" in page


# ---- clone ---------------------------------------------------------------------------------
def test_a_vm_cloned_from_its_page(engine, tmp_path):
    _cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "orig")
    _add_disk(sm, vm_id, tmp_path)
    other = _add_vm(sm, "taken")
    c = admin_client(app)
    page = c.get(f"/ui/vms/{vm_id}").text
    token = ui.form_token(page)
    assert "Clone the VM" in page and f'action="/ui/vms/{vm_id}/clone"' in page
    # refused: no token, a bad name, a name taken; nothing stored, the answers kept
    r = c.post(f"/ui/vms/{vm_id}/clone", data={"clone_name": "copy1"})
    assert r.status_code == 403
    r = c.post(f"/ui/vms/{vm_id}/clone", data={"csrf": token, "clone_name": ""})
    assert r.status_code == 400 and "New VM name: required" in _reason(r.text)
    r = c.post(f"/ui/vms/{vm_id}/clone", data={"csrf": token, "clone_name": "taken"})
    assert r.status_code == 409 and "a VM named 'taken' already exists" in _reason(r.text)
    assert 'id="clone-name" name="clone_name" value="taken"' in r.text
    assert _count(sm, Vm) == 2 and _jobs(sm) == []

    # cloned: the API's clone call, its job in place; both VMs image locked until it ends
    r = c.post(f"/ui/vms/{vm_id}/clone", data={"csrf": token, "clone_name": "copy1"}, headers=HTMX)
    assert r.status_code == 200 and "Cloning VM orig as copy1" in r.text
    with sm() as s:
        new = s.scalar(select(Vm).where(Vm.name == "copy1"))
        new_disk = s.scalar(select(Disk).join(DiskAttachment, DiskAttachment.disk_id == Disk.id)
                            .where(DiskAttachment.vm_id == new.id))
        assert (new.status, new.memory, new.cluster_id) == ("image_locked", 256 * 2 ** 20,
                                                             s.get(Vm, vm_id).cluster_id)
        assert (new_disk.name, new_disk.status) == ("copy1_Disk1", "locked")
    assert _jobs(sm) == [("vm.create_disks", {"vm_id": new.id, "copies": {new_disk.id: "d1.v"},
                                              "source_vm_id": vm_id})]
    assert _status(sm, vm_id) == "image_locked"
    assert "copy1" in c.get("/ui/vms").text
    # while the copy runs, the source is refused with the service's reason
    r = c.post(f"/ui/vms/{vm_id}/clone", data={"csrf": token, "clone_name": "copy2"})
    assert r.status_code == 409 and "VM orig is image_locked; clone it while it is down" in _reason(r.text)
    assert _count(sm, Vm, Vm.name == "copy2") == 0
    # a VM without disks is cloned at once: its page next
    r = c.post(f"/ui/vms/{other}/clone", data={"csrf": token, "clone_name": "taken2"})
    assert r.status_code == 303
    with sm() as s:
        made = s.scalar(select(Vm).where(Vm.name == "taken2"))
        assert made.status == "down" and r.headers["Location"] == f"/ui/vms/{made.id}"


# ---- who may -----------------------------------------------------------------------------------
def test_a_user_with_a_vm_role_copies_only_as_its_permits_say(engine):
    cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "theirs")
    _user(cfg, sm, "una", [("UserVmManager", vm_id)])
    _user(cfg, sm, "pat", [("UserVmManager", vm_id), ("PowerUserRole", None)])
    una = _client(app, "una")
    page = una.get(f"/ui/vms/{vm_id}").text
    token = ui.form_token(page)
    # UserVmManager has no create_template, and create_vm on the VM but not on its cluster
    assert "Make a template" not in page and "Clone the VM" not in page
    r = una.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "una-tpl"})
    assert r.status_code == 403 and "you need the create_template permit on VM theirs" in _reason(r.text)
    r = una.post(f"/ui/vms/{vm_id}/clone", data={"csrf": token, "clone_name": "una-copy"})
    # the service's answer for a cluster the user's roles do not show (as the API's clone answers)
    assert r.status_code == 404 and "cluster" in _reason(r.text)
    assert una.get("/ui/templates/new").status_code == 303      # the administration portal: not theirs
    assert una.post("/ui/templates/new", data={"csrf": token, "name": "x", "vm": vm_id}).status_code == 403
    assert _count(sm, Template, Template.name != "Blank") == 0 and _count(sm, Vm) == 1 and _jobs(sm) == []
    assert _status(sm, vm_id) == "down"

    # PowerUserRole adds create_template and create_vm everywhere
    pat = _client(app, "pat")
    page = pat.get(f"/ui/vms/{vm_id}").text
    token = ui.form_token(page)
    assert "Make a template" in page and "Clone the VM" in page
    r = pat.post(f"/ui/vms/{vm_id}/clone", data={"csrf": token, "clone_name": "pat-copy"})
    assert r.status_code == 303
    assert pat.get(r.headers["Location"]).status_code == 200     # they own the clone
    r = pat.post(f"/ui/vms/{vm_id}/template", data={"csrf": token, "template_name": "pat-tpl"}, headers=HTMX)
    assert r.status_code == 200 and "Creating template pat-tpl from VM theirs" in r.text
    assert [k for k, _p in _jobs(sm)] == ["template.create"]


# ---- snapshot preview, commit, undo ---------------------------------------------------------------
def _snapshots(sm, vm_id, *descriptions):
    """Snapshots of the VM, an hour apart, oldest first; their ids."""
    with sm() as s:
        vm = s.get(Vm, vm_id)
        rows = [Snapshot(vm_id=vm_id, description=d, volumes={}, memory=vm.memory, cpus=vm.cpus,
                         date=utcnow() - timedelta(hours=len(descriptions) - i))
                for i, d in enumerate(descriptions)]
        s.add_all(rows)
        s.commit()
        return [x.id for x in rows]


def _snapshot_rows(sm, vm_id):
    with sm() as s:
        return [(x.description, x.status) for x in
                s.scalars(select(Snapshot).where(Snapshot.vm_id == vm_id).order_by(Snapshot.date))]


SNAPSHOT_JOBS = {jobs.SNAPSHOT_PREVIEW: snap_svc.run_preview, jobs.SNAPSHOT_COMMIT: snap_svc.run_commit,
                 jobs.SNAPSHOT_UNDO: snap_svc.run_undo}


def _buttons(page):
    """The snapshot section's buttons: (action path, label)."""
    section = page.split('id="vm-snapshots"', 1)[1].split("<h2>Events</h2>", 1)[0]
    return re.findall(r'<form method="post" action="([^"]+)"[^>]*>\s*<input[^>]*><input[^>]*>\s*'
                      r'<button type="submit"[^>]*>([^<]+)</button>', section)


def test_a_snapshot_previewed_then_undone_then_committed(engine):
    cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "prev")
    first, second = _snapshots(sm, vm_id, "first", "second")
    base = f"/ui/vms/{vm_id}"
    c = admin_client(app)
    page = c.get(base).text
    token = ui.form_token(page)
    assert _buttons(page) == [(f"{base}/snapshots/{first}/preview", "Preview"),
                              (f"{base}/snapshots/{first}/restore", "Restore"),
                              (f"{base}/snapshots/{first}/remove", "Remove"),
                              (f"{base}/snapshots/{second}/preview", "Preview"),
                              (f"{base}/snapshots/{second}/restore", "Restore"),
                              (f"{base}/snapshots/{second}/remove", "Remove")]
    assert 'id="preview-note"' not in page

    # refused: a running VM (no Preview offered), no token, nothing to commit or undo
    _set_status(sm, vm_id, "up")
    assert "/preview" not in "".join(a for a, _l in _buttons(c.get(base).text))
    r = c.post(f"{base}/snapshots/{first}/preview", data={"csrf": token})
    assert r.status_code == 409 and "VM prev is up; preview a snapshot while it is down" in _reason(r.text)
    _set_status(sm, vm_id, "down")
    assert c.post(f"{base}/snapshots/{first}/preview", data={}).status_code == 403
    for end in ("commit", "undo"):
        r = c.post(f"{base}/snapshots/{end}", data={"csrf": token})
        assert r.status_code == 409 and "VM prev is not previewing a snapshot" in _reason(r.text)
    assert _jobs(sm) == [] and _snapshot_rows(sm, vm_id) == [("first", "ok"), ("second", "ok")]

    # preview: the API's previewsnapshot, its job in place, the VM image locked until it ends
    r = c.post(f"{base}/snapshots/{first}/preview", data={"csrf": token}, headers=HTMX)
    assert r.status_code == 200 and "Previewing snapshot &#39;first&#39; of VM prev" in r.text
    assert _jobs(sm) == [("snapshot.preview", {"snapshot_id": first, "vm_id": vm_id})]
    assert _status(sm, vm_id) == "image_locked"
    _run_jobs(cfg, sm, SNAPSHOT_JOBS)
    assert _status(sm, vm_id) == "down"
    assert _snapshot_rows(sm, vm_id) == [("first", "in_preview"), ("second", "ok"),
                                         (snap_svc.PREVIEW_DESCRIPTION, "preview")]
    page = c.get(base).text
    assert re.search(r"""id="preview-note">\s*<p><strong>Previewing snapshot 'first'</strong>""", page)
    # while in preview: commit and undo; no preview or restore; only the snapshot outside the preview removed
    assert _buttons(page) == [(f"{base}/snapshots/commit", "Commit the preview"),
                              (f"{base}/snapshots/undo", "Undo the preview"),
                              (f"{base}/snapshots/{second}/remove", "Remove")]
    assert "<td>Active VM before the preview</td>" in page and "status-preview" not in page
    _accessible(page)
    assert 'id="snapshot-description"' not in page
    # posted anyway, each is refused with the service's reason and changes nothing
    r = c.post(f"{base}/snapshots/{second}/restore", data={"csrf": token})
    assert r.status_code == 409 and ("VM prev is previewing snapshot 'first'; commit or undo the preview before "
                                     "restoring a snapshot") in _reason(r.text)
    r = c.post(f"{base}/snapshots/{first}/remove", data={"csrf": token})
    assert r.status_code == 409 and "is part of the preview of VM prev" in _reason(r.text)
    r = c.post(f"{base}/snapshots", data={"csrf": token, "description": "third"})
    assert r.status_code == 409 and "before taking a snapshot" in _reason(r.text)
    assert len(_jobs(sm)) == 1 and len(_snapshot_rows(sm, vm_id)) == 3
    # started, the VM keeps its preview; the page says to shut it down first
    _set_status(sm, vm_id, "up")
    page = c.get(base).text
    assert 'id="preview-note"' in page and "Shut the VM down to commit or undo" in page
    assert f"{base}/snapshots/commit" not in page
    r = c.post(f"{base}/snapshots/commit", data={"csrf": token})
    assert r.status_code == 409 and "commit the preview while it is down" in _reason(r.text)
    _set_status(sm, vm_id, "down")

    # undo: back to before the preview
    r = c.post(f"{base}/snapshots/undo", data={"csrf": token})
    assert r.status_code == 303 and "?job=" in r.headers["Location"]
    assert _jobs(sm)[-1] == ("snapshot.undo", {"snapshot_id": first, "vm_id": vm_id})
    assert _status(sm, vm_id) == "image_locked"
    _run_jobs(cfg, sm, SNAPSHOT_JOBS)
    assert _snapshot_rows(sm, vm_id) == [("first", "ok"), ("second", "ok")]
    assert 'id="preview-note"' not in c.get(base).text

    # preview again, then commit: the later snapshot goes
    assert c.post(f"{base}/snapshots/{first}/preview", data={"csrf": token}).status_code == 303
    _run_jobs(cfg, sm, SNAPSHOT_JOBS)
    r = c.post(f"{base}/snapshots/commit", data={"csrf": token}, headers=HTMX)
    assert r.status_code == 200 and "Committing the preview of snapshot &#39;first&#39; of VM prev" in r.text
    assert _jobs(sm)[-1] == ("snapshot.commit", {"snapshot_id": first, "vm_id": vm_id})
    _run_jobs(cfg, sm, SNAPSHOT_JOBS)
    assert _snapshot_rows(sm, vm_id) == [("first", "ok")] and _status(sm, vm_id) == "down"
    assert _buttons(c.get(base).text)[0] == (f"{base}/snapshots/{first}/preview", "Preview")


def test_snapshot_preview_needs_the_snapshot_permit(engine):
    cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "used")
    first, = _snapshots(sm, vm_id, "first")
    _user(cfg, sm, "ruth", [("UserRole", vm_id)])
    _user(cfg, sm, "max", [("UserVmManager", vm_id)])
    ruth = _client(app, "ruth")
    ruth_token = ui.form_token(ruth.get(f"/ui/vms/{vm_id}").text)
    r = ruth.post(f"/ui/vms/{vm_id}/snapshots/{first}/preview", data={"csrf": ruth_token})
    assert r.status_code == 403 and "you need the manipulate_vm_snapshots permit on VM used" in _reason(r.text)
    assert _jobs(sm) == [] and _status(sm, vm_id) == "down"
    mx = _client(app, "max")
    token = ui.form_token(mx.get(f"/ui/vms/{vm_id}").text)
    r = mx.post(f"/ui/vms/{vm_id}/snapshots/{first}/preview", data={"csrf": token})
    assert r.status_code == 303
    assert _jobs(sm) == [("snapshot.preview", {"snapshot_id": first, "vm_id": vm_id})]
    _run_jobs(cfg, sm, SNAPSHOT_JOBS)
    r = ruth.post(f"/ui/vms/{vm_id}/snapshots/undo", data={"csrf": ruth_token})
    assert r.status_code == 403 and "manipulate_vm_snapshots" in _reason(r.text) and len(_jobs(sm)) == 1
    page = mx.get(f"/ui/vms/{vm_id}").text
    assert "Previewing snapshot 'first'" in page and f"/ui/vms/{vm_id}/snapshots/undo" in page


def test_no_preview_while_a_snapshot_is_being_taken(engine):
    _cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "taking")
    first, second = _snapshots(sm, vm_id, "first", "second")
    with sm() as s:
        s.get(Snapshot, second).status = "locked"
        s.commit()
    base = f"/ui/vms/{vm_id}"
    c = admin_client(app)
    page = c.get(base).text
    assert _buttons(page) == [(f"{base}/snapshots/{first}/remove", "Remove"),
                              (f"{base}/snapshots/{second}/remove", "Remove")]
    r = c.post(f"{base}/snapshots/{first}/preview", data={"csrf": ui.form_token(page)})
    assert r.status_code == 409 and ("snapshot 'second' of VM taking is being taken; preview a snapshot once it "
                                     "is done") in _reason(r.text)
    assert _jobs(sm) == [] and _status(sm, vm_id) == "down"
