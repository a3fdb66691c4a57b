"""The administration portal's other inventory pages: data centers, clusters,
storage domains, networks, templates and disks (oVirt's search, a page for
each object), their create, edit and remove forms (each the service call the
API's POST, PUT or DELETE makes), and the jobs with their steps. Each page
reads what the API's view of the same object reads."""
from __future__ import annotations

from flask import render_template, request, url_for
from sqlalchemy import func, select

from keel_common.config import MANAGEMENT_NETWORK
from keel_engine.api.fields import Name
from keel_engine.api.schemas import DESCRIPTION
from keel_engine.errors import Fault, bad_request, conflict
from keel_engine.models import (Cluster, DataCenter, Disk, DiskAttachment, Host, Job, Network, Nic, Step,
                                StorageDomain, Template, User, Vm, VmPool, VmPoolMember)
from keel_engine.services import disks as disk_svc
from keel_engine.services import inventory as inv
from keel_engine.services import lookup, reads
from keel_engine.services import pools as pool_svc
from keel_engine.services import storage_attach as attach_svc
from keel_engine.services import templates as tpl_svc
from keel_engine.services import vms as vm_svc
from keel_engine.services.lookup import Ref

from . import forms
from .admin import admin_page, after_job, job_row, paged
from .blueprint import ctx, reader, rollback, session, webui_bp

PAGE = 50
# an object's page lists at most this many of a long list (a domain's disks,
# a template's VMs, a network's interfaces); the first two link to all of them
SHOWN = 100
JOBS_SHOWN = 100
JOB_STATUSES = ("started", "finished", "failed", "aborted")
GIB = 1024 ** 3
MAX_DISK_GIB = disk_svc.MAX_DISK // GIB
# the storage types the form offers (the API's storage.type): a directory every
# host of the data center sees, or an NFS export mounted on every host
DIRECTORY_STORAGE = "posixfs"
NFS_STORAGE = "nfs"
STORAGE_CHOICES = {DIRECTORY_STORAGE: "a directory every host sees", NFS_STORAGE: "an NFS export"}


def _list_page(coll) -> dict:
    """A list page's rows (searched, PAGE at a time), its pager's and its job's."""
    search = request.args.get("search", "").strip()
    rows, more, page = paged(ctx(), coll, search, PAGE)
    return {"rows": rows, "more": more, "page": page, "search": search,
            "job": job_row(request.args.get("job"))}


def _listed(path: str, name: str, coll, beside) -> None:
    """GET `path`: the searched list of `coll` (endpoint ui.<name>, template
    <name>.html) with what `beside(ctx, reader, rows)` loads for its rows."""
    @admin_page
    def show():
        p = _list_page(coll)
        return render_template(f"{name}.html", **p, **beside(ctx(), reader(), p["rows"]))
    webui_bp.add_url_rule(path, name, show)


def _shown(path: str, name: str, page, removal=None) -> None:
    """GET `path`/<id>: an object's page, `page(ident, message=None)` (endpoint
    ui.<name>); with removal, (model, kind, remove(ctx, session, obj)): POST
    `path`/<id>/remove removes it (endpoint ui.<name>_remove), then shows the
    list ui.<name>s with the job it started, if any; refused, the object's page
    again with why."""
    @admin_page
    def show(ident):
        return page(ident)
    webui_bp.add_url_rule(f"{path}/<ident>", name, show)
    if removal is None:
        return
    model, kind, remove = removal

    @admin_page
    def removed(ident):
        s = session()
        obj = lookup.get(s, model, ident, kind)
        try:
            job = remove(ctx(), s, obj)
        except Fault as f:
            rollback()
            return page(ident, f), f.status
        return after_job(job, url_for(f"ui.{name}s"))
    webui_bp.add_url_rule(f"{path}/<ident>/remove", f"{name}_remove", removed, methods=["POST"])


def _name() -> str:
    # the API's rule for names: the UI stores nothing the API would refuse
    return Name().parse(forms.text_field("name", "Name", required=True, max_len=64), "Name")


def _description() -> str:
    return DESCRIPTION.parse(forms.text_field("description", "Description", max_len=4000), "Description")


