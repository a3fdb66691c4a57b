"""Data centers, clusters, storage domains, networks and vNIC profiles."""
from sqlalchemy import select

from ..errors import bad_request
from ..models import Cluster, DataCenter, Disk, Network, StorageDomain
from ..services import inventory as inv
from ..services import lookup
from . import views
from .common import get, listing, removed
from .framework import body, ctx, render, route, session


# ---- data centers ---------------------------------------------------------
@route("/datacenters", ["GET"], "List data centers")
def datacenters_list():
    s = session()
    return listing("data_centers", "data_center", s.scalars(select(DataCenter).order_by(DataCenter.name)).all(),
                   lambda r: views.datacenter(s, r))


@route("/datacenters", ["POST"], "Add a data center")
def datacenters_add():
    s = session()
    return render("data_center", views.datacenter(s, inv.add_datacenter(ctx(), s, body())), 201)


@route("/datacenters/<ident>", ["GET"], "Get a data center")
def datacenter_get(ident):
    s = session()
    return render("data_center", views.datacenter(s, get(DataCenter, ident, "data center")))


@route("/datacenters/<ident>", ["PUT"], "Update a data center")
def datacenter_update(ident):
    s = session()
    dc = inv.update_datacenter(ctx(), s, get(DataCenter, ident, "data center"), body())
    return render("data_center", views.datacenter(s, dc))


@route("/datacenters/<ident>", ["DELETE"], "Remove a data center")
def datacenter_remove(ident):
    inv.remove_datacenter(ctx(), session(), get(DataCenter, ident, "data center"))
    return removed()


@route("/datacenters/<ident>/clusters", ["GET"], "List the clusters of a data center")
def datacenter_clusters(ident):
    s = session()
    dc = get(DataCenter, ident, "data center")
    return listing("clusters", "cluster", s.scalars(select(Cluster).where(Cluster.data_center_id == dc.id)).all(),
                   lambda r: views.cluster(s, r))


@route("/datacenters/<ident>/networks", ["GET"], "List the networks of a data center")
def datacenter_networks(ident):
    s = session()
    dc = get(DataCenter, ident, "data center")
    return listing("networks", "network", s.scalars(select(Network).where(Network.data_center_id == dc.id)).all(),
                   lambda r: views.network(s, r))


@route("/datacenters/<ident>/storagedomains", ["GET"], "List the storage domains attached to a data center")
def datacenter_sds(ident):
    s = session()
    dc = get(DataCenter, ident, "data center")
    rows = s.scalars(select(StorageDomain).where(StorageDomain.data_center_id == dc.id)).all()
    return listing("storage_domains", "storage_domain", rows, lambda r: views.storage_domain(s, r))


@route("/datacenters/<ident>/storagedomains", ["POST"], "Attach a storage domain to a data center")
def datacenter_sd_attach(ident):
    s = session()
    dc = get(DataCenter, ident, "data center")
    b = body()
    sd = lookup.resolve(s, StorageDomain, (b.data.get("id"), b.data.get("name"))
                        if (b.data.get("id") or b.data.get("name")) else None, "storage domain", "storage_domain")
    if sd is None:
        raise bad_request("storage_domain: give the id or name of the storage domain to attach")
    return render("storage_domain", views.storage_domain(s, inv.attach_storage_domain(ctx(), s, dc, sd)), 201)


# ---- clusters ---------------------------------------------------------------
@route("/clusters", ["GET"], "List clusters")
def clusters_list():
    s = session()
    return listing("clusters", "cluster", s.scalars(select(Cluster).order_by(Cluster.name)).all(),
                   lambda r: views.cluster(s, r))


@route("/clusters", ["POST"], "Add a cluster")
def clusters_add():
    s = session()
    return render("cluster", views.cluster(s, inv.add_cluster(ctx(), s, body())), 201)


@route("/clusters/<ident>", ["GET"], "Get a cluster")
def cluster_get(ident):
    s = session()
    return render("cluster", views.cluster(s, get(Cluster, ident, "cluster")))


@route("/clusters/<ident>", ["PUT"], "Update a cluster")
def cluster_update(ident):
    s = session()
    return render("cluster", views.cluster(s, inv.update_cluster(ctx(), s, get(Cluster, ident, "cluster"), body())))


@route("/clusters/<ident>", ["DELETE"], "Remove a cluster")
def cluster_remove(ident):
    inv.remove_cluster(ctx(), session(), get(Cluster, ident, "cluster"))
    return removed()


# ---- storage domains ------------------------------------------------------------
@route("/storagedomains", ["GET"], "List storage domains")
def sds_list():
    s = session()
    return listing("storage_domains", "storage_domain", s.scalars(select(StorageDomain).order_by(StorageDomain.name)).all(),
                   lambda r: views.storage_domain(s, r), lambda r: {"name": r.name, "status": r.status},
                   ("name", "status"))


@route("/storagedomains", ["POST"], "Add a storage domain (a directory every host sees)")
def sds_add():
    s = session()
    return render("storage_domain", views.storage_domain(s, inv.add_storage_domain(ctx(), s, body())), 201)


@route("/storagedomains/<ident>", ["GET"], "Get a storage domain")
def sd_get(ident):
    s = session()
    return render("storage_domain", views.storage_domain(s, get(StorageDomain, ident, "storage domain")))


@route("/storagedomains/<ident>", ["DELETE"], "Remove an empty storage domain")
def sd_remove(ident):
    inv.remove_storage_domain(ctx(), session(), get(StorageDomain, ident, "storage domain"))
    return removed()


@route("/storagedomains/<ident>/disks", ["GET"], "List the disks of a storage domain")
def sd_disks(ident):
    s = session()
    sd = get(StorageDomain, ident, "storage domain")
    return listing("disks", "disk", s.scalars(select(Disk).where(Disk.storage_domain_id == sd.id)).all(),
                   lambda r: views.disk(s, r))


# ---- networks -------------------------------------------------------------------
@route("/networks", ["GET"], "List networks")
def networks_list():
    s = session()
    return listing("networks", "network", s.scalars(select(Network).order_by(Network.name)).all(),
                   lambda r: views.network(s, r))


@route("/networks", ["POST"], "Add a network")
def networks_add():
    s = session()
    return render("network", views.network(s, inv.add_network(ctx(), s, body())), 201)


@route("/networks/<ident>", ["GET"], "Get a network")
def network_get(ident):
    s = session()
    return render("network", views.network(s, get(Network, ident, "network")))


@route("/networks/<ident>", ["DELETE"], "Remove a network")
def network_remove(ident):
    inv.remove_network(ctx(), session(), get(Network, ident, "network"))
    return removed()


@route("/vnicprofiles", ["GET"], "List vNIC profiles (one per network, same id)")
def vnicprofiles_list():
    s = session()
    return listing("vnic_profiles", "vnic_profile", s.scalars(select(Network).order_by(Network.name)).all(),
                   lambda n: {"id": n.id, "href": views.href("vnicprofiles", n.id), "name": n.name,
                              "network": views.ref("networks", n.id)})
