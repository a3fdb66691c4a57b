"""Every page of the UI costs the same number of SQL statements however big
the inventory: each page is counted with 60 VMs on 3 hosts, and again after
the inventory grew to 300 VMs on 20 hosts in two clusters, with ten times
the events, more jobs, more fence agents, more NICs, disks and snapshots
on the VM shown, a day of samples of the clusters' use, and more groups,
custom roles and VM pools (the first with more VMs, held by a user). A
count that grows is a statement run per row (an N+1). The render times
at 1,000 VMs are bench/webui.py's."""
import re
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import delete, event, insert, select, update

from harness.engineapp import engine_app_with_host
from keel_engine.models import (BLANK_TEMPLATE_ID, Cluster, DataCenter, Disk, DiskAttachment, Event, FenceAgent, Host,
                                Group, Job, Network, Nic, Permission, Role, RolePermit, Snapshot, StorageDomain, UsageSample,
                                User, Vm, VmPool, VmPoolMember, utcnow)
from keel_engine.services import usage

from .test_pages import admin_client

GIB = 1024 ** 3


def _hosts(s, cluster_id, first, n):
    ids = []
    for i in range(first, first + n):
        h = Host(name=f"host-{i:03d}", address=f"10.2.0.{i + 1}", libvirt_uri=f"qemu+tcp://10.2.0.{i + 1}/system",
                 cluster_id=cluster_id, status="up", cpus=32, cpu_model="test CPU", memory_total=256 * GIB,
                 memory_free=128 * GIB, last_seen=utcnow())
        s.add(h)
        s.flush()
        ids.append(h.id)
    return ids


def _vms(s, clusters, host_ids, first, n):
    """VMs vm-<first>.. (three in four up, round-robin on the hosts, each on its host's cluster)."""
    cluster_of = dict(s.execute(select(Host.id, Host.cluster_id).where(Host.id.in_(host_ids))).all())
    rows = []
    for i in range(first, first + n):
        host = host_ids[i % len(host_ids)] if i % 4 != 3 else None
        rows.append({"id": f"00000000-0000-4000-8000-{i:012d}", "name": f"vm-{i:03d}", "memory": 2 * GIB,
                     "cpus": 2, "template_id": BLANK_TEMPLATE_ID, "status": "up" if host else "down",
                     "host_id": host, "cluster_id": cluster_of[host] if host else clusters[i % len(clusters)],
                     "high_availability": i % 5 == 0, "version": 1})
    s.execute(insert(Vm), rows)
    return [r["id"] for r in rows]


def _events(s, vm_ids, host_ids, n):
    now = utcnow()
    s.execute(insert(Event), [
        {"code": 32, "severity": ("normal", "warning", "error")[i % 3], "time": now - timedelta(seconds=n - i),
         "description": f"event {i}", "vm_id": vm_ids[i % len(vm_ids)], "host_id": host_ids[i % len(host_ids)]}
        for i in range(n)])


def _vm_devices(s, vm_id, domain_id, first, n):
    for i in range(first, first + n):
        s.add(Nic(vm_id=vm_id, name=f"nic{i}", mac=f"56:6f:00:00:00:{i:02x}"))
        disk = Disk(name=f"disk{i}", storage_domain_id=domain_id, provisioned_size=GIB, active_volume=f"vol{i}")
        s.add(disk)
        s.flush()
        s.add(DiskAttachment(id=disk.id, disk_id=disk.id, vm_id=vm_id, position=i, bootable=i == 0))
        s.add(Snapshot(vm_id=vm_id, description=f"snapshot {i}", memory=GIB, cpus=1))


def _grant_portal(s, cluster_id):
    """UserRole for admin@internal on the cluster: its VM portal lists the VMs there."""
    admin = s.scalar(select(User.id).where(User.name == "admin", User.domain == "internal"))
    role = s.scalar(select(Role.id).where(Role.name == "UserRole"))
    s.add(Permission(role_id=role, user_id=admin, object_type="cluster", object_id=cluster_id))


def _access(s, cluster_id, first, n, vm_ids):
    """n directory groups, and UserRole n times for the first (on the system
    once, else on the cluster); n custom roles of two permits each; n pools in
    the cluster with one free VM each (of vm_ids)."""
    user_role = s.scalar(select(Role.id).where(Role.name == "UserRole"))
    for i in range(first, first + n):
        g = Group(name=f"group-{i:02d}", domain="example.org", external_id=f"g{i}")
        role = Role(name=f"custom-{i:02d}", mutable=True)
        pool = VmPool(name=f"pool-{i:02d}", cluster_id=cluster_id, template_id=BLANK_TEMPLATE_ID, size=1)
        s.add_all([g, role, pool])
        s.flush()
        s.add_all([Permission(role_id=user_role, group_id=s.scalar(select(Group.id).where(Group.name == "group-00")),
                              object_type=None if i == 1 else "cluster", object_id=None if i == 1 else cluster_id),
                   RolePermit(role_id=role.id, permit_id=1300), RolePermit(role_id=role.id, permit_id=22),
                   VmPoolMember(vm_id=vm_ids[i], pool_id=pool.id, state="free")])


