"""The broker's monitors. Each runs on its own cadence in its own thread and
keeps its last result with a timestamp, so a probe that hangs (dead storage,
unanswered HTTP) shows up as a stale or failed result instead of blocking
anyone who asks."""
from __future__ import annotations

import logging
import mmap
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("keel.broker.monitors")


@dataclass
class Result:
    ok: bool
    value: Any = None
    detail: str = ""
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "value": self.value, "detail": self.detail, "ts": self.ts}


class Monitor:
    """Runs `probe()` every `interval` seconds in a daemon thread. A probe
    running longer than `timeout` is reported as failed; a new probe starts
    only after the stuck one returns (no thread pile-up on dead storage)."""

    name = "monitor"

    def __init__(self, interval: float, timeout: float):
        self.interval = interval
        self.timeout = timeout
        self._result = Result(ok=False, detail="not measured yet", ts=0.0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._probe_started: float | None = None
        self._last_ok: bool | None = None

    def probe(self) -> Result:  # pragma: no cover - overridden
        raise NotImplementedError

    def result(self) -> Result:
        with self._lock:
            started = self._probe_started
            res = self._result
        if started is not None and time.time() - started > self.timeout:
            return Result(ok=False, value=res.value,
                          detail=f"probe hung for {time.time() - started:.0f} s")
        return res

    def _run_probe(self) -> None:
        with self._lock:
            self._probe_started = time.time()
        try:
            res = self.probe()
        except Exception as e:  # a monitor must never kill the broker
            res = Result(ok=False, detail=f"{e.__class__.__name__}: {e}")
        with self._lock:
            self._result = res
            self._probe_started = None
        if res.ok != self._last_ok:
            level = logging.INFO if res.ok else logging.WARNING
            log.log(level, "monitor %s is now %s%s", self.name, "ok" if res.ok else "failing",
                    f": {res.detail}" if res.detail else "")
            self._last_ok = res.ok

    def _loop(self) -> None:
        while not self._stop.is_set():
            worker = threading.Thread(target=self._run_probe, name=f"probe-{self.name}", daemon=True)
            worker.start()
            worker.join()  # result() reports a hang meanwhile
            self._stop.wait(self.interval)

    def start(self) -> None:
        threading.Thread(target=self._loop, name=f"monitor-{self.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def icmp_ping(address: str, timeout: float) -> bool:
    """One ICMP echo with a raw socket (the broker runs as root)."""
    ident = os.getpid() & 0xFFFF
    seq = int(time.time() * 1000) & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    payload = b"keel-gateway-probe"
    packet = struct.pack("!BBHHH", 8, 0, _icmp_checksum(header + payload), ident, seq) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            s.sendto(packet, (address, 0))
        except OSError:
            return False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            s.settimeout(remaining)
            try:
                data, (src, _) = s.recvfrom(1024)
            except (socket.timeout, OSError):
                return False
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if src == address and typ == 0 and rid == ident and rseq == seq:
                return True


class GatewayMonitor(Monitor):
    """Reachability of the default gateway: the fraction of the last probes
    answered (a host that lost its uplink should not run the engine)."""
    name = "gateway"

    def __init__(self, address: str, interval: float, timeout: float, window: int = 5,
                 ping: Callable[[str, float], bool] = icmp_ping):
        super().__init__(interval, timeout * 2 + 1)
        self.address = address
        self.ping_timeout = timeout
        self.window: list[bool] = []
        self.size = window
        self.ping = ping

    def probe(self) -> Result:
        self.window = (self.window + [self.ping(self.address, self.ping_timeout)])[-self.size:]
        frac = sum(self.window) / len(self.window)
        return Result(ok=frac >= 0.5, value=round(frac, 2),
                      detail=f"{sum(self.window)}/{len(self.window)} probes of {self.address} answered")


class MgmtNetworkMonitor(Monitor):
    name = "mgmt_network"

    def __init__(self, interface: str, interval: float, timeout: float, sysfs: str = "/sys/class/net"):
        super().__init__(interval, timeout)
        self.interface = interface
        self.sysfs = sysfs

    def probe(self) -> Result:
        base = os.path.join(self.sysfs, self.interface)
        try:
            with open(os.path.join(base, "operstate")) as f:
                state = f.read().strip()
        except OSError:
            return Result(ok=False, value="missing", detail=f"no interface {self.interface}")
        # Bridges and veths report "up"; some virtual devices report "unknown"
        # while carrying traffic, so check the carrier for those.
        if state == "unknown":
            try:
                with open(os.path.join(base, "carrier")) as f:
                    state = "up" if f.read().strip() == "1" else "down"
            except OSError:
                state = "down"
        return Result(ok=state == "up", value=state, detail=f"{self.interface} is {state}")


class MemoryMonitor(Monitor):
    """Free memory (MemAvailable) in MiB; the score compares it with the engine VM's size."""
    name = "memory"

    def __init__(self, needed_mb: int, interval: float, timeout: float, meminfo: str = "/proc/meminfo"):
        super().__init__(interval, timeout)
        self.needed_mb = needed_mb
        self.meminfo = meminfo

    def probe(self) -> Result:
        with open(self.meminfo) as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f if line.count(" ") >= 1}
        free = info.get("MemAvailable", info.get("MemFree", 0)) // 1024
        return Result(ok=free >= self.needed_mb, value=free,
                      detail=f"{free} MiB available, engine needs {self.needed_mb} MiB")


def _cpu_jiffies(stat: str = "/proc/stat") -> tuple[int, int]:
    with open(stat) as f:
        fields_ = [int(x) for x in f.readline().split()[1:]]
    idle = fields_[3] + (fields_[4] if len(fields_) > 4 else 0)
    return sum(fields_), idle


class CpuLoadMonitor(Monitor):
    """CPU load of the host without the engine VM's own share, 0..1, so the
    host running the engine is not penalised for the engine itself."""
    name = "cpu_load"

    def __init__(self, engine_cpu_seconds: Callable[[], float], interval: float, timeout: float):
        super().__init__(interval, timeout)
        self.engine_cpu_seconds = engine_cpu_seconds
        self.prev: tuple[int, int, float] | None = None
        self.hz = os.sysconf("SC_CLK_TCK")
        self.ncpu = os.cpu_count() or 1

    def probe(self) -> Result:
        total, idle = _cpu_jiffies()
        engine = self.engine_cpu_seconds()
        prev, self.prev = self.prev, (total, idle, engine)
        if prev is None:
            return Result(ok=True, value=0.0, detail="first sample")
        dt, di, de = total - prev[0], idle - prev[1], max(0.0, engine - prev[2])
        if dt <= 0:
            return Result(ok=True, value=0.0, detail="no time elapsed")
        busy = max(0.0, (dt - di) - de * self.hz)
        load = min(1.0, busy / dt)
        return Result(ok=True, value=round(load, 3), detail=f"{load:.0%} busy without the engine VM")


class StorageMonitor(Monitor):
    """Shared storage readable and writable with O_DIRECT (as sanlock does
    it): writes and reads back one 4 KiB block in a per-host file."""
    name = "storage"

    def __init__(self, shared_path: str, host_id: int, interval: float, timeout: float):
        super().__init__(interval, timeout)
        self.path = os.path.join(shared_path, ".keel-storage-check", f"host{host_id}")

    def probe(self) -> Result:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
        stamp = f"{time.time():.6f}".encode()
        buf.write(stamp.ljust(4096, b"\0"))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o644)
        try:
            os.pwritev(fd, [buf], 0)
            back = mmap.mmap(-1, 4096)
            os.preadv(fd, [back], 0)
        finally:
            os.close(fd)
        if back[:len(stamp)] != stamp:
            return Result(ok=False, detail="read back differs from what was written")
        return Result(ok=True, detail="read/write with O_DIRECT ok")


