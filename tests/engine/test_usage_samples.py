"""The engine worker's samples of cluster use (services/usage.py, for the
dashboard's charts): the real worker records one per cluster after its
monitor's poll, deletes those older than a day in the same place, and logs
nothing per sample; a failing database is said once, and its recovery once.
The host's libvirt address answers nobody: no port is bound."""
import logging
import time
from datetime import timedelta

from sqlalchemy import insert, select

from harness.engineapp import engine_app_with_host, running_worker
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, Host, UsageSample, Vm, utcnow
from keel_engine.services import Context, usage
from keel_engine.worker.monitor import Monitor

GIB = 1024 ** 3
ADDRESS = "127.0.13.97"


def _samples(sm):
    with sm() as s:
        return s.scalars(select(UsageSample).order_by(UsageSample.sampled_at)).all()


def _old_sample(cluster_id, hours):
    return {"cluster_id": cluster_id, "sampled_at": utcnow() - timedelta(hours=hours), "hosts_up": 1,
            "host_cpus": 4, "vm_cpus": 1, "memory_total": GIB, "memory_used": 0, "vm_memory": 0}


def test_the_worker_samples_each_cluster_prunes_a_day_old_ones_and_logs_nothing_per_sample(tmp_path, caplog):
    cfg, _app, sm, hx = engine_app_with_host(tmp_path, ADDRESS, monitor_interval=0.2)
    with sm() as s:
        h = s.get(Host, hx)
        h.cpus, h.memory_total, h.memory_free = 16, 64 * GIB, 40 * GIB
        cluster = s.get(Cluster, h.cluster_id)
        # the host's first failed poll changes nothing yet (it takes two): the
        # first sample has the host up with its VM running
        s.add(Vm(name="busy", cluster_id=cluster.id, template_id=BLANK_TEMPLATE_ID, memory=4 * GIB, cpus=6,
                 status="up", host_id=hx))
        s.execute(insert(UsageSample), [_old_sample(cluster.id, 25), _old_sample(cluster.id, 23)])
        s.commit()
    caplog.set_level(logging.INFO)
    with running_worker(cfg) as worker:
        deadline = time.monotonic() + 30
        while not any(r.host_cpus == 16 for r in _samples(sm)):
            assert time.monotonic() < deadline, "no sample from the worker"
            time.sleep(0.1)
        first = _samples(sm)
        # more samples, quickly: none of them is logged
        worker.monitor.sample_every = 0.0
        deadline = time.monotonic() + 30
        while len(_samples(sm)) < len(first) + 3:
            assert time.monotonic() < deadline, "the worker stopped sampling"
            time.sleep(0.1)
    rows = _samples(sm)
    assert all(r.sampled_at.replace(tzinfo=None) > (utcnow() - timedelta(hours=24)).replace(tzinfo=None)
               for r in rows), "a sample older than a day was kept"
    assert any(r.host_cpus == 4 for r in rows), "the 23 h old sample was deleted"
    new = [r for r in rows if r.host_cpus == 16]
    assert new, [(r.host_cpus, r.hosts_up) for r in rows]
    assert (new[0].hosts_up, new[0].vm_cpus, new[0].memory_total, new[0].memory_used, new[0].vm_memory) == \
        (1, 6, 64 * GIB, 24 * GIB, 4 * GIB)
    assert new[0].cluster_id == cluster.id
    said = [r.getMessage() for r in caplog.records if r.name == "keel.engine.monitor" and "use" in r.getMessage()]
    assert said == [], said


def test_a_failing_record_is_said_once_and_its_recovery_once(tmp_path, caplog):
    cfg, _app, sm, hx = engine_app_with_host(tmp_path, ADDRESS)
    monitor = Monitor(Context(cfg, sm))

    def broken():
        raise OSError("disk full")
    monitor.sessionmaker = broken
    caplog.set_level(logging.INFO, logger="keel.engine.monitor")
    for _ in range(3):
        monitor.record_usage()
    monitor.sessionmaker = sm
    monitor.record_usage()
    monitor.record_usage()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "keel.engine.monitor"]
    assert said == [("WARNING", "recording cluster use for the dashboard failed (disk full); trying again every "
                                "60 s"),
                    ("INFO", "recording cluster use for the dashboard works again")]
    assert len(_samples(sm)) == 2


def test_a_removed_cluster_takes_its_samples_with_it(tmp_path):
    _cfg, _app, sm, hx = engine_app_with_host(tmp_path, ADDRESS)
    with sm() as s:
        usage.record(s)
        s.delete(s.get(Host, hx))
        s.flush()
        s.delete(s.scalar(select(Cluster)))
        s.commit()
    assert _samples(sm) == []
