"""Groups, custom roles and VM pools in the web UI, on an in-process engine
(SQLite): a custom role made from permits and given to a user, who can then
do exactly what its permits allow; a directory group (a real OpenLDAP slapd)
added, given a role on a VM, and its member seeing that VM in their portal;
a VM taken from a pool in the VM portal. Every form refused without its
security token, and by a user without an administrative role."""
import re
import shutil
import tempfile

import pytest
from sqlalchemy import func, select

from harness import ui
from harness.engineapp import engine_app_with_host
from harness.slapd import ENGINE_DN, ENGINE_PW, SUFFIX, Slapd, free_port
from keel_engine.models import (BLANK_TEMPLATE_ID, Cluster, Group, Job, Permission, Role, User, Vm, VmPool,
                                VmPoolMember)
from keel_engine.services import Context, directory, roles, users
from keel_engine.services import pools as pool_svc
from keel_engine.services.lookup import Ref

from .test_pages import PASSWORD, _add_vm, _alert, admin_client, sign_in

NOBODY = "127.0.13.96"       # the host's libvirt: nobody answers there
SLAPD = "127.0.13.40"


@pytest.fixture
def engine(tmp_path):
    return engine_app_with_host(tmp_path, NOBODY)


def _user(cfg, sm, name, role_name=None, obj=None):
    """An internal user, with role_name on obj (a model instance's id and class) if given."""
    with sm() as s:
        u = users.add_internal(Context(cfg, sm), s, name, PASSWORD)
        if role_name:
            role = s.scalar(select(Role).where(Role.name == role_name))
            roles.add_permission(Context(cfg, sm), s, role, s.get(*obj) if obj else None, user=u)
        s.commit()
        return u.id


def _count(sm, model, *where):
    with sm() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_a_custom_role_made_in_the_ui_gives_its_holder_exactly_its_permits(engine):
    cfg, app, sm, _h = engine
    mine = _add_vm(sm, "mine")
    pat = _user(cfg, sm, "pat")
    c = admin_client(app)
    page = c.get("/ui/roles").text
    token = ui.form_token(page)
    assert "SuperUser" in page and "UserRole" in page and 'for="permit-run_vm"' in page
    assert re.search(r'<label for="name">Name', page) and re.search(r'<label for="role-description">', page)
    form = {"csrf": token, "name": "VmStarter", "description": "starts VMs", "permit": ["login", "run_vm"]}
    # refused: nothing stored, the reason shown, the answers kept
    for fields, reason, status in (({"permit": []}, "a role needs at least one permit", 400),
                                   ({"name": "bad name!"}, "is not a valid name", 400),
                                   ({"permit": ["login", "fly_to_the_moon"]}, "no permit 'fly_to_the_moon'", 400),
                                   ({"name": "UserRole"}, "UserRole", 409)):
        r = c.post("/ui/roles", data={**form, **fields})
        assert r.status_code == status and reason in _alert(r.text).replace("&#39;", "'"), _alert(r.text)
        assert 'value="starts VMs"' in r.text
        for permit in {**form, **fields}["permit"]:
            if permit != "fly_to_the_moon":
                assert f'id="permit-{permit}" name="permit" value="{permit}" checked' in r.text
    r = c.post("/ui/roles", data={k: v for k, v in form.items() if k != "csrf"})
    assert r.status_code == 403 and "security token does not match" in r.text
    assert _count(sm, Role, Role.name == "VmStarter") == 0
    r = c.post("/ui/roles", data=form)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/roles"
    with sm() as s:
        starter = s.scalar(select(Role).where(Role.name == "VmStarter"))
        assert (starter.mutable, starter.administrative, starter.description) == (True, False, "starts VMs")
        assert sorted(p.name for p in roles.role_permits(s, starter)) == ["login", "run_vm"]
    row = re.search(rf'<tr id="role-{starter.id}">.*?</tr>', c.get("/ui/roles").text, re.S).group(0)
    assert "2 permits" in row and "<code>run_vm</code>" in row and "Remove" in row

    # given on the VM, from the user's page: pat may start it, and nothing else
    r = c.post(f"/ui/users/{pat}/grant", data={"csrf": token, "role": starter.id, "scope": f"vm:{mine}"})
    assert r.status_code == 303
    p = app.test_client()
    assert sign_in(p, "pat@internal", PASSWORD).headers["Location"] == "/ui/portal/"
    assert ">mine</a>" in p.get("/ui/portal/").text
    assert p.get("/ui/roles").headers["Location"] == "/ui/portal/"
    pt = ui.form_token(p.get("/ui/portal/").text)
    r = p.post(f"/ui/vms/{mine}/start", data={"csrf": pt})
    assert r.status_code == 303 and "job=" in r.headers["Location"]
    assert _count(sm, Job, Job.description.like("%mine%")) == 1
    for path, permit in ((f"/ui/vms/{mine}/snapshots", "manipulate_vm_snapshots"),
                         (f"/ui/vms/{mine}/remove", "delete_vm"), (f"/ui/vms/{mine}/migrate", "migrate_vm")):
        r = p.post(path, data={"csrf": pt, "description": "x"})
        assert r.status_code == 403 and permit in _alert(r.text), (path, _alert(r.text))
    r = p.post("/ui/roles", data={**form, "csrf": pt, "name": "Mine"})
    assert r.status_code == 403 and _count(sm, Role, Role.name == "Mine") == 0
    r = p.post(f"/ui/roles/{starter.id}/remove", data={"csrf": pt})
    assert r.status_code == 403

    # a role in use, and a built-in one, are not removed: the service's reason
    r = c.post(f"/ui/roles/{starter.id}/remove", data={"csrf": token})
    assert r.status_code == 409 and "is given in 1 permission(s)" in _alert(r.text)
    with sm() as s:
        builtin = s.scalar(select(Role.id).where(Role.name == "UserRole"))
        perm = s.scalar(select(Permission.id).where(Permission.role_id == starter.id))
    r = c.post(f"/ui/roles/{builtin}/remove", data={"csrf": token})
    assert r.status_code == 409 and "role UserRole is built in and cannot be changed" in _alert(r.text)
    assert _count(sm, Role, Role.id.in_([builtin, starter.id])) == 2
    assert c.post(f"/ui/users/{pat}/permissions/{perm}/remove", data={"csrf": token}).status_code == 303
    assert c.post(f"/ui/roles/{starter.id}/remove", data={"csrf": token}).status_code == 303
    assert _count(sm, Role, Role.id == starter.id) == 0


