"""Monitors against the real machine (sysfs-like files, ICMP, O_DIRECT I/O)."""
import tempfile
import threading
import time

from keel_broker.monitors import (CpuLoadMonitor, EngineHealthMonitor, GatewayMonitor, MemoryMonitor,
                                  MgmtNetworkMonitor, Monitor, Result, StorageMonitor, icmp_ping)


def test_icmp_ping_loopback_answers():
    # Only loopback here: an unanswered probe is covered in the lab, where a
    # partitioned host's gateway really stops answering.
    assert icmp_ping("127.0.3.1", 1.0) is True


def test_gateway_fraction_over_window():
    answers = iter([True, False, True, True, False])
    m = GatewayMonitor("198.51.100.1", 1, 0.1, window=4, ping=lambda a, t: next(answers))
    values = [m.probe().value for _ in range(5)]
    assert values == [1.0, 0.5, 0.67, 0.75, 0.5]


def test_mgmt_network_reads_operstate(tmp_path):
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "operstate").write_text("down\n")
    m = MgmtNetworkMonitor("eth0", 1, 1, sysfs=str(tmp_path))
    assert m.probe().ok is False
    (tmp_path / "eth0" / "operstate").write_text("up\n")
    assert m.probe().ok is True
    assert MgmtNetworkMonitor("nope0", 1, 1, sysfs=str(tmp_path)).probe().detail == "no interface nope0"


def test_memory_compares_with_engine_size(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal: 4000000 kB\nMemFree: 100000 kB\nMemAvailable: 2048000 kB\n")
    assert MemoryMonitor(1024, 1, 1, meminfo=str(f)).probe().value == 2000
    assert MemoryMonitor(4096, 1, 1, meminfo=str(f)).probe().ok is False


def test_cpu_load_excludes_engine_share():
    m = CpuLoadMonitor(lambda: 0.0, 1, 1)
    assert m.probe().detail == "first sample"
    time.sleep(0.2)
    r = m.probe()
    assert 0.0 <= r.value <= 1.0


def test_storage_read_write_with_o_direct():
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:  # tmpfs refuses O_DIRECT
        r = StorageMonitor(d, 3, 1, 5).probe()
        assert r.ok, r.detail


def test_engine_health_combines_libvirt_state_and_http():
    m = EngineHealthMonitor("http://127.0.3.1:9/health", lambda: "running", 1, 0.5)
    r = m.probe()
    assert r.value["vm"] == "up" and r.value["health"] == "bad"
    assert "unreachable" in r.value["reason"]
    m = EngineHealthMonitor("http://127.0.3.1:9/health", lambda: "absent", 1, 0.5)
    assert m.probe().value["vm"] == "down"


def test_a_hung_probe_is_reported_not_waited_for():
    release = threading.Event()

    class Hangs(Monitor):
        name = "hangs"

        def probe(self):
            release.wait(10)
            return Result(ok=True)
    m = Hangs(interval=0.1, timeout=0.3)
    m.start()
    try:
        time.sleep(1.0)
        started = time.monotonic()
        r = m.result()
        assert time.monotonic() - started < 0.1
        assert r.ok is False and r.detail.startswith("probe hung for")
    finally:
        release.set()
        m.stop()
