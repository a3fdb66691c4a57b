"""Data centers, clusters, storage domains, networks and vNIC profiles."""
from ..errors import bad_request
from ..models import Cluster, DataCenter, Network, StorageDomain
from ..services import inventory as inv
from ..services import lookup, reads
from ..services.lookup import Ref
from . import schemas, views
from .common import listing, obj, row
from .fields import get, required
from .framework import body, created, ctx, removed, render, route, session

LIST = ("search", "max", "case_sensitive")


# ---- data centers ---------------------------------------------------------
@route("/datacenters", ["GET"], "List data centers", query=LIST)
def datacenters_list():
    return listing("data_centers", "data_center", reads.DATACENTERS, lambda r, _e: views.datacenter(r))


@route("/datacenters", ["POST"], "Add a data center", body=schemas.DATA_CENTER, created=True)
def datacenters_add():
    b = body(schemas.DATA_CENTER)
    dc = inv.add_datacenter(ctx(), session(), inv.DataCenterSpec(
        name=required(b, "name"), description=b.get("description", ""), local=b.get("local", False)))
    return created("data_center", None, lambda: views.datacenter(dc), None)


@route("/datacenters/<ident>", ["GET"], "Get a data center")
def datacenter_get(ident):
    return render("data_center", views.datacenter(row(reads.DATACENTERS, ident)))


@route("/datacenters/<ident>", ["PUT"], "Update a data center", body=schemas.DATA_CENTER)
def datacenter_update(ident):
    b = body(schemas.DATA_CENTER)
    dc = inv.update_datacenter(ctx(), session(), obj(DataCenter, ident, "data center"), name=b.get("name"),
                               description=b.get("description"))
    return render("data_center", views.datacenter(dc))


@route("/datacenters/<ident>", ["DELETE"], "Remove a data center")
def datacenter_remove(ident):
    inv.remove_datacenter(ctx(), session(), obj(DataCenter, ident, "data center"))
    return removed()


@route("/datacenters/<ident>/clusters", ["GET"], "List the clusters of a data center", query=LIST)
def datacenter_clusters(ident):
    dc = row(reads.DATACENTERS, ident)
    return listing("clusters", "cluster", reads.CLUSTERS, lambda r, _e: views.cluster(r),
                   Cluster.data_center_id == dc.id)


@route("/datacenters/<ident>/networks", ["GET"], "List the networks of a data center", query=LIST)
def datacenter_networks(ident):
    dc = row(reads.DATACENTERS, ident)
    return listing("networks", "network", reads.NETWORKS, lambda r, _e: views.network(r),
                   Network.data_center_id == dc.id)


@route("/datacenters/<ident>/storagedomains", ["GET"], "List the storage domains attached to a data center",
       query=LIST)
def datacenter_sds(ident):
    dc = row(reads.DATACENTERS, ident)
    return listing("storage_domains", "storage_domain", reads.STORAGE_DOMAINS,
                   lambda r, _e: views.storage_domain(r), StorageDomain.data_center_id == dc.id)


@route("/datacenters/<ident>/storagedomains", ["POST"], "Attach a storage domain to a data center",
       body=schemas.ATTACH_STORAGE_DOMAIN, created=True)
def datacenter_sd_attach(ident):
    b = body(schemas.ATTACH_STORAGE_DOMAIN)
    dc = obj(DataCenter, ident, "data center")
    ref = Ref(id=b.get("id"), name=b.get("name"))
    if not ref:
        raise bad_request("storage_domain: give the id or name of the storage domain to attach")
    sd = lookup.resolve(session(), StorageDomain, ref, "storage domain", "storage_domain")
    sd = inv.attach_storage_domain(ctx(), session(), dc, sd)
    return created("storage_domain", None, lambda: views.storage_domain(sd), None)


# ---- clusters ---------------------------------------------------------------
@route("/clusters", ["GET"], "List clusters (search: name, datacenter)", query=LIST)
def clusters_list():
    return listing("clusters", "cluster", reads.CLUSTERS, lambda r, _e: views.cluster(r))


