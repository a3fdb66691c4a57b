"""ISO images (oVirt's storage domain `files`): `*.iso` files an
administrator puts in a data storage domain's directory on the shared
storage, beside the disks' volumes. A file's id and name are its file name.

The engine never reads that directory itself (it may run in a VM that does
not mount the storage): the engine worker asks an up host of the domain's
data center, through the domain's libvirt pool, refreshed first so that a
file copied there a moment ago is listed. A request records a job and
waits for it (`request_listing`, then `images_of`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace

from sqlalchemy import select

from .. import virt
from ..errors import Fault, bad_request, conflict
from ..models import Cluster, StorageDomain
from ..text import invalid_char
from . import hosts, jobs

SUFFIX = ".iso"


@dataclass(frozen=True)
class IsoImage:
    name: str                  # the file name: also its id
    size: int                  # bytes
    storage_domain_id: str


def check_name(name: str, field: str) -> str:
    """A client's name of an ISO image: a file name, never a path."""
    if (not name or len(name) > 255 or "/" in name or name.startswith(".") or invalid_char(name)
            or not name.lower().endswith(SUFFIX)):
        raise bad_request(f"{field}: '{name[:64]}' is not the file name of an ISO image (NAME.iso, a file in "
                          "a data storage domain's directory; no path)")
    return name


def _readable(sd):
    if sd.type != "data" or sd.status != "active" or not sd.data_center_id:
        raise conflict(f"storage domain {sd.name} is {sd.status}; its ISO images are read through a host of "
                       "its data center while it is an active data domain")


def request_listing(ctx, s, sd) -> jobs.Job:
    """The job that reads a storage domain's ISO images (`images_of` its row once it ended)."""
    _readable(sd)
    return jobs.submit(s, jobs.STORAGE_DOMAIN_FILES, {"storage_domain_id": sd.id},
                       f"Listing the ISO images of storage domain {sd.name}", ctx.user_id)


def run_listing(ctx, s, job):
    sd = s.get(StorageDomain, job.params["storage_domain_id"])
    if sd is None:
        raise conflict("the storage domain was removed")
    return {"storage_domain_id": sd.id, "files": [[i.name, i.size] for i in read(ctx, s, sd)]}


def images_of(job) -> list[IsoImage]:
    """The ISO images a finished listing job found."""
    result = job.result or {}
    return [IsoImage(name, size, result["storage_domain_id"]) for name, size in result.get("files", [])]


def read(ctx, s, sd) -> list[IsoImage]:
    """(worker) The ISO images in the domain's directory, as an up host of
    its data center sees them; every libvirt call under a deadline."""
    _readable(sd)
    host = hosts.any_up_host(s, sd.data_center_id)
    if host is None:
        raise conflict(f"no 'up' host can reach storage domain {sd.name} to list its ISO images")
    # plain values: the libvirt calls run in a helper thread, away from the session
    where = SimpleNamespace(id=sd.id, name=sd.name, path=sd.path)
    host_name, uri = host.name, host.libvirt_uri
    s.commit()     # no transaction stays open while the host answers
    timeout = ctx.config.libvirt_timeout
    try:
        conn = virt.connect(uri, timeout)
        try:
            found = virt.with_deadline(lambda: virt.iso_volumes(conn, where), timeout * 3,
                                       f"list the ISO images of {where.name}")
        finally:
            conn.close()
    except virt.VirtError as e:
        raise conflict(f"cannot list the ISO images of storage domain {where.name} on host {host_name}: {e}") \
            from None
    return [IsoImage(name, size, where.id) for name, size in found]


def find(ctx, s, data_center_id, name, storage_domain_id=None) -> IsoImage:
    """(worker) The ISO image `name` in the active data domains of a data
    center (or in the one given), looked for by domain name; a 404 naming it
    when none holds it."""
    q = (select(StorageDomain).where(StorageDomain.data_center_id == data_center_id,
                                     StorageDomain.status == "active", StorageDomain.type == "data")
         .order_by(StorageDomain.name))
    if storage_domain_id:
        q = q.where(StorageDomain.id == storage_domain_id)
    domains = s.scalars(q).all()
    if not domains and storage_domain_id:
        raise bad_request("cdrom.file.storage_domain: not an active data storage domain of the VM's data center")
    if not domains:
        raise conflict("the VM's data center has no active data storage domain to take an ISO image from")
    names = [sd.name for sd in domains]
    for sd in domains:
        for image in read(ctx, s, sd):
            if image.name == name:
                return image
    raise Fault(404, "Not Found", f"cdrom.file: ISO image '{name}' does not exist in storage domain "
                f"{', '.join(names)} (put NAME.iso in a data storage domain's directory first)")


def data_center_of(s, vm) -> str | None:
    return s.scalar(select(Cluster.data_center_id).where(Cluster.id == vm.cluster_id))


def path_of(s, storage_domain_id, name) -> str | None:
    sd = s.get(StorageDomain, storage_domain_id) if storage_domain_id else None
    return os.path.join(sd.path, name) if sd is not None and name else None
