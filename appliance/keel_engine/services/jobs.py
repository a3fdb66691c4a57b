"""Jobs (oVirt's): a long operation is recorded by the request that asks for
it, carried out by the engine worker (keel_engine.worker), and visible with
its steps while it runs. A web worker never does the long part itself: it
submits, commits, and either answers at once (async) or waits for the end.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..errors import Fault
from ..models import Job, Step, VmPoolMember, utcnow

# What the engine worker knows how to run; keel_engine/worker/executors.py
# maps each kind to the service function that does the work.
HOST_ADD = "host.add"
HOST_ACTIVATE = "host.activate"
HOST_EVACUATE = "host.evacuate"
HOST_FENCE = "host.fence"
FENCE_AGENT_TEST = "host.fence_agent_test"
STORAGE_DOMAIN_ADD = "storage_domain.add"
VM_CREATE_DISKS = "vm.create_disks"
VM_REMOVE = "vm.remove"
VM_START = "vm.start"
VM_STOP = "vm.stop"
VM_SHUTDOWN = "vm.shutdown"
VM_REBOOT = "vm.reboot"
VM_MIGRATE = "vm.migrate"
VM_CONSOLE_TICKET = "vm.console_ticket"
# a NIC or disk plugged into or out of a running VM (services/hotplug.py)
VM_NIC_PLUG = "vm.nic_plug"
VM_DISK_PLUG = "vm.disk_plug"
DISK_CREATE = "disk.create"
DISK_REMOVE = "disk.remove"
DISK_RESIZE = "disk.resize"
SNAPSHOT_CREATE = "snapshot.create"
SNAPSHOT_RESTORE = "snapshot.restore"
SNAPSHOT_PREVIEW = "snapshot.preview"
SNAPSHOT_COMMIT = "snapshot.commit"
SNAPSHOT_UNDO = "snapshot.undo"
TEMPLATE_CREATE = "template.create"
TEMPLATE_REMOVE = "template.remove"
# ISO images and the CD-ROM (services/isos.py, cdroms.py); a VM from a snapshot (vm_from_snapshot.py)
STORAGE_DOMAIN_FILES = "storage_domain.files"
VM_CHANGE_CD = "vm.change_cd"
VM_READ_CD = "vm.read_cd"
VM_FROM_SNAPSHOT = "vm.from_snapshot"

DONE = ("finished", "failed", "aborted")


def submit(s, kind: str, params: dict, description: str, owner_id: str | None = None) -> Job:
    """Record a job for the worker; it runs once the caller commits."""
    job = Job(kind=kind, params=params, result={}, description=description, owner_id=owner_id)
    s.add(job)
    s.flush()
    return job


def record(s, description: str, owner_id: str | None = None) -> Job:
    """A job for work the caller does itself (in the worker)."""
    job = Job(kind=None, params={}, result={}, description=description, owner_id=owner_id,
              claimed_by="inline", claimed_at=utcnow())
    s.add(job)
    s.flush()
    return job


def step(s, job: Job, description: str, type: str = "executing") -> Step:
    """Start the job's next step (ending the one before)."""
    end_steps(s, job, "finished")
    number = (s.scalar(select(func.max(Step.number)).where(Step.job_id == job.id)) or 0) + 1
    st = Step(job_id=job.id, number=number, type=type, description=description)
    s.add(st)
    job.last_updated = utcnow()
    s.flush()
    return st


def end_steps(s, job: Job, status: str) -> None:
    for st in s.scalars(select(Step).where(Step.job_id == job.id, Step.status == "started")):
        st.status, st.end_time = status, utcnow()


def finish(s, job: Job, ok: bool = True, result: dict | None = None, fault: Fault | None = None) -> None:
    end_steps(s, job, "finished" if ok else "failed")
    job.status = "finished" if ok else "failed"
    job.end_time = job.last_updated = utcnow()
    if result:
        job.result = dict(result)
    if fault is not None:
        job.fault_status, job.fault_reason, job.fault_detail = fault.status, fault.reason, fault.detail


def fault_of(job: Job) -> Fault:
    return Fault(job.fault_status or 409, job.fault_reason or "Operation Failed",
                 job.fault_detail or f"{job.description}: failed")


def wait(engine, job_id: str, timeout: float) -> Job:
    """Poll the job until it ends or ``timeout`` passes; returns its last row.
    Polling (not a thread, not a socket) keeps web workers simple: a read of
    one row by primary key is cheap on SQLite and PostgreSQL. Plain sessions
    on the engine: a poll only reads, it never takes a write lock."""
    end = time.monotonic() + timeout
    delay = 0.02
    while True:
        with Session(engine) as s:
            job = s.get(Job, job_id)
            if job is None or job.status in DONE or time.monotonic() >= end:
                if job is not None:
                    s.expunge(job)
                return job
        time.sleep(min(delay, max(0.0, end - time.monotonic())))
        delay = min(delay * 2, 0.25)


def run_here(ctx, s, job: Job, fn) -> dict:
    """Run a job in this process instead of the worker's (a command-line tool
    on a host, which may talk to libvirt): the same function, the same record."""
    job.claimed_by, job.claimed_at = "inline", utcnow()
    s.commit()
    try:
        result = fn(ctx, s, job) or {}
    except Fault as f:
        s.rollback()
        job = s.get(Job, job.id)
        finish(s, job, ok=False, fault=f)
        s.commit()
        raise
    finish(s, job, ok=True, result=result)
    s.commit()
    return result


@contextmanager
def undo_on_failure(s, model, ident, undo):
    """A job step that may fail: on a Fault (or any error: a raw libvirt one,
    say), roll back what it had not committed, then `undo(session, row)` on a
    fresh copy of the row (if it still exists), commit that, and let the error
    go on to the job's record."""
    try:
        yield
    except Exception:
        s.rollback()
        row = s.get(model, ident)
        if row is not None:
            undo(s, row)
            s.commit()
        raise


def delete_row(s, row):
    s.delete(row)


def vm_down_again(s, vm):
    """A VM a job had claimed (image_locked, ...) is down and free again."""
    vm.status, vm.busy_until = "down", None


def prune(s, keep_finished: float, keep_failed: float, now: datetime | None = None) -> int:
    """oVirt's job cleanup: an ended job marked auto_cleared goes once it ended
    more than `keep_finished` (or, failed or aborted, `keep_failed`) seconds
    ago; one a VM pool's member still refers to stays (the pool keeper reads
    how it ended). Its steps go with it. Returns how many went."""
    now = now or utcnow()
    in_use = select(VmPoolMember.job_id).where(VmPoolMember.job_id.is_not(None))
    old = ((Job.status == "finished") & (Job.end_time < now - timedelta(seconds=keep_finished))) | \
        (Job.status.in_(("failed", "aborted")) & (Job.end_time < now - timedelta(seconds=keep_failed)))
    res = s.execute(delete(Job).where(Job.auto_cleared.is_(True), Job.end_time.is_not(None), old,
                                      Job.id.not_in(in_use))
                    .execution_options(synchronize_session=False))
    return res.rowcount or 0