@route("/clusters", ["POST"], "Add a cluster", body=schemas.CLUSTER, created=True)
def clusters_add():
    b = body(schemas.CLUSTER)
    cl = inv.add_cluster(ctx(), session(), inv.ClusterSpec(
        name=required(b, "name"), data_center=required(b, "data_center"), description=b.get("description", ""),
        scheduling_policy=get(b, "scheduling_policy", "name", default="evenly_distributed")))
    return created("cluster", None, lambda: views.cluster(cl), None)


@route("/clusters/<ident>", ["GET"], "Get a cluster")
def cluster_get(ident):
    return render("cluster", views.cluster(row(reads.CLUSTERS, ident)))


@route("/clusters/<ident>", ["PUT"], "Update a cluster", body=schemas.CLUSTER)
def cluster_update(ident):
    b = body(schemas.CLUSTER)
    cl = inv.update_cluster(ctx(), session(), obj(Cluster, ident, "cluster"), name=b.get("name"),
                            description=b.get("description"))
    return render("cluster", views.cluster(cl))


@route("/clusters/<ident>", ["DELETE"], "Remove a cluster")
def cluster_remove(ident):
    inv.remove_cluster(ctx(), session(), obj(Cluster, ident, "cluster"))
    return removed()


# ---- storage domains ------------------------------------------------------------
@route("/storagedomains", ["GET"], "List storage domains", query=LIST)
def sds_list():
    return listing("storage_domains", "storage_domain", reads.STORAGE_DOMAINS, lambda r, _e: views.storage_domain(r))


@route("/storagedomains", ["POST"], "Add a storage domain (a directory every host sees; checked by a job)",
       body=schemas.STORAGE_DOMAIN, query=("async",), created=True, job=True)
def sds_add():
    b = body(schemas.STORAGE_DOMAIN)
    sd, job = inv.add_storage_domain(ctx(), session(), inv.StorageDomainSpec(
        name=required(b, "name"), storage_type=required(b, "storage", "type"),
        path=required(b, "storage", "path"), address=get(b, "storage", "address"),
        description=b.get("description", ""), data_center=b.get("data_center"), host=b.get("host")))
    return created("storage_domain", job, lambda: views.storage_domain(sd),
                   lambda: views.storage_domain(row(reads.STORAGE_DOMAINS, sd.id)))


@route("/storagedomains/<ident>", ["GET"], "Get a storage domain")
def sd_get(ident):
    return render("storage_domain", views.storage_domain(row(reads.STORAGE_DOMAINS, ident)))


@route("/storagedomains/<ident>", ["DELETE"], "Remove an empty storage domain")
def sd_remove(ident):
    inv.remove_storage_domain(ctx(), session(), obj(StorageDomain, ident, "storage domain"))
    return removed()


# GET /storagedomains/{id}/disks: api/isos.py (the disks, and the ISO images as oVirt lists them)


# ---- networks -------------------------------------------------------------------
@route("/networks", ["GET"], "List networks (search: name, datacenter)", query=LIST)
def networks_list():
    return listing("networks", "network", reads.NETWORKS, lambda r, _e: views.network(r))


@route("/networks", ["POST"], "Add a network", body=schemas.NETWORK, created=True)
def networks_add():
    b = body(schemas.NETWORK)
    net = inv.add_network(ctx(), session(), inv.NetworkSpec(
        name=required(b, "name"), data_center=required(b, "data_center"), description=b.get("description", ""),
        vlan=get(b, "vlan", "id"), mtu=b.get("mtu", 0)))
    return created("network", None, lambda: views.network(net), None)


@route("/networks/<ident>", ["GET"], "Get a network")
def network_get(ident):
    return render("network", views.network(row(reads.NETWORKS, ident)))


@route("/networks/<ident>", ["DELETE"], "Remove a network")
def network_remove(ident):
    inv.remove_network(ctx(), session(), obj(Network, ident, "network"))
    return removed()


@route("/vnicprofiles", ["GET"], "List vNIC profiles (one per network, same id)", query=LIST)
def vnicprofiles_list():
    return listing("vnic_profiles", "vnic_profile", reads.NETWORKS, lambda n, _e: views.vnic_profile(n))
