"""Every list costs the same number of SQL statements whatever its length
(no query per row), counted on the engine's own database connection."""
import pytest
from sqlalchemy import event

from harness.engineapp import admin_headers, engine_app_with_host
from keel_engine.models import (BLANK_TEMPLATE_ID, Disk, DiskAttachment, Host, Nic, Snapshot, StorageDomain, Vm,
                                Volume)

API = "/ovirt-engine/api"
PATHS = ["/vms", "/vms?follow=nics,disk_attachments,snapshots,host,cluster", "/vms?search=name%3Dvm*",
         "/hosts", "/hosts?follow=cluster", "/disks", "/events", "/templates?follow=disk_attachments",
         "/storagedomains", "/jobs", "/users", "/permissions"]


@pytest.fixture
def env(tmp_path):
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.1.39")
    client = app.test_client()
    statements = []
    event.listen(app.config["KEEL_CTX"].engine, "before_cursor_execute",
                 lambda *a, **kw: None if a[2].split()[0] in ("BEGIN", "COMMIT", "ROLLBACK")
                 else statements.append(a[2]))
    return {"client": client, "sm": sm, "host_id": host_id, "h": admin_headers(app),
            "statements": statements}


def add_vms(env, n, start):
    with env["sm"]() as s:
        host = s.get(Host, env["host_id"])
        sd = s.query(StorageDomain).first()
        if sd is None:
            sd = StorageDomain(name="sd", path="/srv/keel-sd", status="active")
            s.add(sd)
            s.flush()
        for i in range(start, start + n):
            s.add(Host(name=f"host{i}", address=f"127.0.1.{40 + i % 100}", libvirt_uri=f"qemu+tcp://h{i}/system",
                       cluster_id=host.cluster_id, status="up"))
            vm = Vm(name=f"vm{i}", cluster_id=host.cluster_id, template_id=BLANK_TEMPLATE_ID, memory=64 << 20,
                    status="up", host_id=host.id)
            s.add(vm)
            s.flush()
            s.add(Nic(vm_id=vm.id, name="nic1", mac=f"56:6f:00:00:{i // 256:02x}:{i % 256:02x}"))
            disk = Disk(name=f"vm{i}_d", storage_domain_id=sd.id, provisioned_size=1 << 20, active_volume=f"v{i}")
            s.add(disk)
            s.flush()
            s.add(Volume(name=f"v{i}", disk_id=disk.id))
            s.add(DiskAttachment(id=disk.id, disk_id=disk.id, vm_id=vm.id))
            s.add(Snapshot(vm_id=vm.id, description="s", volumes={}, memory=1, cpus=1))
        s.commit()


def statements_for(env, path):
    env["statements"].clear()
    r = env["client"].get(API + path, headers=env["h"])
    assert r.status_code == 200, r.data
    return len(env["statements"])


def test_a_list_costs_a_constant_number_of_statements(env):
    add_vms(env, 3, 0)
    few = {p: statements_for(env, p) for p in PATHS}
    add_vms(env, 40, 100)
    many = {p: statements_for(env, p) for p in PATHS}
    assert many == few
    assert max(few.values()) <= 8, few


def test_one_vm_costs_two_statements(env):
    add_vms(env, 1, 0)
    vm_id = env["client"].get(API + "/vms", headers={**env["h"], "Accept": "application/json"}).get_json()["vm"][0]["id"]
    assert statements_for(env, f"/vms/{vm_id}") == 2      # the token, the VM
