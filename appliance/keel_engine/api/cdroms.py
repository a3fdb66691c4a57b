"""A VM's CD-ROM (oVirt's vms/{id}/cdroms; services/cdroms.py): one drive
per VM, with the ISO image it holds as `<file id="NAME.iso"/>`. Without
`current` a read or a change is the VM's configuration (what it starts
with); `current=true` is the running VM's drive, read or changed now
through the engine worker."""
from ..errors import bad_request, not_found
from ..models import BLANK_TEMPLATE_ID, Vm
from ..representation import Many
from ..services import cdroms, reads
from . import unsupported, views
from .common import obj, row
from .fields import Obj, Reference, Text
from .framework import body, bool_param, ctx, finish_job, raw_body, render, route, session
from .isos import awaited

# oVirt's id of a VM's one CD-ROM device
CDROM_ID = BLANK_TEMPLATE_ID
# <cdrom><file id="NAME.iso"/></cdrom>; id "" (or <file/>) ejects
CDROM = Obj(file=Obj(id=Text(255), name=Text(255), storage_domain=Reference()))
unsupported.register(CDROM, "Cdrom")


def _view(vm_id, cd: cdroms.Cd):
    out = {"id": CDROM_ID, "href": views.href("vms", vm_id, "cdroms", CDROM_ID), "vm": views.ref("vms", vm_id)}
    if cd.file:
        out["file"] = {"id": cd.file, "storage_domain": views.ref("storagedomains", cd.storage_domain_id)}
    return out


def _cd(v):
    """What the drive holds: the configuration, or with current=true the running drive's medium."""
    if not bool_param("current") or v.status not in cdroms.LIVE:
        return cdroms.configured(v)
    return cdroms.cd_of(awaited(cdroms.request_read(ctx(), session(), obj(Vm, v.id, "VM"))))


def _cdrom_id(cdrom):
    if cdrom != CDROM_ID:
        raise not_found("CD-ROM", cdrom)


@route("/vms/<ident>/cdroms", ["GET"], "A VM's CD-ROM: the ISO image it starts with (current=true: the one the "
       "running VM has now)", query=("current",))
def vm_cdroms(ident):
    v = row(reads.VMS, ident)
    return render("cdroms", Many("cdrom", [_view(v.id, _cd(v))]))


@route("/vms/<ident>/cdroms/<cdrom>", ["GET"], "A VM's CD-ROM device", query=("current",))
def vm_cdrom_get(ident, cdrom):
    v = row(reads.VMS, ident)
    _cdrom_id(cdrom)
    return render("cdrom", _view(v.id, _cd(v)))


@route("/vms/<ident>/cdroms/<cdrom>", ["PUT"], "Change the CD: <file id=\"NAME.iso\"/> inserts an ISO image of a "
       "storage domain of the VM's data center, id \"\" ejects; the VM's configuration, or with current=true the "
       "running VM's drive only (a job)", body=CDROM, query=("current", "async"), job=True)
def vm_cdrom_update(ident, cdrom):
    b = body(CDROM)
    vm = obj(Vm, ident, "VM")
    _cdrom_id(cdrom)
    if "file" not in raw_body():
        raise bad_request('cdrom.file: required: <file id="NAME.iso"/> to insert an ISO image, <file id=""/> '
                          "to eject")
    f = b.get("file") or {}
    file, current = f.get("id") or f.get("name") or "", bool_param("current")
    job = cdroms.request_change(ctx(), session(), vm, file, current, f.get("storage_domain"))
    vm_id = vm.id

    def done(j):
        if current:
            return render("cdrom", _view(vm_id, cdroms.cd_of(j)))
        return render("cdrom", _view(vm_id, cdroms.configured(row(reads.VMS, vm_id))))
    return finish_job(job, done, lambda _j: render("cdrom", _view(vm_id, cdroms.Cd(file, None)), 202))
