"""The pool keeper, part of the engine worker: every monitor interval it
brings each VM pool a step closer to what it should be, by recording the
same jobs a request would (the job runner carries them out):

- an allocated VM that ran and is down again goes back (automatic pools):
  its user's permission goes, then its clean snapshot is restored;
- one storage job at a time per pool, in this order: restore a returned
  VM, take a new VM's clean snapshot, make one more VM (the pool is
  smaller than its size), remove one free VM (larger, or being removed);
- while free VMs remain, `prestarted_vms` of them are kept running.
"""
from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from ..errors import Fault
from ..models import Job, Snapshot, Vm, VmPool
from ..services import pools, snapshots
from ..services import vms as vm_svc

log = logging.getLogger("keel.engine.pools")
CLEAN_SNAPSHOT = "Pool VM's clean state (restored when its user is done)"


class PoolKeeper:
    def __init__(self, ctx, sessionmaker=None):
        """sessionmaker: one whose transactions take the write lock first (SQLite):
        a tick reads, then writes what it decided."""
        self.ctx = ctx.as_user(None)   # the engine itself
        if sessionmaker is not None:
            self.ctx.sessionmaker = sessionmaker
        self.stopping = threading.Event()

    def run_forever(self):
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:   # the database was away, or a bug: the next tick starts clean
                log.exception("pool keeper tick failed")
            self.stopping.wait(self.ctx.config.monitor_interval)

    def tick(self):
        with self.ctx.sessionmaker() as s:
            pool_ids = s.scalars(select(VmPool.id)).all()
        for pool_id in pool_ids:
            with self.ctx.sessionmaker() as s:
                pool = s.get(VmPool, pool_id)
                if pool is None:
                    continue
                self._settle(s, pool)
                s.commit()
                if not pools.storage_busy(s, pool.id):
                    self._storage_step(s, pool)
                    s.commit()
                if pool.removing:
                    if not pools.members(s, pool.id):
                        log.info("VM pool %s removed with its VMs", pool.name)
                        s.delete(pool)
                        s.commit()
                    continue
                if not pools.storage_busy(s, pool.id):
                    self._prestart(s, pool)

    # ---- what needs no storage job ----------------------------------------------------
    def _settle(self, s, pool):
        for m in pools.members(s, pool.id):
            vm = s.get(Vm, m.vm_id)
            if vm is None:
                continue
            job = s.get(Job, m.job_id) if m.job_id else None
            if m.state == "allocated":
                if vm.status in pools.RUNNING and not m.used:
                    m.used = True
                elif m.used and vm.status == "down" and vm.busy_until is None and pool.type == "automatic":
                    if pools.claim(s, m, "allocated", "returning", job_id=None):
                        pools.give_back(self.ctx, s, m, "its user shut it down; its changes are discarded")
            elif m.state == "returning" and job is not None and job.status == "finished" and vm.status == "down":
                pools.claim(s, m, "returning", "free", job_id=None)
                log.info("VM %s is clean and free again in pool %s", vm.name, pool.name)
            elif m.state == "preparing" and vm.status == "down" and (job is None or job.status != "started"):
                snap = s.get(Snapshot, m.base_snapshot_id) if m.base_snapshot_id else None
                if pool.type == "manual" or (snap is not None and snap.status == "ok"):
                    pools.claim(s, m, "preparing", "free", job_id=None)

    # ---- one storage job -----------------------------------------------------------------
    def _storage_step(self, s, pool):
        ms = pools.members(s, pool.id)
        for m in ms:
            if m.state == "returning":
                job = s.get(Job, m.job_id) if m.job_id else None
                if job is None or job.status == "failed":
                    if job is not None:
                        log.warning("VM of pool %s: restoring its clean snapshot failed (%s); trying again",
                                    pool.name, job.fault_detail)
                    return self._restore(s, pool, m)
        for m in ms:
            vm = s.get(Vm, m.vm_id)
            if m.state == "preparing" and pool.type == "automatic" and vm is not None and vm.status == "down" \
                    and m.base_snapshot_id is None:
                return self._snapshot(s, pool, m, vm)
        active = [m for m in ms if m.state != "removing"]
        if not pool.removing and len(active) < pool.size:
            pools.grow_one(self.ctx, s, pool)
            log.info("pool %s: making VM %d of %d", pool.name, len(active) + 1, pool.size)
            return None
        if pool.removing or len(active) > pool.size:
            pools.shrink_one(self.ctx, s, pool)
        return None

    def _snapshot(self, s, pool, m, vm):
        try:
            snap, job = snapshots.create_snapshot(self.ctx, s, vm, CLEAN_SNAPSHOT)
        except Fault as f:
            log.warning("VM %s of pool %s: cannot take its clean snapshot yet: %s", vm.name, pool.name, f.detail)
            return
        m.base_snapshot_id, m.job_id = snap.id, job.id

    def _restore(self, s, pool, m):
        vm = s.get(Vm, m.vm_id)
        snap = s.get(Snapshot, m.base_snapshot_id) if m.base_snapshot_id else None
        if snap is None:
            pools.claim(s, m, "returning", "free")   # nothing to go back to (made before it had one)
            return
        try:
            m.job_id = snapshots.restore_snapshot(self.ctx, s, vm, snap).id
        except Fault as f:
            m.job_id = None   # the VM is still busy (a stop ending): the next tick tries again
            log.info("VM %s: clean snapshot not restored yet: %s", vm.name, f.detail)

    # ---- warm VMs ---------------------------------------------------------------------------
    def _prestart(self, s, pool):
        free = [(m, s.get(Vm, m.vm_id)) for m in pools.members(s, pool.id, "free")]
        running = sum(1 for _m, v in free if v is not None and v.status in pools.RUNNING)
        for _m, vm in free:
            if running >= pool.prestarted_vms:
                return
            if vm is None or vm.status != "down":
                continue
            try:
                vm_svc.request_start(self.ctx, s, vm)
                s.commit()
                running += 1
                log.info("starting VM %s to keep %d VM(s) of pool %s running", vm.name, pool.prestarted_vms,
                         pool.name)
            except Fault as f:
                s.rollback()
                log.info("pool %s: VM %s not started: %s", pool.name, vm.name, f.detail)
