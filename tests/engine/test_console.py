"""VM consoles: a VM's VNC display listens on its host's address behind a
password nobody knows; a ticket (oVirt's graphicsconsoles/{id}/ticket and
remoteviewerconnectionfile) sets a one-time password through libvirt, and
a real VNC handshake takes it (and refuses any other). The password leaves
the job's row when it is handed out, or when it expires.

Fast tests: the in-process engine (no host answers), refusals and the
password's bookkeeping. Slow ones: the real libvirt hosts and engine."""
import time
from datetime import timedelta

import libvirt
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
from sqlalchemy import create_engine, select

from harness import rfb
from harness.access import build
from harness.wait import wait_for
from keel_engine.models import Host, Job, Vm, utcnow
from keel_engine.services import Context, consoles, jobs

CID = "766e63"


# ---- fast: the in-process engine ------------------------------------------------------------
@pytest.fixture
def world(tmp_path):
    w = build(tmp_path)
    w.ids["starter"] = w.user("starter", [("Starter", "vm:a1")])      # run_vm, no connect_to_vm
    w.ids["carol"] = w.user("carol", [("UserRole", "vm:a1")])
    return w


def set_vm(w, name, status, start_time=None):
    with w.sm() as s:
        vm = s.get(Vm, w.ids[f"vm:{name}"])
        vm.status, vm.host_id = status, w.ids["host:A"] if status != "down" else None
        vm.start_time = start_time
        s.commit()


def as_worker_finished(w, job_id, port=5905):
    """What the worker leaves in the job's row once the display took the password."""
    with w.sm() as s:
        job = s.get(Job, job_id)
        params = dict(job.params)
        pw = params.pop("password")
        job.params, job.status, job.end_time = params, "finished", utcnow()
        job.result = {"vm_id": params["vm_id"], "address": "127.0.8.29", "port": port, "password": pw,
                      "valid_to": params["valid_to"]}
        s.commit()
        return pw


def row_of(w, job_id):
    with w.sm() as s:
        job = s.get(Job, job_id)
        return dict(job.params), dict(job.result), job.owner_id


def test_ticket_refusals(world):
    w = world
    a1 = w.ids["vm:a1"]
    admin = w.admin()
    r = w.send(admin, "POST", f"/vms/{a1}/graphicsconsoles/{CID}/ticket", {})
    assert r.status_code == 409 and "a console is for a running VM" in r.get_json()["detail"]
    set_vm(w, "a1", "up")
    r = w.send(w.token("starter"), "POST", f"/vms/{a1}/graphicsconsoles/{CID}/ticket", {})
    assert r.status_code == 403 and "connect_to_vm" in r.get_json()["detail"]
    r = w.send(admin, "POST", f"/vms/{a1}/graphicsconsoles/abc/ticket", {})
    assert r.status_code == 404
    r = w.send(admin, "POST", f"/vms/{a1}/graphicsconsoles/{CID}/ticket", {"ticket": {"value": "mine12345"}})
    assert r.status_code == 400 and "ticket.value" in r.get_json()["detail"]
    r = w.send(admin, "POST", f"/vms/{a1}/graphicsconsoles/{CID}/ticket", {"ticket": {"expiry": 0}})
    assert r.status_code == 400 and "ticket.expiry" in r.get_json()["detail"]
    r = w.send(admin, "POST", f"/vms/{a1}/graphicsconsoles/{CID}/ticket", {"async": True})
    assert r.status_code == 400 and "async" in r.get_json()["detail"]
    with w.sm() as s:
        assert s.scalars(select(Job).where(Job.kind == jobs.VM_CONSOLE_TICKET)).all() == []


