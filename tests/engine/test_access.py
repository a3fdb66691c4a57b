"""Access control through the engine's own API (in-process app, real SQLite):
what each role lets a user see and do, oVirt's Filter, groups, disabled
users, custom roles, who may give which role, and the rule itself as pure
data (services.access.decide)."""
import ast
import pathlib

import pytest
from sqlalchemy import event as sa_event

from harness.access import PASSWORD, build
from keel_engine.models import DirectoryMembership, Group, Permission, Role, Token, User
from keel_engine.services import access, permits
from keel_engine.services.access import Grant, Node, decide

SERVICES = pathlib.Path(access.__file__).parent


@pytest.fixture
def w(tmp_path):
    return build(tmp_path)


# ---- the rule, as data --------------------------------------------------------------------
def grant(otype, oid, names, admin=False, children=True):
    return Grant(otype, oid, admin, children, frozenset(names))


VM_CHAIN = [Node("vm", "v1"), Node("cluster", "c1"), Node("data_center", "d1"), Node(None, None)]


def test_a_permit_on_a_parent_covers_the_object():
    assert decide(VM_CHAIN, [grant("cluster", "c1", {"run_vm"})], "run_vm") == "allowed"
    assert decide(VM_CHAIN, [grant(None, None, {"run_vm"})], "run_vm") == "allowed"
    assert decide(VM_CHAIN, [grant("cluster", "c2", {"run_vm"})], "run_vm") == "hidden"


def test_seeing_children_needs_a_role_that_allows_it():
    creator = grant("cluster", "c1", {"create_vm", "login"}, children=False)
    assert decide(VM_CHAIN, [creator], "run_vm") == "hidden"
    assert decide([Node("cluster", "c1")] + VM_CHAIN[2:], [creator], "create_vm") == "allowed"
    assert decide(VM_CHAIN, [grant("vm", "v1", {"login"}, children=False)], "run_vm") == "visible"


def test_filter_leaves_out_administrative_roles():
    ro_admin = grant("cluster", "c1", {"login"}, admin=True)
    assert access.sees(VM_CHAIN, [ro_admin]) and not access.sees(VM_CHAIN, [ro_admin], filtered=True)


def test_a_pool_passes_only_administrative_roles_down_to_its_vms():
    chain = VM_CHAIN + [Node("vm_pool", "p1", via_pool=True)]
    assert decide(chain, [grant("vm_pool", "p1", {"run_vm"})], "run_vm") == "hidden"
    assert decide(chain, [grant("vm_pool", "p1", {"run_vm"}, admin=True)], "run_vm") == "allowed"


def test_blank_is_everyones_template():
    from keel_engine.models import BLANK_TEMPLATE_ID
    assert decide([Node("template", BLANK_TEMPLATE_ID), Node(None, None)], [], "delete_template") == "visible"


def test_builtin_roles_name_only_known_permits_and_superuser_has_all():
    su = permits.BUILTIN_BY_NAME["SuperUser"]
    assert su.permits == frozenset(permits.BY_NAME)
    for r in permits.BUILTIN_ROLES:
        assert "login" in r.permits, r.name
    wanted = {"SuperUser", "ClusterAdmin", "DataCenterAdmin", "HostAdmin", "StorageAdmin", "NetworkAdmin",
              "TemplateAdmin", "UserRole", "PowerUserRole", "UserVmManager", "VmCreator", "ReadOnlyAdmin"}
    assert wanted <= set(permits.BUILTIN_BY_NAME)


# ---- signing in ------------------------------------------------------------------------------
def test_a_user_without_any_role_cannot_sign_in(w):
    w.user("nobody")
    r = w.client().post("/ovirt-engine/sso/oauth/token", data={
        "grant_type": "password", "username": "nobody", "password": PASSWORD})
    assert r.status_code == 401 and "login permit" in r.get_json()["error"]
    import base64
    basic = {"Authorization": "Basic " + base64.b64encode(f"nobody@internal:{PASSWORD}".encode()).decode()}
    r = w.get(basic, "/vms")
    assert r.status_code == 401 and b"login permit" in r.get_data()


