"""Runs the jobs web workers record: claims each once (a conditional UPDATE,
so two workers never run one job), runs it in a bounded thread pool, and
records how it ended (its result, or the fault the API answers with)."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select, update

from ..errors import Fault
from ..models import Job, utcnow
from ..services import jobs

log = logging.getLogger("keel.engine.jobs")


class JobRunner:
    def __init__(self, ctx, table: dict, threads: int = 8, owner: str | None = None):
        self.ctx = ctx
        self.table = table
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="job")
        self.running: set[str] = set()
        self._lock = threading.Lock()

    def recover(self) -> int:
        """Jobs a previous worker took and never ended: they failed (their VMs'
        claims expire and the monitor reports the real state)."""
        n = 0
        with self.ctx.sessionmaker() as s:
            for job in s.scalars(select(Job).where(Job.status == "started", Job.claimed_by.is_not(None),
                                                   Job.claimed_by != self.owner)):
                jobs.finish(s, job, ok=False, fault=Fault(
                    503, "Operation Failed", f"{job.description}: the engine worker restarted while it ran; "
                    "check the object and retry"))
                log.warning("job %s (%s) failed: the worker that ran it is gone", job.id, job.description)
                n += 1
            s.commit()
        return n

    def poll(self) -> int:
        """Take every waiting job; returns how many were taken."""
        with self.ctx.sessionmaker() as s:
            waiting = s.scalars(select(Job.id).where(Job.status == "started", Job.claimed_by.is_(None),
                                                     Job.kind.is_not(None))
                                .order_by(Job.start_time).limit(32)).all()
        taken = 0
        for job_id in waiting:
            with self.ctx.sessionmaker() as s:
                res = s.execute(update(Job).where(Job.id == job_id, Job.claimed_by.is_(None))
                                .values(claimed_by=self.owner, claimed_at=utcnow())
                                .execution_options(synchronize_session=False))
                s.commit()
            if res.rowcount == 1:
                with self._lock:
                    self.running.add(job_id)
                self.pool.submit(self._run, job_id)
                taken += 1
        return taken

    def _run(self, job_id: str) -> None:
        try:
            self.run_one(job_id)
        finally:
            with self._lock:
                self.running.discard(job_id)

    def run_one(self, job_id: str) -> None:
        with self.ctx.sessionmaker() as s:
            job = s.get(Job, job_id)
            fn = self.table.get(job.kind)
            log.info("job %s started: %s", job.id, job.description)
            try:
                if fn is None:
                    raise Fault(500, "Internal Error", f"this engine worker cannot run jobs of kind {job.kind}")
                result = fn(self.ctx.as_user(job.owner_id), s, job) or {}
                s.flush()
                job = s.get(Job, job_id)
                jobs.finish(s, job, ok=True, result=result)
                s.commit()
                log.info("job %s finished: %s", job.id, job.description)
                return
            except Fault as f:
                fault = f
                log.info("job %s failed: %s: %s", job_id, job.description, f.detail or f.reason)
            except Exception as e:   # a bug, or the database refused: the job fails, the worker goes on
                log.exception("job %s (%s) failed with an internal error", job_id, job.description)
                fault = Fault(500, "Internal Error", f"{type(e).__name__}; see the engine worker's log")
        self._record_failure(job_id, fault)

    def _record_failure(self, job_id: str, fault: Fault) -> None:
        """In a fresh session (the job's may be unusable): a job never stays
        'started' because recording its end failed once."""
        for attempt in range(3):
            try:
                with self.ctx.sessionmaker() as s:
                    job = s.get(Job, job_id)
                    jobs.finish(s, job, ok=False, fault=fault)
                    s.commit()
                    return
            except Exception:
                log.exception("could not record the failure of job %s (attempt %d)", job_id, attempt + 1)
                time.sleep(1)

    def idle(self) -> bool:
        with self._lock:
            return not self.running

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)
