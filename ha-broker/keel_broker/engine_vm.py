"""Read-only view of the engine VM in this host's libvirt (the broker only
looks; the agent is the one that starts and stops it)."""
from __future__ import annotations

import threading

import libvirt

from keel_common import libvirt_states

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda *_: None, None)


def view_of(state: int) -> str:
    """running / paused / shutoff: how the broker reports a domain state
    (a domain shutting down is still running)."""
    if not libvirt_states.qemu_runs(state):
        return "shutoff"
    return "paused" if libvirt_states.vm_status(state) in ("paused", "suspended") else "running"


class EngineVmView:
    def __init__(self, uri: str, name: str):
        self.uri = uri
        self.name = name
        self._conn = None
        self._lock = threading.Lock()

    def _domain(self):
        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.openReadOnly(self.uri)
        try:
            return self._conn.lookupByName(self.name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def state(self) -> str:
        """running / paused / shutoff / absent, or unknown when libvirt is unreachable."""
        with self._lock:
            try:
                dom = self._domain()
                if dom is None:
                    return "absent"
                return view_of(dom.state()[0])
            except libvirt.libvirtError:
                self._conn = None
                return "unknown"

    def cpu_seconds(self) -> float:
        with self._lock:
            try:
                dom = self._domain()
                if dom is None or not dom.isActive():
                    return 0.0
                return dom.info()[4] / 1e9
            except libvirt.libvirtError:
                self._conn = None
                return 0.0
