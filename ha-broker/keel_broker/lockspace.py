"""This host's sanlock host-id lease in the `hosted-engine` lockspace.

Holding it is what lets libvirt's sanlock lock driver acquire the engine VM's
resource lease on this host. Joining is asynchronous (it takes several
io_timeouts); the broker checks each cycle and re-joins after a loss."""
from __future__ import annotations

import logging
import os
import time

from keel_common.config import HostConfig

log = logging.getLogger("keel.broker.lockspace")


def _sanlock(run_dir: str | None):
    # The sanlock client library finds the daemon through SANLOCK_RUN_DIR
    # (one daemon per host in the lab); set it before the first call.
    if run_dir:
        os.environ["SANLOCK_RUN_DIR"] = run_dir
    import sanlock
    return sanlock


class HostIdLease:
    def __init__(self, cfg: HostConfig):
        self.lockspace = cfg.storage.lockspace
        self._ls = cfg.storage.lockspace.encode()  # python3-sanlock takes names as bytes
        self.path = cfg.storage.lockspace_path
        self.host_id = cfg.host_id
        self.io_timeout = cfg.timing.io_timeout
        self.sanlock = _sanlock(cfg.storage.sanlock_run_dir)
        self.held = False
        self.since: float | None = None
        self.error: str | None = None
        self._joining = False

    def _inq(self):
        return self.sanlock.inq_lockspace(self._ls, self.host_id, self.path)

    def check(self) -> bool:
        """Called every cycle: report the lease, (re)join when it is lost."""
        try:
            state = self._inq()
        except self.sanlock.SanlockException as e:
            self._set(False, f"sanlock daemon not answering: {e.strerror or e}")
            return False
        if state is True:
            self._joining = False
            self._set(True, None)
            return True
        if state is None:  # joining or leaving: wait
            return self.held
        if self._joining:
            # A join that ended without the lease failed: try again.
            self._joining = False
            self._set(False, "joining the lockspace failed; retrying")
        self._join()
        return False

    def _join(self) -> None:
        try:
            self.sanlock.add_lockspace(self._ls, self.host_id, self.path,
                                       iotimeout=self.io_timeout, wait=False)
            self._joining = True
            log.info("joining lockspace %s as host id %d (%s)", self.lockspace, self.host_id, self.path)
        except self.sanlock.SanlockException as e:
            if e.errno == 17:  # EEXIST: already joined (e.g. broker restart)
                self._joining = True
                return
            self._set(False, f"cannot join lockspace {self.lockspace}: {e.strerror or e}")

    def _set(self, held: bool, error: str | None) -> None:
        if held != self.held:
            if held:
                log.info("holding host id %d in lockspace %s", self.host_id, self.lockspace)
                self.since = time.time()
            else:
                log.warning("lost host id %d in lockspace %s: %s", self.host_id, self.lockspace, error)
                self.since = None
        elif error and error != self.error:
            log.warning("lockspace %s: %s", self.lockspace, error)
        self.held = held
        self.error = error

    def release(self) -> None:
        try:
            self.sanlock.rem_lockspace(self._ls, self.host_id, self.path, wait=True, unused=True)
            log.info("left lockspace %s", self.lockspace)
        except self.sanlock.SanlockException as e:
            log.info("kept lockspace %s on exit: %s", self.lockspace, e.strerror or e)

    def to_dict(self) -> dict:
        return {"held": self.held, "since": self.since, "error": self.error}


def initialize_storage(cfg: HostConfig, force: bool = False) -> None:
    """Write the lockspace and the engine lease on shared storage (deploy,
    `--reinitialize-lockspace`, the lab). Files are owned by sanlock, which
    opens them itself."""
    sanlock = _sanlock(cfg.storage.sanlock_run_dir)
    import grp
    import pwd
    for path in (cfg.storage.lockspace_path, cfg.storage.lease_path):
        if os.path.exists(path) and not force:
            continue
        with open(path, "wb") as f:
            f.truncate(1024 * 1024 * (2 if path == cfg.storage.lockspace_path else 1))
        try:
            os.chown(path, pwd.getpwnam("sanlock").pw_uid, grp.getgrnam("sanlock").gr_gid)
        except KeyError:
            pass  # no sanlock user: the daemon runs as root here
        os.chmod(path, 0o660)
        if path == cfg.storage.lockspace_path:
            sanlock.write_lockspace(cfg.storage.lockspace.encode(), path, iotimeout=cfg.timing.io_timeout)
        else:
            sanlock.write_resource(cfg.storage.lockspace.encode(), cfg.storage.lease_name.encode(), [(path, 0)])
