"""Other hosts' storage (delta) leases, read straight from the lockspace
file: whether a silent host still renews its lease, i.e. still reaches the
storage and is alive. An agent fences a host only when this says its lease
has stood still (`keel_common.config.Timing.fence_silence_s`).

The reads run in a thread of their own: a read of a stalled storage can
block for minutes, and the broker's cycle (which keeps this host's etcd
lease) must never wait on it. A result older than a few cycles is reported
as unknown, never as silence.
"""
from __future__ import annotations

import logging
import threading
import time

from keel_common.sanlock_disk import LockspaceWatcher

log = logging.getLogger("keel.broker.peerleases")


class PeerLeases:
    def __init__(self, path: str, period: float):
        self.watcher = LockspaceWatcher(path)
        self.period = period
        self._lock = threading.Lock()
        self._silence: dict[int, tuple[float, int]] = {}
        self._read_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="peer-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def read_once(self) -> None:
        silence = self.watcher.silence()
        with self._lock:
            self._silence, self._read_at = silence, time.time()
        failing = not silence
        if failing != self._failing:
            if failing:
                log.warning("cannot read any host's lease from %s: silent hosts cannot be judged "
                            "(no agent fences while this lasts)", self.watcher.path)
            else:
                log.info("reading hosts' leases from %s again", self.watcher.path)
            self._failing = failing

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_once()
            except Exception:  # a bug here must not end the thread
                log.exception("reading the hosts' leases failed")
            self._stop.wait(self.period)

    def snapshot(self, now: float | None = None) -> dict[int, tuple[float, int]]:
        """{host id: (seconds its lease has stood still, generation)} as of now;
        empty when the last read is too old to say anything."""
        now = time.time() if now is None else now
        with self._lock:
            if self._read_at is None or now - self._read_at > 3 * self.period + 1:
                return {}
            age = now - self._read_at
            return {hid: (silence + age, gen) for hid, (silence, gen) in self._silence.items()}
