"""The web UI through Flask's test client on an in-process engine (SQLite):
sign-in, sessions, CSRF, forms and who sees which page. The real browser
tests are in test_browser.py."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from harness import ui
from harness.engineapp import ADMIN_PASSWORD, engine_app_with_host
from keel_engine.models import (BLANK_TEMPLATE_ID, Cluster, Disk, Event, FenceAgent, Host, Network, Nic, Role,
                                Snapshot, StorageDomain, Token, User, Vm, utcnow)
from keel_engine.services import Context, roles, users

PASSWORD = "portal-pw-1"


@pytest.fixture
def engine(tmp_path):
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.1.98")
    return cfg, app, sm, host_id


def _alert(page_text):
    found = re.findall(r'role="alert">(.*?)</div>', page_text, re.S)
    return re.sub(r"<[^>]+>", "", found[0]).strip() if found else None


def sign_in(client, username="admin@internal", password=ADMIN_PASSWORD, next_page="/ui/"):
    return ui.sign_in(client, username, password, next_page)


def admin_client(app):
    c = app.test_client()
    assert sign_in(c).status_code == 303
    return c


def _vm_count(sm):
    with sm() as s:
        return s.scalar(select(func.count()).select_from(Vm))


def _add_vm(sm, name):
    with sm() as s:
        vm = Vm(name=name, cluster_id=s.scalar(select(Cluster.id)), template_id=BLANK_TEMPLATE_ID,
                memory=256 * 2 ** 20)
        s.add(vm)
        s.commit()
        return vm.id


def test_a_browser_at_the_engine_lands_on_the_sign_in_page_and_comes_back_where_it_was_going(engine):
    _cfg, app, _sm, _h = engine
    c = app.test_client()
    assert c.get("/").headers["Location"] == "/ui/"
    assert c.get("/ovirt-engine/webadmin/").headers["Location"] == "/ui/"
    r = c.get("/ui/vms?search=name%3Dweb*")
    assert r.status_code == 303 and r.headers["Location"] == "/ui/signin?next=/ui/vms?search=name%3Dweb*"
    # an htmx poll of an expired session sends the whole page to the sign-in form
    r = c.get("/ui/vms/rows", headers={"HX-Request": "true"})
    assert r.headers["HX-Redirect"] == "/ui/signin"
    r = sign_in(c, next_page="/ui/vms?search=name%3Dweb*")
    assert r.status_code == 303 and r.headers["Location"] == "/ui/vms?search=name%3Dweb*"
    cookie = [h for h in r.headers.getlist("Set-Cookie") if h.startswith("keel_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie


@pytest.mark.parametrize("target", ["https://example.org/", "//example.org/ui/", "/ovirt-engine/api", "/ui\\..\\x"])
def test_sign_in_never_redirects_off_the_ui(engine, target):
    _cfg, app, _sm, _h = engine
    r = sign_in(app.test_client(), next_page=target)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/"


def test_a_wrong_password_gets_a_plain_message_an_event_and_then_the_throttle(engine):
    cfg, app, sm, _h = engine
    c = app.test_client()
    for _ in range(cfg.login_failures_allowed):
        r = sign_in(c, password="wrong")
        assert r.status_code == 401 and _alert(r.text) == "Wrong user name or password."
        assert "Traceback" not in r.text
    r = sign_in(c, password=ADMIN_PASSWORD)
    assert r.status_code == 429 and _alert(r.text).startswith("Too many failed sign-ins: wait ")
    with sm() as s:
        texts = s.scalars(select(Event.description)).all()
    assert sum("Sign-in failed for admin@internal" in t for t in texts) == cfg.login_failures_allowed


def test_a_sign_in_form_without_its_own_token_is_refused(engine):
    _cfg, app, _sm, _h = engine
    c = app.test_client()
    c.get("/ui/signin")
    r = c.post("/ui/signin", data={"csrf": "forged", "username": "admin@internal", "password": ADMIN_PASSWORD})
    assert r.status_code == 400 and "keel_session=" not in " ".join(r.headers.getlist("Set-Cookie"))


def test_a_form_without_the_session_token_changes_nothing(engine):
    _cfg, app, sm, _h = engine
    c = admin_client(app)
    page = c.get("/ui/vms/new").text
    cluster = re.search(r'name="cluster"><option value="([^"]+)"', page).group(1)
    for headers, data in (({}, {"name": "web1", "cluster": cluster}),
                          ({}, {"csrf": "0" * 64, "name": "web1", "cluster": cluster}),
                          ({"X-CSRF-Token": "nope", "HX-Request": "true"}, {"name": "web1", "cluster": cluster})):
        r = c.post("/ui/vms/new", data=data, headers=headers)
        assert r.status_code in (200, 403)
        assert "security token does not match" in r.text
    assert _vm_count(sm) == 0


def test_the_new_vm_form_explains_bad_fields_keeps_the_answers_and_creates_on_good_ones(engine):
    _cfg, app, sm, _h = engine
    c = admin_client(app)
    page = c.get("/ui/vms/new").text
    token = ui.form_token(page)
    cluster = re.search(r'name="cluster"><option value="([^"]+)"', page).group(1)
    bad = [({"name": ""}, "Name: required"),
           ({"name": "web1", "memory_mib": "lots"}, "Memory (MiB): a whole number, got 'lots'"),
           ({"name": "web1", "memory_mib": "1"}, "Memory (MiB): from "),
           ({"name": "web1", "cpus": "0"}, "Virtual CPUs: from 1 to "),
           ({"name": "web1", "cluster": "no-such-cluster"}, "cluster")]
    for fields, expected in bad:
        r = c.post("/ui/vms/new", data={"csrf": token, "cluster": cluster, **fields})
        assert r.status_code in (400, 404), r.text
        assert expected in _alert(r.text).replace("&#39;", "'"), _alert(r.text)
        assert 'value="web1"' in r.text or not fields["name"]
    assert _vm_count(sm) == 0
    r = c.post("/ui/vms/new", data={"csrf": token, "cluster": cluster, "name": "web1", "memory_mib": "256",
                                    "cpus": "2", "ha": "on", "ha_priority": "100"})
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/vms/")
    with sm() as s:
        vm = s.scalar(select(Vm))
        assert (vm.name, vm.memory, vm.cpus, vm.high_availability, vm.ha_priority) == ("web1", 256 * 2 ** 20, 2,
                                                                                         True, 100)
        created = s.scalars(select(Event).where(Event.vm_id == vm.id)).all()
    assert created and all(e.user_id for e in created)
    assert "web1" in c.get("/ui/vms").text and "web1" in c.get("/ui/vms/rows").text


def test_signing_out_closes_the_pages_even_for_a_copied_cookie(engine):
    _cfg, app, sm, _h = engine
    c = admin_client(app)
    cookie = c.get_cookie("keel_session", path="/ui/").value
    token = ui.form_token(c.get("/ui/").text)
    r = c.post("/ui/signout", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/signin"
    copy = app.test_client()
    copy.set_cookie("keel_session", cookie, path="/ui/")
    assert copy.get("/ui/").status_code == 303
    with sm() as s:
        assert any("signed out of the web UI" in t for t in s.scalars(select(Event.description)))


def test_an_idle_session_expires_and_an_active_one_is_extended(engine):
    cfg, app, sm, _h = engine
    c = admin_client(app)
    with sm() as s:
        tok = s.scalar(select(Token))
        tok.expires = utcnow() + timedelta(seconds=cfg.ui_idle_timeout / 4)
        s.commit()
    assert c.get("/ui/").status_code == 200
    with sm() as s:
        left = s.scalar(select(Token)).expires
        assert (left.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds() > cfg.ui_idle_timeout * 0.9
        s.scalar(select(Token)).expires = utcnow() - timedelta(seconds=1)
        s.commit()
    r = c.get("/ui/hosts")
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/signin")


def test_a_user_sees_their_vm_portal_only_and_the_physical_layer_is_closed(engine):
    cfg, app, sm, host_id = engine
    mine, other = _add_vm(sm, "mine"), _add_vm(sm, "other")
    with sm() as s:
        u = users.add_internal(Context(cfg, sm), s, "pat", PASSWORD)
        role = s.scalar(select(Role).where(Role.name == "UserRole"))
        roles.add_permission(Context(cfg, sm), s, role, s.get(Vm, mine), user=u)
        s.commit()
    c = app.test_client()
    r = sign_in(c, "pat@internal", PASSWORD)
    assert r.headers["Location"] == "/ui/portal/"
    page = c.get("/ui/portal/").text
    assert "mine" in page and "other" not in page
    assert c.get("/ui/").headers["Location"] == "/ui/portal/"
    assert c.get("/ui/hosts").headers["Location"] == "/ui/portal/"
    assert c.get(f"/ui/vms/{other}").status_code == 404
    assert c.get(f"/ui/vms/{mine}").status_code == 200
    token = ui.form_token(page)
    r = c.post(f"/ui/hosts/{host_id}/maintenance", data={"csrf": token})
    assert r.status_code == 403
    r = c.post(f"/ui/vms/{other}/start", data={"csrf": token})
    assert r.status_code == 404 and "Traceback" not in r.text
    r = c.post(f"/ui/vms/{mine}/remove", data={"csrf": token})
    assert r.status_code == 403
    assert _vm_count(sm) == 2


def test_errors_are_pages_not_xml_or_tracebacks(engine):
    _cfg, app, _sm, _h = engine
    c = admin_client(app)
    for path, status in (("/ui/no/such/page", 404), ("/ui/vms?search=colour%3Dred", 400),
                         ("/ui/vms/" + "x" * 300, 404), ("/ui/events?page=-1", 200)):
        r = c.get(path)
        assert r.status_code == status, path
        assert r.mimetype == "text/html" and "<fault>" not in r.text and "Traceback" not in r.text
    r = c.get("/ui/vms?search=colour%3Dred")
    assert "unknown field 'colour'" in _alert(r.text).replace("&#39;", "'")
    r = c.get("/ui/vms/rows?search=colour%3Dred", headers={"HX-Request": "true"})
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#messages"


def test_power_management_from_the_host_page(engine):
    _cfg, app, sm, host_id = engine
    c = admin_client(app)
    page = c.get(f"/ui/hosts/{host_id}").text
    token = ui.form_token(page)
    assert "No fence agent" in page
    r = c.post(f"/ui/hosts/{host_id}/restart", data={"csrf": token})
    assert r.status_code == 409 and "no power management configured" in _alert(r.text)
    r = c.post(f"/ui/hosts/{host_id}/confirm-rebooted", data={"csrf": token})
    assert r.status_code == 409 and "only a non-responsive host" in _alert(r.text)
    agent = {"csrf": token, "type": "ipmilan", "address": "127.0.2.250", "port": "70000", "username": "admin",
             "password": "bmc-pw"}
    r = c.post(f"/ui/hosts/{host_id}/agents", data=agent)
    assert r.status_code == 400 and "Port: from 1 to 65535" in _alert(r.text)
    with sm() as s:
        assert s.scalar(select(func.count()).select_from(FenceAgent)) == 0
    r = c.post(f"/ui/hosts/{host_id}/agents", data={**agent, "port": "6230"})
    assert r.status_code == 303
    with sm() as s:
        a = s.scalar(select(FenceAgent))
        assert (a.address, a.port, a.username) == ("127.0.2.250", 6230, "admin")
        assert "bmc-pw" not in a.password_encrypted
    page = c.get(f"/ui/hosts/{host_id}").text
    assert "127.0.2.250" in page and "bmc-pw" not in page
    r = c.post(f"/ui/hosts/{host_id}/agents/{a.id}/test", data={"csrf": token}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Testing fence agent 127.0.2.250" in r.text
    r = c.post(f"/ui/hosts/{host_id}/agents/{a.id}/remove", data={"csrf": token})
    assert r.status_code == 303
    with sm() as s:
        assert s.scalar(select(func.count()).select_from(FenceAgent)) == 0


def test_snapshots_from_the_vm_page(engine):
    _cfg, app, sm, _h = engine
    vm_id = _add_vm(sm, "snappy")
    c = admin_client(app)
    token = ui.form_token(c.get(f"/ui/vms/{vm_id}").text)
    r = c.post(f"/ui/vms/{vm_id}/snapshots", data={"csrf": token, "description": ""})
    assert r.status_code == 400 and "Description: required" in _alert(r.text)
    r = c.post(f"/ui/vms/{vm_id}/snapshots", data={"csrf": token, "description": "before the upgrade"},
               headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Creating snapshot &#39;before the upgrade&#39;" in r.text
    with sm() as s:
        snap = s.scalar(select(Snapshot))
        assert (snap.description, snap.status) == ("before the upgrade", "locked")
    assert "before the upgrade" in c.get(f"/ui/vms/{vm_id}").text
    r = c.post(f"/ui/vms/{vm_id}/snapshots/{snap.id}/remove", data={"csrf": token})
    assert r.status_code == 409 and "is being created" in _alert(r.text)
    r = c.post(f"/ui/vms/{vm_id}/snapshots/no-such/remove", data={"csrf": token})
    assert r.status_code == 404


def test_the_new_vm_form_adds_a_nic_and_a_disk(engine, tmp_path):
    _cfg, app, sm, _h = engine
    with sm() as s:
        cluster = s.scalar(select(Cluster))
        net = Network(name="ovirtmgmt", data_center_id=cluster.data_center_id)
        sd = StorageDomain(name="data", data_center_id=cluster.data_center_id, path=str(tmp_path), status="active")
        s.add_all([net, sd])
        s.commit()
        ids = (cluster.id, net.id, sd.id)
    c = admin_client(app)
    token = ui.form_token(c.get("/ui/vms/new").text)
    form = {"csrf": token, "cluster": ids[0], "name": "web2", "network": ids[1], "disk_gib": "2"}
    r = c.post("/ui/vms/new", data=form)
    assert r.status_code == 400 and "Storage domain: choose one" in _alert(r.text)
    assert _vm_count(sm) == 0
    r = c.post("/ui/vms/new", data={**form, "storage_domain": ids[2]})
    assert r.status_code == 303, _alert(r.text)
    with sm() as s:
        vm = s.scalar(select(Vm))
        nic = s.scalar(select(Nic).where(Nic.vm_id == vm.id))
        disk = s.scalar(select(Disk))
        assert (nic.name, nic.network_id) == ("nic1", ids[1])
        assert (disk.name, disk.provisioned_size, disk.storage_domain_id) == ("web2_disk1", 2 * 2 ** 30, ids[2])


def test_an_administrator_adds_a_user_gives_it_a_vm_and_the_user_signs_in(engine):
    _cfg, app, sm, _h = engine
    mine = _add_vm(sm, "mine")
    c = admin_client(app)
    token = ui.form_token(c.get("/ui/users").text)
    r = c.post("/ui/users", data={"csrf": token, "name": "sam", "password": "sam-pw-123", "password2": "other"})
    assert r.status_code == 400 and "the two entries differ" in _alert(r.text)
    assert 'id="new-name" name="name" value="sam"' in r.text and "sam-pw-123" not in r.text
    r = c.post("/ui/users", data={"csrf": token, "name": "bad name!", "password": "sam-pw-123",
                                  "password2": "sam-pw-123"})
    assert r.status_code == 400 and "is not a user name" in _alert(r.text)
    r = c.post("/ui/users", data={"csrf": token, "name": "sam", "password": "sam-pw-123", "password2": "sam-pw-123"})
    assert r.status_code == 303
    user_page = r.headers["Location"]
    assert "No role: this user cannot sign in." in c.get(user_page).text
    sam = app.test_client()
    assert sign_in(sam, "sam@internal", "sam-pw-123").status_code == 403
    with sm() as s:
        role_id = s.scalar(select(Role.id).where(Role.name == "UserRole"))
    r = c.post(user_page + "/grant", data={"csrf": token, "role": role_id, "scope": f"vm:{mine}"})
    assert r.status_code == 303
    assert "vm mine" in c.get(user_page).text
    assert sign_in(sam, "sam@internal", "sam-pw-123").headers["Location"] == "/ui/portal/"
    assert ">mine</a>" in sam.get("/ui/portal/").text
    r = c.post(user_page + "/grant", data={"csrf": token, "role": role_id, "scope": "host:x"})
    assert r.status_code == 400 and "not the system, a cluster or a VM" in _alert(r.text)
    r = c.post(user_page + "/disable", data={"csrf": token})
    assert r.status_code == 303
    assert sam.get("/ui/portal/").status_code == 303      # its session ends at once
    r = c.post(user_page + "/remove", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/users"
    with sm() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.name == "sam")) == 0


def test_no_ui_page_shows_a_user_what_their_roles_do_not_give(engine):
    """Every GET page of the UI, as a user with UserRole on one VM only, asked
    for the other VM, the host and everything else: nothing of theirs shows."""
    cfg, app, sm, host_id = engine
    mine, other = _add_vm(sm, "mine-vm-3"), _add_vm(sm, "other-vm-7")
    with sm() as s:
        s.get(Host, host_id).name = "secret-host-9"
        u = users.add_internal(Context(cfg, sm), s, "pat", PASSWORD)
        role = s.scalar(select(Role).where(Role.name == "UserRole"))
        roles.add_permission(Context(cfg, sm), s, role, s.get(Vm, mine), user=u)
        s.commit()
    admin = admin_client(app)
    # the administrator sees them: their absence below is the user's filter
    assert "secret-host-9" in admin.get("/ui/hosts").text and "other-vm-7" in admin.get(f"/ui/vms/{other}").text
    c = app.test_client()
    assert sign_in(c, "pat@internal", PASSWORD).status_code == 303
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/ui/") or "GET" not in rule.methods or rule.endpoint == "ui.static":
            continue
        for value in (other, host_id, "x"):
            url = rule.rule
            for arg in rule.arguments:
                url = url.replace(f"<{arg}>", value)
            r = c.get(url)
            checked += 1
            assert r.status_code in (200, 303, 403, 404), (url, r.status_code)
            assert "other-vm-7" not in r.text and "secret-host-9" not in r.text, url
            if r.status_code == 303:
                assert r.headers["Location"] == "/ui/portal/", url
    assert checked > 60
    assert "mine-vm-3" in c.get("/ui/portal/").text
