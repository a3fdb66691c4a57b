"""The real engine in the engine VM: the appliance image on the shared
storage, its first-boot seed, and the cluster registered through the
engine's REST API, as the installer does on a real first host.

The engine inside the VM reaches the hosts' libvirtd and BMCs over the lab
network and mounts the shared storage over NFS (see `nfs.py`) at the
storage domain's mount point, the path the hosts use for it.
"""
from __future__ import annotations

import filecmp
import logging
import os
import secrets
import shutil
import time

from keel_installer.engine_api import Api as EngineApi, EngineApiError, wait_signin

from . import nfs
from .image import EngineImage
from .layout import (BMC_PASSWORD, BMC_USER, BRIDGE_ADDRESS, ENGINE_VM_ADDRESS, ENGINE_VM_NAME, LOCKSPACE,
                     NFS_EXPORT, NFS_SERVER, LabError, LabLayout, write_private)

log = logging.getLogger("keel_lab.appliance")
DISK = "engine.qcow2"
BOOT_DIR = "engine-boot"
SEED = "engine-seed.img"
ENGINE_HOSTNAME = "engine.lab.test"
BASE_URL = f"http://{ENGINE_VM_ADDRESS}"
API_URL = BASE_URL + "/ovirt-engine/api"
ADMIN_USER = "admin@internal"
STORAGE_DOMAIN = "shared"
# 2 vCPUs: one vCPU boots the appliance twice as slowly under TCG
MEMORY_MB, VCPUS = 1024, 2

# Power management of the lab's engine: fencing on, tuned to the fast lab.
# - grace_period 5 s: what keeps a live host from being fenced is its
#   storage lease, still renewed (below), not the grace; with 5 s an HA VM
#   runs elsewhere 7.6 s after its host's power loss (bench/ha_vm_failover.py).
#   A host reset by the emulated watchdog (kill sanlock, storage cut) is
#   silent on the storage while it "reboots" and may be fenced then: it stays
#   off until powered on, as after any fence;
# - lockspace_path: the engine reads every host's delta lease from the shared
#   lockspace itself, so a host cut off by `partition --net` still renews it
#   and is not fenced (seen through the storage domain's mount point: inside
#   the engine VM only that exists);
# - vm_lease_lockspace: HA VMs hold their own lease in the lockspace every
#   lab host joins (the hosted engine's), on the shared storage domain;
# - a host already powered off (`keel-lab power HOST off`) is fenced 'off'
#   again: the BMC confirms at once, nothing else changes.
POWER_SETTINGS = {"fencing_enabled": "true", "grace_period": "5", "recheck_interval": "1",
                  "status_deadline": "10", "off_deadline": "20", "on_deadline": "20"}


def lab_engine_settings(lab: LabLayout) -> dict:
    """What the lab adds to the engine's configuration, whoever writes the
    rest: the installer on bare hosts (`[ha]`, `[storage]`), `up` otherwise."""
    return {
        # the lab's libvirtds listen on plain TCP (their own namespaces, no TLS);
        # every host sees the shared dir through a mount libvirt cannot
        # recognise as shared storage
        "libvirt": {"uri_template": "qemu+tcp://{address}/system", "transports": "tcp",
                    "storage_shared_unrecognised": "true"},
        "monitor": {"interval": "2"},
        "power": {**POWER_SETTINGS, "lockspace_path": lab.storage_domain_lockspace,
                  "vm_lease_lockspace": LOCKSPACE},
    }


def engine_settings(lab: LabLayout) -> dict:
    """The engine's configuration for the lab, wherever the engine runs."""
    return {
        **lab_engine_settings(lab),
        # where the HA agents record their fences and publish their records,
        # and the hosts' timing (when the dashboard calls a record stale)
        "ha": {"etcd_endpoints": ",".join(lab.etcd_endpoints), "timing_profile": lab.profile},
        # the storage domain is the lab's NFS export, at DIR/mnt/198.51.100.1:_shared
        "storage": {"nfs_mount_root": lab.nfs_mount_root},
    }


def fence_agents(lab: LabLayout) -> list[dict]:
    """Every lab host's BMC as its (only) ipmilan fence agent, as status shows them."""
    return [{"host": h.name, "type": "ipmilan", "address": BRIDGE_ADDRESS, "port": h.bmc_port,
             "username": BMC_USER, "options": "lanplus=1,cipher=3"} for h in lab.all_hosts()]


def build_image():
    """The appliance image (built once, cached outside the lab)."""
    try:
        from keel_appliance.build import BuildError, build
    except ImportError:
        raise LabError("keel_appliance is not installed (run `make setup`)") from None
    try:
        return build()
    except BuildError as e:
        raise LabError(f"cannot build the engine appliance image: {e}") from None


