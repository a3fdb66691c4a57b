"""VM leases on storage, written and held by the real sanlock: the engine
creates them (``sanlock direct init``, no daemon), reads who holds one, and
calls a lease free only when sanlock itself would let another host take it."""

import os
import shutil
import subprocess
import tempfile
import textwrap

import pytest

from harness.daemons import SanlockDaemon, build_shim

from keel_engine.errors import Fault
from keel_engine.power import policy
from keel_common.sanlock_disk import LockspaceWatcher, cli_path
from keel_common.domainxml import Lease
from keel_common.sanlock_disk import read_resource_owner as read_owner
from keel_engine import config as config_mod
from keel_engine.services.vm_leases import VmLeaseError, VmLeases, init_lease, lease_path

pytestmark = pytest.mark.skipif(shutil.which("sanlock") is None, reason="sanlock not installed")
LS = "keel-test-ls"
VM_ID = "3f6f0f3e-8a41-4c0b-9d6e-2f1a4f7c0b11"


def direct(*args):
    out = subprocess.run(["sanlock", "direct", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "done 0" in out.stdout, out.stdout + out.stderr
    return out.stdout


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeSd:
    def __init__(self, path):
        self.id, self.name, self.path = "sd-1", "data", path


class FakeSession:
    """Only ``get`` of the one storage domain: is_free needs nothing else."""

    def __init__(self, sd):
        self.sd = sd

    def get(self, _model, ident):
        return self.sd if ident == self.sd.id else None


class FakeVm:
    id, name, high_availability, lease_storage_domain_id = VM_ID, "web", True, "sd-1"


@pytest.fixture
def root():
    # the sanlock daemon runs as user sanlock: pytest's private tmp dirs are closed to it
    path = tempfile.mkdtemp(prefix="keel-vmlease-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["sd", "198.51.100.1:_sd"])   # the second as oVirt's NFS mount points
def storage(root, request):
    d = os.path.join(root, request.param)
    os.mkdir(d)
    shutil.chown(d, "sanlock", "sanlock")
    ls = os.path.join(d, "ids")
    with open(ls, "wb") as f:
        f.truncate(1024 * 1024)
    shutil.chown(ls, "sanlock", "sanlock")
    direct("init", "-s", f"{LS}:0:{cli_path(ls)}:0", "-o", "1")
    return str(d), str(ls)


def test_engine_initialises_a_lease_sanlock_reads(storage):
    sd, _ls = storage
    path = lease_path(sd, VM_ID)
    init_lease(LS, VM_ID, path)
    out = direct("read_leader", "-r", f"{LS}:{VM_ID}:{cli_path(path)}:0")
    assert f"space_name {LS}" in out and f"resource_name {VM_ID}" in out
    st = os.stat(path)
    assert st.st_size == 1024 * 1024 and st.st_uid == shutil._get_uid("sanlock")
    owner = read_owner(path)
    assert owner.owner_id == 0 and owner.free
    mtime = st.st_mtime_ns
    init_lease(LS, VM_ID, path)                 # idempotent: an existing lease is kept as it is
    assert os.stat(path).st_mtime_ns == mtime
    assert not [n for n in os.listdir(os.path.dirname(path)) if ".init-" in n]


def test_a_lease_belongs_to_whoever_owns_the_storage_domain(root):
    """Over NFS only numbers count: the engine VM's sanlock user may have other
    ids than the hosts', so the lease takes the ids of the domain's directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root to hand files over")
    sd = os.path.join(root, "nfs-sd")
    os.mkdir(sd)
    os.chown(sd, 4321, 4322)        # the hosts' sanlock ids, unknown on this machine
    path = lease_path(sd, VM_ID)
    init_lease(LS, VM_ID, path)
    for p, mode in ((os.path.dirname(path), 0o775), (path, 0o660)):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4321, 4322, mode), p


def test_bad_lease_names_are_clear_errors(storage):
    sd, _ls = storage
    with pytest.raises(VmLeaseError, match="must not contain ':'"):
        init_lease("a:b", VM_ID, lease_path(sd, VM_ID))
    with pytest.raises(VmLeaseError, match="at most 48 bytes"):
        init_lease(LS, "x" * 49, lease_path(sd, "x"))
    assert read_owner(os.path.join(sd, "missing.lease")) is None


def test_held_lease_is_free_only_after_its_owner_expires_or_rejoins(storage):
    sd, ls = storage
    path = lease_path(sd, VM_ID)
    init_lease(LS, VM_ID, path)
    direct("acquire_id", "-s", f"{LS}:2:{cli_path(ls)}:0", "-o", "1")
    direct("acquire", "-r", f"{LS}:{VM_ID}:{cli_path(path)}:0", "-i", "2", "-g", "1", "-o", "1")
    owner = read_owner(path)
    assert (owner.owner_id, owner.generation) == (2, 1) and owner.timestamp > 0 and not owner.free

    clock = Clock()
    leases = VmLeases(LS, LockspaceWatcher(ls, clock=clock))
    s = FakeSession(FakeSd(sd))
    assert leases.is_free(FakeVm(), s) is False
    clock.now += 30
    assert leases.is_free(FakeVm(), s) is False     # within sanlock's host-dead time (8 * 1 + 60 s)
    clock.now += 40
    assert leases.is_free(FakeVm(), s) is True      # owner's host-id lease expired
    # the owner host joins again (new generation): its old acquisition is void at once
    fresh = VmLeases(LS, LockspaceWatcher(ls, clock=Clock()))
    assert fresh.is_free(FakeVm(), s) is False
    direct("release_id", "-s", f"{LS}:2:{cli_path(ls)}:0")
    direct("acquire_id", "-s", f"{LS}:2:{cli_path(ls)}:0", "-o", "1")
    assert fresh.is_free(FakeVm(), s) is True


def test_vm_without_lease_or_with_leases_disabled(storage):
    sd, ls = storage
    s = FakeSession(FakeSd(sd))
    vm = FakeVm()
    assert VmLeases("", LockspaceWatcher(ls)).is_free(vm, s) is None
    vm.lease_storage_domain_id = None
    assert VmLeases(LS, LockspaceWatcher(ls)).is_free(vm, s) is None
    # a lease file that cannot be read is never taken for a free one
    vm.lease_storage_domain_id = "sd-1"
    assert VmLeases(LS, LockspaceWatcher(ls)).is_free(vm, s) is False


def test_lease_for_a_vm_with_a_lease_when_leases_are_disabled_is_a_clear_conflict(storage):
    sd, _ls = storage
    with pytest.raises(Fault) as exc:
        VmLeases("", None).lease_for(FakeSession(FakeSd(sd)), FakeVm())
    assert "VM leases are not enabled" in exc.value.detail


@pytest.mark.slow
def test_release_through_the_daemon_frees_the_lease(storage, root):
    """A clean release (VM shut down) marks the owner's ballot; the engine sees it free."""
    sd, ls = storage
    path = lease_path(sd, VM_ID)
    init_lease(LS, VM_ID, path)
    daemon = SanlockDaemon(root, "leasehost", build_shim(os.path.join(root, "shim"))).start()
    try:
        script = textwrap.dedent(f"""
            import sanlock, sys
            sanlock.add_lockspace(b"{LS}", 3, b"{ls}", iotimeout=1)
            fd = sanlock.register()
            sanlock.acquire(b"{LS}", b"{VM_ID}", [(b"{path}", 0)], slkfd=fd)
            print("held", flush=True)
            sys.stdin.readline()
            sanlock.release(b"{LS}", b"{VM_ID}", [(b"{path}", 0)], slkfd=fd)
            print("released", flush=True)
            sys.stdin.readline()
        """)
        holder = subprocess.Popen(["/usr/bin/python3", "-c", script], env=daemon.env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline().strip() == "held"
            owner = read_owner(path)
            assert owner.owner_id == 3 and not owner.free
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "released"
            assert read_owner(path).free
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(30)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
    finally:
        daemon.stop()


def test_settings_need_the_lockspace_file_and_a_valid_name(tmp_path):
    conf = tmp_path / "engine.conf"

    def load(power):
        conf.write_text("[power]\n" + "".join(f"{k} = {v}\n" for k, v in power.items()))
        return config_mod.load(str(conf))
    with pytest.raises(config_mod.ConfigError, match="needs lockspace_path"):
        load({"vm_lease_lockspace": "hosted-engine"})
    with pytest.raises(config_mod.ConfigError, match="no ':'"):
        load({"vm_lease_lockspace": "a:b", "lockspace_path": "/x"})
    ok = load({"vm_lease_lockspace": "hosted-engine", "lockspace_path": "/x"})
    assert ok.power.vm_lease_lockspace == "hosted-engine"


def test_policy_holds_a_leaseless_ha_vm_until_a_fence_and_says_why():
    host = policy.HostView(id="h1", name="h1", status="non_responsive", cluster_id="c",
                           unresponsive_since=0.0, renews_storage_lease=False)
    other = policy.HostView(id="h2", name="h2", status="up", cluster_id="c", free_memory_mb=4096)
    vm = policy.HaVm(id="v", name="web", memory_mb=64, has_lease=False)
    snap = policy.Snapshot(now=1000.0, host=host, cluster_hosts=(host, other), ha_vms=(vm,),
                           fence_state=policy.FENCE_FAILED)
    actions = policy.decide(snap, policy.PolicyConfig(grace_period=1))
    held = [a for a in actions if a.kind == policy.HOLD_VM]
    assert held and "has no lease of its own" in held[0].reason
    assert not [a for a in actions if a.kind == policy.RESTART_VM]


def test_a_fenced_hosts_leases_are_released_on_its_behalf(storage):
    """After a BMC-confirmed power-off the engine releases the host's host-id lease,
    so its VMs' leases are free at once; before that a start is refused with the reason."""
    sd, ls = storage
    path = lease_path(sd, VM_ID)
    init_lease(LS, VM_ID, path)
    direct("acquire_id", "-s", f"{LS}:2:{cli_path(ls)}:0", "-o", "1")
    direct("acquire", "-r", f"{LS}:{VM_ID}:{cli_path(path)}:0", "-i", "2", "-g", "1", "-o", "1")
    from keel_common.sanlock_disk import read_delta_leases
    name = read_delta_leases(ls)[2].name
    leases = VmLeases(LS, LockspaceWatcher(ls))
    s = FakeSession(FakeSd(sd))
    with pytest.raises(Fault) as exc:
        leases.lease_for(s, FakeVm())
    assert "is held by host id 2" in exc.value.detail
    assert leases.release_fenced_host("some-other-host") is None      # not in the lockspace: nothing
    assert leases.is_free(FakeVm(), s) is False
    assert leases.release_fenced_host(name) == 2
    assert read_delta_leases(ls)[2].timestamp == 0
    assert leases.is_free(FakeVm(), s) is True
    assert leases.lease_for(s, FakeVm()) == Lease(LS, VM_ID, path, 0)
    assert leases.release_fenced_host(name) is None                   # already released
