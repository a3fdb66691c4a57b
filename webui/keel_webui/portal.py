"""The VM portal: the VMs a user may use, and what they may do with them.
Reads run with oVirt's user filter, so a user sees exactly what their own
roles (and their groups') give them, on the VM or above it."""
from flask import render_template, request


from .admin import vms_page, job_row
from .blueprint import webui_bp


@webui_bp.route("/portal/")
def portal():
    return render_template("portal.html", **vms_page(filtered=True), job=job_row(request.args.get("job")))


@webui_bp.route("/portal/rows")
def portal_rows():
    return render_template("_portal_rows.html", **vms_page(filtered=True))