def _size() -> int:
    """A disk's size: whole GiB in the form, bytes for the service (as the API's provisioned_size)."""
    gib = forms.int_field("size", "Size (GiB)", 1, MAX_DISK_GIB)
    if gib is None:
        raise bad_request("Size (GiB): required")
    return gib * GIB


def _create(template: str, make, listing: str, choices=dict):
    """A create form: shown (GET, its fields from the query), or posted: the
    service call, then the list (with the job it started, when make() returns
    one); refused, the form again with why and the answers kept, and nothing
    stored."""
    if request.method == "GET":
        return render_template(template, form=request.args, message=None, **choices())
    try:
        made = make()
    except Fault as f:
        rollback()
        return render_template(template, form=request.form, message=f, **choices()), f.status
    return after_job(made if isinstance(made, Job) else None, url_for(listing))


def _edit(template: str, coll, ident: str, change, shown: str, fields=("id", "name", "description"), choices=dict):
    """An edit form: shown (GET, filled with the object's `fields`), or posted:
    change(obj), the service call of the API's PUT, then the object's page;
    refused, the form again with why and the answers kept, nothing changed."""
    if request.method == "GET":
        row = reads.get_row(ctx(), reader(), coll, ident)
        current = {k: getattr(row, k) for k in fields}
        return render_template(template, current=current, form=current, message=None, **choices())
    obj = lookup.get(session(), coll.model, ident, coll.kind)
    # kept apart from the row: a refusal rolls the session back and the row with it
    current = {k: getattr(obj, k) for k in fields}
    try:
        change(obj)
    except Fault as f:
        rollback()
        return render_template(template, current=current, form=request.form, message=f, **choices()), f.status
    return after_job(None, url_for(shown, ident=current["id"]))


def _datacenters_of(c, db, rows) -> dict:
    return {"datacenters": reads.by_id(db, DataCenter, {r.data_center_id for r in rows}, c)}


# ---- data centers -----------------------------------------------------------
def _datacenter_counts(_c, db, rows) -> dict:
    ids = [d.id for d in rows]
    return {"clusters": reads.counts(db, Cluster.data_center_id, ids),
            "domains": reads.counts(db, StorageDomain.data_center_id, ids)}


def _datacenter(ident, message=None):
    c, db = ctx(), reader()
    dc = reads.get_row(c, db, reads.DATACENTERS, ident)
    return render_template(
        "datacenter.html", dc=dc, message=message,
        clusters=reads.list_rows(c, db, reads.CLUSTERS, None, None, Cluster.data_center_id == dc.id),
        networks=reads.list_rows(c, db, reads.NETWORKS, None, None, Network.data_center_id == dc.id),
        domains=reads.list_rows(c, db, reads.STORAGE_DOMAINS, None, None, StorageDomain.data_center_id == dc.id))


@webui_bp.route("/datacenters/new", methods=["GET", "POST"])
@admin_page
def datacenter_new():
    return _create("datacenter_new.html", lambda: inv.add_datacenter(ctx(), session(), inv.DataCenterSpec(
        name=_name(), description=_description())), "ui.datacenters")


@webui_bp.route("/datacenters/<ident>/edit", methods=["GET", "POST"])
@admin_page
def datacenter_edit(ident):
    return _edit("datacenter_edit.html", reads.DATACENTERS, ident, lambda dc: inv.update_datacenter(
        ctx(), session(), dc, name=_name(), description=_description()), "ui.datacenter")


_listed("/datacenters", "datacenters", reads.DATACENTERS, _datacenter_counts)
_shown("/datacenters", "datacenter", _datacenter, (DataCenter, "data center", inv.remove_datacenter))


# ---- clusters -----------------------------------------------------------------
def _cluster_counts(c, db, rows) -> dict:
    ids = [cl.id for cl in rows]
    return {"hosts": reads.counts(db, Host.cluster_id, ids), "vms": reads.counts(db, Vm.cluster_id, ids),
            **_datacenters_of(c, db, rows)}


