"""cloud-init through the API, on the in-process engine with SQLite: the VM's
`initialization` as oVirt's SDK (and so ovirt_vm) writes it, stored and
shown without its password; run-once (`use_cloud_init` with
`vm.initialization`, never stored, never in a job's parameters in clear);
oVirt's first-run rule; refusals that change nothing. The start job runs in
this thread with the storage pool stood in for (what the seed volume
holds, which host wrote it, when it goes); the real thing, with libvirt and
a guest that applies the seed: test_cloud_init.py."""
import contextlib
import json
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import ovirtsdk4.types as t
import pytest
import yaml
from cryptography.fernet import Fernet
from ovirtsdk4.writer import Writer

from harness.engineapp import admin_headers, engine_app_with_host
from keel_common import domainxml
from keel_engine import virt
from keel_engine.errors import Fault
from keel_engine.models import (Cluster, DataCenter, Disk, Event, Host, Job, StorageDomain, Vm, VmInitialization,
                                utcnow)
from keel_engine.services import Context, cloud_init, vm_init
from keel_engine.services import disks as disk_svc
from keel_engine.services import vms as vm_svc

API = "/ovirt-engine/api"
MiB = 2 ** 20
PASSWORD = "Sw0rd fish:42"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0aGlzaXNub3RhcmVhbGtleWF0YWxsMTIzNDU2Nzg5 ops@example.test"


def ovirt_vm_initialization(host_name="ci-1.example.test", **extra):
    """What ovirt.ovirt's ovirt_vm builds from `cloud_init` with nic_* keys
    (get_initialization): one static NIC, on_boot true, an IPv4 address."""
    return t.Initialization(
        host_name=host_name, user_name="ops", root_password=PASSWORD, authorized_ssh_keys=KEY,
        custom_script="runcmd:\n  - echo provisioned > /run/ci-done\n", dns_servers="198.51.100.1",
        dns_search="example.test", timezone="Europe/Prague",
        nic_configurations=[t.NicConfiguration(
            boot_protocol=t.BootProtocol.STATIC, name="eth0", on_boot=True,
            ip=t.Ip(address="198.51.100.7", netmask="255.255.255.0", gateway="198.51.100.1", version=t.IpVersion.V4))],
        **extra)


@pytest.fixture
def env(tmp_path):
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.15.61", request_wait=5)
    with sm() as s:
        dc = s.query(DataCenter).one()
        sd = StorageDomain(name="data", path="/srv/keel-ci-sd", status="active", data_center_id=dc.id)
        s.add(sd)
        host = s.get(Host, host_id)
        host.memory_total = host.memory_free = 4096 * MiB    # as if polled: the scheduler may pick it
        s.commit()
        sd_id, cluster = sd.id, s.query(Cluster).one().name
    return {"c": app.test_client(), "h": admin_headers(app), "sm": sm, "cfg": cfg, "sd": sd_id,
            "host": host_id, "cluster": cluster}


@pytest.fixture
def storage(monkeypatch):
    """The storage domains' pools, stood in for: {(storage domain id, volume): bytes},
    and the host each pool operation went through."""
    vols, through = {}, []

    @contextlib.contextmanager
    def pool_for(ctx, s, sd, host=None):
        through.append(host.name if host is not None else "any")
        s.commit()
        yield sd.id

    monkeypatch.setattr(disk_svc, "pool_for", pool_for)
    monkeypatch.setattr(virt, "upload_volume", lambda pool, name, data, timeout: vols.__setitem__((pool, name), data))
    monkeypatch.setattr(virt, "delete_volume", lambda pool, name: vols.pop((pool, name), None))
    return {"vols": vols, "through": through}


def send(env, method, path, body, **params):
    return env["c"].open(API + path, method=method, data=body, query_string=params,
                         headers={**env["h"], "Content-Type": "application/xml", "Accept": "application/json"})


def get(env, path, **params):
    return env["c"].get(API + path, query_string=params, headers={**env["h"], "Accept": "application/json"})


def new_vm(env, name="ci1", initialization=None):
    r = send(env, "POST", "/vms", Writer.write(t.Vm(
        name=name, cluster=t.Cluster(name=env["cluster"]), template=t.Template(name="Blank"), memory=64 * MiB,
        initialization=initialization)))
    assert r.status_code == 201, r.data
    return r.get_json()


def stored(env, vm_id):
    with env["sm"]() as s:
        row = s.get(VmInitialization, vm_id)
        return None if row is None else {c.name: getattr(row, c.name) for c in row.__table__.columns}


def start_jobs(env, vm_id):
    with env["sm"]() as s:
        return [j for j in s.query(Job).filter_by(kind="vm.start") if j.params.get("vm_id") == vm_id]


