#!/usr/bin/env python3
"""API benchmark: how fast does the engine answer, against a bare Flask app?

One run on this machine, everything on loopback, nothing kept afterwards:

1. a temp dir with an engine config (sqlite file database), `keel-engine
   db-upgrade`, then a data center, a cluster and --vms VMs (default 10,000)
   bulk-inserted through the engine's SQLAlchemy models;
2. the engine (`keel-engine serve`, gunicorn, 2 workers x 4 threads) on
   127.0.5.10 and a bearer token from its SSO endpoint;
3. bench/bare_app.py under gunicorn with the same worker settings on
   127.0.5.11: the same URL, a small JSON VM, no database;
4. load: wrk, 16 connections, 2 threads on GET /ovirt-engine/api/vms/{id}
   (JSON, bearer token): after a warm-up of each, --rounds rounds of
   --duration seconds on each server back to back, the order swapped every
   round; the ratio is the median of the rounds' ratios (a stall of this
   shared machine during one round moves one ratio, not the result);
5. list: GET /ovirt-engine/api/vms as JSON and as XML (5 times after a
   warm-up; every answer must hold all seeded VMs), each GET followed at once
   by a json.dumps of as many plain dicts of the same fields; list/dumps is
   the median of the pairs' ratios.

It prints requests/s, latency p50/p99 and non-2xx answers of both servers,
the ratio engine/bare (goal >= 0.5), the list times, json.dumps' time and
the ratios list/dumps (goal <= 8), in a block headed
`api benchmark (DATE, CPU MODEL, nproc N)`; with --json also one JSON line
(the last line). Progress goes to stderr, figures to stdout. Figures, not a
test: a goal not met does not change the exit status; a wrong answer (an
error status, a list missing VMs) stops the run with one line and status 1.

    .venv/bin/python bench/api.py [--vms N] [--duration S] [--rounds N] [--json] [--engine-only] [--keep]
    .venv/bin/python bench/api.py --profile [N]

--keep leaves the engine running (URL, token and how to stop it are printed).
--profile starts no server: it seeds the database, runs N single-VM GETs
(default 2000) and one list request per format in-process (Flask test client)
under cProfile and prints the 25 functions with the most cumulative time
(and the 12 with the most own time).

Needs Debian's `wrk` (apt-get install wrk) for the load part.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bare_app import sample_vm  # noqa: E402  (the yardstick's VM shape)

ENGINE_ADDR, BARE_ADDR = "127.0.5.10", "127.0.5.11"
CONNECTIONS, WRK_THREADS, WARMUP_S = 16, 2, 3
LIST_REPEATS, LIST_TIMEOUT_S = 5, 600
GOAL_LOAD_RATIO, GOAL_LIST_RATIO = 0.5, 8.0
ADMIN_PASSWORD = "bench-" + uuid.uuid4().hex[:12]
API = "/ovirt-engine/api"
VENV_BIN = os.path.dirname(sys.executable)
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# wrk hands its figures to this hook; one JSON line is easier to trust than its text report
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %.0f, '
    .. '"p99_us": %.0f, "non2xx": %d, "socket_errors": %d, "timeouts": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write, e.timeout))
end
"""


class BenchError(Exception):
    """Something the operator must fix or know; printed as one line."""


# ---- pure parts -------------------------------------------------------------
OS_TYPES = ("rhel_9x64", "debian_12", "ubuntu_22_04", "windows_2022", "other_linux")


