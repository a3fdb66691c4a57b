"""A custom role's permits changed on the roles page, on an in-process engine
(SQLite): a permit added and removed as the API's /roles/{id}/permits does
(read back through the API), its holder then doing exactly what the role
allows; built-in roles and a role's last permit refused with the service's
reason; forms without their security token and users without an
administrative role refused."""
import re

import pytest
from sqlalchemy import select

from harness import ui
from harness.engineapp import admin_headers, engine_app_with_host
from keel_engine.models import Job, Role, Vm
from keel_engine.services import Context, roles, users

from .test_inventory_pages import _accessible
from .test_pages import PASSWORD, _add_vm, _alert, admin_client, sign_in

API = "/ovirt-engine/api"
NOBODY = "127.0.13.91"       # the host's libvirt: nobody answers there


@pytest.fixture
def engine(tmp_path):
    return engine_app_with_host(tmp_path, NOBODY)


def _api_permits(app, role_id):
    r = app.test_client().get(f"{API}/roles/{role_id}/permits",
                              headers={**admin_headers(app), "Accept": "application/json"})
    assert r.status_code == 200, r.text
    return sorted(p["name"] for p in r.get_json()["permit"])


def _row(page, role_id):
    return re.search(rf'<tr id="role-{role_id}">.*?</tr>', page, re.S).group(0)


def test_a_custom_roles_permits_are_added_and_removed_and_its_holder_follows(engine):
    cfg, app, sm, _h = engine
    eng = Context(cfg, sm)
    mine = _add_vm(sm, "mine")
    with sm() as s:
        role = roles.add_role(eng, s, roles.RoleSpec(name="Starter", permits=("login", "manipulate_vm_snapshots")))
        pat = users.add_internal(eng, s, "pat", PASSWORD)
        roles.add_permission(eng, s, role, s.get(Vm, mine), user=pat)
        s.commit()
        role_id, builtin = role.id, s.scalar(select(Role.id).where(Role.name == "UserRole"))
    c = admin_client(app)
    page = c.get("/ui/roles").text
    _accessible(page)
    row = _row(page, role_id)
    assert f'<label for="add-permit-{role_id}">Add a permit to Starter</label>' in row
    assert 'value="run_vm"' in row and 'value="login"' not in row      # only the permits it has not
    assert 'aria-label="Remove permit login from role Starter"' in row
    assert "add-permit-" not in _row(page, builtin) and "Remove permit" not in _row(page, builtin)
    token = ui.form_token(page)

    p = app.test_client()
    sign_in(p, "pat@internal", PASSWORD)
    pt = ui.form_token(p.get("/ui/portal/").text)
    r = p.post(f"/ui/vms/{mine}/start", data={"csrf": pt})
    assert r.status_code == 403 and "run_vm" in _alert(r.text)

    r = c.post(f"/ui/roles/{role_id}/permits", data={"csrf": token, "permit": "run_vm"})
    assert r.status_code == 303 and r.headers["Location"] == f"/ui/roles#role-{role_id}"
    assert _api_permits(app, role_id) == ["login", "manipulate_vm_snapshots", "run_vm"]
    r = p.post(f"/ui/vms/{mine}/start", data={"csrf": pt})
    assert r.status_code == 303 and "job=" in r.headers["Location"]

    r = c.post(f"/ui/roles/{role_id}/permits/manipulate_vm_snapshots/remove", data={"csrf": token})
    assert r.status_code == 303
    assert _api_permits(app, role_id) == ["login", "run_vm"]
    r = p.post(f"/ui/vms/{mine}/snapshots", data={"csrf": pt, "description": "x"})
    assert r.status_code == 403 and "manipulate_vm_snapshots" in _alert(r.text)

    # refused: the service's reason on the roles page, nothing changed
    r = c.post(f"/ui/roles/{role_id}/permits", data={"csrf": token, "permit": "fly_to_the_moon"})
    assert r.status_code == 400 and "no permit 'fly_to_the_moon'" in _alert(r.text).replace("&#39;", "'")
    assert r.text.count("<h1") == 1 and "Traceback" not in r.text
    assert '<details open><summary>2 permits' in _row(r.text, role_id)
    r = c.post(f"/ui/roles/{builtin}/permits", data={"csrf": token, "permit": "delete_vm"})
    assert r.status_code == 409 and "role UserRole is built in and cannot be changed" in _alert(r.text)
    r = c.post(f"/ui/roles/{builtin}/permits/login/remove", data={"csrf": token})
    assert r.status_code == 409 and "role UserRole is built in and cannot be changed" in _alert(r.text)
    c.post(f"/ui/roles/{role_id}/permits/run_vm/remove", data={"csrf": token})
    r = c.post(f"/ui/roles/{role_id}/permits/login/remove", data={"csrf": token})
    assert r.status_code == 409 and "role Starter's last" in _alert(r.text).replace("&#39;", "'")
    assert _api_permits(app, role_id) == ["login"]
    assert "delete_vm" not in _api_permits(app, builtin) and "login" in _api_permits(app, builtin)