def run_start(env, job_id):
    """The engine worker's part of a start, here: nobody answers at the host's
    address, so it fails after the seed was written (as a real start may)."""
    ctx = Context(config=env["cfg"], sessionmaker=env["sm"])
    with env["sm"]() as s:
        with pytest.raises(Fault) as e:
            vm_svc.run_start(ctx, s, s.get(Job, job_id))
    return e.value


def sweep(env):
    return vm_init.sweep(Context(config=env["cfg"], sessionmaker=env["sm"]), set())


def test_ovirt_vms_initialization_is_stored_and_shown_without_its_password(env):
    vm = new_vm(env, initialization=ovirt_vm_initialization())
    shown = vm["initialization"]
    assert shown["host_name"] == "ci-1.example.test" and shown["user_name"] == "ops"
    assert shown["authorized_ssh_keys"] == KEY and shown["timezone"] == "Europe/Prague"
    assert shown["nic_configurations"]["nic_configuration"] == [{
        "name": "eth0", "boot_protocol": "static", "on_boot": "true",
        "ip": {"address": "198.51.100.7", "netmask": "255.255.255.0", "gateway": "198.51.100.1", "version": "v4"}}]
    assert stored(env, vm["id"])["root_password"] == PASSWORD
    # shown with all_content (what ovirt_vm reads with), on a VM and in lists; never the password
    assert "initialization" not in get(env, f"/vms/{vm['id']}").get_json()
    one = get(env, f"/vms/{vm['id']}", all_content="true")
    listed = get(env, "/vms", all_content="true").get_json()["vm"]
    xml = env["c"].get(f"{API}/vms/{vm['id']}", query_string={"all_content": "true"}, headers=env["h"]).data
    assert one.get_json()["initialization"] == listed[0]["initialization"] == shown
    assert b"<host_name>ci-1.example.test</host_name>" in xml
    for body in (one.data, json.dumps(listed).encode(), xml):
        assert b"root_password" not in body and PASSWORD.encode() not in body
    with env["sm"]() as s:
        assert not any(PASSWORD in e.description or "ops" in e.description.split() for e in s.query(Event))


def test_an_update_changes_the_fields_it_gives_and_clears_those_given_empty(env):
    vm = new_vm(env, initialization=ovirt_vm_initialization())
    r = send(env, "PUT", f"/vms/{vm['id']}", Writer.write(t.Vm(initialization=t.Initialization(
        host_name="ci-2.example.test", timezone=""))))
    assert r.status_code == 200, r.data
    assert r.get_json()["initialization"]["host_name"] == "ci-2.example.test"
    assert "timezone" not in r.get_json()["initialization"]
    row = stored(env, vm["id"])
    assert (row["host_name"], row["timezone"], row["user_name"], row["root_password"]) == (
        "ci-2.example.test", "", "ops", PASSWORD)
    # a clone gets it too
    with env["sm"]() as s:
        s.get(Vm, vm["id"]).status = "down"
        s.commit()
    assert send(env, "POST", f"/vms/{vm['id']}/clone", "<action><vm><name>ci1copy</name></vm></action>"
                ).status_code == 200
    with env["sm"]() as s:
        copy_id = s.query(Vm).filter_by(name="ci1copy").one().id
    assert stored(env, copy_id) | {"vm_id": vm["id"]} == stored(env, vm["id"])


@pytest.mark.parametrize("init_xml, says", [
    ("<regenerate_ssh_keys>true</regenerate_ssh_keys>", "initialization.regenerate_ssh_keys: not supported yet"),
    ("<cloud_init><host><address>x</address></host></cloud_init>", "initialization.cloud_init: not supported yet"),
    ("<nic_configurations><nic_configuration><name>eth0</name><ipv6_boot_protocol>dhcp</ipv6_boot_protocol>"
     "</nic_configuration></nic_configurations>",
     "initialization.nic_configurations.nic_configuration.ipv6_boot_protocol: not supported yet"),
    ("<nic_configurations><nic_configuration><name>eth0</name><boot_protocol>static</boot_protocol>"
     "<ip><address>fd00::7</address><version>v6</version></ip></nic_configuration></nic_configurations>",
     "initialization.nic_configurations.nic_configuration.ip.version: expected one of v4"),
    ("<nic_configurations><nic_configuration><name>eth0</name><boot_protocol>autoconf</boot_protocol>"
     "</nic_configuration></nic_configurations>", "nic_configuration.boot_protocol: expected one of none, dhcp"),
    ("<host_name>not_a_host</host_name>", "initialization.host_name: a host name"),
    ("<custom_script>runcmd: [oops</custom_script>", "initialization.custom_script: not valid YAML"),
    ("<dns_servers>one.example</dns_servers>", "initialization.dns_servers: IP addresses"),
])
def test_a_bad_initialization_is_refused_by_name_and_nothing_changes(env, init_xml, says):
    r = send(env, "POST", "/vms", f"<vm><name>bad1</name><cluster><name>{env['cluster']}</name></cluster>"
             f"<template><name>Blank</name></template><initialization>{init_xml}</initialization></vm>")
    assert r.status_code == 400 and says in r.get_json()["detail"], r.data
    vm = new_vm(env, initialization=t.Initialization(host_name="keep.example.test"))
    r = send(env, "PUT", f"/vms/{vm['id']}", f"<vm><initialization>{init_xml}</initialization></vm>")
    assert r.status_code == 400 and says in r.get_json()["detail"], r.data
    with env["sm"]() as s:
        assert s.query(Vm).filter_by(name="bad1").count() == 0
    assert stored(env, vm["id"])["host_name"] == "keep.example.test"


