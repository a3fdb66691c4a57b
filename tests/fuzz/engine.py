"""A real engine to fuzz: `keel-engine serve` (gunicorn) and its background
worker as child processes, on SQLite in a temporary directory, listening on
127.0.6.10 inside a private network namespace (see netns.py), with an admin
bearer token and a little inventory (made through the API, but for one host
on libvirt's test driver) so that ids exist.

Every HTTP call carries a timeout; the engine is restarted when it dies
(`ensure_running`), and everything it started is stopped by PID."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import requests

from .netns import PrivateNetwork

log = logging.getLogger("keel.fuzz.engine")

ADDRESS = "127.0.6.10"
PORT = 8080
# The harness's own calls (sign-in, seeding, checks) come from this source
# address: the engine throttles sign-ins per address, and the fuzzers' bad
# credentials (from 127.0.0.1) must not lock the harness out.
CONTROL_SOURCE = "127.0.6.2"
ADMIN_PASSWORD = "fuzz-admin-password"
MAX_BODY_BYTES = 1024 * 1024
HTTP_TIMEOUT = 30.0
API = "/ovirt-engine/api"
MiB = 2 ** 20
# The seeded fence agent's BMC: no route leads there inside the private
# namespace, so a fence or a test fails without sending anything.
BMC_ADDRESS = "198.51.100.77"


def keel_engine_command():
    """The keel-engine script of the venv this Python runs in (else the repo's .venv)."""
    here = os.path.join(os.path.dirname(sys.executable), "keel-engine")
    if os.path.exists(here):
        return here
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(repo, ".venv", "bin", "keel-engine")


def worker_subcommand(help_text):
    """'worker' once the engine has it, else the older 'monitor'."""
    m = re.search(r"\{([a-z,\-]+)\}", help_text)
    commands = m.group(1).split(",") if m else []
    return "worker" if "worker" in commands else "monitor"


def write_config(path, workdir, listen):
    sections = {
        "database": {"url": f"sqlite:///{workdir}/engine.db"},
        "engine": {"listen": listen, "admin_password": ADMIN_PASSWORD,
                   "secret_key_file": os.path.join(workdir, "fence.key"),
                   "max_body_bytes": str(MAX_BODY_BYTES)},
        # a fuzzed host address must fail fast, not hold a worker thread for 10 s
        "libvirt": {"timeout": "3"},
    }
    with open(path, "w") as f:
        for sec, kv in sections.items():
            f.write(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n")


class EngineError(RuntimeError):
    pass


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class _FromAddress(requests.adapters.HTTPAdapter):
    def __init__(self, source, **kw):
        self.source = source
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kw):
        kw["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kw)


class FuzzEngine:
    def __init__(self, workdir=None, port=PORT, keep_workdir=False):
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="keel-fuzz-")
        self.keep_workdir = keep_workdir
        self.listen = f"{ADDRESS}:{port}"
        self.base = f"http://{self.listen}"
        self.api = self.base + API
        self.config_path = os.path.join(self.workdir, "engine.conf")
        self.serve_log = os.path.join(self.workdir, "serve.log")
        self.worker_log = os.path.join(self.workdir, "worker.log")
        self.procs = {}
        self.network = None
        self.token = None
        self.http = requests.Session()
        self.http.trust_env = False   # never a proxy from the environment
        self.http.mount("http://", _FromAddress(CONTROL_SOURCE))
        self.ids = {}                 # kind -> [ids] of the seeded inventory
        self.restarts = []            # (reason, tail of the log) per restart
        self.worker_command = None

    # ---- processes -------------------------------------------------------
    def start(self):
        self.network = PrivateNetwork().__enter__()
        try:
            write_config(self.config_path, self.workdir, self.listen)
            cmd = keel_engine_command()
            help_text = subprocess.run([cmd, "--help"], capture_output=True, text=True, timeout=60).stdout
            self.worker_command = worker_subcommand(help_text)
            r = subprocess.run([cmd, "--config", self.config_path, "db-upgrade"], capture_output=True,
                               text=True, timeout=120)
            if r.returncode != 0:
                raise EngineError(f"db-upgrade failed: {(r.stderr or r.stdout).strip()[-400:]}")
            self._start_serve()
            self._spawn("worker", self.worker_command)
            self.login()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name, *args):
        logfile = self.serve_log if name == "serve" else self.worker_log
        out = open(logfile, "ab")
        proc = subprocess.Popen([keel_engine_command(), "--config", self.config_path, *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.workdir, start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def _start_serve(self):
        proc = self._spawn("serve", "serve")
        end = time.monotonic() + 90
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise EngineError(f"keel-engine serve exited ({proc.returncode}): {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise EngineError(f"keel-engine serve did not answer within 90 s: {self.log_tail()}")

    def healthy(self):
        try:
            return self.http.get(self.base + "/ovirt-engine/services/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _stop_proc(self, name):
        """SIGTERM to the process group we started (gunicorn master and workers,
        or the worker), SIGKILL if it lingers; then SIGKILL for any straggler."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(10)
        _signal_group(proc.pid, signal.SIGKILL)

    def stop(self):
        try:
            for name in list(self.procs):
                self._stop_proc(name)
            self.http.close()
        finally:
            try:
                if self.network is not None:
                    self.network.leave()
                    self.network = None
            finally:
                if self.own_workdir and not self.keep_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def ensure_running(self, why=""):
        """Restart serve (and the worker) if either died or the API stopped
        answering; returns the reason when it had to, else None."""
        serve = self.procs.get("serve")
        reason = None
        if serve is None or serve.poll() is not None:
            reason = f"serve exited ({serve.returncode if serve else 'never started'})"
        elif not self.healthy():
            time.sleep(2)
            if not self.healthy():
                reason = "health check failed twice"
        if reason is None:
            worker = self.procs.get("worker")
            if worker is not None and worker.poll() is not None:
                log.warning("worker exited (%s); restarting it", worker.returncode)
                self._spawn("worker", self.worker_command)
            return None
        tail = self.log_tail()
        self.restarts.append((f"{reason} {why}".strip(), tail))
        log.warning("engine down (%s %s); restarting it", reason, why)
        self._stop_proc("serve")
        self._start_serve()
        self.login()
        return reason

    # ---- logs -------------------------------------------------------------
    def log_offset(self):
        try:
            return os.path.getsize(self.serve_log)
        except OSError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.serve_log, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=2000):
        try:
            with open(self.serve_log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.serve_log) - n))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ---- HTTP -----------------------------------------------------------------
    def login(self, patience=330.0):
        """A bearer token for admin@internal; waits out the sign-in throttle if it must."""
        end = time.monotonic() + patience
        while True:
            r = self.http.post(self.base + "/ovirt-engine/sso/oauth/token", timeout=HTTP_TIMEOUT,
                               data={"grant_type": "password", "username": "admin@internal",
                                     "password": ADMIN_PASSWORD, "scope": "ovirt-app-api"})
            if r.status_code == 200:
                self.token = r.json()["access_token"]
                return self.token
            wait = float(r.headers.get("Retry-After") or 0) if r.status_code == 429 else 0
            if not wait or time.monotonic() + wait > end:
                raise EngineError(f"cannot get a token: {r.status_code} {r.text[:200]}")
            log.warning("sign-in throttled; waiting %.0f s", wait)
            time.sleep(wait)

    def auth_headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def call(self, method, path, body=None, content_type="application/json", headers=None,
             accept="application/json", timeout=HTTP_TIMEOUT):
        """One API call; path is relative to /ovirt-engine/api unless it starts with /ovirt-engine."""
        url = (self.base + path) if path.startswith("/ovirt-engine") else (self.api + path)
        h = {**self.auth_headers(), "Accept": accept}
        if body is not None:
            h["Content-Type"] = content_type
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
        h.update(headers or {})
        return self.http.request(method, url, data=body, headers=h, timeout=timeout)

    def document(self):
        r = self.http.get(self.base + "/ovirt-engine/api-docs/openapi.json", timeout=HTTP_TIMEOUT)
        r.raise_for_status()
        return r.json()


# ---- the seeded inventory ---------------------------------------------------------
def _created(engine, found, kind, path, body, notes):
    try:
        r = engine.call("POST", path, body)
    except requests.RequestException as e:
        notes.append(f"seed {kind}: {type(e).__name__}: {e}")
        return None
    if r.status_code not in (200, 201):
        notes.append(f"seed {kind}: POST {path} answered {r.status_code}: {r.text[:160].strip()}")
        return None
    try:
        ident = r.json().get("id")
    except ValueError:
        ident = None
    if ident:
        found.setdefault(kind, []).append(str(ident))
    return ident


def _listed(engine, found, kind, path):
    try:
        r = engine.call("GET", path)
        data = r.json() if r.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        data = {}
    for items in (data.values() if isinstance(data, dict) else ()):
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and item.get("id"):
                found.setdefault(kind, []).append(str(item["id"]))


def _host_in_database(engine, found, cluster_id, name, notes):
    """A host on libvirt's in-memory test driver (test:///default: no daemon,
    nothing on disk), written with the engine's own models because the API
    rightly takes only a host name or IP address. Without a host every host
    sub-resource (fence agents, actions) is a 404, and no storage domain,
    disk or running VM can exist."""
    try:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        from keel_engine.models import Host
        db = create_engine(f"sqlite:///{engine.workdir}/engine.db")
        try:
            with Session(db) as s:
                host = Host(name=name, address="127.0.6.12", libvirt_uri="test:///default",
                            cluster_id=cluster_id, status="up", cpus=16, memory_total=3072 * MiB,
                            memory_free=2048 * MiB)
                s.add(host)
                s.commit()
                ident = str(host.id)
        finally:
            db.dispose()
    except Exception as e:   # the models changed: fewer seeds, still a run
        notes.append(f"seed host (database): {type(e).__name__}: {str(e)[:160]}")
        return None
    found.setdefault("host", []).append(ident)
    return ident


def seed(engine, tag="fz"):
    """A data center, cluster, network, a host on libvirt's test driver with a
    fence agent, a storage domain, a floating disk, a VM (NIC, disk,
    snapshot), a template and a custom event. Their ids go first in
    engine.ids (earlier ones stay behind them). Returns notes on what could
    not be made: information, not an error (the run goes on with less)."""
    notes, found = [], {}

    def add(kind, path, body):
        return _created(engine, found, kind, path, body, notes)
    dc = add("datacenter", "/datacenters", {"name": f"{tag}-dc", "description": "fuzz"})
    cl = add("cluster", "/clusters", {"name": f"{tag}-cluster", "data_center": {"id": dc}}) if dc else None
    net = add("network", "/networks", {"name": f"{tag}-net", "data_center": {"id": dc}, "vlan": {"id": "10"}}) \
        if dc else None
    host = _host_in_database(engine, found, cl, f"{tag}-host", notes) if cl else None
    sd = None
    if host:
        add("agent", f"/hosts/{host}/fenceagents",
            {"type": "ipmilan", "address": BMC_ADDRESS, "port": "623", "username": "admin",
             "password": "fuzz-bmc-pw", "order": "1"})
        storage = os.path.join(engine.workdir, "storage")
        os.makedirs(storage, exist_ok=True)
        sd = add("storagedomain", "/storagedomains",
                 {"name": f"{tag}-data", "type": "data", "data_center": {"id": dc}, "host": {"id": host},
                  "storage": {"type": "posixfs", "path": storage}})
    if sd:
        add("disk", "/disks", {"name": f"{tag}-disk", "provisioned_size": str(16 * MiB), "format": "cow",
                               "storage_domains": {"storage_domain": [{"id": sd}]}})
    vm = add("vm", "/vms", {"name": f"{tag}-vm", "cluster": {"id": cl}, "template": {"name": "Blank"},
                            "memory": str(64 * MiB)}) if cl else None
    if vm:
        add("nic", f"/vms/{vm}/nics", {"name": "nic1", "vnic_profile": {"id": net}} if net else {"name": "nic1"})
        # before the VM has a disk: on libvirt's test driver a copied volume is not found again
        add("template", "/templates", {"name": f"{tag}-template", "vm": {"id": vm}})
        if sd:
            add("diskattachment", f"/vms/{vm}/diskattachments",
                {"interface": "virtio", "bootable": "true", "disk": {
                    "name": f"{tag}-vm-disk", "provisioned_size": str(16 * MiB), "format": "cow",
                    "storage_domains": {"storage_domain": [{"id": sd}]}}})
        add("snapshot", f"/vms/{vm}/snapshots", {"description": f"{tag}-snapshot"})
    add("event", "/events", {"description": "fuzz seed", "origin": "fuzz", "custom_id": "1", "severity": "normal"})
    for kind, path in (("template", "/templates"), ("user", "/users"), ("role", "/roles"),
                       ("permission", "/permissions"), ("job", "/jobs"), ("event", "/events?max=5")):
        _listed(engine, found, kind, path)
    for kind in set(found) | set(engine.ids):
        engine.ids[kind] = list(dict.fromkeys(found.get(kind, []) + engine.ids.get(kind, [])))
    return notes
