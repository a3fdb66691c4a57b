#!/usr/bin/env python3
"""Web UI benchmark: how long does each page of the UI take to render on the
server, and how many SQL statements does it cost, with a big inventory?

The goal: every page renders in <= 150 ms with 1,000 VMs and 50 hosts in the
database, at a constant number of statements per page. One run, in this
process, nothing kept afterwards:

1. a temp dir with a SQLite file database (SQLite only: no PostgreSQL run),
   the engine app made by keel_engine.app.create_app(EngineConfig(...))
   (migrations, the Blank template, admin@internal);
2. bulk-inserted through the engine's SQLAlchemy models: a data center, a
   cluster, --hosts hosts (up, with CPUs and memory), --vms VMs (about two
   thirds up, spread over the hosts; named vm-0000, vm-0001, ...) and
   --events events, each about a VM and its host, and a day of samples of
   the cluster's use a minute apart (the dashboard's charts), and --pools VM
   pools of up to 50 of the VMs each (half of them held by admin@internal);
   admin@internal also gets UserRole on the cluster, so its VM portal lists
   the VMs too;
3. signed in as admin@internal through the sign-in form (Flask's test
   client), each page below is fetched twice to warm up (templates compiled,
   statements cached), then --repeat times, timed: the server-side time of
   the request, from the test client's call to the rendered body, no network.
   The SQL statements a request runs are counted with a SQLAlchemy
   `before_cursor_execute` listener on the app's engine (the driver-level
   BEGIN is not a statement it sees).

Pages: the dashboard, the hosts list, one host, the VMs list (first page of
50, page 20, a search for name=vm-09*), the VM rows fragment the list polls
every 5 s, one VM, the events list, the VM portal, the VM pools list, one
pool, the roles (with their permit forms) and the new storage domain form.

It prints, per page, the median and the 95th percentile (nearest rank) of
the --repeat times, the statements per request and the verdict on the goal
(the p95 must be <= 150 ms), in a block headed `webui benchmark (DATE, CPU
MODEL, nproc N)`; with --json also one JSON line (the last line). Progress
goes to stderr, figures to stdout. That the number of statements does not
grow with the inventory is what tests/webui/test_query_counts.py asserts;
here it is the count at this size. Figures, not a test: a goal not met does
not change the exit status; a wrong answer (a status other than 200, a page
that lacks what it should show, e.g. a VMs page without its 50 rows) stops
the run with one line and status 1.

    .venv/bin/python bench/webui.py [--vms N] [--hosts N] [--events N] [--pools N] [--repeat N] [--json]
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import commit, cpu_model, loadavg, positive_int, step, verdict, vm_rows  # noqa: E402

GOAL_MS = 150.0
WARMUPS = 2
PAGE, EVENTS_PAGE, HOST_EVENTS = 50, 100, 20     # what the UI shows per page (keel_webui.admin)
SEARCH = "name=vm-09*"
ADMIN_PASSWORD = "bench-" + uuid.uuid4().hex[:12]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
VM_LINK = re.compile(rf'<a href="/ui/vms/{UUID_RE}">([^<]+)</a>')
HOST_LINK = re.compile(rf'<a href="/ui/hosts/({UUID_RE})">')
EVENT_ROW = re.compile(r'<tr class="sev-')
SPARK = re.compile(r'<svg class="spark" role="img"')
SAMPLES = 24 * 60     # a day of the cluster's use, a minute apart
POOL_VMS = 50         # VMs per seeded pool (at most)
POOL_LINK = re.compile(rf'<a href="/ui/pools/{UUID_RE}">')


class BenchError(Exception):
    """A wrong answer or a failed set-up; printed as one line."""


# ---- the inventory ---------------------------------------------------------------
class Inventory:
    """What was seeded, kept to check the pages against."""

    def __init__(self, hosts, vms, events, pools=()):
        self.hosts = hosts        # [{"id", "name", ...}] in name order
        self.vms = vms            # [{"id", "name", "status", "host_id", ...}] in name order
        self.events = events      # [{"description", "vm_id", "host_id", ...}] oldest first
        self.pools = pools        # [(pool id, its VMs' ids)] in name order
        self.names = [v["name"] for v in vms]

    def vms_on(self, host_id):
        return [v["name"] for v in self.vms if v["host_id"] == host_id]

    def events_of_host(self, host_id):
        return sum(1 for e in self.events if e["host_id"] == host_id)


def host_rows(n, cluster_id, now, seed=11):
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        total = rnd.choice((256, 384, 512)) * 1024 ** 3
        address = f"10.1.{i // 250}.{i % 250 + 1}"
        rows.append({
            "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "name": f"host-{i:03d}",
            "address": address, "libvirt_uri": f"qemu+tls://{address}/system",
            "cluster_id": cluster_id, "status": "up", "cpu_model": "Intel Xeon Gold 6338",
            "cpus": rnd.choice((32, 64, 128)), "memory_total": total, "memory_free": int(total * rnd.uniform(0.2, 0.8)),
            "last_seen": now - timedelta(seconds=rnd.randrange(10)),
        })
    return rows


def event_rows(n, vms, hosts, cluster_id, now, seed=13):
    """n events, oldest first, each about a VM (and its host) or a host alone."""
    from keel_engine.services import events as ev
    rnd = random.Random(seed)
    host_of = {h["id"]: h for h in hosts}
    rows = []
    for i in range(n):
        t = now - timedelta(seconds=(n - i) * 7)
        if rnd.random() < 0.85:
            v = rnd.choice(vms)
            h = host_of[v["host_id"]] if v["host_id"] else rnd.choice(hosts)
            code, severity, text = rnd.choice((
                (ev.VM_UP, "normal", f"VM {v['name']} is up on host {h['name']}."),
                (ev.VM_DOWN, "normal", f"VM {v['name']} is down."),
                (ev.VM_MIGRATION_DONE, "normal", f"Migration of VM {v['name']} to host {h['name']} completed."),
                (ev.VM_STATE, "warning", f"VM {v['name']} is not responding."),
                (ev.VM_MIGRATION_FAILED, "error", f"Migration of VM {v['name']} to host {h['name']} failed.")))
            refs = {"vm_id": v["id"], "host_id": h["id"]}
        else:
            h = rnd.choice(hosts)
            code, severity, text = rnd.choice((
                (ev.HOST_UP, "normal", f"Host {h['name']} is up."),
                (ev.HOST_NON_RESPONSIVE, "alert", f"Host {h['name']} is not responding.")))
            refs = {"vm_id": None, "host_id": h["id"]}
        rows.append({"code": code, "severity": severity, "description": text, "time": t, "origin": "keel",
                     "cluster_id": cluster_id, **refs})
    return rows


def usage_rows(cluster_id, hosts, now, seed=17):
    """A day of the cluster's use, one sample a minute, oldest first."""
    rnd = random.Random(seed)
    cpus, total = sum(h["cpus"] for h in hosts), sum(h["memory_total"] for h in hosts)
    return [{"cluster_id": cluster_id, "sampled_at": now - timedelta(minutes=SAMPLES - i), "hosts_up": len(hosts),
             "host_cpus": cpus, "vm_cpus": int(cpus * rnd.uniform(0.2, 0.9)), "memory_total": total,
             "memory_used": int(total * rnd.uniform(0.3, 0.8)), "vm_memory": int(total * rnd.uniform(0.2, 0.6))}
            for i in range(SAMPLES)]


