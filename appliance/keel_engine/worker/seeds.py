"""The seed reaper, part of the engine worker: every monitor interval it
deletes the cloud-init seed of each VM that no longer runs
(services/vm_init.py). A VM's end is noticed in many places (a stop, a
shutdown's deadline, the monitor finding the guest powered off, a start
that failed, a worker that died mid-start); all of them leave the VM down
with its seed recorded, so looking at that state is the one place that sees
them all. It has its own thread: deleting a volume may wait for its storage
domain's pool behind a long copy, and the monitor must not."""
from __future__ import annotations

import logging
import threading

from ..services import vm_init

log = logging.getLogger("keel.engine.cloud_init")


class SeedReaper:
    def __init__(self, ctx):
        self.ctx = ctx.as_user(None)   # the engine itself
        self.failing: set[str] = set()
        self.stopping = threading.Event()

    def run_forever(self):
        while not self.stopping.is_set():
            try:
                vm_init.sweep(self.ctx, self.failing)
            except Exception:   # the database was away, or a bug: the next round starts clean
                log.exception("seed reaper round failed")
            self.stopping.wait(self.ctx.config.monitor_interval)
