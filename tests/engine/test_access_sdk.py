"""Users, roles, permissions and VM pools through the official oVirt SDK,
against a real engine (`keel-engine serve` + `worker`) and a real libvirtd
host of its own on 127.0.8.11 (VMs run under qemu TCG).

The pool test is the VM portal's story: a user with UserRole on a pool
takes a VM and gets the one kept running; writes on it (through qemu, as
its guest would); shuts it down; the VM goes back to the pool with its
changes discarded, and the pool keeps a VM running for the next user."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import libvirt
import libvirt_qemu
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
import sqlalchemy

from . import enginestack
from .libvirt_hosts import LibvirtHost

pytestmark = [pytest.mark.slow, pytest.mark.root]
MiB = 2 ** 20
HOST = "127.0.8.11"
ENGINE = "127.0.8.10"
CLI = os.path.join(os.path.dirname(sys.executable), "keel-engine")
ADMIN_PW = "keel-test-pw"


def wait_for(check, timeout=120, what="condition", every=0.5):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module", params=os.environ.get("KEEL_TEST_BACKENDS", "sqlite,postgres").split(","))
def stack(request):
    root = tempfile.mkdtemp(prefix="keel-access-sdk-")
    host = LibvirtHost(os.path.join(root, "host"), HOST, 7)
    host.start()
    try:
        host.wait_ready()
        with socket.socket() as s:
            s.bind((ENGINE, 0))
            listen = f"{ENGINE}:{s.getsockname()[1]}"
        workdir = os.path.join(root, "engine")
        os.makedirs(os.path.join(workdir, "storage"))
        cfg = os.path.join(workdir, "engine.conf")
        url = (request.getfixturevalue("postgres_server").create_db("keel_access") if request.param == "postgres"
               else f"sqlite:///{workdir}/engine.db")
        # a job here takes seconds: a request that waits longer has met a stuck job, and should say so soon
        enginestack.write_config(cfg, url, listen, workdir, engine__request_wait=60)
        eng = enginestack.Engine(cfg, listen, workdir)
        eng.start()
        eng.workdir, eng.db = workdir, sqlalchemy.create_engine(url)
        try:
            yield eng
        finally:
            eng.stop()
            eng.db.dispose()
    finally:
        host.stop()
        shutil.rmtree(root, ignore_errors=True)


def connect(stack, user, password, filtered=False):
    return ovirtsdk4.Connection(url=stack.url, username=user, password=password,
                                headers={"Filter": "true"} if filtered else None)


@pytest.fixture(scope="module")
def admin(stack):
    conn = connect(stack, "admin@internal", ADMIN_PW)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def infra(stack, admin):
    system = admin.system_service()
    dc = system.data_centers_service().add(t.DataCenter(name="Default", local=False))
    cl = system.clusters_service().add(t.Cluster(name="Default", data_center=t.DataCenter(id=dc.id)))
    host = system.hosts_service().add(t.Host(name="h1", address=HOST, root_password="unused",
                                             cluster=t.Cluster(name="Default")))
    sd = system.storage_domains_service().add(t.StorageDomain(
        name="data", type=t.StorageDomainType.DATA, data_center=t.DataCenter(id=dc.id),
        storage=t.HostStorage(type=t.StorageType.POSIXFS, path=os.path.join(stack.workdir, "storage")),
        host=t.Host(name="h1")))
    return {"dc": dc, "cluster": cl, "host": host, "sd": sd}


def add_user(stack, name, password):
    pw = os.path.join(stack.workdir, f"{name}.pw")
    with open(pw, "w") as f:
        f.write(password + "\n")
    r = subprocess.run([CLI, "--config", stack.config_path, "user", "add", name, "--password-file", pw],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_users_roles_and_permissions_with_the_sdk(stack, admin, infra):
    system = admin.system_service()
    add_user(stack, "sid", "sid-pw-12")
    with pytest.raises(ovirtsdk4.AuthError):          # no role with the login permit yet
        connect(stack, "sid@internal", "sid-pw-12").system_service().vms_service().list()
    sid = system.users_service().list(search="usrname=sid")[0]
    assert sid.user_name == "sid@internal" and sid.domain.name == "internal"
    assert [d.name for d in system.domains_service().list()] == ["internal"]
    role = system.roles_service().add(t.Role(name="Starter", administrative=False,
                                             permits=[t.Permit(name="login"), t.Permit(id="22")]))
    perms = system.roles_service().role_service(role.id).permits_service()
    perms.add(t.Permit(name="stop_vm"))
    assert sorted(p.name for p in perms.list()) == ["login", "run_vm", "stop_vm"]
    vms = system.vms_service()
    mine = vms.add(t.Vm(name="sid-vm", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                        memory=64 * MiB))
    other = vms.add(t.Vm(name="not-sids", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                         memory=64 * MiB))
    given = vms.vm_service(mine.id).permissions_service().add(
        t.Permission(role=t.Role(name="Starter"), user=t.User(id=sid.id)))
    assert given.role.id == role.id and given.vm.id == mine.id
    assert [p.role.id for p in system.users_service().user_service(sid.id).permissions_service().list()] == [role.id]
    assert any(p.user and p.user.id != sid.id for p in system.permissions_service().list())   # admin's SuperUser

    conn = connect(stack, "sid@internal", "sid-pw-12", filtered=True)
    try:
        sid_vms = conn.system_service().vms_service()
        assert [v.name for v in sid_vms.list()] == ["sid-vm"]
        with pytest.raises(ovirtsdk4.NotFoundError):
            sid_vms.vm_service(other.id).get()
        with pytest.raises(ovirtsdk4.Error) as e:
            sid_vms.vm_service(mine.id).update(t.Vm(description="sid was here"))
        assert e.value.code == 403
        with pytest.raises(ovirtsdk4.Error) as e:
            conn.system_service().data_centers_service().add(t.DataCenter(name="sids"))
        assert e.value.code == 403
        vms.vm_service(mine.id).permissions_service().permission_service(given.id).remove()
        assert sid_vms.list() == []                      # at once
    finally:
        conn.close()
    system.roles_service().role_service(role.id).remove()
    assert "Starter" not in [r.name for r in system.roles_service().list()]


def _db(stack, query, **params):
    with stack.db.connect() as c:
        return [tuple(r) for r in c.execute(sqlalchemy.text(query), params)]


def _disk_file(stack, vm_id):
    (volume, path), = _db(stack, "SELECT d.active_volume, sd.path FROM disks d JOIN disk_attachments a "
                                 "ON a.disk_id = d.id JOIN storage_domains sd ON sd.id = d.storage_domain_id "
                                 "WHERE a.vm_id = :vm", vm=vm_id)
    return os.path.join(path, volume)


def _write_through_the_guest(vm_id, pattern):
    """Write 64 KiB to the running VM's disk through its qemu, as its guest would."""
    conn = libvirt.open(f"qemu+tcp://{HOST}/system")
    try:
        dom = conn.lookupByUUIDString(vm_id)
        for cmd in (f"write -P {pattern} 0 64k", "flush"):
            out = libvirt_qemu.qemuMonitorCommand(
                dom, f'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "{cmd}"',
                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            assert "error" not in out.lower(), out
    finally:
        conn.close()


def _holds(path, pattern):
    """The image (and what it backs on) reads `pattern` at its start; -U: even while a VM runs on it."""
    r = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern} 0 64k", path],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and "verification failed" not in r.stdout + r.stderr


