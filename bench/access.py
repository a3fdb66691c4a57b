#!/usr/bin/env python3
"""What access control costs a read: GET /vms (all of them) and GET /vms/{id}
for admin@internal (SuperUser on the system), for a user with UserRole on a
cluster holding every VM, and for a user with UserRole on one VM, with and
without `Filter: true`; in-process (Flask test client), SQLite file
database, --vms VMs (default 5,000) in one cluster.

Prints, per caller, the median time of --runs list requests and of 200
single-VM GETs, the number of VMs the list returned and the SQL statements
one list costs. Figures, not a test: nothing here changes the exit status
unless an answer is wrong (then one line and status 1).

    .venv/bin/python bench/access.py [--vms N] [--runs N]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from sqlalchemy import event  # noqa: E402

from harness.engineapp import engine_app_with_host  # noqa: E402
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, Host, Role, Vm  # noqa: E402
from keel_engine.services import Context, roles, users  # noqa: E402

API = "/ovirt-engine/api"


def seed(sm, host_id, n):
    with sm() as s:
        cl = s.get(Cluster, s.get(Host, host_id).cluster_id)
        s.bulk_insert_mappings(Vm, [{"name": f"vm{i:06d}", "cluster_id": cl.id, "template_id": BLANK_TEMPLATE_ID,
                                     "memory": 64 << 20, "status": "down", "version": 1} for i in range(n)])
        s.commit()
        return cl.id, s.query(Vm).filter_by(name="vm000000").one().id


def user(cfg, sm, name, role, model, ident):
    with sm() as s:
        u = users.add_internal(Context(cfg, sm), s, name, "bench-pw-1")
        roles.add_permission(Context(cfg, sm), s, s.query(Role).filter_by(name=role).one(), s.get(model, ident),
                             user=u)
        s.commit()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-access-") as tmp:
        cfg, app, sm, host_id = engine_app_with_host(Path(tmp), "127.0.8.29")
        cl_id, vm_id = seed(sm, host_id, args.vms)
        user(cfg, sm, "clusteruser", "UserRole", Cluster, cl_id)
        user(cfg, sm, "oneuser", "UserRole", Vm, vm_id)
        c = app.test_client()
        statements = []
        event.listen(app.config["KEEL_CTX"].engine, "before_cursor_execute",
                     lambda *a, **kw: None if a[2].split()[0] in ("BEGIN", "COMMIT", "ROLLBACK")
                     else statements.append(1))
        print(f"access benchmark ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
              f"nproc {os.cpu_count()}, {args.vms} VMs, SQLite)")
        for name, password in (("admin@internal", "pw12345"), ("clusteruser", "bench-pw-1"),
                               ("oneuser", "bench-pw-1")):
            tok = c.post("/ovirt-engine/sso/oauth/token", data={"grant_type": "password", "username": name,
                                                                  "password": password}).get_json()["access_token"]
            for filtered in (False, True):
                h = {"Authorization": f"Bearer {tok}", "Accept": "application/json"}
                if filtered:
                    h["Filter"] = "true"
                times, got = [], None
                for _ in range(args.runs + 1):
                    statements.clear()
                    t0 = time.perf_counter()
                    r = c.get(API + "/vms", headers=h)
                    times.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        sys.exit(f"bench/access.py: GET /vms as {name} answered {r.status_code}")
                    got = len(r.get_json().get("vm", []))
                    n_statements = len(statements)
                one = []
                for _ in range(200):
                    t0 = time.perf_counter()
                    c.get(f"{API}/vms/{vm_id}", headers=h)
                    one.append(time.perf_counter() - t0)
                print(f"{name:16s} filter={'true ' if filtered else 'false'}  list: {got:6d} VMs "
                      f"{statistics.median(times[1:]) * 1000:8.1f} ms, {n_statements} statements   "
                      f"one VM: {statistics.median(one) * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