def _usage(s, n):
    """n samples of every cluster's use, a minute apart, the newest now (the dashboard's charts)."""
    now = utcnow()
    for i in range(n):
        usage.record(s, now - timedelta(minutes=n - 1 - i))


def seed_small(sm, hx):
    """60 VMs on hx and two more hosts, 150 events, one job, one fence agent on
    hx; the VM vm-000 (up on hx) with a NIC, a disk and a snapshot; 5 samples
    of the cluster's use; a group, a custom role and a pool (with a VM held
    by admin@internal)."""
    with sm() as s:
        cluster = s.get(Host, hx).cluster_id
        hosts = [hx, *_hosts(s, cluster, 1, 2)]
        vms = _vms(s, [cluster], hosts, 0, 60)
        _events(s, vms, hosts, 150)
        dc = s.scalar(select(DataCenter.id))
        domain = StorageDomain(name="data", path="/srv/data", data_center_id=dc)
        network = Network(name="ovirtmgmt", data_center_id=dc)
        s.add_all([domain, network])
        s.flush()
        _vm_devices(s, vms[0], domain.id, 0, 1)
        s.execute(update(Nic).values(network_id=network.id))
        job = Job(description="Starting VM vm-000", status="started")
        s.add_all([job, FenceAgent(host_id=hx, address="10.3.0.1", port=623, order=1)])
        _grant_portal(s, cluster)
        _usage(s, 5)
        _access(s, cluster, 0, 1, vms[-10:])
        pool = s.scalar(select(VmPool.id))
        s.add(VmPoolMember(vm_id=vms[-11], pool_id=pool, state="allocated",
                           user_id=s.scalar(select(User.id).where(User.name == "admin"))))
        s.commit()
        return {"host": hx, "vm": vms[0], "job": job.id, "cluster": cluster, "domain": domain.id, "hosts": hosts,
                "datacenter": dc, "network": network.id, "disk": s.scalar(select(Disk.id)),
                "group": s.scalar(select(Group.id)), "pool": pool}


def seed_more(sm, ids):
    """To 300 VMs on 20 hosts in two clusters (the first 60 spread anew), 1,650
    events, six jobs, three fence agents on hx; vm-000 with four NICs, disks
    and snapshots; a day of samples of both clusters' use; ten groups (the
    first with ten roles), custom roles and pools."""
    with sm() as s:
        other = Cluster(name="second", data_center_id=s.scalar(select(DataCenter.id)))
        s.add(other)
        s.flush()
        hosts = [*ids["hosts"], *_hosts(s, ids["cluster"], 3, 8), *_hosts(s, other.id, 11, 9)]
        # the first VMs (the first page) spread over all hosts, those on hx staying
        cluster_of = dict(s.execute(select(Host.id, Host.cluster_id)).all())
        for vm in s.scalars(select(Vm).where(Vm.host_id.is_not(None), Vm.host_id != ids["host"])):
            vm.host_id = hosts[1 + int(vm.name[3:]) % (len(hosts) - 1)]
            vm.cluster_id = cluster_of[vm.host_id]
        vms = _vms(s, [ids["cluster"], other.id], hosts, 60, 240)
        _events(s, vms, hosts, 1500)
        _vm_devices(s, ids["vm"], ids["domain"], 1, 3)
        s.execute(update(Nic).values(network_id=ids["network"]))
        s.add_all([Job(description=f"Migrating VM vm-{i:03d}", status="started") for i in range(5)])
        s.add_all([FenceAgent(host_id=ids["host"], address=f"10.3.0.{i}", port=623, order=i) for i in (2, 3)])
        _grant_portal(s, other.id)
        _access(s, ids["cluster"], 1, 9, vms[-10:])
        # the first pool with ten more VMs, held by a user
        admin = s.scalar(select(User.id).where(User.name == "admin"))
        s.add_all([VmPoolMember(vm_id=v, pool_id=ids["pool"], state="allocated", user_id=admin) for v in vms[-20:-10]])
        s.execute(delete(UsageSample))
        _usage(s, 1440)
        s.commit()