def seed(engine, n_vms, n_hosts, n_events, n_pools=0):
    """The inventory, bulk-inserted (one executemany per table, no ORM objects
    per row), and UserRole for admin@internal on the cluster."""
    from sqlalchemy import insert, select
    from sqlalchemy.orm import Session

    from keel_engine.models import (BLANK_TEMPLATE_ID, Cluster, DataCenter, Event, Host, Permission, Role,
                                    UsageSample, User, Vm, VmPool, VmPoolMember)
    now = datetime.now(timezone.utc)
    with Session(engine) as s:
        dc_id, cl_id = str(uuid.uuid4()), str(uuid.uuid4())
        s.execute(insert(DataCenter), [{"id": dc_id, "name": "bench-dc", "description": "web UI benchmark"}])
        s.execute(insert(Cluster), [{"id": cl_id, "name": "bench-cluster", "description": "web UI benchmark",
                                     "data_center_id": dc_id}])
        hosts = host_rows(n_hosts, cl_id, now)
        vms = vm_rows(n_vms, cl_id, BLANK_TEMPLATE_ID, now)
        width = max(4, len(str(n_vms - 1)))
        for i, v in enumerate(vms):
            v["name"] = f"vm-{i:0{width}d}"
            v["host_id"] = hosts[i % n_hosts]["id"] if v["status"] == "up" else None
        events = event_rows(n_events, vms, hosts, cl_id, now)
        s.execute(insert(Host), hosts)
        s.execute(insert(Vm), vms)
        if events:
            s.execute(insert(Event), events)
        s.execute(insert(UsageSample), usage_rows(cl_id, hosts, now))
        admin = s.scalar(select(User.id).where(User.name == "admin", User.domain == "internal"))
        role = s.scalar(select(Role.id).where(Role.name == "UserRole"))
        if admin is None or role is None:
            raise BenchError("admin@internal or the UserRole role is missing after the app's bootstrap")
        s.add(Permission(role_id=role, user_id=admin, object_type="cluster", object_id=cl_id))
        pools = []
        for i in range(n_pools):
            members = [v["id"] for v in vms[i * POOL_VMS:(i + 1) * POOL_VMS]]
            pools.append((str(uuid.uuid4()), members))
        if pools:
            s.execute(insert(VmPool), [{"id": pid, "name": f"pool-{i:02d}", "cluster_id": cl_id,
                                        "template_id": BLANK_TEMPLATE_ID, "size": max(1, len(members))}
                                       for i, (pid, members) in enumerate(pools)])
            rows = [{"vm_id": v, "pool_id": pid, "state": "allocated" if k % 2 else "free",
                     "user_id": admin if k % 2 else None}
                    for pid, members in pools for k, v in enumerate(members)]
            if rows:
                s.execute(insert(VmPoolMember), rows)
        s.commit()
    return Inventory(hosts, vms, events, pools)