def _cluster(ident, message=None):
    c, db = ctx(), reader()
    cl = reads.get_row(c, db, reads.CLUSTERS, ident)
    hosts = reads.list_rows(c, db, reads.HOSTS, None, None, Host.cluster_id == cl.id)
    return render_template(
        "cluster.html", cluster=cl, message=message, hosts=hosts,
        vm_counts=reads.vm_counts(db, [h.id for h in hosts]),
        vm_count=reads.count(db, Vm, Vm.cluster_id == cl.id, ctx=c),
        datacenters=reads.by_id(db, DataCenter, [cl.data_center_id], c))


def _datacenter_choices():
    return {"datacenters": reads.list_rows(ctx(), reader(), reads.DATACENTERS)}


@webui_bp.route("/clusters/new", methods=["GET", "POST"])
@admin_page
def cluster_new():
    return _create("cluster_new.html", lambda: inv.add_cluster(ctx(), session(), inv.ClusterSpec(
        name=_name(), data_center=forms.ref_field("data_center", "Data center", required=True))),
        "ui.clusters", _datacenter_choices)


@webui_bp.route("/clusters/<ident>/edit", methods=["GET", "POST"])
@admin_page
def cluster_edit(ident):
    return _edit("cluster_edit.html", reads.CLUSTERS, ident, lambda cl: inv.update_cluster(
        ctx(), session(), cl, name=_name(), description=_description()), "ui.cluster")


_listed("/clusters", "clusters", reads.CLUSTERS, _cluster_counts)
_shown("/clusters", "cluster", _cluster, (Cluster, "cluster", inv.remove_cluster))


# ---- storage domains --------------------------------------------------------------
def _disk_places(c, db, disks) -> dict:
    """What a table of disks shows beside each disk: its storage domain, and
    the VM or template it is attached to (neither: a floating disk)."""
    attached = {key: atts[0] for key, atts in
                reads.grouped(db, DiskAttachment, DiskAttachment.disk_id, [d.id for d in disks]).items()}
    return {"attached": attached,
            "vms": reads.by_id(db, Vm, {a.vm_id for a in attached.values()}, c),
            "templates": reads.by_id(db, Template, {a.template_id for a in attached.values()}, c),
            "domains": reads.by_id(db, StorageDomain, {d.storage_domain_id for d in disks}, c)}


def _storage_domain(ident, message=None):
    c, db = ctx(), reader()
    sd = reads.get_row(c, db, reads.STORAGE_DOMAINS, ident)
    disks = reads.list_rows(c, db, reads.DISKS, None, SHOWN, Disk.storage_domain_id == sd.id)
    return render_template(
        "storage_domain.html", sd=sd, message=message, disks=disks, **_disk_places(c, db, disks),
        disk_count=reads.count(db, Disk, Disk.storage_domain_id == sd.id, ctx=c),
        datacenters=reads.by_id(db, DataCenter, [sd.data_center_id], c),
        # where an unattached domain can be attached
        all_datacenters=reads.list_rows(c, db, reads.DATACENTERS) if not sd.data_center_id else [])


def _storage_domain_choices():
    c, db = ctx(), reader()
    return {"datacenters": reads.list_rows(c, db, reads.DATACENTERS), "hosts": reads.list_rows(c, db, reads.HOSTS),
            "storage_types": STORAGE_CHOICES}


def _storage_spec() -> inv.StorageDomainSpec:
    """The API's storage: {type, path, address}: a directory's path, or an NFS
    server and its export's path (each has its own fields in the form)."""
    storage_type = request.form.get("storage_type", "") or DIRECTORY_STORAGE
    if storage_type == NFS_STORAGE:
        path = forms.text_field("export_path", "Export path", required=True, max_len=1024)
        address = forms.text_field("address", "NFS server", required=True)
    else:
        path, address = forms.text_field("path", "Directory", required=True, max_len=1024), None
    return inv.StorageDomainSpec(
        name=_name(), storage_type=storage_type, path=path, address=address, description=_description(),
        data_center=forms.ref_field("data_center", "Data center"), host=forms.ref_field("host", "Host"))


@webui_bp.route("/storagedomains/new", methods=["GET", "POST"])
@admin_page
def storage_domain_new():
    # the job that opens the directory (or the NFS export's mount point) on the host follows on the list page
    return _create("storage_domain_new.html", lambda: inv.add_storage_domain(ctx(), session(), _storage_spec())[1],
                   "ui.storage_domains", _storage_domain_choices)


