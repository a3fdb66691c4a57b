"""The steps of `hosted-engine --deploy` on the first host.

Each step is idempotent: a re-run after a failure runs them all again and
every step keeps what is already right. Everything a step makes is written
down in the deploy record before it is made (see `record.py`), so that
`--clean-deploy` can undo it.
"""
from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from keel_common.config import MANAGEMENT_NETWORK, PROFILES, parse_host_config, render_host_config
from keel_common.nfs import mount_point, parse_connection

from .runner import Progress, Step, StepFailed
from .record import DeployRecord
from .services import ServiceError, ServiceManager, unit_text

log = logging.getLogger("keel_installer.deploy")

CONFIG_DIR = "/etc/keel"
HOST_CONFIG = os.path.join(CONFIG_DIR, "hosted-engine.conf")
CLUSTER_KEY = os.path.join(CONFIG_DIR, "cluster.key")
PKI_DIR = os.path.join(CONFIG_DIR, "pki")
ENGINE_LEAF = "engine"     # the engine's etcd client certificate, in PKI_DIR
STATE_DIR = "/var/lib/keel"
ETCD_DATA = os.path.join(STATE_DIR, "etcd")
LOCKSPACE = "hosted-engine"
LEASE_NAME = "engine"
ENGINE_DISK, BOOT_DIR, SEED = "engine.qcow2", "engine-boot", "engine-seed.img"
ETCD_UNIT, BROKER_UNIT, AGENT_UNIT = "keel-etcd.service", "keel-ha-broker.service", "keel-ha-agent.service"
ADMIN_USER = "admin@internal"
QEMU_CONF = "/etc/libvirt/qemu.conf"
FIRST_HOST_ID = 1
# the repository's unit files: the installer installs them with this host's paths
UNIT_SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "systemd")
PYTHON_ENV = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "PYTHONUNBUFFERED": "1"}


@dataclass
class Context:
    answers: object            # answers.Answers
    facts: object              # answers.HostFacts
    record: DeployRecord
    services: ServiceManager
    appliance: object | None   # keel_appliance.build.ApplianceImage; None when joining
    host_id: int = FIRST_HOST_ID
    bundle: dict | None = None  # joining: what the deployed host gave (join.py)

    # -- derived paths -----------------------------------------------------
    @property
    def nfs_server(self) -> str:
        return parse_connection(self.answers.storage_connection)[0]

    @property
    def nfs_export(self) -> str:
        return parse_connection(self.answers.storage_connection)[1]

    @property
    def storage(self) -> str:
        return mount_point(self.answers.storage_mount_root, self.nfs_server, self.nfs_export)

    def on_storage(self, *parts: str) -> str:
        return os.path.join(self.storage, *parts)

    @property
    def lockspace_path(self) -> str:
        return self.on_storage(LOCKSPACE + ".lockspace")

    @property
    def lease_path(self) -> str:
        return self.on_storage(LOCKSPACE + ".lease")

    @property
    def engine_address(self) -> str:
        """Where the engine answers: its static address, else its name."""
        a = self.answers.vm_address
        return a.split("/")[0] if a != "dhcp" else self.answers.vm_hostname

    @property
    def engine_url(self) -> str:
        return f"http://{self.engine_address}"

    @property
    def health_url(self) -> str:
        return f"{self.engine_url}/ovirt-engine/services/health"

    @property
    def timing(self):
        return PROFILES[self.answers.timing_profile]


# ------------------------------------------------------------------ helpers

