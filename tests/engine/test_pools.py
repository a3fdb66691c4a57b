"""VM pools in the in-process engine with its worker (real SQLite, the real
job runner and pool keeper; pools from the Blank template, so no host is
needed): making, allocating up to max_user_vms, resizing, a VM going back
clean to an automatic pool, and who may do what. The same on real libvirt
hosts through the oVirt SDK: test_pools_sdk.py."""
import time

import pytest

from harness.access import build
from harness.engineapp import running_worker
from keel_engine.models import Permission, Snapshot, Vm, VmPool, VmPoolMember


@pytest.fixture
def w(tmp_path):
    return build(tmp_path)


def wait_for(check, timeout=30, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def states(w, pool_id):
    with w.sm() as s:
        return sorted(m.state for m in s.query(VmPoolMember).filter_by(pool_id=pool_id))


def test_a_pool_hands_out_its_vms_and_takes_them_back_clean(w):
    w.cfg.monitor_interval = 0.2
    admin = w.admin()
    r = w.send(admin, "POST", "/vmpools", {"name": "desk", "cluster": {"id": w.ids["cluster:A"]},
                                           "template": {"name": "Blank"}, "size": 2, "max_user_vms": 1})
    assert r.status_code == 201, r.get_data()
    pool = r.get_json()
    assert (pool["size"], pool["type"], pool["max_user_vms"]) == ("2", "automatic", "1")
    w.ids["pool:desk"] = pool["id"]
    w.user("uma", [("UserRole", "pool:A"), ("UserRole", "pool:desk")])
    with running_worker(w.cfg):
        wait_for(lambda: states(w, pool["id"]) == ["free", "free"], what="two clean free VMs")
        h = w.token("uma")
        assert w.names(h, "/vmpools", "vm_pool") == ["desk", "pA"]
        assert w.names(h, "/vms", "vm") == []            # a pool's VMs are not its users'
        r = w.send(h, "POST", f"/vmpools/{pool['id']}/allocatevm?async=true")
        assert r.status_code in (200, 202), r.get_data()
        mine = r.get_json()["vm"]["id"] if "vm" in r.get_json() else None
        names = w.names(h, "/vms", "vm")
        assert len(names) == 1 and names[0].startswith("desk-")
        with w.sm() as s:
            vm = s.query(Vm).filter_by(name=names[0]).one()
            assert mine in (None, vm.id)
            assert s.get(VmPoolMember, vm.id).state == "allocated"
        r = w.send(h, "POST", f"/vmpools/{pool['id']}/allocatevm?async=true")
        assert r.status_code == 409 and b"most per user" in r.get_data()
        assert w.send(h, "PUT", f"/vmpools/{pool['id']}", {"size": 5}).status_code == 403
        # the user ran it and is done with it: it goes back, clean, and is no longer theirs
        wait_for(lambda: _vm(w, vm.id).status == "down", what="the failed start to end")
        with w.sm() as s:
            member = s.get(VmPoolMember, vm.id)
            member.used = True
            s.commit()
        wait_for(lambda: states(w, pool["id"]) == ["free", "free"], what="the VM back in the pool")
        assert w.names(h, "/vms", "vm") == []
        with w.sm() as s:
            assert s.query(Permission).filter_by(object_id=vm.id).count() == 0
            base = s.get(VmPoolMember, vm.id).base_snapshot_id
            assert [x.id for x in s.query(Snapshot).filter_by(vm_id=vm.id)] == [base]
        # resizing adds VMs, and removes free ones
        assert w.send(admin, "PUT", f"/vmpools/{pool['id']}", {"size": 3}).status_code == 200
        wait_for(lambda: states(w, pool["id"]) == ["free", "free", "free"], what="the third VM")
        assert w.send(admin, "PUT", f"/vmpools/{pool['id']}", {"size": 1, "prestarted_vms": 0}).status_code == 200
        wait_for(lambda: states(w, pool["id"]) == ["free"], what="the pool to shrink")
        wait_for(lambda: _count_vms(w, "desk-") == 1, what="the removed VMs to go")
        assert w.send(admin, "PUT", f"/vmpools/{pool['id']}", {"prestarted_vms": 2}).status_code == 400
        assert w.send(admin, "DELETE", f"/vmpools/{pool['id']}").status_code == 200
        wait_for(lambda: _count_vms(w, "desk-") == 0, what="the pool's VMs to go")
        with w.sm() as s:
            assert s.get(VmPool, pool["id"]) is None


def _vm(w, vm_id):
    with w.sm() as s:
        vm = s.get(Vm, vm_id)
        s.expunge(vm)
        return vm


def _count_vms(w, prefix):
    with w.sm() as s:
        return s.query(Vm).filter(Vm.name.like(prefix + "%")).count()


def test_who_may_use_and_change_a_pool(w):
    pid = w.ids["pool:A"]
    w.user("nora", [("UserRole", "vm:a1")])
    h = w.token("nora")
    assert w.send(h, "POST", f"/vmpools/{pid}/allocatevm?async=true").status_code == 404
    assert w.send(h, "POST", "/vmpools", {"name": "p2", "cluster": {"id": w.ids["cluster:A"]},
                                          "template": {"name": "Blank"}}).status_code == 400
    w.user("vera", [("VmPoolAdmin", "pool:A")])
    v = w.token("vera")
    assert w.send(v, "PUT", f"/vmpools/{pid}", {"max_user_vms": 3}).status_code == 200
    # an administrative role on a pool reaches its VMs
    assert w.names(v, "/vms", "vm") == ["pA-1"]
    assert w.names(v, "/vms", "vm", Filter="true") == []