def test_an_administrative_custom_role_opens_the_administration_portal(engine):
    cfg, app, sm, _h = engine
    ann = _user(cfg, sm, "ann")
    c = admin_client(app)
    token = ui.form_token(c.get("/ui/roles").text)
    r = c.post("/ui/roles", data={"csrf": token, "name": "Watcher", "administrative": "on", "permit": ["login"]})
    assert r.status_code == 303
    with sm() as s:
        watcher = s.scalar(select(Role.id).where(Role.name == "Watcher", Role.administrative.is_(True)))
    assert c.post(f"/ui/users/{ann}/grant", data={"csrf": token, "role": watcher, "scope": "system"}).status_code == 303
    a = app.test_client()
    assert sign_in(a, "ann@internal", PASSWORD).headers["Location"] == "/ui/"
    assert a.get("/ui/hosts").status_code == 200


def test_a_vm_is_taken_from_a_pool_in_the_vm_portal(engine):
    cfg, app, sm, _h = engine
    eng = Context(cfg, sm)
    with sm() as s:
        pool = pool_svc.add_pool(eng, s, pool_svc.PoolSpec(name="desk", cluster=Ref(id=s.scalar(select(Cluster.id))),
                                                           template=Ref(id=BLANK_TEMPLATE_ID), description="desktops"))
        s.commit()
        pool_id = pool.id
        # the worker makes a new VM free once its clean snapshot is taken
        member = s.scalar(select(VmPoolMember).where(VmPoolMember.pool_id == pool_id))
        assert pool_svc.claim(s, member, "preparing", "free")
        s.commit()
        vm_id = member.vm_id
    _user(cfg, sm, "pat", "UserRole", (VmPool, pool_id))
    _user(cfg, sm, "kim", "UserRole", (Vm, _add_vm(sm, "kims")))
    k = app.test_client()
    sign_in(k, "kim@internal", PASSWORD)
    assert "desk" not in k.get("/ui/portal/").text       # no role on the pool: not shown, not taken
    r = k.post(f"/ui/portal/pools/{pool_id}/take", data={"csrf": ui.form_token(k.get("/ui/portal/").text)})
    assert r.status_code == 404
    p = app.test_client()
    sign_in(p, "pat@internal", PASSWORD)
    page = p.get("/ui/portal/").text
    assert "No VM is yours to use yet" in page and "desk-1" not in page
    assert re.search(r"<td>desk</td><td>desktops</td><td>1 of 1</td>", page)
    assert 'aria-label="Take a VM from pool desk">Take a VM</button>' in page
    r = p.post(f"/ui/portal/pools/{pool_id}/take", data={})
    assert r.status_code == 403 and _count(sm, VmPoolMember, VmPoolMember.state == "allocated") == 0
    r = p.post(f"/ui/portal/pools/{pool_id}/take", data={"csrf": ui.form_token(page)})
    assert r.status_code == 303 and r.headers["Location"].startswith(f"/ui/vms/{vm_id}?job=")
    assert "<h1>VM desk-1 " in p.get(r.headers["Location"]).text
    with sm() as s:
        member = s.get(VmPoolMember, vm_id)
        pat = s.scalar(select(User.id).where(User.name == "pat"))
        assert (member.state, member.user_id) == ("allocated", pat)
    page = p.get("/ui/portal/").text
    assert ">desk-1</a>" in page and "<td>0 of 1</td>" in page
    r = p.post(f"/ui/portal/pools/{pool_id}/take", data={"csrf": ui.form_token(page)})
    assert r.status_code == 409 and "you already hold 1 VM(s) of pool desk" in _alert(r.text)
    assert ">desk-1</a>" in r.text and "Traceback" not in r.text