@webui_bp.route("/storagedomains/<ident>/attach", methods=["POST"])
@admin_page
def storage_domain_attach(ident):
    """Attach to the chosen data center: as the API's POST /datacenters/{id}/storagedomains."""
    def attach(s, sd):
        dc = lookup.require(s, DataCenter, forms.ref_field("data_center", "Data center", required=True),
                            "data center", "Data center")
        inv.attach_storage_domain(ctx(), s, dc, sd)
    return _attached_action(ident, attach)


# the actions on a domain as attached to its data center (datacenters/{id}/storagedomains/{id})
ATTACHED_ACTIONS = {"activate": attach_svc.activate, "maintenance": attach_svc.deactivate,
                    "detach": attach_svc.detach}


@webui_bp.route("/storagedomains/<ident>/<any(activate, maintenance, detach):action>", methods=["POST"])
@admin_page
def storage_domain_attached(ident, action):
    """Activate, maintenance (the API's deactivate) or detach, in the domain's data center."""
    def act(s, sd):
        dc = s.get(DataCenter, sd.data_center_id) if sd.data_center_id else None
        if dc is None:
            raise conflict(f"storage domain {sd.name} is not attached to a data center")
        ATTACHED_ACTIONS[action](ctx(), s, dc, sd)
    return _attached_action(ident, act)


def _attached_action(ident, act):
    """act(session, domain), then the domain's page; refused, the page with why, nothing changed."""
    s = session()
    sd = lookup.get(s, StorageDomain, ident, "storage domain")
    try:
        act(s, sd)
        s.flush()
    except Fault as f:
        rollback()
        return _storage_domain(ident, f), f.status
    return after_job(None, url_for("ui.storage_domain", ident=ident))


_listed("/storagedomains", "storage_domains", reads.STORAGE_DOMAINS, _datacenters_of)
_shown("/storagedomains", "storage_domain", _storage_domain,
       (StorageDomain, "storage domain", inv.remove_storage_domain))


# ---- networks ----------------------------------------------------------------------
def _network(ident, message=None):
    c, db = ctx(), reader()
    n = reads.get_row(c, db, reads.NETWORKS, ident)
    nics = reads.list_rows(c, db, reads.NICS, None, SHOWN, Nic.network_id == n.id)
    # Keel's vNIC profiles are one per network, with the network's id and name (as the API's)
    return render_template("network.html", network=n, message=message, profiles=[n], nics=nics,
                           management=n.name == MANAGEMENT_NETWORK,
                           vms=reads.by_id(db, Vm, {x.vm_id for x in nics}, c),
                           datacenters=reads.by_id(db, DataCenter, [n.data_center_id], c))


@webui_bp.route("/networks/new", methods=["GET", "POST"])
@admin_page
def network_new():
    return _create("network_new.html", lambda: inv.add_network(ctx(), session(), inv.NetworkSpec(
        name=_name(), data_center=forms.ref_field("data_center", "Data center", required=True),
        description=_description(), vlan=forms.int_field("vlan", "VLAN", 1, 4094),
        mtu=forms.int_field("mtu", "MTU", 0, 65535, default=0))),
        "ui.networks", _datacenter_choices)


_listed("/networks", "networks", reads.NETWORKS, _datacenters_of)
_shown("/networks", "network", _network, (Network, "network", inv.remove_network))


# ---- templates ------------------------------------------------------------------------
def _template_counts(c, db, rows) -> dict:
    return {"vms": reads.counts(db, Vm.template_id, [t.id for t in rows]),
            "clusters": reads.by_id(db, Cluster, {t.cluster_id for t in rows}, c)}


def _template(ident, message=None):
    c, db = ctx(), reader()
    t = reads.get_row(c, db, reads.TEMPLATES, ident)
    disks = reads.attachments(db, DiskAttachment.template_id, [t.id]).get(t.id, [])
    return render_template(
        "template.html", template=t, message=message, disks=disks,
        domains=reads.by_id(db, StorageDomain, {d.storage_domain_id for _a, d in disks}, c),
        vms=reads.list_rows(c, db, reads.VMS, None, SHOWN, Vm.template_id == t.id),
        vm_count=reads.count(db, Vm, Vm.template_id == t.id, ctx=c),
        clusters=reads.by_id(db, Cluster, [t.cluster_id], c))