def test_a_ticket_is_handed_out_once_to_whoever_asked(world):
    w = world
    set_vm(w, "a1", "up")
    with w.sm() as s:
        job = consoles.request_ticket(Context(w.cfg, w.sm, w.ids["carol"]), s, s.get(Vm, w.ids["vm:a1"]), 60)
        s.commit()
    params, _result, owner = row_of(w, job.id)
    assert len(params["password"]) == 8 and owner == w.ids["carol"]
    pw = as_worker_finished(w, job.id)
    with w.sm() as s:   # another user cannot read it
        with pytest.raises(Exception) as e:
            consoles.console(Context(w.cfg, w.sm, w.ids["admin"]), s, job)
        assert getattr(e.value, "status", None) == 404
    with w.sm() as s:
        got = consoles.console(Context(w.cfg, w.sm, w.ids["carol"]), s, job)
        s.commit()
    assert (got.password, got.port, got.address, got.vm_id) == (pw, 5905, "127.0.8.29", w.ids["vm:a1"])
    assert timedelta(seconds=55) < got.valid_to - utcnow() <= timedelta(seconds=61)
    params, result, _owner = row_of(w, job.id)
    assert "password" not in params and "password" not in result and result["port"] == 5905
    with w.sm() as s:
        with pytest.raises(Exception) as e:
            consoles.console(Context(w.cfg, w.sm, w.ids["carol"]), s, job)
        assert e.value.status == 409 and "handed out already or has expired" in e.value.detail


def test_passwords_nobody_read_are_cleared_when_they_expire(world):
    w = world
    set_vm(w, "a1", "up")
    ctx = Context(w.cfg, w.sm, w.ids["admin"])
    with w.sm() as s:
        vm = s.get(Vm, w.ids["vm:a1"])
        waiting, done, fresh = (consoles.request_ticket(ctx, s, vm, n) for n in (1, 1, 600))
        s.commit()
    as_worker_finished(w, done.id)
    as_worker_finished(w, fresh.id)
    with w.sm() as s:   # their time is over: a second ago
        for job in s.scalars(select(Job).where(Job.id.in_([waiting.id, done.id]))):
            past = consoles._iso(utcnow() - timedelta(seconds=1))
            job.params = {**job.params, "valid_to": past}
            job.result = {**job.result, "valid_to": past} if job.result else {}
        s.commit()
    with w.sm() as s:
        assert consoles.clear_expired(s) == 2
        s.commit()
    for job in (waiting, done):
        params, result, _ = row_of(w, job.id)
        assert "password" not in params and "password" not in result
    assert "password" in row_of(w, fresh.id)[1]
    with w.sm() as s:
        assert consoles.clear_expired(s) == 0


def test_the_console_shows_the_host_address_and_the_port_once_known(world):
    w = world
    a1, admin = w.ids["vm:a1"], w.admin()

    def shown():
        r = w.get(admin, f"/vms/{a1}/graphicsconsoles")
        c, = r.get_json()["graphics_console"]
        one = w.get(admin, f"/vms/{a1}/graphicsconsoles/{CID}").get_json()
        assert one == c and c["id"] == CID and c["protocol"] == "vnc"
        return c.get("address"), c.get("port")
    assert shown() == (None, None)
    set_vm(w, "a1", "up", start_time=utcnow() - timedelta(seconds=30))
    assert shown() == ("127.0.8.29", None)
    with w.sm() as s:
        job = consoles.request_ticket(Context(w.cfg, w.sm, w.ids["admin"]), s, s.get(Vm, a1))
        s.commit()
    as_worker_finished(w, job.id, port=5907)
    assert shown() == ("127.0.8.29", "5907")
    set_vm(w, "a1", "up", start_time=utcnow() + timedelta(seconds=1))     # started again since
    assert shown() == ("127.0.8.29", None)
    assert w.get(admin, f"/vms/{a1}/graphicsconsoles/nope").status_code == 404
    with w.sm() as s:
        assert s.get(Host, w.ids["host:A"]).address == "127.0.8.29"


# ---- slow: real hosts, a real VM, a real VNC handshake ---------------------------------------
def live_graphics(engine, host_index, name):
    import xml.etree.ElementTree as ET
    conn = libvirt.open(engine.hosts[host_index].uri)
    try:
        xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    finally:
        conn.close()
    g, = ET.fromstring(xml).findall("devices/graphics")
    return g


def passwords_in_jobs(engine):
    eng = create_engine(engine.db_url)
    try:
        with eng.connect() as c:
            return [(r.params, r.result) for r in c.execute(select(Job.params, Job.result).where(
                Job.kind == jobs.VM_CONSOLE_TICKET)) if "password" in (r.params or {}) or "password" in (r.result or {})]
    finally:
        eng.dispose()


