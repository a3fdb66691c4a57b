"""The administration portal's pages: dashboard, hosts, VMs, events, jobs."""
from __future__ import annotations

import functools
import logging
from urllib.parse import urlencode

from flask import abort, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as OrmSession

from keel_engine.api.fields import Name
from keel_engine.api.schemas import DESCRIPTION
from keel_engine.errors import Fault
from keel_engine.models import (Cluster, DiskAttachment, Event, FenceAgent, Host, Job, Nic, Snapshot, StorageDomain,
                                Template, Vm)
from keel_engine.services import hosts as host_svc
from keel_engine.services import access, lookup, reads
from keel_engine.services.ha_view import overview
from keel_engine.services import disks as disk_svc
from keel_engine.services import snapshots as snap_svc
from keel_engine.services import templates as tpl_svc
from keel_engine.services import usage
from keel_engine.services import vms as vm_svc
from keel_engine.services.lookup import Ref

from . import forms
from .blueprint import ctx, is_htmx, reader, rollback, session, webui_bp
from .signin import is_admin

log = logging.getLogger("keel.engine.webui")
PAGE = 50
EVENTS_PAGE = 100
SEVERITIES = ("normal", "warning", "error", "alert")
PRIORITIES = {1: "low", 50: "medium", 100: "high"}


def admin_only():
    """Pages of the physical layer are for administrators; others get their VM portal."""
    if not is_admin():
        if request.method == "GET" and not is_htmx():
            return redirect(url_for("ui.portal"), code=303)
        abort(403)
    return None


def admin_page(view):
    """A view of the administration portal: admin_only() first."""
    @functools.wraps(view)
    def guarded(*args, **kwargs):
        refused = admin_only()
        return refused if refused is not None else view(*args, **kwargs)
    return guarded


def paged(c, coll, search, size, *where):
    """(rows of this page, whether there are more, the page number): `size`
    rows at a time, one more read to know if a next page exists."""
    page = forms.page_param()
    rows = reads.list_rows(c, reader(), coll, search or None, size + 1, *where, offset=(page - 1) * size)
    return rows[:size], len(rows) > size, page


def job_row(job_id):
    if not job_id:
        return None
    try:
        return reads.get_row(ctx(), reader(), reads.JOBS, job_id)
    except Fault:
        return None


def after_job(job, back: str):
    """An action was recorded: commit it (the worker sees the job), then show
    its progress in place (htmx) or on the page the user came from."""
    try:
        session().commit()
    except SQLAlchemyError as e:
        rollback()
        log.error("commit failed: %s", e)
        raise Fault(503, "Operation Failed", "the database refused the change; see the engine log") from None
    if is_htmx():
        return _job_fragment(job_row(job.id) if job is not None else None)
    if job is None:
        return redirect(back, code=303)
    return redirect(f"{back}{'&' if '?' in back else '?'}job={job.id}", code=303)


def _job_fragment(j):
    """A job's progress; once it has ended, the page's live parts refresh at
    once (the `job-done` event) instead of at their next poll."""
    headers = {"HX-Trigger": "job-done"} if j is None or j.status != "started" else {}
    return render_template("_job.html", job=j), 200, headers


@webui_bp.route("/jobs/<ident>")
def job(ident):
    j = job_row(ident)
    if j is None:
        abort(404)
    return _job_fragment(j)