def test_a_start_that_cannot_have_its_seed_is_refused_before_anything_changes(env):
    vm = new_vm(env)["id"]
    r = send(env, "POST", f"/vms/{vm}/start", "<action><use_cloud_init>true</use_cloud_init></action>")
    assert r.status_code == 400 and "use_cloud_init: VM ci1 has no cloud-init configuration" in r.get_json()["detail"]
    r = send(env, "POST", f"/vms/{vm}/start", Writer.write(t.Action(use_cloud_init=True, vm=t.Vm(
        initialization=t.Initialization(host_name="bad_name")))))
    assert r.status_code == 400 and "vm.initialization.host_name" in r.get_json()["detail"]
    with env["sm"]() as s:
        s.get(StorageDomain, env["sd"]).status = "maintenance"
        s.commit()
    r = send(env, "POST", f"/vms/{vm}/start", Writer.write(t.Action(use_cloud_init=True, vm=t.Vm(
        initialization=ovirt_vm_initialization()))))
    assert r.status_code == 409, r.data
    assert r.get_json()["detail"] == ("VM ci1 has no disk and its data center has no active data storage domain "
                                      "for its cloud-init seed; attach and activate one")
    with env["sm"]() as s:
        assert s.get(Vm, vm).status == "down"
    assert start_jobs(env, vm) == []


def test_run_once_writes_a_seed_for_one_boot_and_never_stores_or_reveals_it(env, storage):
    vm = new_vm(env)["id"]
    r = send(env, "POST", f"/vms/{vm}/start", Writer.write(t.Action(use_cloud_init=True, vm=t.Vm(
        initialization=ovirt_vm_initialization()))), **{"async": "true"})
    assert r.status_code == 202, r.data
    assert stored(env, vm) is None
    job, = start_jobs(env, vm)
    assert job.description == "Starting VM ci1 with cloud-init"
    assert set(job.params) == {"vm_id", "host_id", "cloud_init", "initialization"}
    for secret in (PASSWORD, "ci-1.example.test", '"ops"', KEY[:30]):
        assert secret not in json.dumps(job.params)
    fault = run_start(env, job.id)
    assert "failed to start VM ci1 on host hx" in fault.detail
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        assert v.status == "down" and v.seed_storage_domain_id == env["sd"]
        seed = v.seed_volume
        assert s.get(Job, job.id).params.keys() == {"vm_id", "host_id", "cloud_init"}   # read once, then gone
        said = " ".join(e.description for e in s.query(Event))
    assert PASSWORD not in said and "ops" not in said.split()
    # written through the host the VM was to start on; what cloud-init reads from it
    assert storage["through"] == ["hx"] and seed.startswith(vm) and not seed.endswith(".iso")
    files = read_iso(storage["vols"][(env["sd"], seed)])
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": vm, "local-hostname": "ci-1.example.test"}
    user_data = yaml.safe_load(files["user-data"])
    assert user_data["fqdn"] == "ci-1.example.test" and user_data["runcmd"] == ["echo provisioned > /run/ci-done"]
    assert user_data["chpasswd"]["users"][0]["password"].startswith("$6$")
    assert yaml.safe_load(files["network-config"])["config"][0]["subnets"][0]["address"] == "198.51.100.7"
    # the VM is down: the reaper deletes the seed and forgets it
    assert sweep(env) == 1
    assert storage["vols"] == {}
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        assert (v.seed_volume, v.seed_storage_domain_id) == ("", None)
    assert sweep(env) == 0


def read_iso(data):
    """{file: text} of a seed, as the guest reads it (Rock Ridge names)."""
    with tempfile.NamedTemporaryFile(suffix=".iso") as f:
        f.write(data)
        f.flush()
        return {n: subprocess.run(["isoinfo", "-i", f.name, "-R", "-x", f"/{n}"], capture_output=True, text=True,
                                  check=True).stdout for n in ("meta-data", "user-data", "network-config")}


