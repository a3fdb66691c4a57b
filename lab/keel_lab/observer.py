"""The invariant observer: an independent witness of where the engine VM runs.

It runs beside the lab (its own process, started by `keel-lab up`) and every
200 ms samples each host's libvirt (is the engine domain active, does its
live XML carry the engine `<lease>`) and the host's processes (does an
engine qemu exist: a qemu that exists can write the disk, whatever libvirt
says). Every start and stop is appended to `observer/events.jsonl` with a
timestamp and the engine lease as written on the shared storage. "Never
two engines" is judged from these records (`verdict`), never from what the
agents claim.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET

from . import probe
from .layout import ENGINE_VM_NAME, LEASE_NAME, LOCKSPACE, LabLayout, layout_from_state

log = logging.getLogger("keel_lab.observer")
PERIOD = 0.2
LEASE_GRACE = 10.0  # a start must show the lease on disk within this long


class LibvirtWatcher(threading.Thread):
    """Samples one host's libvirt; a hung libvirtd only stalls its own thread."""

    def __init__(self, uri: str):
        super().__init__(daemon=True)
        self.uri = uri
        self.active: bool | None = None   # None: libvirt unreachable
        self.has_lease: bool | None = None
        self.sampled = 0.0

    def run(self) -> None:
        import libvirt
        libvirt.registerErrorHandler(lambda *_: None, None)
        conn = None
        while True:
            try:
                if conn is None:
                    conn = libvirt.open(self.uri)
                try:
                    dom = conn.lookupByName(ENGINE_VM_NAME)
                    self.active = bool(dom.isActive())
                    self.has_lease = _xml_has_lease(dom.XMLDesc(0)) if self.active else None
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    self.active, self.has_lease = False, None
            except Exception:
                self.active, self.has_lease = None, None
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                time.sleep(0.5)
            self.sampled = time.time()
            time.sleep(PERIOD)


def _xml_has_lease(xml: str) -> bool:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return False
    for lease in root.iter("lease"):
        if (lease.findtext("lockspace") or "").strip() == LOCKSPACE and \
                (lease.findtext("key") or "").strip() == LEASE_NAME:
            return True
    return False


class Observer:
    def __init__(self, lab: LabLayout):
        self.lab = lab
        self.watchers = {h.name: LibvirtWatcher(h.libvirt_uri) for h in lab.all_hosts()}
        self.running: dict[str, int] = {}         # host -> qemu pid
        self.pending_lease: dict[str, float] = {}  # host -> start time, lease not yet seen
        self.host_ids = {h.name: h.index for h in lab.all_hosts()}

    def record(self, event: dict) -> None:
        event.setdefault("t", time.time())
        with open(self.lab.observer_events, "a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
        log.info("%s", json.dumps(event, sort_keys=True))

    def step(self) -> None:
        now = time.time()
        qemus = probe.engine_qemu_pids(self.lab)
        lease = None
        for host, pid in qemus.items():
            if self.running.get(host) != pid:
                if host in self.running:  # a new qemu without a seen stop
                    self.record({"event": "stop", "host": host, "pid": self.running[host], "t": now})
                lease = lease or probe.lease_owner(self.lab)
                w = self.watchers[host]
                self.running[host] = pid
                self.record({"event": "start", "host": host, "pid": pid, "t": now,
                             "lease": lease, "libvirt_active": w.active, "xml_lease": w.has_lease,
                             "others": sorted(h for h in qemus if h != host)})
                self.pending_lease[host] = now
        for host in [h for h in self.running if h not in qemus]:
            pid = self.running.pop(host)
            self.pending_lease.pop(host, None)
            self.record({"event": "stop", "host": host, "pid": pid, "t": now})
        # A start counts as leased once the lease on disk names this host and
        # the running domain's XML carries the lease.
        for host, since in list(self.pending_lease.items()):
            lease = probe.lease_owner(self.lab)
            xml_lease = self.watchers[host].has_lease
            if lease.get("held") and lease.get("owner") == self.host_ids[host] and xml_lease is not False:
                self.pending_lease.pop(host)
                self.record({"event": "lease_confirmed", "host": host, "lease": lease,
                             "xml_lease": xml_lease, "after": round(now - since, 2)})
            elif now - since > LEASE_GRACE:
                self.pending_lease.pop(host)
                self.record({"event": "start_without_lease", "host": host, "lease": lease,
                             "xml_lease": xml_lease})

    def run(self) -> None:
        os.makedirs(self.lab.observer_dir, exist_ok=True)
        for w in self.watchers.values():
            w.start()
        self.record({"event": "observer_started", "period": PERIOD})
        last = time.monotonic()
        while True:
            t0 = time.monotonic()
            if t0 - last > 2.0:  # the machine stalled us: say so in the record
                self.record({"event": "sampling_gap", "seconds": round(t0 - last, 2)})
            last = t0
            try:
                self.step()
            except Exception as e:  # keep watching whatever happens
                log.exception("observer step failed: %s", e)
            time.sleep(max(0.0, PERIOD - (time.monotonic() - t0)))


def read_events(lab_dir: str) -> list[dict]:
    path = os.path.join(lab_dir, "observer", "events.jsonl")
    events = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return events


def verdict(events: list[dict], since: float = 0.0) -> dict:
    """Judge the records: intervals with the engine on more than one host,
    and starts without the lease."""
    events = sorted((e for e in events if e.get("t", 0) >= since), key=lambda e: e["t"])
    running: dict[str, float] = {}
    overlaps, unleased = [], []
    open_overlap = None
    starts = stops = 0
    for e in events:
        kind, host = e.get("event"), e.get("host")
        if kind == "start":
            starts += 1
            running[host] = e["t"]
        elif kind == "stop":
            stops += 1
            running.pop(host, None)
        elif kind == "start_without_lease":
            unleased.append({"host": host, "t": e["t"], "lease": e.get("lease"),
                             "xml_lease": e.get("xml_lease")})
        if len(running) > 1 and open_overlap is None:
            open_overlap = {"from": e["t"], "hosts": sorted(running)}
        elif len(running) > 1:
            open_overlap["hosts"] = sorted(set(open_overlap["hosts"]) | set(running))
        elif len(running) <= 1 and open_overlap is not None:
            open_overlap["to"] = e["t"]
            open_overlap["seconds"] = round(e["t"] - open_overlap["from"], 3)
            overlaps.append(open_overlap)
            open_overlap = None
    if open_overlap is not None:
        open_overlap["to"] = None  # still going
        overlaps.append(open_overlap)
    observed = any(e.get("event") == "observer_started" for e in events)
    return {"ok": not overlaps and not unleased, "observed": observed,
            "engine_starts": starts, "engine_stops": stops,
            "running_now": sorted(running), "multiple_engines": overlaps,
            "starts_without_lease": unleased,
            "sampling_gaps": [e for e in events if e.get("event") == "sampling_gap"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="keel_lab.observer")
    ap.add_argument("--dir", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    Observer(layout_from_state(a.dir)).run()


if __name__ == "__main__":
    main()