# ---- dashboard --------------------------------------------------------------
@webui_bp.route("/")
@admin_page
def dashboard():
    c, db = ctx(), reader()
    up_hosts = reads.run(db, select(func.count(), func.coalesce(func.sum(Host.cpus), 0),
                                    func.coalesce(func.sum(Host.memory_total), 0),
                                    func.coalesce(func.sum(Host.memory_free), 0)).where(Host.status == "up")).one()
    running = reads.run(db, select(func.count(), func.coalesce(func.sum(Vm.cpus), 0),
                                   func.coalesce(func.sum(Vm.memory), 0))
                        .where(Vm.status.in_(usage.RUNNING))).one()
    counts = {
        "hosts": reads.count(db, Host, ctx=c), "hosts_up": up_hosts[0],
        "vms": reads.count(db, Vm, ctx=c), "vms_running": running[0],
        "storage": reads.count(db, StorageDomain, ctx=c),
        "hosts_attention": reads.count(db, Host, Host.status.in_(("non_responsive", "error", "install_failed")),
                                       ctx=c),
    }
    use = {"cpus": up_hosts[1], "vcpus": running[1], "memory_total": up_hosts[2],
           "memory_used": up_hosts[2] - up_hosts[3], "memory_vms": running[2]}
    recent = reads.list_rows(c, db, reads.EVENTS, None, 10)
    jobs = reads.list_rows(c, db, reads.JOBS, None, 10, Job.status == "started")
    points = usage.series(db)
    charts = {"cpu": sparkline([p.cpu for p in points], [p.cpu_low for p in points]),
              "memory": sparkline([p.memory for p in points], [p.memory_low for p in points]),
              "first": points[0].at if points else None, "last": points[-1].at if points else None}
    return render_template("dashboard.html", counts=counts, use=use, events=recent, jobs=jobs, ha=overview(db),
                           charts=charts)


SPARK_W, SPARK_H = 240, 48


def sparkline(values, lows):
    """A small chart of percentages, oldest first, as an SVG polyline's points
    (0 % at the bottom; the top is 100 %, or the highest value if above) and
    the figures its text alternative says; lows: the lowest value behind each
    point (a point may stand for several samples)."""
    if not values:
        return None
    top = max(100.0, max(values))
    step = SPARK_W / (len(values) - 1) if len(values) > 1 else 0
    x0 = 0 if len(values) > 1 else SPARK_W      # one sample: a dot at the right, where "now" is
    points = " ".join(f"{x0 + i * step:.1f},{SPARK_H - 2 - v / top * (SPARK_H - 4):.1f}"
                      for i, v in enumerate(values))
    return {"points": points, "last": points.rsplit(" ", 1)[-1].split(","), "latest": round(values[-1]),
            "low": round(min(lows)), "high": round(max(values)),
            "width": SPARK_W, "height": SPARK_H,
            # above 100 %, a dashed line marks full use
            "full_y": f"{SPARK_H - 2 - 100 / top * (SPARK_H - 4):.1f}" if top > 100 else None}


@webui_bp.route("/events/recent")
def recent_events():
    return render_template("_event_rows.html", events=reads.list_rows(ctx(), reader(), reads.EVENTS, None, 10))


# ---- hosts --------------------------------------------------------------------
def _hosts_page():
    c, db = ctx(), reader()
    rows = reads.list_rows(c, db, reads.HOSTS, request.args.get("search") or None, None)
    return {"hosts": rows, "vm_counts": reads.vm_counts(db, [h.id for h in rows]),
            "clusters": reads.by_id(db, Cluster, {h.cluster_id for h in rows}, c),
            "search": request.args.get("search", "")}


@webui_bp.route("/hosts")
@admin_page
def hosts():
    return render_template("hosts.html", **_hosts_page(), job=job_row(request.args.get("job")))


@webui_bp.route("/hosts/rows")
@admin_page
def host_rows():
    return render_template("_host_rows.html", **_hosts_page())


@webui_bp.route("/hosts/<ident>")
@admin_page
def host(ident):
    c, db = ctx(), reader()
    h = reads.get_row(c, db, reads.HOSTS, ident)
    vms = reads.list_rows(c, db, reads.VMS, None, None, Vm.host_id == h.id)
    agents = reads.list_rows(c, db, reads.FENCE_AGENTS, None, None, FenceAgent.host_id == h.id)
    evs = reads.list_rows(c, db, reads.EVENTS, None, 20, Event.host_id == h.id)
    return render_template("host.html", host=h, vms=vms, agents=agents, events=evs, fence_buttons=FENCE_BUTTONS,
                           cluster=reads.by_id(db, Cluster, [h.cluster_id], c).get(h.cluster_id),
                           job=job_row(request.args.get("job")))


