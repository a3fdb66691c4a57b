"""Every route of the served OpenAPI document, called by users who may do
nothing: nothing is readable, nothing changes.

`walker` holds one permission: a custom role with only the login permit, on
the system (so it can sign in at all). Every path is filled with the id of a
real object of that kind (made by the administrator), every body with
plausible values from the route's own schema (references to real objects,
the user itself where a user is named). Reads must answer 404, or an empty
list, except the vocabulary every signed-in user reads (roles and permits,
the Blank template, its own user and permission, the API root with zero
counts). Writes must be refused (403, 404, or 400 for a reference to an
object it may not see) and leave every table as it was. Before access
control, this user could create a data center (201)."""
import base64
import json

import pytest
from sqlalchemy import MetaData

from harness.access import API, PASSWORD, build
from keel_engine.api import fields
from keel_engine.models import Permission, Role
from keel_engine.services import roles

# path parameter -> object key in World.ids (by the collection the path starts with)
PARAMS = {
    ("vms", "ident"): "vm:a1", ("vms", "nic"): "nic", ("vms", "att"): "disk:a1", ("vms", "snap"): "snapshot",
    ("hosts", "ident"): "host:A", ("hosts", "agent"): "agent", ("clusters", "ident"): "cluster:A",
    ("datacenters", "ident"): "dc", ("datacenters", "sd"): "sd", ("storagedomains", "ident"): "sd",
    ("networks", "ident"): "net", ("vnicprofiles", "ident"): "net",
    ("templates", "ident"): "template:A", ("disks", "ident"): "disk:floating", ("vmpools", "ident"): "pool:A",
    ("events", "ident"): "event:a1", ("jobs", "ident"): "job", ("users", "ident"): "admin",
    ("groups", "ident"): "group", ("roles", "ident"): "role:custom", ("permissions", "ident"): "perm:system",
    ("domains", "ident"): "directory", ("domains", "user"): "admin", ("domains", "group"): "group",
}
# body reference field -> object key
REFS = {"cluster": "cluster:A", "template": "template:A", "data_center": "dc", "vm": "vm:a1", "host": "host:A",
        "storage_domain": "sd", "vnic_profile": "net", "network": "net", "group": "group", "vm_pool": "pool:A",
        "disk": "disk:floating", "user": "walker"}
# fields a route refuses for their own sake (a 400 before anything is looked up)
OMIT = {("PUT", "/hosts/{ident}"): ("address", "cluster")}
# what every signed-in user may read
VOCABULARY = {"/roles/{ident}", "/roles/{ident}/permits", "/roles/{ident}/permits/{permit}",
              "/schedulingpolicies/{ident}", "/macpools/{ident}"}
VOCABULARY_LISTS = ("/roles", "/permits", "/schedulingpolicies", "/macpools")
# a child of an object the walker cannot see: any id will do (the parent answers 404 first)
ANY_CHILD = "00000000-0000-0000-0000-00000000c0de"