def prepare(lab: LabLayout, image, info: dict) -> tuple[EngineImage, dict]:
    """The engine VM's disk, boot files and seed on the shared storage, made
    once (as a deploy does); the disk keeps the engine's data from then on.
    Returns what the hosts boot and the state to record."""
    from keel_appliance.seed import NfsMount, SeedConfig, StaticNetwork, write_seed
    boot = os.path.join(lab.shared, BOOT_DIR)
    os.makedirs(boot, exist_ok=True)
    for src, name in ((image.kernel, "vmlinuz"), (image.initrd, "initrd.img")):
        _copy_if_changed(src, os.path.join(boot, name))
    disk = os.path.join(lab.shared, DISK)
    if not os.path.exists(disk):
        log.info("copying the appliance image %s to %s", image.key, disk)
        shutil.copyfile(image.disk, disk + ".new")
        os.replace(disk + ".new", disk)
    info = dict(info)
    seed = os.path.join(lab.shared, SEED)
    if not info.get("admin_password") or not os.path.exists(seed):
        info["admin_password"] = info.get("admin_password") or secrets.token_urlsafe(12)
        cfg = write_seed(seed, SeedConfig(
            hostname=ENGINE_HOSTNAME, admin_password=info["admin_password"],
            network=StaticNetwork(f"{ENGINE_VM_ADDRESS}/24", gateway=BRIDGE_ADDRESS),
            engine_conf=engine_settings(lab),
            storage=NfsMount(export=nfs.EXPORT, mount_point=lab.storage_domain_mount)))
        info["seed_instance"] = cfg.instance_id
    # where `keel-lab status` says admin@internal's password is
    info["admin_password_file"] = write_private(os.path.join(lab.dir, "engine-admin-password"),
                                                info["admin_password"] + "\n")
    info.update(image_key=image.key, api_url=API_URL, admin_user=ADMIN_USER, vm=ENGINE_VM_NAME)
    engine = EngineImage(kernel=os.path.join(BOOT_DIR, "vmlinuz"), initrd=os.path.join(BOOT_DIR, "initrd.img"),
                         cmdline=image.cmdline, disk=DISK, disk_format="qcow2", seed=SEED,
                         memory_mb=MEMORY_MB, vcpus=VCPUS, rng=True)
    return engine, info


def _copy_if_changed(src: str, dst: str) -> None:
    if os.path.exists(dst) and filecmp.cmp(src, dst, shallow=False):
        return
    shutil.copyfile(src, dst + ".new")
    os.replace(dst + ".new", dst)


# ---------------------------------------------------------------- the REST API

class Api(EngineApi):
    """The engine's API at the lab's engine VM."""

    def __init__(self, user: str, password: str, base: str = BASE_URL, timeout: float = 30.0):
        super().__init__(user, password, base, timeout)


def wait_api(password: str, timeout: float) -> Api:
    """Until admin@internal can sign in (the first boot creates it)."""
    try:
        return wait_signin(Api(ADMIN_USER, password), timeout)
    except EngineApiError as e:
        raise LabError(str(e)) from None


def register(lab: LabLayout, password: str, timeout: float = 300.0, out=None) -> list[str]:
    """The data center, cluster, hosts, shared storage domain and every host's
    BMC as its fence agent, through the API; what exists is left alone."""
    try:
        return _register(lab, wait_api(password, timeout), timeout)
    except EngineApiError as e:
        raise LabError(str(e)) from None


def _register(lab: LabLayout, api: Api, timeout: float) -> list[str]:
    done = []
    if api.find("datacenters", "Default") is None:
        api.call("POST", "/datacenters", {"name": "Default", "local": False})
        done.append("data center Default")
    if api.find("clusters", "Default") is None:
        api.call("POST", "/clusters", {"name": "Default", "data_center": {"name": "Default"}})
        done.append("cluster Default")
    for h in lab.all_hosts():
        if api.find("hosts", h.name) is None:
            api.call("POST", "/hosts", {"name": h.name, "address": h.address, "cluster": {"name": "Default"}})
            done.append(f"host {h.name}")
    _wait_hosts_up(api, lab, timeout)
    if api.find("storagedomains", STORAGE_DOMAIN) is None:
        api.call("POST", "/storagedomains", {
            "name": STORAGE_DOMAIN, "type": "data",
            "storage": {"type": "nfs", "address": NFS_SERVER, "path": NFS_EXPORT},
            "data_center": {"name": "Default"}, "host": {"name": lab.all_hosts()[0].name}})
        done.append(f"storage domain {STORAGE_DOMAIN}")
    for agent in fence_agents(lab):
        host = api.find("hosts", agent["host"])
        agents = api.call("GET", f"/hosts/{host['id']}/fenceagents").get("agent", [])
        if any(a.get("address") == agent["address"] and int(a.get("port") or 0) == agent["port"] for a in agents):
            continue
        api.call("POST", f"/hosts/{host['id']}/fenceagents", {
            "type": "ipmilan", "address": agent["address"], "port": agent["port"], "order": 1,
            "username": agent["username"], "password": BMC_PASSWORD,
            "options": {"option": [{"name": "lanplus", "value": "1"}, {"name": "cipher", "value": "3"}]}})
        done.append(f"fence agent of {agent['host']}")
    _wait_storage_active(api, timeout)
    return done


def _wait_hosts_up(api: Api, lab: LabLayout, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        status = {h["name"]: h.get("status") for h in api.call("GET", "/hosts").get("host", [])}
        if all(status.get(h.name) == "up" for h in lab.all_hosts()):
            return
        time.sleep(1)
    raise LabError(f"the engine did not see every host up within {timeout:.0f} s: {status}")


def _wait_storage_active(api: Api, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    sd = None
    while time.monotonic() < deadline:
        sd = api.find("storagedomains", STORAGE_DOMAIN)
        if sd and sd.get("status") == "active":
            return
        if sd is None:
            break         # the engine's check of the path failed and removed it (see its events)
        time.sleep(1)
    raise LabError(f"storage domain {STORAGE_DOMAIN} did not become usable within {timeout:.0f} s: {sd}")
