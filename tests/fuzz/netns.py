"""A private network namespace (loopback only) for the calling thread.

The engine under fuzzing is handed host addresses, libvirt URIs and BMC
addresses chosen by a fuzzer. Inside a namespace of its own, with nothing
but `lo`, none of that can reach the machine's real network: a connection
to anything but 127.0.0.0/8 fails with "Network is unreachable", and the
processes and sockets that leak nowhere vanish with the namespace.

The namespace applies to the thread that enters it and to every process
and thread it starts afterwards, so enter it from the main thread, before
starting the engine. Leaving returns the thread to its original namespace;
the private one disappears when its last process exits."""
import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(RuntimeError):
    pass


def _current():
    return os.readlink("/proc/thread-self/ns/net")


class PrivateNetwork:
    def __init__(self):
        self._original_fd = None
        self.name = None

    def __enter__(self):
        self._original_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            os.close(self._original_fd)
            raise NamespaceError(f"cannot create a network namespace: {os.strerror(err)} (needs root)")
        self.name = _current()
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
        return self

    def __exit__(self, *exc):
        self.leave()

    def leave(self):
        if self._original_fd is None:
            return
        if _libc.setns(self._original_fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NamespaceError(f"cannot return to the original network namespace: {os.strerror(err)}")
        os.close(self._original_fd)
        self._original_fd = None

    def inside(self):
        return self.name is not None and _current() == self.name
