"""The files a simulated host boots from: its Keel config (none on bare
hosts: the installer writes it), its libvirt config (bind-mounted over
/etc/libvirt), the directories bind-mounted over the system's paths, the
sanlock shim and the shared storage."""
from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import subprocess
import time

from keel_common.config import PROFILES, render_host_config

from .image import EngineImage
from .layout import (BRIDGE_ADDRESS, ENGINE_VM_MAC, ENGINE_VM_NAME, HEALTH_URL, HOST_BRIDGE, LEASE_NAME,
                     LOCKSPACE, HostLayout, LabError, LabLayout)

log = logging.getLogger("keel_lab.hostfiles")

# Per-host directory -> where the host's init bind-mounts it.
BIND_MOUNTS = {
    "etc-libvirt": "/etc/libvirt",
    "run-libvirt": "/run/libvirt",
    "var-lib-libvirt": "/var/lib/libvirt",
    "log-libvirt": "/var/log/libvirt",
    "cache-libvirt": "/var/cache/libvirt",
    "run-sanlock": "/run/sanlock",
    "etc-keel": "/etc/keel",
    "run-keel": "/run/keel",
    "var-lib-keel": "/var/lib/keel",
    # the host's own units (an installer's), not this machine's
    "etc-systemd": "/etc/systemd/system",
}
# Wiped at every boot, as tmpfs /run is on a real host.
RUNTIME_DIRS = ("run-libvirt", "run-sanlock", "run-keel")

SHIM_SOURCE = os.path.join(os.path.dirname(__file__), "sanlock_shim.c")

QEMU_CONF = """# keel-lab: one system libvirtd per simulated host
stdio_handler = "file"
security_driver = "none"
# Without this every host's libvirtd would share one cgroup tree.
cgroup_controllers = [ ]
user = "root"
group = "root"
lock_manager = "sanlock"
"""

LIBVIRTD_CONF = """# keel-lab: the engine reaches hosts at qemu+tcp://<host>/system
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""


def sanlock_conf(host: HostLayout, io_timeout: int) -> str:
    return f"""# keel-lab: leases are explicit <lease> elements in the engine VM's XML
auto_disk_leases = 0
require_lease_for_disks = 0
host_id = {host.index}
io_timeout = {io_timeout}
user = "sanlock"
group = "sanlock"
"""


def build_shim(lab: LabLayout) -> str:
    """Compile the setrlimit shim the sanlock daemon needs in this sandbox."""
    if os.path.exists(lab.shim) and os.path.getmtime(lab.shim) >= os.path.getmtime(SHIM_SOURCE):
        return lab.shim
    os.makedirs(lab.bin_dir, exist_ok=True)
    cp = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", lab.shim + ".tmp", SHIM_SOURCE, "-ldl"],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        raise LabError(f"cannot compile the sanlock shim (needs gcc): {cp.stderr.strip()[:200]}")
    os.replace(lab.shim + ".tmp", lab.shim)
    return lab.shim


def host_config_text(lab: LabLayout, host: HostLayout, image: EngineImage) -> str:
    shared = host.storage_mount

    def on_storage(path):
        return os.path.join(shared, path) if path and not os.path.isabs(path) else path
    return render_host_config({
        "host": {"host_id": host.index, "hostname": host.name, "address": host.address,
                 "state_dir": host.path("state"), "broker_socket": "/run/keel/broker.sock"},
        "etcd": {"endpoints": ",".join(lab.etcd_endpoints)},
        "storage": {"shared_path": shared, "lockspace": LOCKSPACE,
                    "lockspace_path": os.path.join(shared, LOCKSPACE + ".lockspace"),
                    "lease_path": os.path.join(shared, LOCKSPACE + ".lease"),
                    "lease_name": LEASE_NAME, "sanlock_run_dir": "/run/sanlock"},
        "engine": {"vm_name": ENGINE_VM_NAME, "memory_mb": image.memory_mb, "vcpus": image.vcpus,
                   "disk_path": on_storage(image.disk), "disk_format": image.disk_format,
                   **({"seed_path": on_storage(image.seed)} if image.seed else {}),
                   "rng": "true" if image.rng else "false",
                   "kernel": on_storage(image.kernel), "initrd": on_storage(image.initrd),
                   "cmdline": image.cmdline,
                   "mac": ENGINE_VM_MAC, "bridge": HOST_BRIDGE, "health_url": HEALTH_URL,
                   "libvirt_uri": "qemu:///system", "domain_type": "qemu",
                   "console_log": os.path.join(host.logs, "engine-console.log")},
        "network": {"gateway": BRIDGE_ADDRESS, "management_interface": HOST_BRIDGE},
        "timing": {"profile": lab.profile},
    })


def prepare_host(lab: LabLayout, host: HostLayout, image: EngineImage | None) -> None:
    """Create the host's directories and config; idempotent, keeps its data.
    Without an image (bare hosts) no Keel config or cluster key is written."""
    io_timeout = PROFILES[lab.profile].io_timeout
    for d in list(BIND_MOUNTS) + ["logs", "state", "etcd", "mnt/shared", "bmc",
                                  os.path.join("etc-systemd", "multi-user.target.wants")]:
        os.makedirs(host.path(d), exist_ok=True)
    etc = host.path("etc-libvirt")
    if not os.path.exists(os.path.join(etc, "libvirtd.conf")):
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
        # The default NAT network would need dnsmasq and a free subnet per host.
        shutil.rmtree(os.path.join(etc, "qemu", "networks", "autostart"), ignore_errors=True)
    with open(os.path.join(etc, "qemu.conf"), "w") as f:
        f.write(QEMU_CONF)
    with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
        f.write(LIBVIRTD_CONF)
    with open(os.path.join(etc, "qemu-sanlock.conf"), "w") as f:
        f.write(sanlock_conf(host, io_timeout))
    os.makedirs(host.path("log-libvirt", "qemu"), exist_ok=True)
    if image is None:
        return
    # Every host holds the same cluster key (the installer copies it at join).
    from keel_common.bmc import ClusterKey
    ClusterKey.create(os.path.join(lab.dir, "cluster.key"))
    key_copy = os.path.join(host.config_dir, "cluster.key")
    if not os.path.exists(key_copy):
        os.makedirs(host.config_dir, exist_ok=True)
        shutil.copy2(os.path.join(lab.dir, "cluster.key"), key_copy)
    text = host_config_text(lab, host, image)
    with open(host.config_path + ".tmp", "w") as f:
        f.write(text)
    os.replace(host.config_path + ".tmp", host.config_path)


def _chown_sanlock(path: str) -> None:
    os.chown(path, pwd.getpwnam("sanlock").pw_uid, grp.getgrnam("sanlock").gr_gid)


_INIT_SCRIPT = """
import sys, sanlock
kind, ls, path, iot = sys.argv[1], sys.argv[2].encode(), sys.argv[3], int(sys.argv[4])
if kind == "lockspace":
    sanlock.write_lockspace(ls, path, iotimeout=iot)
