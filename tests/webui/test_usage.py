"""The dashboard's charts of cluster use over the last day: samples recorded
through services/usage.py (as the engine worker records them) shown as
inline SVG sparklines with their figures in words, on an in-process engine."""
import re
from datetime import timedelta

from sqlalchemy import select

from harness.engineapp import engine_app_with_host
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, Host, Vm, utcnow
from keel_engine.services import usage

from .test_pages import admin_client

GIB = 1024 ** 3
SVG = re.compile(r'<svg class="spark" role="img" aria-label="([^"]+)"[^>]*>\s*<title>([^<]+)</title>.*?'
                 r'<polyline points="([^"]+)">', re.S)


def _sample(sm, host_id, at, free_gib, vm_cpus):
    """The host (8 CPUs, 16 GiB) with free_gib free and one running VM of vm_cpus, recorded at `at`."""
    with sm() as s:
        h = s.get(Host, host_id)
        h.cpus, h.memory_total, h.memory_free = 8, 16 * GIB, free_gib * GIB
        vm = s.scalar(select(Vm).where(Vm.name == "busy"))
        if vm is None:
            vm = Vm(name="busy", cluster_id=s.scalar(select(Cluster.id)), template_id=BLANK_TEMPLATE_ID,
                    memory=GIB, status="up", host_id=host_id)
            s.add(vm)
        vm.cpus = vm_cpus
        s.flush()
        usage.record(s, at)
        s.commit()


def test_the_dashboard_draws_the_last_day_of_use_with_its_figures_in_words(tmp_path):
    _cfg, app, sm, hx = engine_app_with_host(tmp_path, "127.0.13.98")
    c = admin_client(app)
    page = c.get("/ui/").text
    assert "No history yet" in page and "<svg" not in page
    now = utcnow()
    _sample(sm, hx, now - timedelta(hours=25), 0, 80)     # older than a day: not drawn
    # CPU: 2, 8, 4 vCPUs on 8 CPUs; memory: 12, 4, 8 GiB of 16 used
    for minutes, free, vcpus in ((30, 4, 2), (20, 12, 8), (10, 8, 4)):
        _sample(sm, hx, now - timedelta(minutes=minutes), free, vcpus)
    page = c.get("/ui/").text
    charts = SVG.findall(page)
    assert len(charts) == 2, page
    (cpu_label, cpu_title, cpu_points), (mem_label, mem_title, mem_points) = charts
    assert cpu_label == cpu_title and mem_label == mem_title
    first, last = ((now - timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M:%S") for m in (30, 10))
    assert cpu_label == f"Virtual CPUs of running VMs as a share of host CPUs from {first} to {last} UTC: " \
                        "latest 50 %, lowest 25 %, highest 100 %"
    assert mem_label == f"Memory in use as a share of the hosts&#39; memory from {first} to {last} UTC: " \
                        "latest 50 %, lowest 25 %, highest 75 %"
    ys = [float(p.split(",")[1]) for p in cpu_points.split()]
    assert len(ys) == 3 and ys[1] < ys[2] < ys[0]      # higher use is drawn higher (smaller y)
    # the current values are still there, in words
    assert "Virtual CPUs of running VMs: 4 on 8 host CPUs" in page


def test_overcommitted_cpus_raise_the_chart_and_mark_full_use(tmp_path):
    _cfg, app, sm, hx = engine_app_with_host(tmp_path, "127.0.13.98")
    now = utcnow()
    _sample(sm, hx, now - timedelta(minutes=2), 8, 16)
    _sample(sm, hx, now - timedelta(minutes=1), 8, 4)
    page = admin_client(app).get("/ui/").text
    assert "highest 200 %" in page and page.count('<line class="full"') == 1


def test_a_day_of_samples_a_minute_apart_is_drawn_with_its_peak(tmp_path):
    _cfg, app, sm, hx = engine_app_with_host(tmp_path, "127.0.13.98")
    now = utcnow()
    with sm() as s:
        h = s.get(Host, hx)
        h.cpus, h.memory_total, h.memory_free = 8, 16 * GIB, 8 * GIB
        s.commit()
    with sm() as s:
        for i in range(1440):
            usage.record(s, now - timedelta(minutes=1440 - i, seconds=-30))
        s.commit()
    _sample(sm, hx, now - timedelta(minutes=700, seconds=10), 1, 0)   # one minute of 15 GiB used
    with sm() as s:
        points = usage.series(s)
    assert len(points) == usage.MAX_POINTS + 1
    assert max(p.memory for p in points) > 93 and min(p.memory_low for p in points) == 50
    page = admin_client(app).get("/ui/").text
    mem_label = SVG.findall(page)[1][0]
    assert "lowest 50 %, highest 94 %" in mem_label
    assert len(SVG.findall(page)[1][2].split()) == usage.MAX_POINTS + 1