def pages(ids):
    host, vm = ids["host"], ids["vm"]
    return ["/ui/", "/ui/events/recent", "/ui/hosts", "/ui/hosts/rows", f"/ui/hosts/{host}",
            "/ui/vms", "/ui/vms?page=2", "/ui/vms?search=name%3Dvm-0*", "/ui/vms/rows", "/ui/vms/new",
            f"/ui/vms/{vm}", f"/ui/vms/{vm}/events", "/ui/ha",
            "/ui/events", "/ui/events?page=2", "/ui/events?severity=warning", "/ui/events/rows",
            "/ui/portal/", "/ui/portal/rows", f"/ui/jobs/{ids['job']}",
            "/ui/datacenters", f"/ui/datacenters/{ids['datacenter']}", "/ui/datacenters/new",
            "/ui/clusters", f"/ui/clusters/{ids['cluster']}", "/ui/clusters/new",
            "/ui/storagedomains", f"/ui/storagedomains/{ids['domain']}",
            "/ui/networks", f"/ui/networks/{ids['network']}",
            "/ui/templates", f"/ui/templates/{BLANK_TEMPLATE_ID}", "/ui/disks", f"/ui/disks/{ids['disk']}",
            "/ui/jobs", "/ui/jobs?status=started", f"/ui/jobs/{ids['job']}/detail", "/ui/users",
            "/ui/groups", f"/ui/groups/{ids['group']}", "/ui/roles", "/ui/storagedomains/new",
            "/ui/pools", f"/ui/pools/{ids['pool']}", "/ui/pools/new", f"/ui/pools/{ids['pool']}/edit"]


@contextmanager
def recorded(engine):
    """The SQL statements run on the engine meanwhile, in order."""
    seen = []

    def on_execute(_conn, _cursor, statement, *_rest):
        seen.append(statement)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def statements_per_page(app, paths):
    """{path: (statements of one GET, the page)}, signed in as admin@internal,
    each page fetched once before it is counted."""
    client = admin_client(app)
    out = {}
    with recorded(app.config["KEEL_CTX"].engine) as seen:
        for path in paths:
            client.get(path)
            seen.clear()
            r = client.get(path)
            assert r.status_code == 200, f"GET {path}: {r.status_code}"
            out[path] = (list(seen), r.text)
    return out


def _shape(statement):
    return re.sub(r"IN \((\?, )*\?\)", "IN (...)", " ".join(statement.split()))


def _growth(small, big):
    """What a page runs more often in the big inventory than in the small one."""
    more = Counter(map(_shape, big)) - Counter(map(_shape, small))
    return "; ".join(f"{n} x more: {stmt[:160]}" for stmt, n in more.most_common(3))


def test_every_page_runs_as_many_statements_with_300_vms_as_with_60(tmp_path):
    _cfg, app, sm, hx = engine_app_with_host(tmp_path, "127.0.1.97")
    ids = seed_small(sm, hx)
    paths = pages(ids)
    small = statements_per_page(app, paths)
    seed_more(sm, ids)
    big = statements_per_page(app, paths)

    # the pages show the inventory they are counted on (the counts compare something)
    def vm_links(got, path):
        return got[path][1].count('<a href="/ui/vms/0')
    assert [vm_links(small, p) for p in ("/ui/vms", "/ui/vms?page=2", "/ui/portal/")] == [50, 10, 50]
    assert [vm_links(big, p) for p in ("/ui/vms", "/ui/vms?page=2", "/ui/portal/")] == [50, 50, 50]
    assert vm_links(big, f"/ui/hosts/{hx}") > vm_links(small, f"/ui/hosts/{hx}") > 1
    assert big["/ui/hosts"][1].count('href="/ui/hosts/') == 20
    assert "nic3" in big[f"/ui/vms/{ids['vm']}"][1] and "snapshot 3" in big[f"/ui/vms/{ids['vm']}"][1]
    assert [len(re.findall(r'href="/ui/disks/[0-9a-f]{8}-', got["/ui/disks"][1])) for got in (small, big)] == [1, 4]
    assert [got[f"/ui/networks/{ids['network']}"][1].count("<td>nic") for got in (small, big)] == [1, 4]
    assert "second" in big[f"/ui/datacenters/{ids['datacenter']}"][1] and "Migrating VM" in big["/ui/jobs"][1]
    assert [got["/ui/"][1].count('<svg class="spark"') for got in (small, big)] == [2, 2]
    assert [got["/ui/groups"][1].count('href="/ui/groups/') for got in (small, big)] == [1, 10]
    assert [got[f"/ui/groups/{ids['group']}"][1].count("Take away") for got in (small, big)] == [1, 10]
    assert [got["/ui/roles"][1].count("<td>custom-") for got in (small, big)] == [1, 10]
    assert [got["/ui/portal/"][1].count("Take a VM</button>") for got in (small, big)] == [1, 10]
    assert [got["/ui/pools"][1].count('<a href="/ui/pools/') for got in (small, big)] == [1, 10]
    assert [got[f"/ui/pools/{ids['pool']}"][1].count("admin@internal</a>") for got in (small, big)] == [1, 11]
    assert [got["/ui/roles"][1].count('<label for="add-permit-') for got in (small, big)] == [1, 10]
    assert [len(re.search(r'<polyline points="([^"]+)"', got["/ui/"][1]).group(1).split())
            for got in (small, big)] == [5, usage.MAX_POINTS + 1]

    grown = {p: f"{len(small[p][0])} -> {len(big[p][0])} ({_growth(small[p][0], big[p][0])})"
             for p in paths if len(small[p][0]) != len(big[p][0])}
    assert not grown, "statements per page changed with the inventory:\n" + "\n".join(
        f"  {p}: {what}" for p, what in grown.items())