else:
    sanlock.write_resource(ls, sys.argv[5].encode(), [(path, 0)])
"""


def _new_lease_file(path: str) -> str:
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.truncate(1024 * 1024)
    _chown_sanlock(tmp)
    return tmp


def link_storage_domain_mount(lab: LabLayout) -> None:
    """The storage domain's mount point (oVirt's convention, where the engine
    names its files) as a symlink to the shared dir on this machine: the hosts
    are namespaces here and see the shared dir itself, and an engine run as a
    process finds its lockspace there too. Idempotent."""
    link = lab.storage_domain_mount
    if os.path.islink(link) and os.readlink(link) == lab.shared:
        return
    if os.path.lexists(link) and not os.path.islink(link):
        raise LabError(f"{link} exists and is not the lab's link to {lab.shared}; remove it and retry")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    tmp = f"{link}.{os.getpid()}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(lab.shared, tmp)
    os.replace(tmp, link)     # a stale link is swapped, never missing for a moment


def prepare_shared_dir(lab: LabLayout) -> None:
    """The shared dir itself, writable by the sanlock daemons (idempotent)."""
    os.makedirs(lab.shared, exist_ok=True)
    os.chmod(lab.shared, 0o775)
    _chown_sanlock(lab.shared)


def prepare_bare_storage(lab: LabLayout) -> None:
    """For bare hosts: the shared dir, empty of Keel's files, and the storage
    domain's mount point as an empty directory on which every host mounts
    its view of the shared dir (inside its own mount namespace)."""
    prepare_shared_dir(lab)
    mp = lab.storage_domain_mount
    if os.path.islink(mp):
        raise LabError(f"{mp} is a link (left by a lab of another kind?); remove it and retry")
    os.makedirs(mp, exist_ok=True)


def prepare_shared_storage(lab: LabLayout, io_timeout: int) -> None:
    """Lockspace, engine lease and engine disk on the shared dir, made once
    before any host boots (as `hosted-engine --deploy` would). sanlock
    writes them through a daemon, so a short-lived one runs for this."""
    prepare_shared_dir(lab)
    link_storage_domain_mount(lab)
    if not os.path.exists(lab.engine_disk):
        with open(lab.engine_disk, "wb") as f:
            f.truncate(64 * 1024 * 1024)
    if os.path.exists(lab.lockspace_file) and os.path.exists(lab.lease_file):
        return
    run_dir = os.path.join(lab.dir, "init-sanlock")
    os.makedirs(run_dir, exist_ok=True)
    env = dict(os.environ, SANLOCK_RUN_DIR=run_dir)
    daemon = subprocess.Popen(
        ["sanlock", "daemon", "-w", "0", "-l", "0", "-D", "-L", "-1", "-S", "-1", "-e", "keel-lab-init"],
        env=dict(env, LD_PRELOAD=build_shim(lab)), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        sock = os.path.join(run_dir, "sanlock.sock")
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise LabError("the sanlock daemon used to initialise storage did not start")
            time.sleep(0.05)
        py = "/usr/bin/python3"  # python3-sanlock is built for the system python
        if not os.path.exists(lab.lockspace_file):
            tmp = _new_lease_file(lab.lockspace_file)
            _run_init(py, env, ["lockspace", LOCKSPACE, tmp, str(io_timeout)])
            os.rename(tmp, lab.lockspace_file)
            log.info("initialised lockspace %s in %s", LOCKSPACE, lab.lockspace_file)
        if not os.path.exists(lab.lease_file):
            tmp = _new_lease_file(lab.lease_file)
            _run_init(py, env, ["resource", LOCKSPACE, tmp, str(io_timeout), LEASE_NAME])
            os.rename(tmp, lab.lease_file)
            log.info("initialised lease %s in %s", LEASE_NAME, lab.lease_file)
    finally:
        subprocess.run(["sanlock", "client", "shutdown", "-f", "1"], env=env,
                       capture_output=True, timeout=10)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_init(py: str, env: dict, args: list[str]) -> None:
    cp = subprocess.run([py, "-c", _INIT_SCRIPT] + args, env=env, capture_output=True,
                        text=True, timeout=60)
    if cp.returncode != 0:
        last = (cp.stderr.strip().splitlines() or ["?"])[-1]
        raise LabError(f"cannot initialise the shared {args[0]}: {last}")