def test_a_disabled_user_cannot_sign_in_and_its_token_stops_at_once(w):
    uid = w.user("dora", [("UserRole", "vm:a1")])
    h = w.token("dora")
    assert w.names(h, "/vms", "vm") == ["a1"]
    with w.sm() as s:
        from keel_engine.services import users
        users.set_disabled(w.engine, s, s.get(User, uid), True)
        s.commit()
    assert w.get(h, "/vms").status_code == 401
    r = w.client().post("/ovirt-engine/sso/oauth/token", data={
        "grant_type": "password", "username": "dora", "password": PASSWORD})
    assert r.status_code == 401 and "disabled" in r.get_json()["error"]
    with w.sm() as s:
        users.set_disabled(w.engine, s, s.get(User, uid), False)
        s.commit()
        assert all(t.revoked for t in s.query(Token).filter_by(user_id=uid))
    assert w.get(h, "/vms").status_code == 401           # the old token stays dead
    assert w.names(w.token("dora"), "/vms", "vm") == ["a1"]


# ---- what roles give ------------------------------------------------------------------------------
def test_userrole_on_one_vm_sees_only_it_and_may_use_but_not_change_it(w):
    w.user("ursula", [("UserRole", "vm:a1")])
    h = w.token("ursula")
    ids = w.ids
    assert w.names(h, "/vms", "vm") == ["a1"]
    for path, tag in (("/hosts", "host"), ("/clusters", "cluster"), ("/datacenters", "data_center"),
                      ("/storagedomains", "storage_domain"), ("/vmpools", "vm_pool"), ("/jobs", "job")):
        assert w.names(h, path, tag) == [], path
    assert w.names(h, "/templates", "template") == ["Blank"]
    assert w.names(h, "/disks", "disk") == ["a1_Disk1"]
    seen = w.get(h, "/events").get_json()["event"]
    assert "about a1" in [e["description"] for e in seen]
    assert {e.get("vm", {}).get("id") for e in seen} == {ids["vm:a1"]}     # events of its VM only
    assert w.get(h, f"/vms/{ids['vm:a2']}").status_code == 404
    assert w.get(h, f"/vms/{ids['vm:a1']}/nics").status_code == 200
    # visible, not changeable: 403; invisible: 404 (as if it did not exist)
    assert w.send(h, "PUT", f"/vms/{ids['vm:a1']}", {"description": "x"}).status_code == 403
    assert w.send(h, "DELETE", f"/vms/{ids['vm:a1']}").status_code == 403
    assert w.send(h, "PUT", f"/vms/{ids['vm:a2']}", {"description": "x"}).status_code == 404
    assert w.send(h, "POST", f"/vms/{ids['vm:a2']}/start?async=true").status_code == 404
    r = w.send(h, "POST", f"/vms/{ids['vm:a1']}/start?async=true")
    assert r.status_code == 202, r.get_data()
    assert w.get(h, f"/jobs/{r.get_json()['job']['id']}").status_code == 200   # its own job
    assert w.send(h, "POST", "/datacenters", {"name": "mine"}).status_code == 403
    r = w.send(h, "POST", "/vms", {"name": "new1", "cluster": {"id": ids["cluster:A"]}})
    assert r.status_code == 400 and b"does not exist" in r.get_data()    # a cluster it cannot see


def test_clusteradmin_covers_its_clusters_vms_and_hosts_only(w):
    w.user("cleo", [("ClusterAdmin", "cluster:A")])
    h = w.token("cleo")
    ids = w.ids
    assert w.names(h, "/vms", "vm") == ["a1", "a2", "pA-1"]
    assert w.names(h, "/hosts", "host") == ["hA"]
    assert w.names(h, "/clusters", "cluster") == ["A"]
    assert w.names(h, "/datacenters", "data_center") == []
    assert w.send(h, "PUT", f"/vms/{ids['vm:a2']}", {"description": "by cleo"}).status_code == 200
    assert w.send(h, "PUT", f"/vms/{ids['vm:b1']}", {"description": "x"}).status_code == 404
    r = w.send(h, "POST", "/vms", {"name": "c-new", "cluster": {"id": ids["cluster:A"]}})
    assert r.status_code == 201, r.get_data()
    assert w.send(h, "POST", "/vms", {"name": "c-new2", "cluster": {"id": ids["cluster:B"]}}).status_code == 400
    assert w.send(h, "PUT", f"/hosts/{ids['host:A']}", {"name": "hA2"}).status_code == 200
    assert w.send(h, "POST", "/clusters", {"name": "C", "data_center": {"id": ids["dc"]}}).status_code == 400


