"""ISO images as oVirt's clients find them (services/isos.py): a storage
domain's `files`, and, as oVirt 4.4+ lists ISO images on data domains, disks
with content_type `iso` in its `disks` (ovirt_vm's `cd_iso` looks there).
Each read asks a host through the engine worker; the request waits for it."""
import logging
from urllib.parse import quote

from flask import current_app

from ..errors import Fault, conflict, not_found
from ..models import Disk, StorageDomain
from ..representation import Many
from ..services import isos, jobs, reads
from . import views
from .common import obj, row
from .framework import bool_param, ctx, max_param, reader, render, route, search_param, session

log = logging.getLogger("keel.engine.isos")
# how long a disk list waits for the ISO images (a host answers in seconds)
LIST_WAIT = 60


def awaited(job, timeout=None):
    """Commit (the worker sees the job), wait for its end; its fault if it
    failed, a 409 if it did not end in time. Returns the ended row."""
    session().commit()
    app = current_app.config["KEEL_CTX"]
    wait = app.config.request_wait if timeout is None else min(timeout, app.config.request_wait)
    ended = jobs.wait(app.engine, job.id, wait)
    if ended is not None and ended.status == "failed":
        raise jobs.fault_of(ended)
    if ended is None or ended.status != "finished":
        raise conflict(f"{job.description}: the engine worker did not answer within {wait:.0f} s; try again")
    return ended


def images(sd_row, timeout=None) -> list[isos.IsoImage]:
    """The ISO images of a storage domain the caller may see, read now."""
    sd = obj(StorageDomain, sd_row.id, "storage domain")
    return isos.images_of(awaited(isos.request_listing(ctx(), session(), sd), timeout))


def _href(image):
    return views.href("storagedomains", image.storage_domain_id, "files", quote(image.name))


def file_view(image):
    return {"id": image.name, "href": _href(image), "name": image.name, "type": "iso",
            "storage_domain": views.ref("storagedomains", image.storage_domain_id)}


def disk_view(image):
    """An ISO image as oVirt shows one on a data domain: a disk of content_type iso."""
    return {"id": image.name, "href": _href(image), "name": image.name, "alias": image.name, "description": "",
            "provisioned_size": image.size, "actual_size": image.size, "format": "raw", "status": "ok",
            "storage_type": "image",
            "content_type": "iso", "sparse": False, "shareable": False,
            "storage_domains": Many("storage_domain", [views.ref("storagedomains", image.storage_domain_id)])}


@route("/storagedomains/<ident>/files", ["GET"], "List the ISO images (NAME.iso files) in a data storage domain's "
       "directory, read now through a host", query=("max",))
def sd_files(ident):
    found = images(row(reads.STORAGE_DOMAINS, ident))
    n = max_param()
    return render("files", Many("file", [file_view(i) for i in (found if n is None else found[:n])]))


@route("/storagedomains/<ident>/files/<name>", ["GET"], "Get an ISO image of a storage domain")
def sd_file(ident, name):
    for image in images(row(reads.STORAGE_DOMAINS, ident)):
        if image.name == name:
            return render("file", file_view(image))
    raise not_found("ISO image", name)


def with_iso_disks(sd_row, disk_views):
    """A storage domain's disks and, for a request with no search on an
    active data domain, its ISO images as disks. A read of them that fails
    leaves them out: the disks are the answer (the log says why)."""
    if search_param() or sd_row.status != "active" or sd_row.type != "data":
        return disk_views
    try:
        found = images(sd_row, timeout=LIST_WAIT)
    except Fault as f:
        log.warning("storage domain %s: its ISO images are left out of its disk list: %s", sd_row.name, f.detail)
        return disk_views
    out = disk_views + [disk_view(i) for i in found]
    n = max_param()
    return out if n is None else out[:n]


@route("/storagedomains/<ident>/disks", ["GET"], "List the disks of a storage domain, and its ISO images as disks "
       "of content_type iso (as oVirt lists them on data domains; not with a search)",
       query=("search", "max", "case_sensitive"))
def sd_disks(ident):
    sd = row(reads.STORAGE_DOMAINS, ident)
    rows = reads.list_rows(ctx(), reader(), reads.DISKS, search_param(), max_param(), Disk.storage_domain_id == sd.id,
                           case_sensitive=bool_param("case_sensitive"))
    return render("disks", Many("disk", with_iso_disks(sd, [views.disk(r) for r in rows])))