@pytest.mark.slow
@pytest.mark.root
def test_a_ticket_opens_the_vnc_display_and_nothing_else_does(sdk, engine, cluster_setup):
    from .test_vm_lifecycle import cleanup, new_vm
    h1, h2 = cluster_setup["hosts"]
    svc = new_vm(sdk, cluster_setup, "cons1", disk=False)
    con = svc.graphics_consoles_service().console_service(CID)
    try:
        with pytest.raises(ovirtsdk4.Error) as e:
            con.ticket()
        assert e.value.code == 409 and "a console is for a running VM" in e.value.fault.detail
        svc.start(vm=t.Vm(placement_policy=t.VmPlacementPolicy(hosts=[t.Host(id=h1.id)])))

        # from the start: on h1's address, behind a password nobody was told
        g = live_graphics(engine, 0, "cons1")
        port = int(g.get("port"))
        assert g.find("listen").get("address") == h1.address == "127.0.1.11"
        assert len(g.get("passwd") or "") == 8
        assert rfb.security_types(h1.address, port) == [rfb.VNC_AUTH]

        ticket = con.ticket(t.Ticket(expiry=60))
        assert ticket.expiry == 60 and len(ticket.value) == 8
        g = live_graphics(engine, 0, "cons1")
        assert (g.get("passwd"), int(g.get("port"))) == (ticket.value, port)
        assert g.get("passwdValidTo") and g.find("listen").get("address") == h1.address
        wrong = ("X" if ticket.value[0] != "X" else "Y") + ticket.value[1:]
        refused = rfb.authenticate(h1.address, port, wrong)
        assert not refused.ok, refused
        opened = rfb.authenticate(h1.address, port, ticket.value)
        assert opened.ok and opened.width > 0 and opened.height > 0, opened
        shown, = svc.graphics_consoles_service().list()
        assert (shown.id, shown.protocol, shown.address, shown.port) == (CID, t.GraphicsType.VNC, h1.address, port)

        # the virt-viewer file carries a ticket of its own, which replaces the last
        text = con.remote_viewer_connection_file()
        lines = text.strip().splitlines()
        fields = dict(line.split("=", 1) for line in lines[1:])
        assert lines[0] == "[virt-viewer]" and fields["type"] == "vnc" and fields["title"] == "cons1"
        assert (fields["host"], int(fields["port"]), fields["delete-this-file"]) == (h1.address, port, "1")
        assert fields["password"] != ticket.value
        assert rfb.authenticate(fields["host"], int(fields["port"]), fields["password"]).ok
        assert not rfb.authenticate(h1.address, port, ticket.value).ok
        assert passwords_in_jobs(engine) == []       # each was handed out once, then cleared

        # a migration moves the display to the destination's address, password and all
        svc.migrate(host=t.Host(id=h2.id))
        g = live_graphics(engine, 1, "cons1")
        assert g.find("listen").get("address") == h2.address == "127.0.1.12"
        assert g.get("passwd") == fields["password"]
        ticket = con.ticket()
        assert ticket.expiry == consoles.DEFAULT_EXPIRY
        port2 = int(live_graphics(engine, 1, "cons1").get("port"))
        assert rfb.authenticate(h2.address, port2, ticket.value).ok
        shown, = svc.graphics_consoles_service().list()
        assert (shown.address, shown.port) == (h2.address, port2)

        # past its end the display refuses a ticket (QEMU's own expiry, which
        # counts whole seconds: the ticket's last one included)
        short = con.ticket(t.Ticket(expiry=1))
        started = time.monotonic()
        wait_for(lambda: not rfb.authenticate(h2.address, port2, short.value).ok, 10, what="the ticket expired")
        assert time.monotonic() - started < 6
        evs = [e.description for e in sdk.system_service().events_service().list(search="vm=cons1", max=50)]
        assert sum("console ticket" in d for d in evs) == 4
        assert not any(ticket.value in d or fields["password"] in d for d in evs)
    finally:
        cleanup(svc)