def test_filter_shows_only_what_user_roles_give(w):
    w.user("fred", [("UserRole", "vm:b1"), ("ReadOnlyAdmin", "cluster:A")])
    h = w.token("fred")
    assert w.names(h, "/vms", "vm") == ["a1", "a2", "b1", "pA-1"]
    assert w.names(h, "/vms", "vm", Filter="true") == ["b1"]
    assert w.names(h, "/vms?filter=true", "vm") == ["b1"]
    admin = w.admin()
    assert len(w.names(admin, "/vms", "vm")) == 4
    assert w.names(admin, "/vms", "vm", Filter="true") == []   # admin@internal has no user role (oVirt too)
    # ReadOnlyAdmin changes nothing
    assert w.send(h, "PUT", f"/vms/{w.ids['vm:a1']}", {"description": "x"}).status_code == 403


def test_a_directory_group_carries_its_permissions(w):
    uid = w.user("gina")
    with w.sm() as s:
        g = s.get(Group, w.ids["group"])
        w.grant(s, g, "UserRole", "vm:a2")
        s.add(DirectoryMembership(user_id=uid, domain=g.domain, group_external_id=g.external_id))
        s.commit()
    h = w.token("gina")      # signs in thanks to the group's role (it has the login permit)
    assert w.names(h, "/vms", "vm") == ["a2"]
    with w.sm() as s:
        s.query(DirectoryMembership).filter_by(user_id=uid).delete()
        s.commit()
    assert w.names(h, "/vms", "vm") == []     # out of the group: nothing, at once


def test_a_power_user_owns_the_vms_it_makes(w):
    w.user("pia", [("PowerUserRole", "cluster:A")])
    h = w.token("pia")
    assert w.names(h, "/vms", "vm") == []      # PowerUserRole does not show what is under the cluster
    r = w.send(h, "POST", "/vms", {"name": "pia-vm", "cluster": {"id": w.ids["cluster:A"]}})
    assert r.status_code == 201, r.get_data()
    assert w.names(h, "/vms", "vm") == ["pia-vm"]
    assert w.send(h, "PUT", f"/vms/{r.get_json()['id']}", {"description": "mine"}).status_code == 200
    perms = w.get(h, f"/vms/{r.get_json()['id']}/permissions").get_json()["permission"]
    with w.sm() as s:
        assert [s.get(Role, p["role"]["id"]).name for p in perms] == ["UserVmManager"]


# ---- giving roles --------------------------------------------------------------------------------
def test_no_one_gives_more_than_they_hold(w):
    w.user("vic", [("UserVmManager", "vm:a1")])
    other = w.user("olga", [("UserRole", "vm:a2")])
    h = w.token("vic")
    with w.sm() as s:
        roles = {r.name: r.id for r in s.query(Role)}
    r = w.send(h, "POST", f"/vms/{w.ids['vm:a1']}/permissions",
               {"role": {"name": "SuperUser"}, "user": {"id": other}})
    assert r.status_code == 403 and b"you cannot give it" in r.get_data()
    r = w.send(h, "POST", f"/vms/{w.ids['vm:a1']}/permissions",
               {"role": {"id": roles["UserRole"]}, "user": {"id": other}})
    assert r.status_code == 201, r.get_data()
    assert w.names(w.token("olga"), "/vms", "vm") == ["a1", "a2"]
    r = w.send(h, "POST", f"/vms/{w.ids['vm:a2']}/permissions", {"role": {"name": "UserRole"}, "user": {"id": other}})
    assert r.status_code == 404
    assert w.send(h, "POST", "/permissions", {"role": {"name": "UserRole"}, "user": {"id": other}}).status_code == 403


def test_custom_roles_with_permits(w):
    admin = w.admin()
    r = w.send(admin, "POST", "/roles", {"name": "Starter2", "administrative": False,
                                         "permits": {"permit": [{"name": "login"}, {"id": "22"}]}})
    assert r.status_code == 201, r.get_data()
    role_id = r.get_json()["id"]
    assert w.names(admin, f"/roles/{role_id}/permits", "permit") == ["login", "run_vm"]
    assert w.send(admin, "POST", f"/roles/{role_id}/permits", {"name": "stop_vm"}).status_code == 201
    uid = w.user("sam")
    assert w.send(admin, "POST", f"/users/{uid}/permissions",
                  {"role": {"id": role_id}, "vm": {"id": w.ids["vm:a1"]}}).status_code == 201
    h = w.token("sam")
    assert w.names(h, "/vms", "vm") == ["a1"]
    assert w.send(h, "POST", f"/vms/{w.ids['vm:a1']}/reboot?async=true").status_code == 403
    assert w.send(admin, "DELETE", f"/roles/{role_id}").status_code == 409          # in use
    with w.sm() as s:
        su = s.query(Role).filter_by(name="SuperUser").one().id
    assert w.send(admin, "PUT", f"/roles/{su}", {"description": "mine now"}).status_code == 409
    assert w.send(admin, "POST", "/roles", {"name": "Empty"}).status_code == 400
    assert w.send(h, "POST", "/roles", {"name": "Sneaky", "permits": {"permit": [{"name": "login"}]}}
                  ).status_code == 403