def _down_vms():
    # the VMs a template can be made from: the service refuses the others
    return {"vms": reads.list_rows(ctx(), reader(), reads.VMS, None, None, Vm.status == "down")}


@webui_bp.route("/templates/new", methods=["GET", "POST"])
@admin_page
def template_new():
    # as the API's POST /templates with a vm: the template is locked and the VM image locked until the job
    # that copies its disks, shown on the list, ends
    return _create("template_new.html", lambda: tpl_svc.create_template(ctx(), session(), tpl_svc.TemplateSpec(
        name=_name(), vm=forms.ref_field("vm", "VM", required=True), description=_description()))[1],
        "ui.templates", _down_vms)


_listed("/templates", "templates", reads.TEMPLATES, _template_counts)
_shown("/templates", "template", _template, (Template, "template", tpl_svc.remove_template))


# ---- disks ------------------------------------------------------------------------------
def _disk(ident, message=None):
    c, db = ctx(), reader()
    d = reads.get_row(c, db, reads.DISKS, ident)
    return render_template("disk.html", disk=d, message=message, **_disk_places(c, db, [d]))


def _storage_domain_list():
    return {"domains": reads.list_rows(ctx(), reader(), reads.STORAGE_DOMAINS), "max_gib": MAX_DISK_GIB}


@webui_bp.route("/disks/new", methods=["GET", "POST"])
@admin_page
def disk_new():
    # a floating disk, as the API's POST /disks, or a new disk attached to a VM (hot-plugged when up), as its POST
    # /vms/<id>/diskattachments; its volume is made by the job shown on the list
    def make():
        name = _name()
        spec = disk_svc.DiskSpec(
            provisioned_size=_size(), name=name, description=_description(),
            storage_domain=forms.ref_field("storage_domain", "Storage domain", required=True))
        vm_name = forms.text_field("vm", "Attach to VM", max_len=255)
        if not vm_name:
            return disk_svc.add_disk(ctx(), session(), spec, default_name=name)[1]
        vm = lookup.require(session(), Vm, Ref(name=vm_name), "VM", "Attach to VM")
        return vm_svc.add_disk_attachment(ctx(), session(), vm, vm_svc.AttachmentSpec(
            new_disk=spec, bootable=forms.checkbox("bootable")))[1]
    return _create("disk_new.html", make, "ui.disks", _storage_domain_list)


_listed("/disks", "disks", reads.DISKS, _disk_places)
_shown("/disks", "disk", _disk, (Disk, "disk", disk_svc.remove_disk))


# ---- VM pools ------------------------------------------------------------------------------
def _pool_counts(c, db, rows) -> dict:
    """Beside each pool: how many of its VMs are in each state (one query), its cluster and template."""
    states: dict = {}
    if rows:
        for pool_id, state, n in reads.run(db, select(VmPoolMember.pool_id, VmPoolMember.state, func.count())
                                           .where(VmPoolMember.pool_id.in_([p.id for p in rows]))
                                           .group_by(VmPoolMember.pool_id, VmPoolMember.state)).all():
            states.setdefault(pool_id, {})[state] = n
    return {"states": states,
            "clusters": reads.by_id(db, Cluster, {p.cluster_id for p in rows}, c),
            "templates": reads.by_id(db, Template, {p.template_id for p in rows}, c)}


def _pool(ident, message=None):
    c, db = ctx(), reader()
    pool = reads.get_row(c, db, reads.POOLS, ident)
    members = reads.run(db, select(Vm.id, Vm.name, Vm.status, VmPoolMember.state, VmPoolMember.user_id)
                        .join(Vm, Vm.id == VmPoolMember.vm_id).where(VmPoolMember.pool_id == pool.id)
                        .order_by(Vm.name).limit(SHOWN)).all()
    return render_template(
        "pool.html", pool=pool, message=message, members=members,
        member_count=reads.count(db, VmPoolMember, VmPoolMember.pool_id == pool.id),
        holders=reads.by_id(db, User, {m.user_id for m in members if m.user_id}),
        clusters=reads.by_id(db, Cluster, [pool.cluster_id], c),
        templates=reads.by_id(db, Template, [pool.template_id], c))


