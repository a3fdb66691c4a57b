"""The API entry point: product info, special objects, summary, time."""
from ..models import BLANK_TEMPLATE_ID, Host, StorageDomain, User, Vm, utcnow
from ..services import reads
from .framework import API, ctx, g, reader, render, route
from .views import href, ref

COLLECTIONS = ("clusters", "datacenters", "disks", "events", "hosts", "jobs", "networks", "permissions",
               "roles", "storagedomains", "templates", "users", "vms", "vnicprofiles")


@route("", ["GET"], "The API root: product info, special objects, summary")
def api_root():
    s, c = reader(), ctx()
    return render("api", {
        "link": [{"rel": c, "href": f"{API}/{c}"} for c in COLLECTIONS]
        + [{"rel": f"{c}/search", "href": f"{API}/{c}?search={{query}}"} for c in ("vms", "hosts", "events")],
        "authenticated_user": ref("users", g.user_id),
        "product_info": {"name": "Keel", "vendor": "Keel", "instance_id": None,
                         "version": {"build": 0, "full_version": "4.6.0-keel", "major": 4, "minor": 6,
                                     "revision": 0}},
        "special_objects": {"blank_template": ref("templates", BLANK_TEMPLATE_ID),
                            "root_tag": {"id": BLANK_TEMPLATE_ID, "href": href("tags", BLANK_TEMPLATE_ID)}},
        # counts of what the caller may see
        "summary": {
            "hosts": {"active": reads.count(s, Host, Host.status == "up", ctx=c),
                      "total": reads.count(s, Host, ctx=c)},
            "storage_domains": {"active": reads.count(s, StorageDomain, StorageDomain.status == "active", ctx=c),
                                "total": reads.count(s, StorageDomain, ctx=c)},
            "users": {"active": reads.count(s, User, ctx=c), "total": reads.count(s, User, ctx=c)},
            "vms": {"active": reads.count(s, Vm, Vm.status != "down", ctx=c), "total": reads.count(s, Vm, ctx=c)},
        },
        "time": utcnow(),
    })
