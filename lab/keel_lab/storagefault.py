"""Each host's path to the shared storage, and the switch that cuts it.

Every host sees the shared directory through its own FUSE pass-through
mount (started by the host's init inside the host's mount namespace), the
way a real host sees an NFS export through its own client. `keel-lab
partition HOST --storage` writes the host's fault file; from then on every
I/O of that host's mount hangs (as on an NFS hard mount whose server is
gone) until `heal` removes it. Other hosts keep their storage.

Pass-through details that matter:
- `direct_io` and zero attribute/entry caching, so no host reads another
  host's writes from a private cache (sanlock's delta leases depend on it);
- sanlock opens its leases with O_DIRECT: the flag is accepted and dropped
  on the backing file, which is coherent here because every mount is served
  from the same kernel's page cache of the one backing directory;
- POSIX locks stay local to each mount (as with separate NFS clients), so
  sanlock, not qemu's image lock, is what keeps two engines apart.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import subprocess
import threading
import time

from .layout import HostLayout

log = logging.getLogger("keel_lab.storage")
FAULT_CHECK = 0.1  # seconds between looks at the fault file


def cut(host: HostLayout, mode: str = "hang") -> None:
    if mode not in ("hang", "fail"):
        raise ValueError(mode)
    with open(host.storage_fault_file, "w") as f:
        f.write(mode + "\n")
    log.info("%s storage cut (%s)", host.name, mode)


def heal(host: HostLayout) -> None:
    try:
        os.unlink(host.storage_fault_file)
        log.info("%s storage restored", host.name)
    except FileNotFoundError:
        pass


def is_mounted(mountpoint: str) -> bool:
    """Whether a mount sits at `mountpoint`, without touching it (a stat on
    a cut storage mount would hang the caller)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mountpoint for line in f)


def unmount(mountpoint: str) -> None:
    subprocess.run(["fusermount", "-u", "-z", mountpoint], capture_output=True)


class Fault:
    """The host's storage fault switch, read at most every FAULT_CHECK s."""

    def __init__(self, path: str):
        self.path = path
        self._mode = ""
        self._read_at = 0.0
        self._lock = threading.Lock()

    def mode(self) -> str:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at >= FAULT_CHECK:
                try:
                    with open(self.path) as f:
                        self._mode = f.read().strip() or "hang"
                except FileNotFoundError:
                    self._mode = ""
                self._read_at = now
            return self._mode

    def gate(self) -> None:
        """Called before every I/O: hang while cut in hang mode, EIO in fail mode."""
        from fusepy import FuseOSError
        while True:
            m = self.mode()
            if not m:
                return
            if m == "fail":
                raise FuseOSError(errno.EIO)
            time.sleep(FAULT_CHECK)


def make_operations(root: str, fault: Fault):
    from fusepy import FuseOSError, Operations

    class Passthrough(Operations):
        def _p(self, path: str) -> str:
            return os.path.join(root, path.lstrip("/"))

        def __call__(self, op, path, *args):
            if op not in ("init", "destroy"):  # the mount itself always completes
                fault.gate()
            try:
                return super().__call__(op, path, *args)
            except OSError as e:
                if isinstance(e, FuseOSError):
                    raise
                raise FuseOSError(e.errno or errno.EIO) from None

        def access(self, path, amode):
            if not os.access(self._p(path), amode):
                raise FuseOSError(errno.EACCES)

        def getattr(self, path, fh=None):
            st = os.lstat(self._p(path))
            return {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode",
                                                 "st_mtime", "st_nlink", "st_size", "st_uid")}

        def readdir(self, path, fh):
            return [".", ".."] + os.listdir(self._p(path))

        def statfs(self, path):
            sv = os.statvfs(self._p(path))
            return {k: getattr(sv, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                                                 "f_favail", "f_ffree", "f_files", "f_flag",
                                                 "f_frsize", "f_namemax")}

        def chmod(self, path, mode):
            os.chmod(self._p(path), mode)

        def chown(self, path, uid, gid):
            os.chown(self._p(path), uid, gid)

        def utimens(self, path, times=None):
            os.utime(self._p(path), times)

        def mkdir(self, path, mode):
            os.mkdir(self._p(path), mode)

        def rmdir(self, path):
            os.rmdir(self._p(path))

        def unlink(self, path):
            os.unlink(self._p(path))

        def rename(self, old, new):
            os.rename(self._p(old), self._p(new))

        def truncate(self, path, length, fh=None):
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._p(path), length)

        def open(self, path, flags):
            return os.open(self._p(path), flags & ~os.O_DIRECT)

        def create(self, path, mode, fi=None):
            return os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

        def read(self, path, size, offset, fh):
            return os.pread(fh, size, offset)

        def write(self, path, data, offset, fh):
            return os.pwrite(fh, data, offset)

        def flush(self, path, fh):
            return 0

        def fsync(self, path, datasync, fh):
            os.fdatasync(fh) if datasync else os.fsync(fh)
            return 0

        def release(self, path, fh):
            os.close(fh)
            return 0

    return Passthrough()


def serve(source: str, mountpoint: str, fault_file: str) -> None:
    """Mount `source` at `mountpoint` (foreground, until unmounted or killed)."""
    from fusepy import FUSE
    unmount(mountpoint)  # a stale mount from a previous boot or crash
    os.makedirs(mountpoint, exist_ok=True)
    log.info("serving %s at %s (fault switch %s)", source, mountpoint, fault_file)
    FUSE(make_operations(source, Fault(fault_file)), mountpoint, foreground=True,
         nothreads=False, allow_other=True, direct_io=True, attr_timeout=0, entry_timeout=0,
         negative_timeout=0, fsname="keel-lab-shared")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="keel_lab.storagefault")
    ap.add_argument("--source", required=True)
    ap.add_argument("--mountpoint", required=True)
    ap.add_argument("--fault-file", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(a.source, a.mountpoint, a.fault_file)


if __name__ == "__main__":
    main()