def test_a_stored_configuration_initializes_the_first_run_only(env, storage):
    vm = new_vm(env, initialization=ovirt_vm_initialization())["id"]
    assert send(env, "POST", f"/vms/{vm}/start", "<action/>", **{"async": "true"}).status_code == 202
    job, = start_jobs(env, vm)
    assert job.params == {"vm_id": vm, "host_id": None, "cloud_init": "stored"}
    run_start(env, job.id)
    seed = read_iso(next(iter(storage["vols"].values())))
    assert yaml.safe_load(seed["user-data"])["hostname"] == "ci-1"
    # a VM that has run once is initialized again only when asked
    with env["sm"]() as s:
        s.get(Vm, vm).start_time = utcnow()
        s.commit()
    assert send(env, "POST", f"/vms/{vm}/start", "<action/>", **{"async": "true"}).status_code == 202
    assert "cloud_init" not in start_jobs(env, vm)[-1].params
    run_start(env, start_jobs(env, vm)[-1].id)
    # that start deleted the seed the failed first one had left, and wrote none
    assert storage["vols"] == {}
    with env["sm"]() as s:
        assert s.get(Vm, vm).seed_volume == ""
    assert send(env, "POST", f"/vms/{vm}/start", "<action><use_cloud_init>true</use_cloud_init></action>",
                **{"async": "true"}).status_code == 202
    assert start_jobs(env, vm)[-1].params["cloud_init"] == "stored"


def test_the_seed_is_a_read_only_cdrom_of_its_boot_on_the_first_disks_domain(env, storage):
    vm = new_vm(env)["id"]
    with env["sm"]() as s:
        dc = s.query(DataCenter).one()
        other = StorageDomain(name="other", path="/srv/keel-ci-other", status="active", data_center_id=dc.id)
        s.add(other)
        s.flush()
        disk = Disk(name="ci1_d1", storage_domain_id=other.id, provisioned_size=32 * MiB, active_volume="d1.qcow2")
        s.add(disk)
        s.flush()
        disk_svc.attach(s, s.get(Vm, vm), disk, "virtio", True)
        s.commit()
        other_id = other.id
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        assert vm_init.seed_domain(s, v).name == "other"
        v.host_id = env["host"]
        vm_init.prepare_boot(Context(config=env["cfg"], sessionmaker=env["sm"]), s, v, s.get(Host, env["host"]),
                             cloud_init.Initialization(host_name="ci-9"))
        assert v.seed_storage_domain_id == other_id
        dom = ET.fromstring(domainxml.domain_xml(vm_svc.domain_of(None, s, v)))
        seed = v.seed_volume
    cds = dom.findall("devices/disk[@device='cdrom']")
    assert len(cds) == 2      # the VM's own CD-ROM drive, then this boot's seed
    assert cds[1].find("source").get("file") == f"/srv/keel-ci-other/{seed}"
    assert cds[1].find("target").get("bus") == "ide" and cds[1].find("readonly") is not None
    assert cds[1].find("driver").get("type") == "raw"
    assert (other_id, seed) in storage["vols"]


def test_a_removed_vm_takes_its_seed_along(env, storage):
    vm = new_vm(env, initialization=ovirt_vm_initialization())["id"]
    send(env, "POST", f"/vms/{vm}/start", "<action/>", **{"async": "true"})
    run_start(env, start_jobs(env, vm)[0].id)
    assert len(storage["vols"]) == 1
    r = send(env, "DELETE", f"/vms/{vm}", "", **{"async": "true"})
    assert r.status_code == 202, r.data      # a job: the seed is on storage
    with env["sm"]() as s:
        job = s.query(Job).filter_by(kind="vm.remove").one()
        vm_svc.run_remove(Context(config=env["cfg"], sessionmaker=env["sm"]), s, job)
        s.commit()
        assert s.get(Vm, vm) is None and s.get(VmInitialization, vm) is None
    assert storage["vols"] == {}


def test_a_run_once_configuration_the_worker_cannot_read_ends_the_start(env, storage):
    vm = new_vm(env)["id"]
    send(env, "POST", f"/vms/{vm}/start", Writer.write(t.Action(use_cloud_init=True, vm=t.Vm(
        initialization=t.Initialization(host_name="ci-5")))), **{"async": "true"})
    job, = start_jobs(env, vm)
    with open(env["cfg"].secret_key_file, "wb") as f:      # the engine's key replaced meanwhile
        f.write(Fernet.generate_key())
    fault = run_start(env, job.id)
    assert fault.status == 409 and "cannot be read (the engine's key changed" in fault.detail
    with env["sm"]() as s:
        v = s.get(Vm, vm)
        assert (v.status, v.seed_volume) == ("down", "")
        assert "initialization" not in s.get(Job, job.id).params
    assert storage["vols"] == {}
