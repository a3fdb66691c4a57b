"""The lab's NFS server: the shared storage as an NFS export, as in production.

The hosts' kernel here has no NFS client, so they keep their FUSE view of
the shared directory; the engine VM's kernel has one and mounts the export
at the storage domain's mount point by oVirt's convention
(`DIR/mnt/198.51.100.1:_shared`, keel_common.nfs). On this machine that
path is a symlink to `DIR/shared`, so a disk or lease path the engine hands
a host names the same file on both sides. The server is
nfs-ganesha (userspace, VFS back end) in the root namespace, listening on
the lab bridge's address, NFSv4.1 only (no rpcbind needed).
"""
from __future__ import annotations

import logging
import os
import subprocess
import time

from . import probe, procs
from keel_common.nfs import export_spec

from .layout import NFS_EXPORT, NFS_SERVER, LabError, LabLayout

log = logging.getLogger("keel_lab.nfs")
GANESHA = "/usr/bin/ganesha.nfsd"
NFS_PORT = 2049
EXPORT = export_spec(NFS_SERVER, NFS_EXPORT)


def config_text(lab: LabLayout) -> str:
    # Attr_Expiration_Time = 0: a client reads what another client (a host
    # through its FUSE view) wrote a moment ago; Graceless: no 90 s grace
    # period after a restart; no delegations and numeric owners: the guest
    # runs no ID mapper.
    d = os.path.join(lab.dir, "nfs")
    return f"""# keel-lab: the shared storage exported to the engine VM
NFS_CORE_PARAM {{
    Protocols = 4; NFS_Port = {NFS_PORT}; Bind_addr = {NFS_SERVER};
    Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
}}
NFSv4 {{
    Graceless = true; Delegations = false; Only_Numeric_Owners = true;
    RecoveryBackend = fs; RecoveryRoot = {d}/recovery;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1; Path = {lab.shared}; Pseudo = {NFS_EXPORT};
    Access_Type = RW; Squash = No_Root_Squash; Attr_Expiration_Time = 0;
    SecType = sys; Protocols = 4; Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
"""


def available() -> bool:
    return os.path.exists(GANESHA)


def running(pid: int | None) -> bool:
    return bool(pid) and procs.alive(pid, "ganesha")


def start(lab: LabLayout, pid: int | None, record) -> None:
    """Start the server unless `pid` is it; `record(pid)` stores a new
    server's pid before we wait for it (so `down` finds it whatever happens)."""
    if running(pid):
        return
    if not available():
        raise LabError("nfs-ganesha is not installed (apt-get install nfs-ganesha nfs-ganesha-vfs); "
                       "the engine VM mounts the shared storage over NFS")
    d = os.path.join(lab.dir, "nfs")
    os.makedirs(os.path.join(d, "recovery"), exist_ok=True)
    conf = os.path.join(d, "ganesha.conf")
    with open(conf, "w") as f:
        f.write(config_text(lab))
    logf = os.path.join(d, "ganesha.log")
    p = subprocess.Popen([GANESHA, "-F", "-f", conf, "-L", logf, "-p", os.path.join(d, "ganesha.pid"),
                          "-N", "NIV_EVENT"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    p.returncode = 0   # outlives us
    record(p.pid)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if probe.tcp_open(NFS_SERVER, NFS_PORT, 0.5):
            log.info("NFS server exporting %s as %s (pid %d)", lab.shared, EXPORT, p.pid)
            return
        if not procs.alive(p.pid):
            break
        time.sleep(0.2)
    raise LabError(f"the NFS server did not start; see {logf}")


def stop(pid: int | None) -> None:
    if running(pid):
        procs.kill(pid, marker="ganesha")