@webui_bp.route("/hosts/<ident>/<action>", methods=["POST"])
@admin_page
def host_action(ident, action):
    c, s = ctx(), session()
    h = lookup.get(s, Host, ident, "host")
    if action == "maintenance":
        _, job = host_svc.deactivate(c, s, h)
    elif action == "activate":
        job = host_svc.request_activate(c, s, h)
    elif action in FENCE_BUTTONS:
        job = host_svc.request_fence(c, s, h, FENCE_BUTTONS[action][0])
    else:
        abort(404)
    return after_job(job, url_for("ui.host", ident=h.id))


# power management buttons: (oVirt's fence type, label)
FENCE_BUTTONS = {"restart": ("restart", "Restart"), "poweroff": ("stop", "Power off"),
                 "poweron": ("start", "Power on"), "confirm-rebooted": ("manual", "Confirm host has been rebooted")}


@webui_bp.route("/hosts/<ident>/agents", methods=["POST"])
@admin_page
def fence_agent_add(ident):
    c, s = ctx(), session()
    h = lookup.get(s, Host, ident, "host")
    host_svc.add_fence_agent(c, s, h, host_svc.FenceAgentSpec(
        type=forms.text_field("type", "Type", required=True, max_len=32),
        address=forms.text_field("address", "Address", required=True),
        port=forms.int_field("port", "Port", 1, 65535),
        username=forms.text_field("username", "User name", required=True),
        password=forms.text_field("password", "Password", required=True, max_len=1024),
        order=forms.int_field("order", "Order", 1, 100, default=1)))
    s.commit()
    return redirect(url_for("ui.host", ident=h.id), code=303)


@webui_bp.route("/hosts/<ident>/agents/<agent_id>/<action>", methods=["POST"])
@admin_page
def fence_agent_action(ident, agent_id, action):
    c, s = ctx(), session()
    h = lookup.get(s, Host, ident, "host")
    agent = s.get(FenceAgent, agent_id)
    if agent is None or agent.host_id != h.id:
        abort(404)
    if action == "test":
        return after_job(host_svc.request_agent_test(c, s, h, agent), url_for("ui.host", ident=h.id))
    if action == "remove":
        host_svc.remove_fence_agent(c, s, h, agent)
        return after_job(None, url_for("ui.host", ident=h.id))
    abort(404)


# ---- VMs ------------------------------------------------------------------------
def vms_page(filtered=False):
    c, db = ctx(filtered), reader()
    search = request.args.get("search", "").strip()
    rows, more, page = paged(c, reads.VMS, search, PAGE)
    return {"vms": rows, "page": page, "more": more, "search": search,
            "hosts": reads.by_id(db, Host, {v.host_id for v in rows if v.host_id}),
            "clusters": reads.by_id(db, Cluster, {v.cluster_id for v in rows})}


@webui_bp.route("/vms")
@admin_page
def vms():
    return render_template("vms.html", **vms_page(), job=job_row(request.args.get("job")))


@webui_bp.route("/vms/rows")
@admin_page
def vm_rows():
    return render_template("_vm_rows.html", **vms_page())


def _choices():
    c, db = ctx(), reader()
    return {"clusters": reads.list_rows(c, db, reads.CLUSTERS), "templates": reads.list_rows(c, db, reads.TEMPLATES),
            "networks": reads.list_rows(c, db, reads.NETWORKS),
            "storage_domains": reads.list_rows(c, db, reads.STORAGE_DOMAINS, None, None,
                                               StorageDomain.type == "data"),
            "priorities": PRIORITIES}