def test_a_pool_hands_a_user_a_prestarted_vm_and_takes_it_back_clean(stack, admin, infra):
    system = admin.system_service()
    vms = system.vms_service()
    src = vms.add(t.Vm(name="tpl-src", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                       memory=64 * MiB))
    vms.vm_service(src.id).disk_attachments_service().add(t.DiskAttachment(
        disk=t.Disk(name="tpl-src-disk", provisioned_size=64 * MiB, format=t.DiskFormat.COW,
                    storage_domains=[t.StorageDomain(id=infra["sd"].id)]),
        interface=t.DiskInterface.VIRTIO, bootable=True, active=True))
    tpl = system.templates_service().add(t.Template(name="desk-tpl", vm=t.Vm(id=src.id)))
    pools = system.vm_pools_service()
    pool = pools.add(t.VmPool(name="desk", cluster=t.Cluster(name="Default"), template=t.Template(id=tpl.id),
                              size=2, prestarted_vms=1, max_user_vms=1, type=t.VmPoolType.AUTOMATIC))
    assert (pool.size, pool.prestarted_vms, pool.type) == (2, 1, t.VmPoolType.AUTOMATIC)

    def pool_vms():
        return {v.name: v for v in vms.list(search="name=desk-*")}
    running = wait_for(lambda: [n for n, v in pool_vms().items() if v.status == t.VmStatus.UP],
                       what="one pre-started VM")
    assert len(running) == 1 and len(pool_vms()) == 2

    add_user(stack, "uma", "uma-pw-123")
    uma = system.users_service().list(search="usrname=uma")[0]
    pools.pool_service(pool.id).permissions_service().add(t.Permission(role=t.Role(name="UserRole"),
                                                                       user=t.User(id=uma.id)))
    conn = connect(stack, "uma@internal", "uma-pw-123", filtered=True)
    try:
        portal = conn.system_service()
        assert [p.name for p in portal.vm_pools_service().list()] == ["desk"]
        assert portal.vms_service().list() == []
        portal.vm_pools_service().pool_service(pool.id).allocate_vm()
        got = portal.vms_service().list()
        assert [v.name for v in got] == running          # the one kept running, at once
        vm = got[0]
        # the pool keeps a VM running for the next user
        wait_for(lambda: all(v.status == t.VmStatus.UP for v in pool_vms().values()), what="a second VM started")
        with pytest.raises(ovirtsdk4.Error) as e:
            portal.vm_pools_service().pool_service(pool.id).allocate_vm()
        assert e.value.code == 409                        # max_user_vms is 1

        _write_through_the_guest(vm.id, "0x5a")
        used = _disk_file(stack, vm.id)
        assert _holds(used, "0x5a")                       # the write reached the disk it runs on
        portal.vms_service().vm_service(vm.id).stop()     # the user is done

        wait_for(lambda: portal.vms_service().list() == [], what="the VM to leave its user")
        wait_for(lambda: _db(stack, "SELECT state FROM vm_pool_members WHERE vm_id = :vm", vm=vm.id) == [("free",)],
                 what="the VM back in the pool, clean")
        clean = _disk_file(stack, vm.id)
        assert clean != used and not os.path.exists(used)  # its changes are gone with their layer
        assert _holds(clean, "0") and not _holds(clean, "0x5a")
        kept = wait_for(lambda: [n for n, v in pool_vms().items() if v.status == t.VmStatus.UP],
                        what="a VM kept running")
        assert len(kept) >= 1
        portal.vm_pools_service().pool_service(pool.id).allocate_vm()
        again = portal.vms_service().list()
        assert len(again) == 1 and again[0].status == t.VmStatus.UP
    finally:
        conn.close()