@pytest.fixture(scope="module")
def slapd():
    root = tempfile.mkdtemp(prefix="keel-webui-slapd-")
    sd = Slapd(root, SLAPD, free_port(SLAPD), free_port(SLAPD)).start()
    jdoe = sd.add_user("jdoe", "jdoe-pw-1", "John", "Doe")
    sd.add_group("vmusers", [jdoe])
    yield sd
    sd.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.root
def test_a_directory_group_added_in_the_ui_gives_its_member_the_vm(engine, slapd):
    cfg, app, sm, _h = engine
    with sm() as s:
        directory.add_directory(Context(cfg, sm), s, directory.DirectorySpec(
            name="example.org", profile="openldap", urls=(slapd.url,), base_dn=SUFFIX, tls="starttls",
            ca_file=slapd.ca, bind_dn=ENGINE_DN, bind_password=ENGINE_PW, timeout=3.0))
        s.commit()
    mine, _other = _add_vm(sm, "mine"), _add_vm(sm, "other")
    c = admin_client(app)
    page = c.get("/ui/groups").text
    token = ui.form_token(page)
    assert '<option value="example.org"' in page and '<label for="group-name">' in page
    r = c.post("/ui/groups", data={"csrf": token, "domain": "example.org", "name": "nosuch"})
    assert r.status_code == 400 and "directory example.org has no group 'nosuch'" in _alert(r.text).replace(
        "&#39;", "'")
    assert 'value="nosuch"' in r.text and _count(sm, Group) == 0
    r = c.post("/ui/groups", data={"domain": "example.org", "name": "vmusers"})
    assert r.status_code == 403 and _count(sm, Group) == 0
    r = c.post("/ui/groups", data={"csrf": token, "domain": "example.org", "name": "vmusers"})
    assert r.status_code == 303
    group_page = r.headers["Location"]
    assert "No role: the group gives its members nothing." in c.get(group_page).text
    assert ">vmusers</a>" in c.get("/ui/groups").text
    # jdoe's only way in is the group, and not yet
    j = app.test_client()
    assert sign_in(j, "jdoe@example.org", "jdoe-pw-1").status_code == 403
    with sm() as s:
        role = s.scalar(select(Role.id).where(Role.name == "UserRole"))
    r = c.post(group_page + "/grant", data={"csrf": token, "role": role, "scope": f"vm:{mine}"})
    assert r.status_code == 303
    assert "vm mine" in c.get(group_page).text
    assert sign_in(j, "jdoe@example.org", "jdoe-pw-1").headers["Location"] == "/ui/portal/"
    page = j.get("/ui/portal/").text
    assert ">mine</a>" in page and "other" not in page
    assert j.get("/ui/groups").headers["Location"] == "/ui/portal/"
    r = j.post(group_page + "/remove", data={"csrf": ui.form_token(page)})
    assert r.status_code == 403 and _count(sm, Group) == 1
    # taken away, then the group removed: nothing of it left
    with sm() as s:
        perm = s.scalar(select(Permission.id).where(Permission.group_id.is_not(None)))
    assert c.post(f"{group_page}/permissions/{perm}/remove", data={"csrf": token}).status_code == 303
    assert "No role: the group gives its members nothing." in c.get(group_page).text
    r = c.post(group_page + "/remove", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/groups"
    assert _count(sm, Group) == 0