@webui_bp.route("/vms/new", methods=["GET", "POST"])
@admin_page
def vm_new():
    if request.method == "GET":
        return render_template("vm_new.html", form={}, message=None, **_choices())
    try:
        spec = vm_svc.VmSpec(
            name=forms.text_field("name", "Name", required=True),
            cluster=forms.ref_field("cluster", "Cluster", required=True),
            template=forms.ref_field("template", "Template"),
            description=forms.text_field("description", "Description", max_len=4000),
            memory=_mib("memory_mib"),
            cpus=forms.int_field("cpus", "Virtual CPUs", 1, vm_svc.MAX_CPUS),
            high_availability=forms.checkbox("ha"),
            ha_priority=forms.int_field("ha_priority", "HA priority", 0, 100, default=1))
        network = forms.ref_field("network", "Network")
        disk_gib = forms.int_field("disk_gib", "Disk size (GiB)", 1, 65536)
        storage = forms.ref_field("storage_domain", "Storage domain", required=disk_gib is not None)
        vm, job = vm_svc.add_vm(ctx(), session(), spec)
        session().flush()
        if network is not None:
            vm_svc.add_nic(ctx(), session(), vm, vm_svc.NicSpec(name="nic1", network=network))
        if disk_gib is not None:
            _, disk_job = vm_svc.add_disk_attachment(ctx(), session(), vm, vm_svc.AttachmentSpec(
                bootable=True, new_disk=disk_svc.DiskSpec(provisioned_size=disk_gib * 1024 * forms.MIB,
                                                          storage_domain=storage, name=f"{spec.name}_disk1")))
            job = job or disk_job
        return after_job(job, url_for("ui.vm", ident=vm.id))
    except Fault as f:
        rollback()
        return render_template("vm_new.html", form=request.form, message=f, **_choices()), f.status


