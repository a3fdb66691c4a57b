"""Where everything of a lab lives: addresses, names, paths and the state file.

Everything a lab creates is derived from its state directory and its host
count, and recorded in `<dir>/lab.json` before it is created, so that
`keel-lab down` can remove it even after `keel-lab` itself crashed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from keel_common.nfs import mount_point

DEFAULT_DIR = os.environ.get("KEEL_LAB_DIR", "/var/lib/keel-lab")
MAX_HOSTS = 9            # host N lives at 198.51.100.1N
ETCD_MEMBERS = 3         # the first three hosts carry the etcd cluster

SUBNET_PREFIX = "198.51.100."
BRIDGE = "keelbr0"
BRIDGE_ADDRESS = SUBNET_PREFIX + "1"
ENGINE_VM_ADDRESS = SUBNET_PREFIX + "100"
ENGINE_PROCESS_ADDRESS = SUBNET_PREFIX + "5"
ENGINE_PROCESS_PORT = 8080
ENGINE_NETNS = "lab-engine"
HEALTH_URL = f"http://{ENGINE_VM_ADDRESS}/ovirt-engine/services/health"
BMC_BASE_PORT = 6230     # host N's BMC answers on BRIDGE_ADDRESS:6230+N
BMC_USER = "admin"
BMC_PASSWORD = "keel-lab"
ENGINE_VM_NAME = "HostedEngine"
ENGINE_VM_MAC = "52:54:00:6b:ee:01"
HOST_BRIDGE = "br0"      # each host's management bridge (carries its address)
# how `keel-lab up --engine` runs the engine: inside the engine VM, as a
# process beside a stand-in VM, not at all (a stand-in VM), or not yet:
# `bare` hosts without Keel, for `hosted-engine --deploy`; or `installed`:
# bare hosts, then Keel installed on them by `hosted-engine --deploy` and joins
ENGINE_MODES = ("appliance", "process", "none", "bare", "installed")
LOCKSPACE = "hosted-engine"
# the lab's NFS server (nfs.py) exports the shared dir as NFS_SERVER:NFS_EXPORT
NFS_SERVER = BRIDGE_ADDRESS
NFS_EXPORT = "/shared"
LEASE_NAME = "engine"


class LabError(Exception):
    """A problem the user can act on; str() is the one-line message."""


@dataclass(frozen=True)
class HostLayout:
    lab_dir: str
    index: int           # 1-based; also the sanlock host id

    @property
    def name(self) -> str:
        return f"host{self.index}"

    @property
    def netns(self) -> str:
        return f"lab-h{self.index}"

    @property
    def outer_veth(self) -> str:
        return f"lab-h{self.index}-o"   # the root namespace's end, on the lab bridge

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}{10 + self.index}"

    @property
    def bmc_port(self) -> int:
        return BMC_BASE_PORT + self.index

    @property
    def etcd_member(self) -> bool:
        return self.index <= ETCD_MEMBERS

    @property
    def root(self) -> str:
        return os.path.join(self.lab_dir, "hosts", self.name)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config_dir(self) -> str:      # bind-mounted over /etc/keel inside the host
        return self.path("etc-keel")

    @property
    def config_path(self) -> str:
        return os.path.join(self.config_dir, "hosted-engine.conf")

    @property
    def logs(self) -> str:
        return self.path("logs")

    @property
    def sanlock_run_dir(self) -> str:  # bind-mounted over /run/sanlock
        return self.path("run-sanlock")

    @property
    def libvirt_socket(self) -> str:
        return self.path("run-libvirt", "libvirt-sock")

    @property
    def libvirt_uri(self) -> str:
        return f"qemu+unix:///system?socket={self.libvirt_socket}"

    @property
    def libvirt_tcp_uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def etcd_client_url(self) -> str:
        return f"http://{self.address}:2379"

    @property
    def etcd_peer_url(self) -> str:
        return f"http://{self.address}:2380"

    @property
    def storage_mount(self) -> str:
        """The host's view of the shared storage (mounted inside the host only;
        on bare hosts it is at the storage domain's mount point instead, see
        LabLayout.storage_view)."""
        return self.path("mnt", "shared")

    @property
    def units_file(self) -> str:    # /run/keel/lab-units.json inside the host
        return self.path("run-keel", "lab-units.json")

    @property
    def daemons_file(self) -> str:  # written by the host's init
        return self.path("daemons.json")

    @property
    def boot_file(self) -> str:     # pids of the running boot, written by the lab
        return self.path("boot.json")

    @property
    def storage_fault_file(self) -> str:
        return self.path("storage-fault")

    @property
    def bmc_dir(self) -> str:
        return self.path("bmc")

    @property
    def bmc_lie_file(self) -> str:    # present: the BMC lies (`keel-lab bmc HOST lie`)
        return self.path("bmc-lies")


@dataclass(frozen=True)
class LabLayout:
    dir: str
    hosts: int
    profile: str = "fast"
    engine_mode: str = "appliance"

    @classmethod
    def from_state(cls, lab_dir: str, state: dict) -> "LabLayout":
        # labs recorded before the engine modes existed ran the engine as a process
        return cls(lab_dir, int(state["hosts"]), state.get("profile", "fast"),
                   state.get("engine_mode", "process"))

    @property
    def bare(self) -> bool:
        """Hosts without Keel of the lab's: `hosted-engine --deploy` installs it."""
        return self.engine_mode in ("bare", "installed")

    def storage_view(self, host: "HostLayout") -> str:
        """Where `host` has its view of the shared storage, inside its own
        mount namespace: on bare hosts the NFS mount point the installer
        computes (nothing is mounted there outside the hosts), else the
        host's own directory."""
        return self.storage_domain_mount if self.bare else host.storage_mount

    @property
    def state_file(self) -> str:
        return os.path.join(self.dir, "lab.json")

    @property
    def shared(self) -> str:
        return os.path.join(self.dir, "shared")

    @property
    def lockspace_file(self) -> str:
        return os.path.join(self.shared, LOCKSPACE + ".lockspace")

    @property
    def nfs_mount_root(self) -> str:
        """The engine's [storage] nfs_mount_root in the lab (oVirt's is /rhev/data-center/mnt)."""
        return os.path.join(self.dir, "mnt")

    @property
    def storage_domain_mount(self) -> str:
        """Where the engine and every host have the storage domain's export, by
        oVirt's convention (DIR/mnt/198.51.100.1:_shared). On this machine it is
        a symlink to the shared dir (the hosts share its file system), except
        with bare hosts: there it is an empty directory, and every host mounts
        its view of the shared dir on it; the engine VM mounts the export there."""
        return mount_point(self.nfs_mount_root, NFS_SERVER, NFS_EXPORT)

    @property
    def storage_domain_lockspace(self) -> str:
        """The hosts' lockspace seen through the storage domain's mount point
        (inside the engine VM only the mount point exists)."""
        return os.path.join(self.storage_domain_mount, LOCKSPACE + ".lockspace")

    @property
    def lease_file(self) -> str:
        return os.path.join(self.shared, LOCKSPACE + ".lease")

    @property
    def engine_disk(self) -> str:
        return os.path.join(self.shared, "engine.img")

    @property
    def deploy_dir(self) -> str:
        """The answer file and the files it names, for `hosted-engine --deploy` (bare hosts)."""
        return os.path.join(self.dir, "deploy")

    @property
    def observer_dir(self) -> str:
        return os.path.join(self.dir, "observer")

    @property
    def observer_events(self) -> str:
        return os.path.join(self.observer_dir, "events.jsonl")

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.dir, "bin")

    @property
    def shim(self) -> str:
        return os.path.join(self.bin_dir, "sanlock-setrlimit-shim.so")

    def host(self, name_or_index: str | int) -> HostLayout:
        if isinstance(name_or_index, int):
            idx = name_or_index
        else:
            s = str(name_or_index)
            digits = s[4:] if s.startswith("host") else (s[5:] if s.startswith("lab-h") else "")
            if not digits.isdigit():
                raise LabError(f"unknown host {s!r}; expected one of: "
                               + ", ".join(h.name for h in self.all_hosts()))
            idx = int(digits)
        if not 1 <= idx <= self.hosts:
            raise LabError(f"unknown host {name_or_index!r}; expected one of: "
                           + ", ".join(h.name for h in self.all_hosts()))
        return HostLayout(self.dir, idx)

    def all_hosts(self) -> list[HostLayout]:
        return [HostLayout(self.dir, i) for i in range(1, self.hosts + 1)]

    @property
    def etcd_hosts(self) -> list[HostLayout]:
        return [h for h in self.all_hosts() if h.etcd_member]

    @property
    def etcd_endpoints(self) -> list[str]:
        return [h.etcd_client_url for h in self.etcd_hosts]


def load_state(lab_dir: str) -> dict | None:
    path = os.path.join(lab_dir, "lab.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LabError(f"{path}: unreadable lab state ({e.__class__.__name__}); "
                       "run `keel-lab down` to clean up") from None


def save_state(lab_dir: str, state: dict) -> None:
    os.makedirs(lab_dir, exist_ok=True)
    path = os.path.join(lab_dir, "lab.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def layout_from_state(lab_dir: str) -> LabLayout:
    state = load_state(lab_dir)
    if state is None:
        raise LabError(f"no lab in {lab_dir}; run `keel-lab up --dir {lab_dir}` first")
    return LabLayout.from_state(lab_dir, state)


def read_json(path: str, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_private(path: str, text: str) -> str:
    """A file only root reads (passwords, configs holding them); returns the path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def write_json(path: str, data) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
