"""datacenters/{id}/storagedomains/{id}: a storage domain as attached to a
data center, with oVirt's activate and deactivate (maintenance) and detach."""
from ..errors import not_found
from ..models import DataCenter, StorageDomain
from ..services import reads
from ..services import storage_attach as svc
from . import schemas, views
from .common import obj, row
from .framework import action_answer, body, ctx, removed, render, route, session


def _attached(dc_id, sd_id, write=False):
    dc = obj(DataCenter, dc_id, "data center") if write else row(reads.DATACENTERS, dc_id)
    sd = obj(StorageDomain, sd_id, "storage domain") if write else row(reads.STORAGE_DOMAINS, sd_id)
    if sd.data_center_id != dc.id:
        raise not_found("storage domain attached to this data center", sd_id)
    return dc, sd


def _view(sd, dc_id):
    out = views.storage_domain(sd)
    out["href"] = views.href("datacenters", dc_id, "storagedomains", sd.id)
    out["data_center"] = views.ref("datacenters", dc_id)
    return out


@route("/datacenters/<ident>/storagedomains/<sd>", ["GET"], "A storage domain attached to this data center")
def attached_sd_get(ident, sd):
    dc, dom = _attached(ident, sd)
    return render("storage_domain", _view(dom, dc.id))


@route("/datacenters/<ident>/storagedomains/<sd>/activate", ["POST"], "Activate an attached storage domain",
       body=schemas.ACTION)
def attached_sd_activate(ident, sd):
    body(schemas.ACTION)
    dc, dom = _attached(ident, sd, write=True)
    svc.activate(ctx(), session(), dc, dom)
    return action_answer()


@route("/datacenters/<ident>/storagedomains/<sd>/deactivate", ["POST"],
       "Put an attached storage domain into maintenance (no running VM may use it)", body=schemas.ACTION)
def attached_sd_deactivate(ident, sd):
    body(schemas.ACTION)
    dc, dom = _attached(ident, sd, write=True)
    svc.deactivate(ctx(), session(), dc, dom)
    return action_answer()


@route("/datacenters/<ident>/storagedomains/<sd>", ["DELETE"],
       "Detach a storage domain in maintenance (it must hold no disks)")
def attached_sd_detach(ident, sd):
    dc, dom = _attached(ident, sd, write=True)
    svc.detach(ctx(), session(), dc, dom)
    return removed()