def test_the_last_superuser_permission_stays(w):
    admin = w.admin()
    with w.sm() as s:
        p = s.query(Permission).filter_by(user_id=w.ids["admin"], object_type=None).one()
    r = w.send(admin, "DELETE", f"/permissions/{p.id}")
    assert r.status_code == 409 and b"last SuperUser" in r.get_data()


# ---- every write says who did it -----------------------------------------------------------------
OBSERVATIONS = {
    # state the engine observed or its own follow-up steps, not a user's write
    ("hosts.py", "set_status"), ("disks.py", "create_volume_of"), ("disks.py", "delete_volumes_of"),
    ("vm_leases.py", "lease_for"),
    ("directory.py", "sign_in"),     # an account refused before the engine has a user for it
}


def test_every_event_of_a_write_names_its_user():
    missing = []
    for path in sorted(SERVICES.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for call in ast.walk(fn):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "add" and getattr(call.func.value, "id", "") == "events"
                        and not any(k.arg == "user_id" for k in call.keywords)
                        and (path.name, fn.name) not in OBSERVATIONS):
                    missing.append(f"{path.name}:{call.lineno} ({fn.name})")
    assert missing == [], missing


def test_a_filtered_get_costs_the_same_statements_as_an_admins(w):
    w.user("quinn", [("UserRole", "vm:a1")])
    h = w.token("quinn")
    statements = []
    sa_event.listen(w.app.config["KEEL_CTX"].engine, "before_cursor_execute",
                    lambda *a, **kw: None if a[2].split()[0] in ("BEGIN", "COMMIT", "ROLLBACK")
                    else statements.append(a[2]))
    assert w.get(h, f"/vms/{w.ids['vm:a1']}").status_code == 200
    assert len(statements) == 2        # the token, the VM (what may be seen is part of its query)
    statements.clear()
    assert w.names(h, "/vms", "vm") == ["a1"]
    assert len(statements) == 2


def test_an_engine_from_before_access_control_keeps_its_administrator(tmp_path):
    """0003 -> 0004: the roles made then (random ids, no permits) become the
    built-in ones, with their permits; admin@internal still does everything."""
    from alembic import command
    from sqlalchemy import text

    from keel_engine import db
    from keel_engine.app import create_app
    from keel_engine.config import EngineConfig
    from keel_engine.services import auth
    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(db.alembic_config(url), "0003")
    eng = db.make_engine(url)
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO roles (id, name, description, administrative) VALUES "
                          "('r-su', 'SuperUser', '', 1), ('r-user', 'UserRole', '', 0)"))
        conn.execute(text("INSERT INTO users (id, name, domain, password_hash, created) VALUES "
                          "('u-admin', 'admin', 'internal', :h, '2026-01-01')"), {"h": auth.hash_password("old-pw-1")})
        conn.execute(text("INSERT INTO permissions (id, role_id, user_id) VALUES ('p1', 'r-su', 'u-admin')"))
    eng.dispose()
    app = create_app(EngineConfig(database_url=url, secret_key_file=str(tmp_path / "k")))
    c = app.test_client()
    r = c.post("/ovirt-engine/sso/oauth/token", data={"grant_type": "password", "username": "admin@internal",
                                                      "password": "old-pw-1"})
    assert r.status_code == 200, r.get_json()
    h = {"Authorization": f"Bearer {r.get_json()['access_token']}", "Accept": "application/json",
         "Content-Type": "application/json"}
    assert c.post("/ovirt-engine/api/datacenters", headers=h, data='{"name": "after"}').status_code == 201
    roles = {x["name"]: x for x in c.get("/ovirt-engine/api/roles", headers=h).get_json()["role"]}
    assert roles["SuperUser"]["id"] == "r-su" and roles["SuperUser"]["mutable"] == "false"
    assert len(c.get("/ovirt-engine/api/roles/r-su/permits", headers=h).get_json()["permit"]) == len(permits.PERMITS)
