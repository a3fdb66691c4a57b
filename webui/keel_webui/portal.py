"""The VM portal: the VMs a user may use, and what they may do with them.
Reads run with oVirt's user filter, so a user sees exactly what their own
roles (and their groups') give them, on the VM or above it. It lists the VM
pools the user's roles show them too, each with a button that takes a VM
from the pool as the API's allocatevm does."""
from flask import render_template, request, url_for
from sqlalchemy import func, select

from keel_engine.errors import Fault
from keel_engine.models import VmPool, VmPoolMember
from keel_engine.services import lookup, reads
from keel_engine.services import pools as pool_svc

from .admin import after_job, job_row, vms_page
from .blueprint import ctx, reader, rollback, session, webui_bp
from .signin import is_admin


def _pools():
    """The pools the user's own roles show them, with how many free VMs each has now."""
    rows = reads.list_rows(ctx(filtered=True), reader(), reads.POOLS, None, None, VmPool.removing.is_(False))
    free = dict(reads.run(reader(), select(VmPoolMember.pool_id, func.count())
                          .where(VmPoolMember.pool_id.in_([p.id for p in rows]), VmPoolMember.state == "free")
                          .group_by(VmPoolMember.pool_id)).all()) if rows else {}
    return {"pools": rows, "free": free}


def _portal(message=None, status=200):
    return render_template("portal.html", **vms_page(filtered=True), **_pools(), message=message,
                           job=job_row(request.args.get("job"))), status


@webui_bp.route("/portal/")
def portal():
    return _portal()


@webui_bp.route("/portal/rows")
def portal_rows():
    return render_template("_portal_rows.html", **vms_page(filtered=True))


@webui_bp.route("/portal/pools/<ident>/take", methods=["POST"])
def pool_take(ident):
    """A VM from the pool for the user (POST /vmpools/{id}/allocatevm), then its
    page; refused (no free VM, the pool's most per user), the portal with why."""
    c = ctx(not is_admin())
    try:
        reads.get_row(c, reader(), reads.POOLS, ident)    # a pool the user may not see does not exist
        vm, job = pool_svc.allocate(c, session(), lookup.get(session(), VmPool, ident, "VM pool"))
    except Fault as f:
        rollback()
        return _portal(f, f.status)
    return after_job(job, url_for("ui.vm", ident=vm.id))