def test_permit_changes_refused_without_the_token_or_an_administrative_role(engine):
    cfg, app, sm, _h = engine
    eng = Context(cfg, sm)
    mine = _add_vm(sm, "mine")
    with sm() as s:
        role = roles.add_role(eng, s, roles.RoleSpec(name="Starter", permits=("login", "run_vm")))
        pat = users.add_internal(eng, s, "pat", PASSWORD)
        roles.add_permission(eng, s, role, s.get(Vm, mine), user=pat)
        s.commit()
        role_id = role.id
    writes = ((f"/ui/roles/{role_id}/permits", {"permit": "delete_vm"}),
              (f"/ui/roles/{role_id}/permits/run_vm/remove", {}),
              (f"/ui/roles/{role_id}/edit", {"name": "Taken", "administrative": "on"}))
    c = admin_client(app)
    for path, data in writes:
        r = c.post(path, data=data)
        assert r.status_code == 403 and "security token does not match" in r.text, path
    p = app.test_client()
    sign_in(p, "pat@internal", PASSWORD)
    pt = ui.form_token(p.get("/ui/portal/").text)
    for path, data in writes:
        assert p.post(path, data={"csrf": pt, **data}).status_code == 403, path
    assert _api_permits(app, role_id) == ["login", "run_vm"]
    with sm() as s:
        assert (s.get(Role, role_id).name, s.get(Role, role_id).administrative) == ("Starter", False)
    assert p.post(f"/ui/vms/{mine}/start", data={"csrf": pt}).status_code == 303
    with sm() as s:
        assert s.scalar(select(Job.id)) is not None


def test_a_custom_role_is_renamed_and_made_administrative_and_refusals_keep_the_answers(engine):
    cfg, app, sm, _h = engine
    eng = Context(cfg, sm)
    with sm() as s:
        role = roles.add_role(eng, s, roles.RoleSpec(name="Starter", permits=("login", "run_vm")))
        roles.add_role(eng, s, roles.RoleSpec(name="Other", permits=("login",)))
        s.commit()
        role_id, builtin = role.id, s.scalar(select(Role.id).where(Role.name == "UserRole"))
    c = admin_client(app)
    page = c.get("/ui/roles").text
    _accessible(page)
    assert f'<label for="edit-name-{role_id}">Name of Starter</label>' in _row(page, role_id)
    assert "edit-name-" not in _row(page, builtin)
    token = ui.form_token(page)

    r = c.post(f"/ui/roles/{role_id}/edit", data={"csrf": token, "name": "Operators",
                                                  "description": "start and stop", "administrative": "on"})
    assert r.status_code == 303 and r.headers["Location"] == f"/ui/roles#role-{role_id}"
    got = app.test_client().get(f"{API}/roles/{role_id}", headers={**admin_headers(app), "Accept": "application/json"})
    assert got.status_code == 200, got.text
    body = got.get_json()
    assert (body["name"], body["description"], body["administrative"]) == ("Operators", "start and stop", "true")   # oVirt's JSON: booleans as text

    # refused: a name in use, a bad name, a built-in role; the answers kept, nothing changed
    r = c.post(f"/ui/roles/{role_id}/edit", data={"csrf": token, "name": "Other", "description": "kept text"})
    assert r.status_code == 409 and "Other" in _alert(r.text)
    row = _row(r.text, role_id)
    assert 'value="Other"' in row and 'value="kept text"' in row and "<details open>" in row
    r = c.post(f"/ui/roles/{role_id}/edit", data={"csrf": token, "name": "no/slashes"})
    assert r.status_code == 400 and "Traceback" not in r.text
    r = c.post(f"/ui/roles/{builtin}/edit", data={"csrf": token, "name": "Mine"})
    assert r.status_code == 409 and "role UserRole is built in and cannot be changed" in _alert(r.text)
    with sm() as s:
        assert (s.get(Role, role_id).name, s.get(Role, role_id).administrative) == ("Operators", True)
        assert s.get(Role, builtin).name == "UserRole"