def value_for(name, field, ids):
    if isinstance(field, fields.Obj):
        if name in REFS and set(field.fields) <= {"id", "name"}:
            return {"id": ids[REFS[name]]}
        if "role" in field.fields:     # a permission: a role for the user itself (on the system)
            return {"role": value_for("role", field.fields["role"], ids), "user": {"id": ids["walker"]}}
        out = {k: value_for(k, f, ids) for k, f in field.fields.items() if k != "async"}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(field, fields.Reference):
        if name == "role":
            return {"name": "SuperUser"}           # the most it could try to give itself
        if name == "domain":
            return {"name": "example.org"}
        return {"id": ids[REFS.get(name, "vm:a1")]}
    if isinstance(field, fields.ListOf):
        return {field.tag: [value_for(field.tag, field.item, ids)]}
    if isinstance(field, fields.Name):
        return "walker-made"
    if isinstance(field, fields.Text):
        if field.choices:
            return field.choices[0]
        return {"address": "127.0.8.25", "path": "/srv/keel-walker", "user_name": "jdoe@example.org",
                "permit": "login", "name": "login"}.get(name, "walker")
    if isinstance(field, fields.Int):
        big = name in ("memory", "provisioned_size")
        return max(field.minimum, min(field.maximum, 64 << 20 if big else 1))
    if isinstance(field, fields.Bool):
        return None       # left out: every flag has its default
    raise AssertionError(f"no value for {name}: {type(field).__name__}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build(tmp_path_factory.mktemp("walk"))
    with w.sm() as s:
        login_only = roles.add_role(w.engine, s, roles.RoleSpec(name="LoginOnly", permits=("login",)))
        s.commit()
        w.ids["role:login"] = login_only.id
    w.ids["walker"] = w.user("walker")
    w.user("nobody")
    carol = w.user("carol")
    with w.sm() as s:
        from keel_engine.models import User, Group
        s.add(Permission(role_id=w.ids["role:login"], user_id=w.ids["walker"]))
        perms = {}
        for key in ("vm:a1", "cluster:A", "dc", "host:A", "sd", "template:A", "pool:A", "disk:floating"):
            perms[key] = w.grant(s, s.get(User, carol), "UserRole", key).id
        perms["group"] = w.grant(s, s.get(Group, w.ids["group"]), "UserRole", "vm:b1").id
        su = s.query(Role).filter_by(name="SuperUser").one().id
        perms["system"] = s.query(Permission).filter_by(role_id=su, object_type=None).one().id
        s.commit()
    w.ids.update({f"perm:{k}": v for k, v in perms.items()})
    w.perm_for = {"vms": "perm:vm:a1", "clusters": "perm:cluster:A", "datacenters": "perm:dc",
                  "hosts": "perm:host:A", "storagedomains": "perm:sd", "templates": "perm:template:A",
                  "vmpools": "perm:pool:A", "disks": "perm:disk:floating", "users": "perm:system",
                  "groups": "perm:group"}
    return w


def routes(w):
    doc = w.client().get("/ovirt-engine/api-docs/openapi.json").get_json()
    out = []
    for path, ops in doc["paths"].items():
        if not path.startswith(API):
            continue
        for method in ops:
            out.append((method.upper(), path[len(API):]))
    return sorted(out)


def fill(w, path):
    parts = path.strip("/").split("/")
    coll = parts[0] if parts else ""
    out = []
    for part in parts:
        if part.startswith("{"):
            name = part[1:-1]
            if name == "perm":
                out.append(w.ids[w.perm_for[coll]])
            elif name == "permit":
                out.append("1300")
            elif (coll, name) in PARAMS:
                out.append(str(w.ids[PARAMS[(coll, name)]]))
            elif coll == "schedulingpolicies":
                from keel_engine.api.views import SCHEDULING_POLICY_IDS
                out.append(next(iter(SCHEDULING_POLICY_IDS.values())))
            elif coll == "macpools":
                from keel_engine.api.views import MAC_POOL_ID
                out.append(MAC_POOL_ID)
            else:
                assert name != "ident", f"{path}: which object is {{{name}}}? add it to PARAMS"
                out.append(ANY_CHILD)
        else:
            out.append(part)
    return "/" + "/".join(out) if parts and parts != [""] else ""


def body_for(w, method, path):
    from keel_engine.api.framework import ROUTES
    for r in ROUTES:
        oa = "/" + "/".join(p if not p.startswith("<") else "{" + p[1:-1] + "}" for p in r.path.strip("/").split("/"))
        if r.method == method and oa.rstrip("/") == path.rstrip("/") and r.body is not None:
            body = value_for("", r.body, w.ids)
            return {k: v for k, v in body.items() if k not in OMIT.get((method, path), ())}
    return {}


def tables(w):
    md = MetaData()
    eng = w.app.config["KEEL_CTX"].engine
    md.reflect(eng)
    with eng.connect() as conn:
        return {t.name: sorted(repr(tuple(r)) for r in conn.execute(t.select())) for t in md.sorted_tables}


def test_every_route_refuses_a_user_who_may_only_sign_in(world):
    w = world
    h = w.token("walker")
    before = tables(w)
    problems, seen = [], 0
    for method, template in routes(w):
        path = fill(w, template)
        seen += 1
        if method == "GET":
            r = w.get(h, path)
            got = r.get_json(silent=True) or {}
            if template in VOCABULARY:
                ok = r.status_code == 200
            elif "{" in template:
                ok = r.status_code == 404
            elif template == "":
                summary = got.get("summary", {})
                ok = r.status_code == 200 and all(
                    summary[k]["total"] == "0" for k in ("vms", "hosts", "storage_domains")) \
                    and summary["users"]["total"] == "1"
            else:
                items = [v for v in got.values() if isinstance(v, list)]
                items = items[0] if items else []
                allowed = {**{v: (lambda x: True) for v in VOCABULARY_LISTS},
                           "/templates": lambda x: x["name"] == "Blank",
                           "/users": lambda x: x["id"] == w.ids["walker"],
                           "/permissions": lambda x: x.get("user", {}).get("id") == w.ids["walker"]}
                ok = r.status_code == 200 and all(allowed.get(template, lambda x: False)(x) for x in items)
        else:
            r = w.send(h, method, path, body_for(w, method, template))
            detail = (r.get_json(silent=True) or {}).get("detail", "")
            ok = r.status_code in (403, 404) or (r.status_code == 400 and "does not exist" in detail)
        if not ok:
            problems.append(f"{method} {template}: {r.status_code} {r.get_data()[:160]!r}")
    assert seen > 100
    assert problems == [], "\n".join(problems)
    assert tables(w) == before


def test_every_route_refuses_a_user_without_any_permission(world):
    """Such a user cannot even sign in (oVirt's login permit): 401, with Basic too."""
    w = world
    basic = {"Authorization": "Basic " + base64.b64encode(f"nobody@internal:{PASSWORD}".encode()).decode(),
             "Accept": "application/json"}
    before = tables(w)
    for method, template in routes(w):
        r = w.client().open(API + fill(w, template), method=method, data=json.dumps(body_for(w, method, template)),
                            headers={**basic, "Content-Type": "application/json"})
        assert r.status_code == 401 and b"login permit" in r.get_data(), (method, template, r.get_data()[:200])
    after = tables(w)
    # only the refusals' own events were written
    assert {k: v for k, v in after.items() if k != "events"} == {k: v for k, v in before.items() if k != "events"}