def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise StepFailed(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None


def _last_line(cp: subprocess.CompletedProcess) -> str:
    text = (cp.stderr or cp.stdout or "").strip().splitlines()
    return text[-1] if text else f"exit status {cp.returncode}"


def _sanlock_ids() -> tuple[int, int]:
    try:
        return pwd.getpwnam("sanlock").pw_uid, grp.getgrnam("sanlock").gr_gid
    except KeyError:
        raise StepFailed("there is no 'sanlock' user on this host",
                         "install the sanlock package (Debian: apt install sanlock)") from None


def _write_file(ctx: Context, path: str, text: str, mode: int = 0o644) -> None:
    ctx.record.will_make("file", path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", mode)
    os.replace(path + ".tmp", path)


def is_mount_point(path: str) -> bool:
    """From the mount table, not stat(): a mount whose storage fails must
    still count as mounted (os.path.ismount says False on an I/O error)."""
    try:
        with open("/proc/self/mounts") as f:
            points = {line.split()[1].encode().decode("unicode_escape") for line in f if line.strip()}
    except OSError:
        return os.path.ismount(path)
    return os.path.normpath(path) in points


def _libvirt_domain_active(name: str) -> bool:
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return False
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ------------------------------------------------------------------ 1. pre-flight

def preflight(ctx: Context, p: Progress) -> None:
    a, problems = ctx.answers, []
    if os.geteuid() != 0:
        raise StepFailed("the deploy must run as root", "run it again as root (sudo hosted-engine --deploy)")
    needed = {"sanlock": "sanlock", "etcd": "etcd-server", "qemu-system-x86_64": "qemu-system-x86",
              "mkfs.vfat": "dosfstools", "mcopy": "mtools"}
    if not is_mount_point(ctx.storage):
        needed["mount.nfs"] = "nfs-common"
    missing = sorted({pkg for cmd, pkg in needed.items() if shutil.which(cmd) is None})
    if missing:
        problems.append(f"packages missing: {', '.join(missing)} (apt install {' '.join(missing)})")
    cp = _run(["sanlock", "client", "status"], 10) if shutil.which("sanlock") else None
    if cp is not None and cp.returncode != 0:
        problems.append("the sanlock daemon does not answer (systemctl enable --now sanlock)")
    try:
        import libvirt  # noqa: F401
        libvirt.registerErrorHandler(lambda *_: None, None)
        libvirt.open("qemu:///system").close()
    except ImportError:
        problems.append("python3-libvirt is not installed")
    except Exception as e:  # libvirtError: the daemon is not there
        problems.append(f"libvirtd does not answer at qemu:///system ({str(e).splitlines()[0]}; "
                        "systemctl enable --now libvirtd)")
    try:
        with open(QEMU_CONF) as f:
            if not re.search(r'^\s*lock_manager\s*=\s*"sanlock"', f.read(), re.M):
                problems.append(f'libvirt does not use sanlock: add lock_manager = "sanlock" to {QEMU_CONF} '
                                "and restart libvirtd (the engine VM's lease is a sanlock lease)")
    except OSError:
        problems.append(f"{QEMU_CONF} is missing (is libvirt-daemon-system installed?)")
    if ctx.facts.memory_available_mb < a.vm_memory_mb + 512:
        problems.append(f"memory: the engine VM needs {a.vm_memory_mb} MiB and this host has "
                        f"{ctx.facts.memory_available_mb} MiB available (keep 512 MiB for the host)")
    if not os.path.isdir(f"/sys/class/net/{a.bridge}/bridge"):
        problems.append(f"the bridge {a.bridge} does not exist on this host")
    if a.host_address not in {v.split("/")[0] for v in ctx.facts.addresses.values()}:
        problems.append(f"{a.host_address} is not an address of this host")
    # a resumed deploy's own etcd holds them
    ours = {"kind": "unit", "what": ETCD_UNIT} in ctx.record.made
    for port in () if ours else (2379, 2380):
        with socket.socket() as s:
            try:
                s.bind((a.host_address, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    problems.append(f"port {port} on {a.host_address} is in use (etcd needs it; is another "
                                    "etcd running? systemctl disable --now etcd)")
    if shutil.which("ping") and _run(["ping", "-c", "1", "-W", "2", a.gateway], 10).returncode != 0:
        problems.append(f"the gateway {a.gateway} does not answer ping")
    built = time.mktime(time.strptime(ctx.appliance.built_at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone \
        if ctx.appliance else 0
    if time.time() < built:
        problems.append("this host's clock is behind the engine appliance's build time: certificates "
                        "made now would not be valid yet; set the time (NTP) first")
    if is_mount_point(ctx.storage):
        p.note(f"storage: {ctx.storage} is mounted already")
    else:
        try:
            socket.create_connection((ctx.nfs_server, 2049), timeout=5).close()
        except OSError as e:
            problems.append(f"the NFS server {ctx.nfs_server} does not answer on port 2049 ({e.strerror or e})")
    for line in problems:
        p.note("problem: " + line)
    if problems:
        raise StepFailed(f"{len(problems)} pre-flight check(s) failed (listed above)",
                         "fix them and run hosted-engine --deploy again; nothing was changed")
    p.note(f"root, packages, sanlock, libvirt, {a.vm_memory_mb} MiB of memory, bridge {a.bridge}, "
           f"ports 2379-2380, gateway {a.gateway}, clock: ok")


# ------------------------------------------------------------------ 2. storage

def storage(ctx: Context, p: Progress) -> None:
    a, path = ctx.answers, ctx.storage
    if not is_mount_point(path):
        ctx.record.will_make("mount", path)
        os.makedirs(path, exist_ok=True)
        argv = ["mount", "-t", "nfs"] + (["-o", a.storage_mount_options] if a.storage_mount_options else []) \
            + [a.storage_connection, path]
        p.note("mounting " + " ".join(argv[1:]))
        cp = _run(argv, 90)
        if cp.returncode != 0:
            raise StepFailed(f"cannot mount {a.storage_connection} at {path}: {_last_line(cp)}",
                             f"check that {ctx.nfs_server} exports {ctx.nfs_export} to this host "
                             f"(showmount -e {ctx.nfs_server}) and the mount options")
    uid, gid = _sanlock_ids()
    probe = os.path.join(path, f".keel-deploy-probe.{socket.gethostname()}")
    try:
        with open(probe, "wb") as f:
            f.write(b"keel\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StepFailed(f"{path} is not writable by root: {e.strerror}",
                         f"export {ctx.nfs_export} read-write to this host, without root squashing "
                         "(no_root_squash), or mount it read-write") from None
    try:
        os.chown(probe, uid, gid)
    except OSError as e:
        raise StepFailed(f"files on {path} cannot be given to the sanlock user: {e.strerror}",
                         "the lease files must belong to sanlock; export without root squashing") from None
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
    if ctx.bundle is not None:
        if not os.path.exists(ctx.lockspace_path):
            raise StepFailed(f"{ctx.lockspace_path} is missing: this is not the storage of the cluster "
                             f"{ctx.bundle.get('by')} deployed", "check [storage] connection and mount_root")
        p.note(f"{path}: writable, holds the cluster's lockspace")
        return
    for f in (ctx.lockspace_path, ctx.lease_path, ctx.on_storage(ENGINE_DISK)):
        if os.path.exists(f) and {"kind": "shared-file", "what": f} not in ctx.record.made:
            raise StepFailed(f"the storage already holds a hosted engine ({f} exists)",
                             "use an empty export for a new cluster; add this host to an existing "
                             "cluster with --join, or remove those files if nothing uses them")
    p.note(f"{path}: writable, lease files can belong to sanlock")


# ------------------------------------------------------------------ 3. leases

def _lease_file(ctx: Context, path: str) -> str:
    ctx.record.will_make("shared-file", path)
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.truncate(1024 * 1024)
    os.chown(tmp, *_sanlock_ids())
    return tmp


def leases(ctx: Context, p: Progress) -> None:
    try:
        import sanlock
    except ImportError:
        raise StepFailed("python3-sanlock is not installed", "apt install python3-sanlock") from None
    io_timeout = ctx.timing.io_timeout
    try:
        if not os.path.exists(ctx.lockspace_path):
            tmp = _lease_file(ctx, ctx.lockspace_path)
            sanlock.write_lockspace(LOCKSPACE.encode(), tmp, iotimeout=io_timeout)
            os.rename(tmp, ctx.lockspace_path)
            p.note(f"lockspace {LOCKSPACE} written ({ctx.lockspace_path}, io_timeout {io_timeout} s)")
        if not os.path.exists(ctx.lease_path):
            tmp = _lease_file(ctx, ctx.lease_path)
            sanlock.write_resource(LOCKSPACE.encode(), LEASE_NAME.encode(), [(tmp, 0)])
            os.rename(tmp, ctx.lease_path)
            p.note(f"engine lease written ({ctx.lease_path})")
    except sanlock.SanlockException as e:
        raise StepFailed(f"sanlock cannot write the lease files: {e}",
                         "check that the sanlock daemon runs and can write to the storage") from None


# ------------------------------------------------------------------ 5. engine VM disk + seed
# (after 4: the seed carries the engine's etcd certificate)

def _copy(ctx: Context, src: str, dst: str) -> None:
    ctx.record.will_make("shared-file", dst)
    if os.path.exists(dst) and os.path.getsize(dst) == os.path.getsize(src):
        return
    shutil.copyfile(src, dst + ".new")
    os.replace(dst + ".new", dst)


def engine_disk(ctx: Context, p: Progress) -> None:
    from keel_appliance.seed import DhcpNetwork, NfsMount, SeedConfig, SeedError, StaticNetwork, write_seed
    a, img = ctx.answers, ctx.appliance
    t0 = time.monotonic()
    _copy(ctx, img.disk, ctx.on_storage(ENGINE_DISK))
    ctx.record.will_make("shared-file", ctx.on_storage(BOOT_DIR))
    os.makedirs(ctx.on_storage(BOOT_DIR), exist_ok=True)
    _copy(ctx, img.kernel, ctx.on_storage(BOOT_DIR, "vmlinuz"))
    _copy(ctx, img.initrd, ctx.on_storage(BOOT_DIR, "initrd.img"))
    p.note(f"appliance {img.key} copied to {ctx.storage} ({img.size_bytes / 2**20:.0f} MiB, "
           f"{time.monotonic() - t0:.1f} s)")
    network = DhcpNetwork(mac=a.vm_mac) if a.vm_address == "dhcp" else \
        StaticNetwork(a.vm_address, gateway=a.gateway, mac=a.vm_mac)
    conf = engine_conf(ctx)
    ctx.record.will_make("shared-file", ctx.on_storage(SEED))
    try:
        write_seed(ctx.on_storage(SEED), SeedConfig(
            hostname=a.vm_hostname, admin_password=a.admin_password, network=network, engine_conf=conf,
            storage=NfsMount(export=a.storage_connection, mount_point=ctx.storage),
            etcd_tls=engine_etcd_tls()))
    except SeedError as e:
        raise StepFailed(f"the engine's first-boot settings are refused: {e}",
                         "fix the answer (or the extra engine settings file) it names") from None
    p.note(f"first-boot seed written: {a.vm_hostname}, {a.vm_address}, admin@internal's password, "
           "the engine's etcd certificate")


def engine_etcd_tls():
    """The engine's own etcd client certificate (client use only; the
    hosts' `client` key stays on the hosts) and the CA, for its seed."""
    from keel_appliance.seed import EtcdTls
    from .pki import Pki, PkiError
    pki = Pki(PKI_DIR)
    try:
        cert, key = pki.ensure_leaf(ENGINE_LEAF, server=False, client=True)
    except PkiError as e:
        raise StepFailed(str(e)) from None

    def text(path):
        with open(path) as f:
            return f.read()
    return EtcdTls(ca_cert=text(pki.ca_cert_path), cert=text(cert), key=text(key))


def engine_conf(ctx: Context) -> dict:
    """The engine's settings in its seed: the administrator's extras first,
    then what the deploy decides (where the storage is mounted, the hosts'
    lockspace for HA VM leases and for telling a dead host from a cut one)."""
    from keel_appliance.seed import SeedError, parse_engine_conf_text
    conf: dict = {}
    if ctx.answers.engine_extra_conf:
        try:
            with open(ctx.answers.engine_extra_conf) as f:
                conf = parse_engine_conf_text(f.read())
        except (OSError, SeedError) as e:
            raise StepFailed(f"cannot read {ctx.answers.engine_extra_conf}: {e}") from None
    conf.setdefault("storage", {})["nfs_mount_root"] = ctx.answers.storage_mount_root
    # the engine's management network is the hosts' management bridge, as
    # oVirt's ovirtmgmt is: VMs with a NIC on it are plugged into that bridge
    libvirt = conf.setdefault("libvirt", {})
    mapped = [m for m in libvirt.get("bridge_map", "").split(",") if m.strip()]
    if not any(m.split(":")[0].strip() == MANAGEMENT_NETWORK for m in mapped):
        libvirt["bridge_map"] = ",".join(mapped + [f"{MANAGEMENT_NETWORK}:{ctx.answers.bridge}"])
    power = conf.setdefault("power", {})
    power["lockspace_path"] = ctx.lockspace_path
    power["vm_lease_lockspace"] = LOCKSPACE
    # the hosts' etcd, where the HA agents record the fences of the engine's
    # host: this host's member, then the member on every host the engine knows
    ha = conf.setdefault("ha", {})
    member = etcd_member(ctx)
    ha["etcd_endpoints"] = member.client_url
    ha["etcd_endpoint_template"] = f"https://{{address}}:{member.client_port}"
    # the hosts' timing: when the dashboard shows a host's HA record as stale
    ha["timing_profile"] = ctx.answers.timing_profile
    return conf


# ------------------------------------------------------------------ 4. keys and certificates

def keys(ctx: Context, p: Progress) -> None:
    from keel_common.bmc import ClusterKey
    from .pki import Pki, PkiError
    a = ctx.answers
    if not os.path.exists(CLUSTER_KEY):
        ctx.record.will_make("file", CLUSTER_KEY)
        ClusterKey.create(CLUSTER_KEY)
        p.note(f"cluster key written to {CLUSTER_KEY} (every host holds the same one)")
    from .etcd_member import ensure_client_cert, ensure_member_cert
    ctx.record.will_make("dir", PKI_DIR)
    pki = Pki(PKI_DIR)
    try:
        pki.ensure_ca()
        ensure_member_cert(etcd_member(ctx))
        ensure_client_cert(pki)
    except PkiError as e:
        raise StepFailed(str(e)) from None
    p.note(f"cluster CA and etcd certificates in {PKI_DIR} (CA fingerprint {pki.fingerprint()})")


# ------------------------------------------------------------------ 6. etcd

def etcd_member(ctx: Context):
    from .etcd_member import EtcdMember
    from .pki import Pki
    a = ctx.answers
    return EtcdMember(name=a.host_name, address=a.host_address, data_dir=ETCD_DATA, pki=Pki(PKI_DIR),
                      dns=(a.host_name,))


def etcd_client_config(ctx: Context):
    from .etcd_member import client_config
    m = etcd_member(ctx)
    return client_config(m.pki, [m.client_url])


def etcd(ctx: Context, p: Progress) -> None:
    from . import etcd_member as em
    m = etcd_member(ctx)
    ctx.record.will_make("dir", ETCD_DATA)
    ctx.record.will_make("unit", ETCD_UNIT)
    os.makedirs(ETCD_DATA, mode=0o700, exist_ok=True)
    argv = em.argv(m, {m.name: m.peer_url}, "new", etcd=shutil.which("etcd") or "etcd")
    _start_unit(ctx, ETCD_UNIT, unit_text("Keel cluster store (etcd, TLS)", argv,
                                          after=("network-online.target",), restart="on-failure"))
    cfg = etcd_client_config(ctx)
    last = {"why": ""}

    def ready():
        ok, why = em.healthy(cfg, 2.0)
        last["why"] = why
        if not ok:
            _unit_failed(ctx, ETCD_UNIT)
        return ok
    p.wait(f"etcd to answer at {m.client_url} with TLS", ready, timeout=60,
           todo=f"see the unit's log (journalctl -u {ETCD_UNIT})")
    from .join import JoinError, claim_host_id
    try:
        held = claim_host_id(cfg, ctx.answers.host_name)
    except JoinError as e:
        raise StepFailed(f"cannot record this host's id in etcd: {e}") from None
    if held != FIRST_HOST_ID:
        raise StepFailed(f"etcd says host id {FIRST_HOST_ID} is not {ctx.answers.host_name}'s: this etcd is not new")
    p.note(f"etcd runs with TLS at {m.client_url} (one member; more join with --join)")


def _start_unit(ctx: Context, unit: str, text: str) -> None:
    try:
        ctx.services.write_unit(unit, text)
        ctx.services.enable_start(unit)
    except (ServiceError, OSError) as e:
        raise StepFailed(f"cannot start {unit} with {ctx.services.name}: {e}") from None


def _unit_failed(ctx: Context, unit: str) -> None:
    """A unit that keeps exiting: say so now rather than at the end of the wait."""
    why = ctx.services.failing(unit)
    if why:
        raise StepFailed(f"{unit} keeps stopping: {why}", f"see its log (journalctl -u {unit})")


# ------------------------------------------------------------------ 7. host config

def host_config_text(ctx: Context) -> str:
    a, img = ctx.answers, ctx.appliance
    cfg = etcd_client_config(ctx)
    text = render_host_config({
        "host": {"host_id": ctx.host_id, "hostname": a.host_name, "address": a.host_address,
                 "state_dir": STATE_DIR, "cluster_key_file": CLUSTER_KEY},
        "etcd": {"endpoints": ",".join(cfg.endpoints), "ca_cert": cfg.ca_cert, "cert": cfg.cert, "key": cfg.key},
        "storage": {"shared_path": ctx.storage, "lockspace": LOCKSPACE, "lockspace_path": ctx.lockspace_path,
                    "lease_path": ctx.lease_path, "lease_name": LEASE_NAME},
        "engine": {"vm_name": a.vm_name, "memory_mb": a.vm_memory_mb, "vcpus": a.vm_vcpus,
                   "disk_path": ctx.on_storage(ENGINE_DISK), "disk_format": img.disk_format,
                   "seed_path": ctx.on_storage(SEED), "rng": "true",
                   "kernel": ctx.on_storage(BOOT_DIR, "vmlinuz"), "initrd": ctx.on_storage(BOOT_DIR, "initrd.img"),
                   "cmdline": img.cmdline, "mac": a.vm_mac, "bridge": a.bridge, "health_url": ctx.health_url,
                   "libvirt_uri": "qemu:///system", "domain_type": a.vm_domain_type},
        "network": {"gateway": a.gateway, "management_interface": a.bridge},
        "timing": {"profile": a.timing_profile},
    })
    parse_host_config(text, HOST_CONFIG)     # the daemons will read it: refuse it here if they would
    return text


def host_config(ctx: Context, p: Progress) -> None:
    _write_file(ctx, HOST_CONFIG, host_config_text(ctx), 0o640)
    p.note(f"{HOST_CONFIG} written (host id {ctx.host_id}, profile {ctx.answers.timing_profile})")


# ------------------------------------------------------------------ 8. HA services

def _ha_unit(script: str) -> str:
    """The repository's unit file, with this installation's program path."""
    with open(os.path.join(UNIT_SOURCE_DIR, f"{script}.service")) as f:
        text = f.read()
    exe = shutil.which(script) or os.path.join(os.path.dirname(sys.executable), script)
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={exe}", text, flags=re.M)
    env = "".join(f"Environment={k}={v}\n" for k, v in PYTHON_ENV.items())
    return text.replace("[Service]\n", "[Service]\n" + env, 1)


def ha_services(ctx: Context, p: Progress) -> None:
    from keel_common.brokerclient import BrokerClient, BrokerError
    # the broker joins the lockspace and leaves it joined when it stops
    ctx.record.will_make("lockspace", f"{LOCKSPACE}:{ctx.host_id}:{ctx.lockspace_path}")
    # from now on the agent may run the engine VM here, whichever host deployed it
    ctx.record.will_make("vm", ctx.answers.vm_name)
    for unit in (BROKER_UNIT, AGENT_UNIT):
        ctx.record.will_make("unit", unit)
        _start_unit(ctx, unit, _ha_unit(unit.removesuffix(".service")))
    broker = BrokerClient("/run/keel/broker.sock", timeout=5)

    def published():
        _unit_failed(ctx, BROKER_UNIT)
        try:
            st = broker.call("status")
        except BrokerError:
            return False
        return st["etcd"]["ok"] and str(ctx.host_id) in st["hosts"]
    p.wait("the HA broker to hold its lease and publish this host", published,
           timeout=max(60, 6 * ctx.timing.cycle + 8 * ctx.timing.io_timeout),
           todo=f"see the broker's log (journalctl -u {BROKER_UNIT})")
    p.note("HA broker and agent run; this host's record is in etcd")


# ------------------------------------------------------------------ 9. BMC

def bmc(ctx: Context, p: Progress) -> None:
    import json
    from keel_common.bmc import BmcError, BmcRecord, ClusterKey
    from keel_common.brokerclient import BrokerClient, BrokerError
    a = ctx.answers
    if not a.bmc_address:
        p.note("no BMC: if this host dies holding the engine, the engine comes back after sanlock's lease "
               f"expiry (~{ctx.timing.lease_expiry_s:.0f} s) instead of seconds; add one later with "
               "hosted-engine --set-bmc")
        return
    try:
        rec = BmcRecord(ctx.host_id, a.bmc_address, a.bmc_user, ClusterKey(CLUSTER_KEY).encrypt(a.bmc_password),
                        a.bmc_port)
        BrokerClient("/run/keel/broker.sock", timeout=10).call("set_bmc", record=json.loads(rec.to_json()))
    except (BmcError, BrokerError) as e:
        raise StepFailed(f"cannot store this host's BMC: {e}") from None
    p.note(f"BMC {rec.label} stored for the HA agents (password encrypted with the cluster key)")


# ------------------------------------------------------------------ 10-11. the engine VM

def engine_vm(ctx: Context, p: Progress) -> None:
    ctx.record.will_make("vm", ctx.answers.vm_name)
    p.wait(f"the HA agent to take the engine lease and start {ctx.answers.vm_name}",
           lambda: _libvirt_domain_active(ctx.answers.vm_name),
           timeout=max(90, 12 * ctx.timing.cycle),
           todo=f"see the agent's log (journalctl -u {AGENT_UNIT}) and hosted-engine --vm-status")


def engine_health(ctx: Context, p: Progress) -> None:
    p.wait(f"the engine to answer at {ctx.health_url} (first boot of the appliance)",
           lambda: _http_ok(ctx.health_url), timeout=600,
           todo="watch the engine VM's boot with hosted-engine --console")


# ------------------------------------------------------------------ 12. register

def register(ctx: Context, p: Progress) -> None:
    from .engine_api import Api, EngineApiError, wait_signin
    a = ctx.answers
    api = Api(ADMIN_USER, a.admin_password, ctx.engine_url)
    try:
        wait_signin(api, 120)
        if api.find("datacenters", a.data_center) is None:
            api.call("POST", "/datacenters", {"name": a.data_center, "local": False})
            p.note(f"data center {a.data_center} created")
        if api.find("clusters", a.cluster) is None:
            api.call("POST", "/clusters", {"name": a.cluster, "data_center": {"name": a.data_center}})
            p.note(f"cluster {a.cluster} created")
        if api.find("hosts", a.host_name) is None:
            api.call("POST", "/hosts", {"name": a.host_name, "address": a.host_address,
                                        "cluster": {"name": a.cluster}})
            p.note(f"host {a.host_name} ({a.host_address}) added")
        p.wait(f"the engine to see {a.host_name} up",
               lambda: (api.find("hosts", a.host_name) or {}).get("status") == "up", timeout=120,
               todo="the engine reaches hosts' libvirtd over the network: check it listens")
        if api.find("storagedomains", a.storage_domain) is None:
            api.call("POST", "/storagedomains", {
                "name": a.storage_domain, "type": "data",
                "storage": {"type": "nfs", "address": ctx.nfs_server, "path": ctx.nfs_export},
                "data_center": {"name": a.data_center}, "host": {"name": a.host_name}})
            p.note(f"storage domain {a.storage_domain} ({a.storage_connection}) added")
        p.wait(f"storage domain {a.storage_domain} to be active",
               lambda: (api.find("storagedomains", a.storage_domain) or {}).get("status") == "active",
               timeout=120, todo="see the engine's events (GET /ovirt-engine/api/events)")
        register_fence_agent(api, a, p)
    except EngineApiError as e:
        raise StepFailed(str(e), "the engine runs: fix the cause and re-run hosted-engine --deploy "
                                 "(done parts are kept)") from None


def register_fence_agent(api, a, p: Progress) -> None:
    """The host's BMC as its fence agent in the engine (once)."""
    if not a.bmc_address:
        return
    host = api.find("hosts", a.host_name)
    agents = api.call("GET", f"/hosts/{host['id']}/fenceagents").get("agent", [])
    if any(x.get("address") == a.bmc_address and int(x.get("port") or 0) == a.bmc_port for x in agents):
        return
    options = [{"name": k, "value": v} for k, _, v in
               (o.partition("=") for o in a.bmc_options.split(",") if o.strip())]
    api.call("POST", f"/hosts/{host['id']}/fenceagents", {
        "type": "ipmilan", "address": a.bmc_address, "port": a.bmc_port, "order": 1,
        "username": a.bmc_user, "password": a.bmc_password, "options": {"option": options}})
    p.note(f"BMC {a.bmc_address}:{a.bmc_port} added as {a.host_name}'s fence agent")


STEPS = [Step("Pre-flight checks", preflight), Step("Shared storage", storage),
         Step("Lockspace and engine lease", leases), Step("Cluster key and certificates", keys),
         Step("Engine VM disk and first-boot seed", engine_disk), Step("etcd, first member (TLS)", etcd),
         Step("This host's configuration", host_config), Step("HA broker and agent", ha_services),
         Step("This host's BMC", bmc), Step("Engine VM start", engine_vm),
         Step("Engine health", engine_health), Step("Register the host, storage and BMC", register)]


def bind(ctx: Context, step_list: list[Step] = STEPS) -> list[Step]:
    """The steps with their context bound: what the runner runs."""
    return [Step(s.name, (lambda fn: lambda p: fn(ctx, p))(s.run)) for s in step_list]
