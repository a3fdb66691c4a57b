"""VM pools in the administration portal, through Flask's test client on an
in-process engine (SQLite): the list, a pool's page with its VMs and who
holds them, the create, edit and remove forms (each the service call of the
API's POST, PUT or DELETE /vmpools, read back through the API), their
refusals, forms without their security token, and users without an
administrative role."""
import re

import pytest
from sqlalchemy import func, select

from harness import ui
from harness.engineapp import admin_headers, engine_app_with_host
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, Role, User, Vm, VmPool, VmPoolMember
from keel_engine.services import Context, roles, users
from keel_engine.services import pools as pool_svc
from keel_engine.services.lookup import Ref

from .test_inventory_pages import _accessible, _token
from .test_pages import PASSWORD, _alert, admin_client, sign_in

API = "/ovirt-engine/api"
NOBODY = "127.0.13.90"       # the host's libvirt: nobody answers there


@pytest.fixture
def engine(tmp_path):
    return engine_app_with_host(tmp_path, NOBODY)


def _api(app, path):
    r = app.test_client().get(API + path, headers={**admin_headers(app), "Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.get_json()


def _count(sm, model, *where):
    with sm() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def _user(cfg, sm, name, role_name=None, obj=None):
    with sm() as s:
        u = users.add_internal(Context(cfg, sm), s, name, PASSWORD)
        if role_name:
            role = s.scalar(select(Role).where(Role.name == role_name))
            roles.add_permission(Context(cfg, sm), s, role, s.get(*obj) if obj else None, user=u)
        s.commit()
        return u.id


def _refused(c, path, data, status, reason):
    """A refused form: its status, the service's reason, the form again with the answers kept."""
    r = c.post(path, data=data)
    assert r.status_code == status, (data, r.text)
    assert reason in _alert(r.text).replace("&#39;", "'"), (data, _alert(r.text))
    assert r.text.count("<h1") == 1 and f'action="{path}"' in r.text and "Traceback" not in r.text
    for field in ("name", "description", "size", "prestarted_vms", "max_user_vms"):
        if data.get(field):
            assert f'value="{data[field]}"' in r.text, (field, data)
    for field in ("template", "cluster", "type"):
        if data.get(field) and f'value="{data[field]}"' in r.text:
            assert f'value="{data[field]}" selected' in r.text, (field, data)
    return r


def test_a_pool_is_created_shown_edited_and_removed_as_the_api_does(engine):
    cfg, app, sm, _host = engine
    with sm() as s:
        cluster = s.scalar(select(Cluster.id))
    c = admin_client(app)
    assert 'href="/ui/pools">Pools</a>' in c.get("/ui/").text
    page = c.get("/ui/pools/new").text
    _accessible(page)
    assert f'<option value="{BLANK_TEMPLATE_ID}"' in page and f'<option value="{cluster}"' in page
    token = _token(page, "/ui/pools/new")
    base = {"csrf": token, "name": "desk", "template": BLANK_TEMPLATE_ID, "cluster": cluster, "type": "automatic",
            "size": "3", "prestarted_vms": "1", "max_user_vms": "2", "description": "desktops"}
    vms = _count(sm, Vm)
    _refused(c, "/ui/pools/new", {**base, "prestarted_vms": "4"}, 400,
             "prestarted_vms: from 0 to the pool's size (3), got 4")
    _refused(c, "/ui/pools/new", {**base, "size": "0"}, 400, "Size: from 1 to 1000, got 0")
    _refused(c, "/ui/pools/new", {**base, "max_user_vms": "two"}, 400, "Most VMs per user: a whole number")
    _refused(c, "/ui/pools/new", {**base, "template": ""}, 400, "Template: choose one")
    _refused(c, "/ui/pools/new", {**base, "type": "shared"}, 400, "type: expected one of automatic, manual")
    _refused(c, "/ui/pools/new", {**base, "name": "bad name"}, 400, "Name")
    assert _count(sm, VmPool) == 0 and _count(sm, Vm) == vms

    r = c.post("/ui/pools/new", data=base)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/pools"
    _refused(c, "/ui/pools/new", base, 409, "already exists")
    pools = _api(app, "/vmpools")["vm_pool"]
    assert len(pools) == 1
    got = pools[0]
    assert (got["name"], got["description"], got["size"], got["prestarted_vms"], got["max_user_vms"]) == \
        ("desk", "desktops", "3", "1", "2")
    assert got["template"]["id"] == BLANK_TEMPLATE_ID and got["cluster"]["id"] == cluster
    pool_id = got["id"]
    listing = c.get("/ui/pools").text
    _accessible(listing)
    assert f'<a href="/ui/pools/{pool_id}">desk</a>' in listing and "<td>desktops</td>" in listing

    # a user takes a VM of it (as the portal's Take a VM does): the pool's page shows who holds it
    pat = _user(cfg, sm, "pat", "UserRole", (VmPool, pool_id))
    with sm() as s:
        member = s.scalar(select(VmPoolMember).where(VmPoolMember.pool_id == pool_id))
        assert pool_svc.claim(s, member, "preparing", "free")
        s.commit()
        vm, _job = pool_svc.allocate(Context(cfg, sm, user_id=pat), s, s.get(VmPool, pool_id))
        s.commit()
        vm_id = vm.id
    page = c.get(f"/ui/pools/{pool_id}").text
    _accessible(page)
    assert f'<a href="/ui/vms/{vm_id}">desk-1</a>' in page and "<td>allocated</td>" in page
    assert f'<a href="/ui/users/{pat}">pat@internal</a>' in page and "VMs (1)" in page

    edit = c.get(f"/ui/pools/{pool_id}/edit").text
    _accessible(edit)
    assert 'value="3"' in edit and 'value="desktops"' in edit
    token = _token(edit, f"/ui/pools/{pool_id}/edit")
    change = {"csrf": token, "name": "desk", "description": "bigger", "size": "5", "prestarted_vms": "2",
              "max_user_vms": "3"}
    _refused(c, f"/ui/pools/{pool_id}/edit", {**change, "prestarted_vms": "6"}, 400,
             "prestarted_vms: from 0 to the pool's size (5), got 6")
    _refused(c, f"/ui/pools/{pool_id}/edit", {**change, "size": "1001"}, 400, "Size: from 1 to 1000")
    assert _api(app, f"/vmpools/{pool_id}")["size"] == "3"
    r = c.post(f"/ui/pools/{pool_id}/edit", data=change)
    assert r.status_code == 303 and r.headers["Location"] == f"/ui/pools/{pool_id}"
    got = _api(app, f"/vmpools/{pool_id}")
    assert (got["size"], got["prestarted_vms"], got["max_user_vms"], got["description"]) == ("5", "2", "3", "bigger")

    # removal: refused while a VM is not down (the pool's page says why), then done
    token = _token(page, f"/ui/pools/{pool_id}/remove")
    with sm() as s:
        s.get(Vm, vm_id).status = "up"
        s.commit()
    r = c.post(f"/ui/pools/{pool_id}/remove", data={"csrf": token})
    assert r.status_code == 409 and "still has VMs that are not down: desk-1" in _alert(r.text)
    assert "<h1>VM pool desk" in r.text
    with sm() as s:
        assert not s.get(VmPool, pool_id).removing
        s.get(Vm, vm_id).status = "down"
        s.commit()
    r = c.post(f"/ui/pools/{pool_id}/remove", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/pools"
    with sm() as s:
        assert s.get(VmPool, pool_id).removing
        member = s.get(VmPoolMember, vm_id)
        assert (member.state, member.user_id) == ("free", None)     # taken back from its user
    page = c.get(f"/ui/pools/{pool_id}").text
    assert "is being removed" in page and f"/ui/pools/{pool_id}/edit" not in page


def test_pool_forms_refuse_users_without_an_administrative_role_and_forms_without_their_token(engine):
    cfg, app, sm, _host = engine
    with sm() as s:
        cluster = s.scalar(select(Cluster.id))
        pool = pool_svc.add_pool(Context(cfg, sm), s, pool_svc.PoolSpec(
            name="desk", cluster=Ref(id=cluster), template=Ref(id=BLANK_TEMPLATE_ID)))
        s.commit()
        pool_id = pool.id
    new = {"name": "lab", "template": BLANK_TEMPLATE_ID, "cluster": cluster, "size": "1"}
    writes = (("/ui/pools/new", new), (f"/ui/pools/{pool_id}/edit", {"name": "desk", "size": "4"}),
              (f"/ui/pools/{pool_id}/remove", {}))
    c = admin_client(app)
    for path, data in writes:
        r = c.post(path, data=data)
        assert r.status_code == 403 and "security token does not match" in r.text, path
    _user(cfg, sm, "pat", "UserRole", (VmPool, pool_id))
    p = app.test_client()
    sign_in(p, "pat@internal", PASSWORD)
    for path in ("/ui/pools", f"/ui/pools/{pool_id}", "/ui/pools/new", f"/ui/pools/{pool_id}/edit"):
        r = p.get(path)
        assert r.status_code == 303 and r.headers["Location"] == "/ui/portal/", path
    assert 'href="/ui/pools"' not in p.get("/ui/portal/").text
    token = ui.form_token(p.get("/ui/portal/").text)
    for path, data in writes:
        assert p.post(path, data={"csrf": token, **data}).status_code == 403, path
    with sm() as s:
        pool = s.get(VmPool, pool_id)
        assert (pool.size, pool.removing) == (1, False)
        assert s.scalar(select(func.count()).select_from(VmPool)) == 1
        assert s.scalar(select(User.id).where(User.name == "pat")) is not None