def _pool_choices():
    c, db = ctx(), reader()
    return {"clusters": reads.list_rows(c, db, reads.CLUSTERS), "templates": reads.list_rows(c, db, reads.TEMPLATES),
            "types": pool_svc.TYPES, "max_size": pool_svc.MAX_SIZE}


# what a field left empty means in a new pool: the API's defaults
POOL_DEFAULTS = pool_svc.PoolSpec(name="", cluster=Ref(), template=Ref())


def _pool_number(name: str, label: str, lo: int, default: int | None = None) -> int | None:
    return forms.int_field(name, label, lo, pool_svc.MAX_SIZE, default=default)


@webui_bp.route("/pools/new", methods=["GET", "POST"])
@admin_page
def pool_new():
    # the pool's first VM now, its others made by the worker (as the API's POST /vmpools)
    return _create("pool_new.html", lambda: pool_svc.add_pool(ctx(), session(), pool_svc.PoolSpec(
        name=_name(), cluster=forms.ref_field("cluster", "Cluster", required=True),
        template=forms.ref_field("template", "Template", required=True),
        size=_pool_number("size", "Size", 1, POOL_DEFAULTS.size),
        prestarted_vms=_pool_number("prestarted_vms", "Prestarted VMs", 0, POOL_DEFAULTS.prestarted_vms),
        max_user_vms=_pool_number("max_user_vms", "Most VMs per user", 1, POOL_DEFAULTS.max_user_vms),
        type=forms.text_field("type", "Type", max_len=16) or POOL_DEFAULTS.type, description=_description())),
        "ui.pools", _pool_choices)


@webui_bp.route("/pools/<ident>/edit", methods=["GET", "POST"])
@admin_page
def pool_edit(ident):
    return _edit("pool_edit.html", reads.POOLS, ident, lambda pool: pool_svc.update_pool(
        ctx(), session(), pool, pool_svc.PoolChanges(
            name=_name(), description=_description(), size=_pool_number("size", "Size", 1),
            prestarted_vms=_pool_number("prestarted_vms", "Prestarted VMs", 0),
            max_user_vms=_pool_number("max_user_vms", "Most VMs per user", 1))),
        "ui.pool", ("id", "name", "description", "size", "prestarted_vms", "max_user_vms"),
        lambda: {"max_size": pool_svc.MAX_SIZE})


_listed("/pools", "pools", reads.POOLS, _pool_counts)
_shown("/pools", "pool", _pool, (VmPool, "VM pool", pool_svc.remove_pool))


# ---- jobs ---------------------------------------------------------------------------------
# /jobs/<id> is the progress fragment an action polls (admin.py); a job's page is /jobs/<id>/detail
@webui_bp.route("/jobs")
@admin_page
def jobs():
    c, db = ctx(), reader()
    status = request.args.get("status", "")
    status = status if status in JOB_STATUSES else ""
    search = request.args.get("search", "").strip()
    rows = reads.list_rows(c, db, reads.JOBS, search or None, JOBS_SHOWN,
                           *((Job.status == status,) if status else ()))
    return render_template("jobs.html", rows=rows, search=search, status=status, statuses=JOB_STATUSES,
                           shown=JOBS_SHOWN, owners=reads.by_id(db, User, {j.owner_id for j in rows}, c))


@webui_bp.route("/jobs/<ident>/detail")
@admin_page
def job_detail(ident):
    c, db = ctx(), reader()
    j = reads.get_row(c, db, reads.JOBS, ident)
    steps = reads.list_rows(c, db, reads.STEPS, None, None, Step.job_id == j.id)
    return render_template("job_detail.html", record=j, steps=steps,
                           steps_done=sum(st.status != "started" for st in steps),
                           owner=reads.by_id(db, User, [j.owner_id], c).get(j.owner_id))
