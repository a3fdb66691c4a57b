"""The yardstick for bench/api.py: a bare Flask app of the engine's shape.

It answers GET /ovirt-engine/api/vms/<id> with a small JSON VM (about twenty
fields, shaped like the engine's VM view) and checks nothing but the presence
of an `Authorization: Bearer` header: no database, no session, no rendering
layer. Whatever the engine costs above this app is the engine's own work.

bench/api.py runs it under gunicorn with the engine's worker settings:
    gunicorn -k gthread -w 2 --threads 4 --access-logfile - bare_app:app
"""
import json

from flask import Flask, Response, request

API = "/ovirt-engine/api"
EPOCH_MS = 1700000000000
CLUSTER_ID = "5d0e0000-0000-4000-8000-000000000001"
BLANK_ID = "00000000-0000-0000-0000-000000000000"


def sample_vm(ident, index):
    """One VM as the engine's JSON view shows it (values as strings, oVirt style).

    Also the unit of the json.dumps baseline in bench/api.py, so both measure
    the same amount of data."""
    base = f"{API}/vms/{ident}"
    memory = str((1 + index % 8) * 512 * 1024 * 1024)
    return {
        "id": ident, "href": base, "name": f"vm-{index:05d}",
        "description": f"benchmark VM {index}", "status": "up" if index % 3 else "down",
        "memory": memory, "cpu": {"topology": {"sockets": str(1 + index % 4), "cores": "1", "threads": "1"}},
        "os": {"type": "other_linux"},
        "cluster": {"id": CLUSTER_ID, "href": f"{API}/clusters/{CLUSTER_ID}"},
        "template": {"id": BLANK_ID, "href": f"{API}/templates/{BLANK_ID}"},
        "high_availability": {"enabled": "false", "priority": "1"},
        "start_time": str(EPOCH_MS + index), "creation_time": str(EPOCH_MS),
        "type": "server", "origin": "keel", "stop_reason": "", "stateless": "false",
        "memory_policy": {"guaranteed": memory, "max": memory},
        "link": [{"rel": rel, "href": f"{base}/{rel}"}
                 for rel in ("nics", "diskattachments", "snapshots", "permissions")],
    }


app = Flask("keel_bench_bare")


@app.get(f"{API}/vms/<ident>")
def vm_get(ident):
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return Response('{"reason": "Unauthorized"}', status=401, content_type="application/json")
    return Response(json.dumps(sample_vm(ident, 1)), content_type="application/json")


@app.get("/ovirt-engine/services/health")
def health():
    return "DB Up!Welcome to Health Status!"