def _mib(name):
    mib = forms.int_field(name, "Memory (MiB)", vm_svc.MIN_MEMORY // forms.MIB, vm_svc.MAX_MEMORY // forms.MIB)
    return None if mib is None else mib * forms.MIB


@webui_bp.route("/vms/<ident>")
def vm(ident):
    return _vm_page(ident)


def _vm_page(ident, message=None, form=None):
    """A VM's page; with message, a refused form's fault shown above its forms
    and form, the answers it had."""
    c, db = ctx(not is_admin()), reader()
    v = reads.get_row(c, db, reads.VMS, ident)
    ids = [v.id]
    snapshots = reads.grouped(db, Snapshot, Snapshot.vm_id, ids, (Snapshot.date,)).get(v.id, [])
    return render_template(
        "vm.html", vm=v, admin=is_admin(), message=message, form=form or {},
        host=reads.by_id(db, Host, [v.host_id]).get(v.host_id) if v.host_id else None,
        cluster=reads.by_id(db, Cluster, [v.cluster_id]).get(v.cluster_id),
        template=reads.by_id(db, Template, [v.template_id]).get(v.template_id),
        nics=reads.grouped(db, Nic, Nic.vm_id, ids, (Nic.name,)).get(v.id, []),
        disks=reads.attachments(db, DiskAttachment.vm_id, ids).get(v.id, []),
        snapshots=snapshots, previewed=next((x for x in snapshots if x.status == snap_svc.IN_PREVIEW), None),
        taking=any(x.status == "locked" for x in snapshots),
        events=reads.list_rows(c, db, reads.EVENTS, None, 20, Event.vm_id == v.id),
        hosts=reads.list_rows(c, db, reads.HOSTS, None, None, Host.status == "up") if is_admin() else [],
        copies=_copy_permits(c, v), job=job_row(request.args.get("job")), priorities=PRIORITIES)


def _copy_permits(c, v) -> dict:
    """Which of the forms that copy a down VM (a template of it, a clone) its
    page offers: those the caller's permits there allow (the service layer
    checks again, and the cluster's too, when one is posted)."""
    if v.status != "down":
        return {}
    db = reader()
    # a page's read takes no write lock: an ORM session over the reader's connection, unless the request has one
    s = db if isinstance(db, OrmSession) else OrmSession(bind=db)
    try:
        obj, cluster = s.get(Vm, v.id), s.get(Cluster, v.cluster_id)
        if obj is None or cluster is None:
            return {}
        return {"template": access.may(c, s, "create_template", obj),
                # a clone is made in the VM's cluster: the service checks create_vm on both
                "clone": access.may(c, s, "create_vm", obj) and access.may(c, s, "create_vm", cluster)}
    finally:
        if s is not db:
            s.close()


@webui_bp.route("/vms/<ident>/snapshots", methods=["POST"])
def snapshot_create(ident):
    c, s = ctx(not is_admin()), session()
    v = lookup.get(s, Vm, ident, "VM")
    _, job = snap_svc.create_snapshot(c, s, v, forms.text_field("description", "Description", required=True))
    return after_job(job, url_for("ui.vm", ident=v.id))


@webui_bp.route("/vms/<ident>/snapshots/<snap_id>/<action>", methods=["POST"])
def snapshot_action(ident, snap_id, action):
    c, s = ctx(not is_admin()), session()
    v = lookup.get(s, Vm, ident, "VM")
    snap = s.get(Snapshot, snap_id)
    if snap is None or snap.vm_id != v.id:
        abort(404)
    if action == "restore":
        return after_job(snap_svc.restore_snapshot(c, s, v, snap), url_for("ui.vm", ident=v.id))
    if action == "preview":
        # the API's previewsnapshot (disk-only snapshots: there is no memory to restore)
        return after_job(snap_svc.preview_snapshot(c, s, v, snap), url_for("ui.vm", ident=v.id))
    if action == "remove":
        snap_svc.remove_snapshot(c, s, v, snap)
        return after_job(None, url_for("ui.vm", ident=v.id))
    abort(404)


# ending a preview: the API's commitsnapshot and undosnapshot
PREVIEW_ENDS = {"commit": snap_svc.commit_snapshot, "undo": snap_svc.undo_snapshot}


@webui_bp.route("/vms/<ident>/snapshots/<any(commit, undo):action>", methods=["POST"])
def snapshot_preview_end(ident, action):
    """Keep the previewed snapshot (commit) or go back to the VM as it was before the preview (undo)."""
    c, s = ctx(not is_admin()), session()
    v = lookup.get(s, Vm, ident, "VM")
    return after_job(PREVIEW_ENDS[action](c, s, v), url_for("ui.vm", ident=v.id))


def _name_field(field: str, label: str) -> str:
    # the API's rule for names: the UI stores nothing the API would refuse
    return Name().parse(forms.text_field(field, label, required=True, max_len=64), label)


def _vm_form(ident, call):
    """A form of a VM's page that copies the VM: call(ctx, session, vm) makes
    the service call and returns (its job, the page to show after). Refused,
    nothing is stored and the reason is shown: in the page's message area
    (htmx), or on the VM's page again with the answers kept."""
    c, s = ctx(not is_admin()), session()
    v = lookup.get(s, Vm, ident, "VM")
    try:
        job, shown = call(c, s, v)
    except Fault as f:
        rollback()
        if is_htmx():
            raise
        return _vm_page(ident, message=f, form=request.form), f.status
    return after_job(job, shown)


@webui_bp.route("/vms/<ident>/template", methods=["POST"])
def vm_make_template(ident):
    """oVirt's Make Template: the API's POST /templates naming this VM (its disks are copied by a job)."""
    def make(c, s, v):
        _t, job = tpl_svc.create_template(c, s, tpl_svc.TemplateSpec(
            name=_name_field("template_name", "Template name"), vm=Ref(id=v.id),
            description=DESCRIPTION.parse(forms.text_field("template_description", "Description", max_len=4000),
                                          "Description")))
        return job, url_for("ui.vm", ident=v.id)
    return _vm_form(ident, make)


@webui_bp.route("/vms/<ident>/clone", methods=["POST"])
def vm_clone(ident):
    """The API's POST /vms/{id}/clone: a new VM with full copies of this one's disks (made by a job)."""
    def clone(c, s, v):
        made, job = vm_svc.clone_vm(c, s, v, _name_field("clone_name", "New VM name"))
        s.flush()
        return job, url_for("ui.vm", ident=made.id)
    return _vm_form(ident, clone)


VM_ACTIONS = {
    "start": lambda c, s, v: vm_svc.request_start(c, s, v, None),
    "shutdown": vm_svc.request_shutdown,
    "poweroff": vm_svc.request_stop,
    "reboot": vm_svc.request_reboot,
}


@webui_bp.route("/vms/<ident>/<action>", methods=["POST"])
def vm_action(ident, action):
    """Lifecycle actions, for the administration portal and the VM portal alike:
    the service layer checks the caller's permits."""
    c, s = ctx(not is_admin()), session()
    v = lookup.get(s, Vm, ident, "VM")
    back = forms.back_field(url_for("ui.vm", ident=v.id))
    if action in VM_ACTIONS:
        return after_job(VM_ACTIONS[action](c, s, v), back)
    if action == "migrate":
        ref = forms.ref_field("host", "Destination host")
        target = lookup.resolve(s, Host, ref, "host", "host") if ref else None
        return after_job(vm_svc.request_migrate(c, s, v, target), back)
    if action == "remove":
        job = vm_svc.remove_vm(c, s, v)
        return after_job(job, url_for("ui.vms") if is_admin() else url_for("ui.portal"))
    abort(404)


# ---- events ------------------------------------------------------------------------
def _events_page():
    severity = request.args.get("severity", "")
    search = request.args.get("search", "").strip()
    terms = ([f"severity={severity}"] if severity in SEVERITIES else []) + ([search] if search else [])
    rows, more, page = paged(ctx(not is_admin()), reads.EVENTS, " and ".join(terms), EVENTS_PAGE)
    return {"events": rows, "more": more, "page": page, "search": search,
            "severity": severity, "severities": SEVERITIES}


@webui_bp.route("/events")
def events_list():
    return render_template("events.html", **_events_page())


@webui_bp.route("/events/rows")
def event_rows():
    return render_template("_event_rows.html", **_events_page())


@webui_bp.app_template_filter("when")
def when(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


@webui_bp.app_template_filter("mib")
def mib(value):
    if value is None:
        return ""
    value = int(value) // forms.MIB
    return f"{value / 1024:.1f} GiB" if value >= 10240 else f"{value} MiB"


@webui_bp.app_template_filter("percent")
def percent(part, whole):
    return 0 if not whole else min(100, round(100 * part / whole))



@webui_bp.route("/vms/<ident>/events")
def vm_events(ident):
    c = ctx(not is_admin())
    v = reads.get_row(c, reader(), reads.VMS, ident)
    return render_template("_event_rows.html", events=reads.list_rows(c, reader(), reads.EVENTS, None, 20,
                                                                       Event.vm_id == v.id))


# the buttons a VM in each state offers (the service layer refuses the rest anyway)
VM_BUTTONS = {
    "down": (("start", "Start"),),
    "up": (("shutdown", "Shut down"), ("reboot", "Reboot"), ("poweroff", "Power off")),
    "paused": (("poweroff", "Power off"),),
    "powering_up": (("poweroff", "Power off"),),
    "not_responding": (("poweroff", "Power off"),),
}


@webui_bp.app_template_global()
def vm_actions(status):
    return VM_BUTTONS.get(status, ())


@webui_bp.app_template_global()
def query_with(**changes):
    """This page's query string with some parameters changed (the pager's links)."""
    args = request.args.to_dict()
    args.update({k: str(v) for k, v in changes.items()})
    return urlencode(args)


@webui_bp.app_template_global()
def admin_portal():
    return is_admin()
