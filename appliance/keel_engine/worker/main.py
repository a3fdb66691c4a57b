"""The engine worker process: the lease, the host monitor, power management,
the job runner, the VM pool keeper and the cloud-init seed reaper, wired
together."""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from .. import db
from ..models import Host, Job
from ..power.manager import PowerManagement
from ..services import Context, consoles, jobs
from . import executors, lease
from .monitor import Monitor
from .pools import PoolKeeper
from .runner import JobRunner
from .seeds import SeedReaper

log = logging.getLogger("keel.engine.worker")
JOB_POLL = 0.1        # seconds between looks at the job queue
LEASE_RENEW = 5.0


class Worker:
    def __init__(self, config, power: PowerManagement | None = None):
        self.config = config
        self.engine = db.make_engine(config.database_url)
        # every transaction takes the write lock when it begins (SQLite): none is ever
        # open while the worker waits on a host or a BMC, so none holds it for long
        self.sessionmaker = db.make_sessionmaker(self.engine, writes=True)
        self.ctx = Context(config=config, sessionmaker=self.sessionmaker)
        self.power = power or PowerManagement(self.ctx)
        self.ctx.leases = self.power.leases
        self.monitor = Monitor(self.ctx, self.power)
        self.pools = PoolKeeper(self.ctx, db.make_sessionmaker(self.engine, writes=True))
        self.seeds = SeedReaper(self.ctx)
        self.owner = lease.owner_name(f"{id(self):x}")
        self.runner = JobRunner(self.ctx, executors.table(self.power), config.job_threads, self.owner)
        self.stopping = threading.Event()
        self._monitor_thread = None

    def run_forever(self) -> None:
        told = False
        while not lease.take(self.sessionmaker, self.owner):
            if not told:
                log.warning("another engine worker holds the worker lease; waiting until it is stale "
                            "(%.0f s without renewal)", lease.STALE_AFTER)
                told = True
            if self.stopping.wait(LEASE_RENEW):
                return
        log.info("engine worker started (%s): jobs, host monitor every %.1f s, power management",
                 self.owner, self.config.monitor_interval)
        self.start()
        renewed = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    self.runner.poll()
                except Exception:   # the database was away: try again
                    log.exception("job queue poll failed")
                if time.monotonic() - renewed > LEASE_RENEW:
                    if not lease.take(self.sessionmaker, self.owner):
                        log.error("the worker lease was taken by another worker; stopping")
                        break
                    renewed = time.monotonic()
                    self._clear_expired_tickets()
                self.stopping.wait(JOB_POLL)
        finally:
            self.stop()
            lease.release(self.sessionmaker, self.owner)

    def start(self) -> None:
        """Resume what a previous worker left, then start monitoring."""
        self.runner.recover()
        self.power.failover.resume()
        self._resume_evacuations()
        self._monitor_thread = threading.Thread(target=self.monitor.run_forever, daemon=True, name="monitor")
        self._monitor_thread.start()
        self._pools_thread = threading.Thread(target=self.pools.run_forever, daemon=True, name="pools")
        self._pools_thread.start()
        self._seeds_thread = threading.Thread(target=self.seeds.run_forever, daemon=True, name="seeds")
        self._seeds_thread.start()
        watcher = self.power.leases.watcher
        if watcher is not None:
            # hosts' storage leases followed all the time: a dead host's silence is
            # counted from its last renewal, not from when the engine noticed it
            threading.Thread(target=watcher.watch_forever, args=(self.stopping,), daemon=True,
                             name="host-leases").start()

    def _clear_expired_tickets(self) -> None:
        """A console ticket's password leaves the database when it expires,
        read or not (services/consoles.py)."""
        try:
            with self.sessionmaker() as s:
                if consoles.clear_expired(s):
                    s.commit()
        except Exception:   # the database was away: the next round clears them
            log.exception("clearing expired console tickets failed")

    def _resume_evacuations(self) -> None:
        with self.sessionmaker() as s:
            busy = {j.params.get("host_id") for j in s.scalars(
                select(Job).where(Job.kind == jobs.HOST_EVACUATE, Job.status == "started"))}
            for host in s.scalars(select(Host).where(Host.status == "preparing_for_maintenance")):
                if host.id not in busy:
                    jobs.submit(s, jobs.HOST_EVACUATE, {"host_id": host.id},
                                f"Moving host {host.name} to maintenance (resumed)")
            s.commit()

    def stop(self) -> None:
        self.stopping.set()
        self.monitor.stopping.set()
        self.pools.stopping.set()
        self.seeds.stopping.set()
        self.power.stop(timeout=10)
        self.runner.shutdown(wait=False)
        if self._monitor_thread is not None:
            self._monitor_thread.join(30)
        if getattr(self, "_pools_thread", None) is not None:
            self._pools_thread.join(30)
        if getattr(self, "_seeds_thread", None) is not None:
            self._seeds_thread.join(30)
