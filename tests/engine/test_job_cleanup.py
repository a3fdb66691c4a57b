"""Ended jobs are cleared as oVirt clears them (finished after 10 minutes,
failed or aborted after 60, both settable), with their steps; a running job,
and one a VM pool's member still refers to, stay. The real engine worker
does it (its monitor, at start and every 5 minutes) against a real SQLite
file; the host's libvirt address answers nobody."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from harness.engineapp import engine_app_with_host, running_worker
from harness.wait import wait_for
from keel_engine import config
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, Job, Step, Vm, VmPool, VmPoolMember, utcnow
from keel_engine.services import jobs

ADDRESS = "127.0.1.83"


def _job(s, name, status, ended_minutes_ago):
    ended = None if ended_minutes_ago is None else utcnow() - timedelta(minutes=ended_minutes_ago)
    job = Job(description=name, status=status, end_time=ended)
    s.add(job)
    s.flush()
    s.add(Step(job_id=job.id, number=1, description=f"{name}'s step", status="finished"))
    return job


def _fill(sm, pool_member=True):
    with sm() as s:
        for name, status, ago in (("finished-long-ago", "finished", 11), ("finished-lately", "finished", 9),
                                  ("failed-lately", "failed", 30), ("failed-long-ago", "failed", 61),
                                  ("aborted-long-ago", "aborted", 61), ("running", "started", None)):
            _job(s, name, status, ago)
        if not pool_member:
            s.commit()
            return
        cluster = s.scalars(select(Cluster)).one()
        pool = VmPool(name="p", cluster_id=cluster.id, template_id=BLANK_TEMPLATE_ID)
        vm = Vm(name="p-1", cluster_id=cluster.id, template_id=BLANK_TEMPLATE_ID, memory=2 ** 26)
        s.add_all([pool, vm])
        s.flush()
        s.add(VmPoolMember(vm_id=vm.id, pool_id=pool.id, state="returning",
                           job_id=_job(s, "a-pool-waits-on-it", "finished", 120).id))
        s.commit()


def _left(sm):
    with sm() as s:
        names = sorted(s.scalars(select(Job.description)))
        steps = s.scalar(select(func.count()).select_from(Step))
    return names, steps


KEPT = ["a-pool-waits-on-it", "failed-lately", "finished-lately", "running"]


def test_prune_clears_ended_jobs_past_their_keep_time_with_their_steps(tmp_path):
    cfg, _app, sm, _hx = engine_app_with_host(tmp_path, ADDRESS)
    _fill(sm)
    with sm() as s:
        assert jobs.prune(s, cfg.jobs_keep_finished, cfg.jobs_keep_failed) == 3
        s.commit()
    assert _left(sm) == (KEPT, len(KEPT))
    with sm() as s:   # shorter keep times, as set in the config file
        assert jobs.prune(s, 60, 60) == 2
        s.commit()
    assert _left(sm) == (["a-pool-waits-on-it", "running"], 2)


def test_the_engine_worker_clears_them(tmp_path):
    # (no pool here: the worker's pool keeper would be done with its member's job)
    cfg, _app, sm, _hx = engine_app_with_host(tmp_path, ADDRESS, monitor_interval=0.2)
    _fill(sm, pool_member=False)
    with running_worker(cfg):
        wait_for(lambda: _left(sm)[0] == KEPT[1:], 30, what="the old jobs cleared")
    assert _left(sm) == (KEPT[1:], len(KEPT) - 1)


def test_the_keep_times_are_read_from_the_config_file(tmp_path):
    path = tmp_path / "engine.conf"
    path.write_text("[jobs]\nkeep_finished = 120\nkeep_failed = 7200\n")
    cfg = config.load(str(path))
    assert (cfg.jobs_keep_finished, cfg.jobs_keep_failed) == (120.0, 7200.0)
    path.write_text("[jobs]\nkeep_failed = an hour\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path))
    assert "keep_failed" in str(e.value) and "positive number" in str(e.value)
