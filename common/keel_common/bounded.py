"""Calls with a deadline for libraries that have none (or whose own
timeouts do not bound the whole call).

libvirt's and sanlock's Python bindings block until their daemon answers: a
hung libvirtd, or a sanlock daemon stuck on unresponsive storage, would stop
the HA agent's cycle for good, and with it the etcd-loss deadline. The etcd
client's timeout holds per call and per endpoint, not for a read that tries
several members. Each call runs in a worker thread and is waited for at most
`timeout` seconds. A call that overruns keeps its thread; until it returns,
further calls through the same caller fail at once instead of piling up
threads."""
from __future__ import annotations

import threading


class CallTimeout(Exception):
    """str() is one line for the log."""


class BoundedCaller:
    def __init__(self, name: str):
        self.name = name
        self._stuck: threading.Thread | None = None

    def call(self, timeout: float, fn, *args, **kwargs):
        if self._stuck is not None and self._stuck.is_alive():
            raise CallTimeout(f"{self.name} has not answered an earlier call yet")
        result: dict = {}

        def run():
            try:
                result["value"] = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller below
                result["error"] = e

        worker = threading.Thread(target=run, name=f"{self.name}-call", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            self._stuck = worker
            raise CallTimeout(f"{self.name} did not answer within {timeout:g} s")
        if "error" in result:
            raise result["error"]
        return result.get("value")