class EngineHealthMonitor(Monitor):
    """The engine as seen from this host: the libvirt state of the engine VM
    here, plus the engine's health URL (answered from wherever it runs)."""
    name = "engine_health"

    def __init__(self, health_url: str, vm_state: Callable[[], str], interval: float, timeout: float):
        super().__init__(interval, timeout * 2 + 2)
        self.url = health_url
        self.http_timeout = timeout
        self.vm_state = vm_state

    def _http_ok(self) -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.http_timeout) as r:
                return 200 <= r.status < 300, f"health URL answered {r.status}"
        except urllib.error.HTTPError as e:
            return False, f"health URL answered {e.code}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            return False, f"health URL unreachable: {reason}"

    def probe(self) -> Result:
        state = self.vm_state()  # running / paused / shutoff / absent / unknown
        healthy, why = self._http_ok()
        if state in ("running", "paused"):
            vm = "up"
            detail = "Up" if state == "running" else "Paused"
        elif state == "unknown":
            vm, detail = "unknown", "Unknown"
        else:
            vm, detail = "down", "Down"
        value = {"vm": vm, "health": "good" if healthy else "bad", "detail": detail,
                 "reason": "" if healthy else why}
        return Result(ok=healthy, value=value, detail=f"engine VM {state} here; {why}")