# ---- the pages and what each must show ------------------------------------------------
def _names(text):
    return VM_LINK.findall(text)


def _expect_names(what, text, expected):
    got = _names(text)
    if got != expected:
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise BenchError(f"{what}: {len(got)} VM rows, {len(expected)} expected; they differ from row {first + 1} "
                         f"({got[first:first + 1] or 'none'} where {expected[first:first + 1] or 'none'} belongs)")


def _expect(what, text, needle):
    if needle not in text:
        raise BenchError(f"{what}: the page lacks {needle!r}")


def _expect_count(what, text, pattern, expected, label):
    got = len(pattern.findall(text))
    if got != expected:
        raise BenchError(f"{what}: {got} {label}, {expected} expected")


def pages(inv, events_in_db):
    """[(label, path, check(text))]: the pages measured and how each is checked."""
    names = inv.names
    up = [v for v in inv.vms if v["status"] == "up"]
    host = inv.hosts[0]
    vm = up[len(up) // 2] if up else inv.vms[len(inv.vms) // 2]
    vm_host = next((h for h in inv.hosts if h["id"] == vm["host_id"]), None)
    # a down VM's page also offers the forms that copy it (template, clone), as the caller's permits say
    down = next((v for v in inv.vms if v["status"] == "down"), None)
    matching = [n for n in names if fnmatch.fnmatchcase(n, SEARCH.split("=", 1)[1])]
    last = 20

    def dashboard(text):
        _expect("/ui/", text, f'<span class="num">{len(inv.hosts)} / {len(inv.hosts)}</span> hosts up')
        _expect("/ui/", text, f'<span class="num">{len(up)} / {len(inv.vms)}</span> VMs running')
        _expect_count("/ui/", text, EVENT_ROW, min(10, events_in_db), "recent events")
        _expect_count("/ui/", text, SPARK, 2, "charts of the last day")

    def hosts(text):
        got = HOST_LINK.findall(text)
        if sorted(got) != sorted(h["id"] for h in inv.hosts):
            raise BenchError(f"/ui/hosts: {len(got)} host rows, {len(inv.hosts)} expected")

    def one_host(text):
        what = f"/ui/hosts/{host['id']}"
        _expect(what, text, f"<h1>Host {host['name']} ")
        _expect_names(what, text, inv.vms_on(host["id"]))
        _expect_count(what, text, EVENT_ROW, min(HOST_EVENTS, inv.events_of_host(host["id"])), "events")

    def vm_list(what, expected, fragment=False):
        def check(text):
            if fragment == ("<html" in text):
                raise BenchError(f"{what}: {'a whole page' if fragment else 'not a whole page'}")
            _expect_names(what, text, expected)
        return check

    def one_vm(text):
        what = f"/ui/vms/{vm['id']}"
        _expect(what, text, f"<h1>VM {vm['name']} ")
        if vm_host is not None:
            _expect(what, text, f">{vm_host['name']}</a>")

    def events(text):
        _expect_count("/ui/events", text, EVENT_ROW, min(EVENTS_PAGE, events_in_db), "event rows")

    def pool_list(text):
        _expect_count("/ui/pools", text, POOL_LINK, min(PAGE, len(inv.pools)), "pool rows")

    def one_pool(text):
        pool_id, members = inv.pools[0]
        _expect_count(f"/ui/pools/{pool_id}", text, VM_LINK, len(members), "VM rows")

    return [
        ("dashboard", "/ui/", dashboard),
        ("hosts", "/ui/hosts", hosts),
        ("one host", f"/ui/hosts/{host['id']}", one_host),
        ("VMs, page 1", "/ui/vms", vm_list("/ui/vms", names[:PAGE])),
        (f"VMs, page {last}", f"/ui/vms?page={last}",
         vm_list(f"/ui/vms?page={last}", names[(last - 1) * PAGE:last * PAGE])),
        (f"VMs, {SEARCH}", "/ui/vms?search=" + SEARCH.replace("=", "%3D"),
         vm_list(f"/ui/vms?search={SEARCH}", matching[:PAGE])),
        ("VM rows (5 s poll)", "/ui/vms/rows", vm_list("/ui/vms/rows", names[:PAGE], fragment=True)),
        ("one VM", f"/ui/vms/{vm['id']}", one_vm),
    ] + ([
        ("one VM, down", f"/ui/vms/{down['id']}",
         lambda text: _expect(f"/ui/vms/{down['id']}", text, "Make a template")),
    ] if down else []) + [
        ("events", "/ui/events", events),
        ("VM portal", "/ui/portal/", vm_list("/ui/portal/", names[:PAGE])),
        ("roles", "/ui/roles", lambda text: _expect("/ui/roles", text, "SuperUser")),
        ("new storage domain", "/ui/storagedomains/new",
         lambda text: _expect("/ui/storagedomains/new", text, '<option value="nfs"')),
    ] + ([
        ("VM pools", "/ui/pools", pool_list),
        ("one pool", f"/ui/pools/{inv.pools[0][0]}", one_pool),
    ] if inv.pools else [])


# ---- measuring ------------------------------------------------------------------------
def sign_in(client):
    page = client.get("/ui/signin")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    if page.status_code != 200 or found is None:
        raise BenchError(f"GET /ui/signin: HTTP {page.status_code}, no sign-in form")
    r = client.post("/ui/signin", data={"csrf": found.group(1), "username": "admin@internal",
                                        "password": ADMIN_PASSWORD, "next": "/ui/"})
    if r.status_code != 303 or r.headers.get("Location") != "/ui/":
        raise BenchError(f"signing in as admin@internal: HTTP {r.status_code} to {r.headers.get('Location')!r}")


def p95(values):
    """The 95th percentile, nearest rank: a time one request in twenty exceeds (at most)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def measure(client, statements, path, check, repeat):
    """(times in ms, statements per request): WARMUPS untimed GETs, then `repeat` timed ones."""
    times, counts = [], []
    for i in range(WARMUPS + repeat):
        statements.clear()
        t0 = time.perf_counter()
        r = client.get(path)
        body = r.get_data(as_text=True)
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            alert = re.search(r'role="alert">(.*?)</div>', body, re.S)
            raise BenchError(f"GET {path}: HTTP {r.status_code}"
                             + (f" ({re.sub(r'<[^>]+>', '', alert.group(1)).strip()})" if alert else ""))
        if i == 0:
            check(body)
        if i >= WARMUPS:
            times.append(elapsed * 1000)
            counts.append(len(statements))
    return times, counts


def benchmark(args, workdir):
    from sqlalchemy import event, func, select

    from keel_engine.app import create_app
    from keel_engine.config import EngineConfig
    from keel_engine.models import Event

    fig = {"date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "cpu_model": cpu_model(),
           "nproc": os.cpu_count(), "loadavg": loadavg(), "commit": commit(), "vms": args.vms,
           "hosts": args.hosts, "events": args.events, "pools": args.pools, "repeat": args.repeat, "goal_ms": GOAL_MS,
           "database": "sqlite"}
    step("engine app: migrations and bootstrap")
    cfg = EngineConfig(database_url=f"sqlite:///{workdir}/engine.db", admin_password=ADMIN_PASSWORD,
                       secret_key_file=os.path.join(workdir, "fence.key"))
    app = create_app(cfg)
    engine = app.config["KEEL_CTX"].engine
    try:
        step(f"seeding {args.hosts} hosts, {args.vms} VMs, {args.events} events, {args.pools} pools")
        t0 = time.perf_counter()
        inv = seed(engine, args.vms, args.hosts, args.events, args.pools)
        fig["seed_s"] = time.perf_counter() - t0
        fig["vms_up"] = sum(v["status"] == "up" for v in inv.vms)

        client = app.test_client()
        sign_in(client)
        with engine.connect() as conn:     # the seeded events and the sign-in's own
            events_in_db = conn.execute(select(func.count()).select_from(Event)).scalar()
        statements = []
        event.listen(engine, "before_cursor_execute", lambda *a, **kw: statements.append(a[2]))
        fig["pages"] = []
        for label, path, check in pages(inv, events_in_db):
            times, counts = measure(client, statements, path, check, args.repeat)
            page = {"page": label, "path": path, "median_ms": statistics.median(times), "p95_ms": p95(times),
                    "statements": min(counts), "statements_max": max(counts)}
            page["met"] = page["p95_ms"] <= GOAL_MS
            fig["pages"].append(page)
            step(f"  {path}: median {page['median_ms']:.1f} ms, p95 {page['p95_ms']:.1f} ms, "
                 f"{page['statements']} statements")
        return fig
    finally:
        engine.dispose()


def report_lines(fig):
    lines = [
        f"webui benchmark ({fig['date']}, {fig['cpu_model']}, nproc {fig['nproc']})",
        f"  commit {fig['commit']}, load average at start {fig['loadavg']}",
        f"  SQLite file database: {fig['hosts']} hosts (all up), {fig['vms']} VMs ({fig['vms_up']} up), "
        f"{fig['events']} events, {fig['pools']} VM pools, seeded in {fig['seed_s']:.2f} s",
        f"  in-process (Flask test client) as admin@internal; per page {WARMUPS} warm-up GETs, then "
        f"{fig['repeat']} timed; p95 is the nearest rank; statements per request",
        f"    {'page':<22} {'path':<28} {'median ms':>9} {'p95 ms':>8} {'statements':>11}   verdict (p95)",
    ]
    for p in fig["pages"]:
        stmts = str(p["statements"]) if p["statements"] == p["statements_max"] else \
            f"{p['statements']}-{p['statements_max']}"
        path = re.sub(UUID_RE, "<id>", p["path"])
        lines.append(f"    {p['page']:<22} {path:<28} {p['median_ms']:9.1f} {p['p95_ms']:8.1f} {stmts:>11}   "
                     f"{verdict(p['p95_ms'], fig['goal_ms'], False)}")
    met = sum(p["met"] for p in fig["pages"])
    lines.append(f"  {met} of {len(fig['pages'])} pages within {fig['goal_ms']:g} ms (p95)")
    return lines


# ---- entry point ---------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description="Web UI benchmark: server-side render time and SQL statements per "
                                            "page, in-process, with a big inventory (SQLite).")
    p.add_argument("--vms", type=positive_int, default=1000, help="VMs to seed (default 1000)")
    p.add_argument("--hosts", type=positive_int, default=50, help="hosts to seed (default 50)")
    p.add_argument("--events", type=int, default=5000, help="events to seed (default 5000)")
    p.add_argument("--pools", type=int, default=20, help=f"VM pools to seed, up to {POOL_VMS} VMs each (default 20)")
    p.add_argument("--repeat", type=positive_int, default=30, help="timed GETs per page (default 30)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = p.parse_args(argv)
    if args.events < 0:
        p.error("--events: expected 0 or more")
    if args.pools < 0:
        p.error("--pools: expected 0 or more")
    return args


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keel-bench-webui-") as workdir:
        try:
            fig = benchmark(args, workdir)
        except BenchError as e:
            print(f"bench/webui.py: error: {e}", file=sys.stderr)
            return 1
    print("\n".join(report_lines(fig)))
    if args.json:
        print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