def vm_rows(n, cluster_id, template_id, now, seed=7):
    """n VM rows with varied, plausible fields; about two thirds up."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        up = rnd.random() < 0.67
        ha = rnd.random() < 0.2
        rows.append({
            "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "name": f"vm-{i:05d}", "description": f"{rnd.choice(('web', 'db', 'build', 'cache'))} server {i}",
            "cluster_id": cluster_id, "template_id": template_id,
            "memory": rnd.choice((1, 2, 4, 8, 16)) * 1024 ** 3, "cpus": rnd.choice((1, 2, 4, 8)),
            "os_type": rnd.choice(OS_TYPES), "status": "up" if up else "down",
            "high_availability": ha, "ha_priority": rnd.choice((1, 50, 100)) if ha else 1,
            "start_time": now - timedelta(seconds=rnd.randrange(86400 * 30)) if up else None,
            "stop_reason": "" if up else rnd.choice(("", "", "maintenance window")),
            "created": now - timedelta(days=rnd.randrange(1, 400)),
        })
    return rows


def ids_in_json(body):
    """VM ids of an oVirt JSON collection: {"vm": [{"id": ...}, ...]}."""
    data = json.loads(body)
    items = data.get("vm", []) if isinstance(data, dict) else []
    return [v.get("id") for v in items if isinstance(v, dict)]


def ids_in_xml(body):
    """VM ids of an oVirt XML collection: <vms><vm id="..."/>...</vms>."""
    return [e.get("id") for e in ET.fromstring(body) if e.tag == "vm"]


def parse_wrk(stdout):
    for line in stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            r = json.loads(line[len("WRK_RESULT "):])
            seconds = r["duration_us"] / 1e6
            ok = r["requests"] - r["non2xx"]
            return {"requests_per_s": ok / seconds if seconds else 0.0, "ok_requests": ok,
                    "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                    "non2xx": r["non2xx"], "socket_errors": r["socket_errors"], "timeouts": r["timeouts"]}
    raise BenchError("wrk printed no result line: " + (stdout.strip().splitlines() or ["(nothing)"])[-1])


def verdict(value, goal, at_least):
    if value is None:
        return "n/a"
    met = value >= goal if at_least else value <= goal
    return f"goal {'>=' if at_least else '<='} {goal:g}: {'met' if met else 'NOT met'}"


def report_lines(fig):
    def load_line(name, r):
        if r is None:
            return f"    {name:<8} (not run)"
        return (f"    {name:<8} {r['requests_per_s']:9.1f} requests/s   p50 {r['p50_ms']:8.1f} ms   "
                f"p99 {r['p99_ms']:8.1f} ms   non-2xx {r['non2xx']}   socket errors {r['socket_errors']}")
    lr, lj, lx = fig["load_ratio"], fig["list_json_ratio"], fig["list_xml_ratio"]
    return [
        f"api benchmark ({fig['date']}, {fig['cpu_model']}, nproc {fig['nproc']})",
        f"  commit {fig['commit']}, load average at start {fig['loadavg']}",
        f"  {fig['vms']} VMs seeded in {fig['seed_s']:.2f} s",
        f"  load: GET {API}/vms/{{id}}, wrk {CONNECTIONS} connections, {WRK_THREADS} threads, "
        f"{fig['rounds']} rounds of {fig['duration_s']} s per server, alternating, after a {WARMUP_S} s warm-up; "
        f"the round with the median rate",
        load_line("engine", fig["load_engine"]),
        load_line("bare", fig["load_bare"]),
        f"    ratio engine/bare {lr:.3f} (median of the rounds' ratios)   ({verdict(lr, GOAL_LOAD_RATIO, True)})"
        if lr is not None
        else "    ratio engine/bare n/a",
        f"  list: GET {API}/vms ({fig['vms']} VMs), median of {LIST_REPEATS}, each GET paired with a json.dumps; "
        f"list/dumps is the median of the pairs' ratios",
        f"    JSON {fig['list_json_s']:8.3f} s   {fig['list_json_bytes'] / 1e6:6.1f} MB   "
        f"list/dumps {lj:7.1f}   ({verdict(lj, GOAL_LIST_RATIO, False)})",
        f"    XML  {fig['list_xml_s']:8.3f} s   {fig['list_xml_bytes'] / 1e6:6.1f} MB   "
        f"list/dumps {lx:7.1f}   ({verdict(lx, GOAL_LIST_RATIO, False)})",
        f"    json.dumps of {fig['vms']} plain dicts {fig['dumps_s']:.4f} s",
    ]


# ---- the machine ------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def commit():
    r = subprocess.run(["git", "-C", BENCH_DIR, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def free_port(addr):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def step(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- the shell: processes, database, measurements --------------------------
class Run:
    """Owns the temp dir and every process this run starts."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="keel-bench-api-")
        self.procs = []          # (name, Popen, log file)
        self.config = os.path.join(self.dir, "engine.conf")
        self.db_url = f"sqlite:///{self.dir}/engine.db"

    def write_config(self, listen):
        with open(self.config, "w") as f:
            f.write(f"[database]\nurl = {self.db_url}\n\n"
                    f"[engine]\nlisten = {listen}\nworkers = 2\nadmin_password = {ADMIN_PASSWORD}\n"
                    f"secret_key_file = {self.dir}/fence.key\ntoken_lifetime = 36000\n")

    def keel_engine(self, *args):
        exe = os.path.join(VENV_BIN, "keel-engine")
        if not os.path.exists(exe):
            raise BenchError(f"{exe} not found: run this script with the project's venv python "
                             "(.venv/bin/python bench/api.py)")
        return [exe, "--config", self.config, *args]

    def db_upgrade(self):
        r = subprocess.run(self.keel_engine("db-upgrade"), capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError("keel-engine db-upgrade failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])

    def seed(self, n):
        """A data center, a cluster and n VMs on the Blank template; returns the VM ids."""
        from sqlalchemy import create_engine, insert
        from sqlalchemy.orm import Session

        from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, DataCenter, Template, Vm
        eng = create_engine(self.db_url)
        try:
            with Session(eng) as s:
                if s.get(Template, BLANK_TEMPLATE_ID) is None:
                    raise BenchError("the Blank template is missing after db-upgrade")
                dc = DataCenter(name="bench-dc", description="API benchmark")
                s.add(dc)
                s.flush()
                cl = Cluster(name="bench-cluster", description="API benchmark", data_center_id=dc.id)
                s.add(cl)
                s.flush()
                rows = vm_rows(n, cl.id, BLANK_TEMPLATE_ID, datetime.now(timezone.utc))
                s.execute(insert(Vm), rows)   # one executemany, not n ORM objects
                s.commit()
        finally:
            eng.dispose()
        return [r["id"] for r in rows]

    def spawn(self, name, cmd, health_url, cwd=None):
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)   # its own group: stopped by its pid, with its workers
        self.procs.append((name, proc, log))
        end = time.monotonic() + 90
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode}: {self.log_tail(name)}")
            try:
                if requests.get(health_url, timeout=2).ok:
                    return proc
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise BenchError(f"{name} did not answer {health_url} within 90 s: {self.log_tail(name)}")

    def log_tail(self, name):
        """The line that says why: the last exception in the log, else its last line."""
        try:
            with open(os.path.join(self.dir, f"{name}.log"), errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            return "(no log)"
        errors = [ln for ln in lines if re.match(r"[\w.]+(Error|Exception|Exit)\b.*:", ln)]
        return (errors or lines or ["(empty log)"])[-1]

    def stop(self, keep=()):
        for name, proc, log in reversed(self.procs):
            if name in keep:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
            log.close()
        self.procs = [p for p in self.procs if p[0] in keep]

    def cleanup(self, keep_engine=False):
        self.stop(keep=("engine",) if keep_engine else ())
        if not keep_engine:
            shutil.rmtree(self.dir, ignore_errors=True)


def no_control_socket():
    """Newer gunicorn opens a control socket at one fixed path per user; the
    bare app must not take it from an engine running beside it."""
    from gunicorn.config import KNOWN_SETTINGS
    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def get_token(base):
    r = requests.post(f"{base}/ovirt-engine/sso/oauth/token", timeout=30,
                      data={"grant_type": "password", "username": "admin@internal",
                            "password": ADMIN_PASSWORD, "scope": "ovirt-app-api"})
    if r.status_code != 200 or "access_token" not in r.text:
        raise BenchError(f"no token from {base}: HTTP {r.status_code} {r.text[:120]!r}")
    return r.json()["access_token"]


def check_vm_get(url, headers, vm_id):
    r = requests.get(url, headers=headers, timeout=30)
    if r.status_code != 200:
        raise BenchError(f"GET {url}: HTTP {r.status_code} {r.text[:120]!r}")
    if r.json().get("id") != vm_id:
        raise BenchError(f"GET {url}: the answer is not VM {vm_id}: {r.text[:120]!r}")


def run_wrk(url, headers, seconds, lua_path):
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "30s",
           "-s", lua_path]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    r = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 120)
    if r.returncode != 0:
        raise BenchError(f"wrk failed (status {r.returncode}): {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return parse_wrk(r.stdout)


def load_rounds(targets, headers, seconds, rounds, lua_path):
    """Each target warmed up, then `rounds` rounds of `seconds` on each, back to back,
    the order swapped every round; every result kept, per target."""
    for name, url in targets:
        step(f"load on the {name}: {WARMUP_S} s warm-up")
        run_wrk(url, headers, WARMUP_S, lua_path)
    results = {name: [] for name, _ in targets}
    for i in range(rounds):
        for name, url in (targets if i % 2 == 0 else targets[::-1]):
            result = run_wrk(url, headers, seconds, lua_path)
            if result["ok_requests"] == 0:
                raise BenchError(f"the {name} answered no request with 2xx under load")
            step(f"  round {i + 1}/{rounds} {name}: {result['requests_per_s']:.0f} requests/s")
            results[name].append(result)
    return results


def median_round(results):
    """The round with the median request rate (its latencies belong to it)."""
    ordered = sorted(results, key=lambda r: r["requests_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def time_list(url, headers, expected_ids, id_reader, what, dumps_once):
    """LIST_REPEATS full GETs, each followed at once by one json.dumps of as
    many plain dicts: (median GET seconds, median dumps seconds, median of the
    paired ratios, answer size). Pairing keeps a stall of this shared machine
    from landing on one side only. Every answer must hold exactly the seeded VMs."""
    times, dumps, ratios, size = [], [], [], 0
    with requests.Session() as http:
        for i in range(LIST_REPEATS + 1):   # the first one warms up
            t0 = time.perf_counter()
            r = http.get(url, headers=headers, timeout=LIST_TIMEOUT_S)
            body = r.content
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                raise BenchError(f"{what} list: HTTP {r.status_code} {r.text[:120]!r}")
            try:
                got = id_reader(body)
            except (ValueError, ET.ParseError) as e:
                raise BenchError(f"{what} list: unreadable answer ({e})")
            if len(got) != len(expected_ids) or set(got) != expected_ids:
                raise BenchError(f"{what} list: {len(set(got) & expected_ids)} of the {len(expected_ids)} "
                                 f"seeded VMs in an answer of {len(got)} VMs")
            dumped = dumps_once()
            if i:
                times.append(elapsed)
                dumps.append(dumped)
                ratios.append(elapsed / dumped)
            size = len(body)
            step(f"  {what} list {i or 'warm-up'}: {elapsed:.3f} s (json.dumps {dumped:.4f} s)")
    return statistics.median(times), statistics.median(dumps), statistics.median(ratios), size


def dumps_timer(n):
    """One json.dumps of n plain dicts of a VM's fields, timed (the documents built once)."""
    docs = {"vm": [sample_vm(str(uuid.UUID(int=i, version=4)), i) for i in range(n)]}
    json.dumps(docs)

    def once():
        t0 = time.perf_counter()
        json.dumps(docs)
        return time.perf_counter() - t0
    return once


def benchmark(args, run):
    fig = {"date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "cpu_model": cpu_model(),
           "nproc": os.cpu_count(), "loadavg": loadavg(), "commit": commit(), "vms": args.vms,
           "duration_s": args.duration, "load_bare": None, "load_ratio": None}
    engine_base = f"http://{ENGINE_ADDR}:{free_port(ENGINE_ADDR)}"
    run.write_config(engine_base[len("http://"):])
    step(f"database: migrations, then {args.vms} VMs")
    run.db_upgrade()
    t0 = time.perf_counter()
    ids = run.seed(args.vms)
    fig["seed_s"] = time.perf_counter() - t0
    vm_id = ids[len(ids) // 2]

    step(f"engine on {engine_base}")
    run.spawn("engine", run.keel_engine("serve"), f"{engine_base}/ovirt-engine/services/health")
    token = get_token(engine_base)
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    engine_url = f"{engine_base}{API}/vms/{vm_id}"
    check_vm_get(engine_url, headers, vm_id)

    lua = os.path.join(run.dir, "report.lua")
    with open(lua, "w") as f:
        f.write(WRK_REPORT_LUA)
    targets = [("engine", engine_url)]
    if not args.engine_only:
        bare_base = f"http://{BARE_ADDR}:{free_port(BARE_ADDR)}"
        step(f"bare app on {bare_base}")
        run.spawn("bare", [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "2", "--threads", "4",
                           "--access-logfile", "-", "-b", bare_base[len("http://"):],
                           *no_control_socket(), "bare_app:app"],
                  f"{bare_base}/ovirt-engine/services/health", cwd=BENCH_DIR)
        bare_url = f"{bare_base}{API}/vms/{vm_id}"
        check_vm_get(bare_url, headers, vm_id)
        targets.append(("bare app", bare_url))
    rounds = load_rounds(targets, headers, args.duration, args.rounds, lua)
    fig["rounds"] = args.rounds
    fig["load_engine"] = median_round(rounds["engine"])
    if not args.engine_only:
        fig["load_bare"] = median_round(rounds["bare app"])
        run.stop(keep=("engine",))   # the list timings get the machine to themselves
        # the ratio of each round (both servers measured back to back), then the median:
        # a stall of the machine during one round moves one ratio, not the result
        fig["load_ratio"] = statistics.median(
            e["requests_per_s"] / b["requests_per_s"] for e, b in zip(rounds["engine"], rounds["bare app"]))

    step(f"list of {args.vms} VMs, {LIST_REPEATS} times per format after a warm-up")
    expected = set(ids)
    list_url = f"{engine_base}{API}/vms"
    auth = {"Authorization": f"Bearer {token}"}
    dumps_once = dumps_timer(args.vms)
    fig["list_json_s"], dumps_json, fig["list_json_ratio"], fig["list_json_bytes"] = time_list(
        list_url, {**auth, "Accept": "application/json"}, expected, ids_in_json, "JSON", dumps_once)
    fig["list_xml_s"], dumps_xml, fig["list_xml_ratio"], fig["list_xml_bytes"] = time_list(
        list_url, {**auth, "Accept": "application/xml"}, expected, ids_in_xml, "XML", dumps_once)
    fig["dumps_s"] = statistics.median([dumps_json, dumps_xml])
    return fig, engine_base, token


# ---- --profile: the same requests in-process, under cProfile -----------------
def _path_prefixes():
    """Longest first: the repo, then site-packages and the standard library."""
    repo = os.path.dirname(BENCH_DIR)
    dirs = {repo, sysconfig.get_paths()["stdlib"], *(p for p in sys.path if p.endswith("-packages"))}
    return sorted((d.rstrip("/") + "/" for d in dirs if d), key=len, reverse=True)


def top_functions(prof, sort, limit):
    """pstats' table, with paths shortened to flask/app.py, appliance/keel_engine/app.py, json/encoder.py."""
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats(sort).print_stats(limit)
    text = out.getvalue()
    for prefix in _path_prefixes():
        text = text.replace(prefix, "")
    return text.strip("\n")


def print_profile(title, prof):
    print(f"\n== {title}")
    print(top_functions(prof, "cumulative", 25))
    print("-- by own time:")
    print(top_functions(prof, "tottime", 12).split("\n\n", 1)[-1])


def profile(args, run):
    from keel_engine import config as engine_config
    from keel_engine.app import create_app

    run.write_config(f"{ENGINE_ADDR}:8080")   # never bound: the test client calls the app directly
    step(f"database: migrations, then {args.vms} VMs")
    run.db_upgrade()
    ids = run.seed(args.vms)
    vm_id = ids[len(ids) // 2]
    app = create_app(engine_config.load(run.config), migrate=False)
    client = app.test_client()
    r = client.post("/ovirt-engine/sso/oauth/token", data={
        "grant_type": "password", "username": "admin@internal", "password": ADMIN_PASSWORD})
    if r.status_code != 200:
        raise BenchError(f"no token from the app: HTTP {r.status_code}")
    auth = {"Authorization": f"Bearer {r.get_json()['access_token']}"}
    headers = {**auth, "Accept": "application/json"}

    def get_vm():
        resp = client.get(f"{API}/vms/{vm_id}", headers=headers)
        if resp.status_code != 200:
            raise BenchError(f"GET vms/{vm_id} in-process: HTTP {resp.status_code}")

    n = args.profile
    get_vm()
    t0 = time.perf_counter()
    for _ in range(n):
        get_vm()
    plain = time.perf_counter() - t0
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        get_vm()
    prof.disable()
    print_profile(f"GET {API}/vms/{{id}} x {n}, in-process: {n / plain:.0f} requests/s "
                  f"({plain / n * 1000:.2f} ms each) without the profiler", prof)

    expected = set(ids)
    for fmt, reader in (("json", ids_in_json), ("xml", ids_in_xml)):
        list_headers = {**auth, "Accept": f"application/{fmt}"}
        client.get(f"{API}/vms", headers=list_headers)   # warm-up
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        resp = client.get(f"{API}/vms", headers=list_headers)
        prof.disable()
        elapsed = time.perf_counter() - t0
        if resp.status_code != 200 or set(reader(resp.data)) != expected:
            raise BenchError(f"{fmt} list in-process: HTTP {resp.status_code}, not the {len(expected)} seeded VMs")
        print_profile(f"GET {API}/vms as {fmt.upper()} ({len(expected)} VMs), in-process: "
                      f"{elapsed:.2f} s under the profiler", prof)


# ---- entry point ---------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"bench/api.py: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return n


def parse_args(argv):
    p = OneLineParser(description="Engine API benchmark: load and list timings against a bare Flask app.")
    p.add_argument("--vms", type=positive_int, default=10000, help="VMs to seed (default 10000)")
    p.add_argument("--duration", type=positive_int, default=4, metavar="S",
                   help="seconds of load per server and round (default 4)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="rounds of load, each server once per round, alternating (default 5)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.add_argument("--engine-only", action="store_true", help="no bare app, no engine/bare ratio")
    p.add_argument("--keep", action="store_true", help="leave the engine running (prints URL and token)")
    p.add_argument("--profile", type=positive_int, nargs="?", const=2000, metavar="N",
                   help="no servers: cProfile N in-process single-VM GETs (default 2000) and one list per format")
    return p.parse_args(argv)


def _interrupted(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None):
    args = parse_args(argv)
    if args.profile is None and shutil.which("wrk") is None:
        print("bench/api.py: error: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started in the background
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    run = Run()
    keep = False
    try:
        if args.profile is not None:
            profile(args, run)
            return 0
        fig, engine_base, token = benchmark(args, run)
        print("\n".join(report_lines(fig)))
        if args.json:
            print(json.dumps(fig))
        if args.keep:
            keep = True
            pid = run.procs[0][1].pid
            print(f"engine left running: {engine_base}{API} (pid {pid}, config {run.config})\n"
                  f"token: {token}\n"
                  f"stop it with: kill -TERM -{pid}; rm -rf {run.dir}")
        return 0
    except BenchError as e:
        print(f"bench/api.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/api.py: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except (requests.RequestException, OSError, subprocess.SubprocessError) as e:
        print(f"bench/api.py: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 1
    finally:
        # a second Ctrl-C must not leave servers or the temp dir behind
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        run.cleanup(keep_engine=keep)


if __name__ == "__main__":
    sys.exit(main())
