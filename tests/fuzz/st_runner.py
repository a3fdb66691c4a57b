"""Schemathesis (from its own venv, .venv-fuzz) over every operation of the
served OpenAPI document, and its findings read back from the VCR cassette
it records: every request it sent, with the answer's status.

Path parameters are bound to the seeded ids with some probability, so that
part of the requests reach an existing object instead of a 404; DELETE keeps
random ids (it would remove the inventory the other operations need). The
logout endpoint is left out: it revokes the bearer token every request
carries (the targeted fuzzer covers it without a token)."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass

from .bodies import SEGMENT_KIND
from .report import SERVER_ERROR, Finding, Stats
from harness.procs import stop_group

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ_VENV = os.environ.get("KEEL_FUZZ_VENV", os.path.join(REPO, ".venv-fuzz"))
EXCLUDED_PATHS = ("/ovirt-engine/services/sso-logout",)
KNOWN_ID_PROBABILITY = 0.5


def schemathesis_command():
    path = os.path.join(FUZZ_VENV, "bin", "schemathesis")
    return path if os.access(path, os.X_OK) else None


def _toml_str(s):
    return json.dumps(s)   # a JSON string is a valid TOML basic string


SLOW_EXAMPLES = 3


def config_text(ops, ids, slow=()):
    """schemathesis.toml: a dictionary of seeded ids per kind, bound to the
    path parameters that name that kind (one entry per path: schemathesis
    ORs include filters, so a method filter would not narrow a path filter).
    Slow operations (keys in `slow`, e.g. a BMC call that waits out its
    deadline) keep random ids and get only a few examples."""
    lines, used, bindings = [], set(), {}
    slow_paths = {key.split(" ", 1)[1] for key in slow}
    for op in ops:
        if "{" not in op.path or op.path in bindings or op.path in slow_paths:
            continue
        segs = op.path.split("/")
        params = {}
        for i, seg in enumerate(segs):
            if seg.startswith("{") and seg.endswith("}") and i:
                kind = SEGMENT_KIND.get(segs[i - 1])
                if kind and ids.get(kind):
                    params[seg[1:-1]] = kind
                    used.add(kind)
        if params:
            bindings[op.path] = params
    for kind in sorted(used):
        lines.append(f"[dictionaries.{kind}]")
        lines.append("values = [" + ", ".join(_toml_str(v) for v in ids[kind]) + "]")
        lines.append("")
    for path, params in bindings.items():
        lines.append("[[operations]]")
        lines.append(f"include-path = {_toml_str(path)}")
        lines.append('exclude-method = "DELETE"')
        inner = ", ".join(f'"path.{name}" = {{ dictionary = "{kind}", probability = {KNOWN_ID_PROBABILITY} }}'
                          for name, kind in params.items())
        lines.append(f"parameters = {{ {inner} }}")
        lines.append("")
    for path in sorted(slow_paths):
        lines.append("[[operations]]")
        lines.append(f"include-path = {_toml_str(path)}")
        lines.append(f"generation = {{ max-examples = {SLOW_EXAMPLES} }}")
        lines.append("")
    return "\n".join(lines)


@dataclass
class StRun:
    returncode: int | None
    seconds: float
    cassette: str | None
    output_tail: str
    timed_out: bool = False


def run(engine, ops, outdir, max_examples=None, max_time=None, workers=2, seed=None, timeout=600,
        checks="not_a_server_error", request_timeout=30, slow=()):
    """One schemathesis run; stopped (by PID, its whole process group) at `timeout`."""
    cmd = schemathesis_command()
    if cmd is None:
        raise FileNotFoundError(f"schemathesis is not installed in {FUZZ_VENV} (run scripts/setup-fuzz.sh)")
    os.makedirs(outdir, exist_ok=True)
    config = os.path.join(outdir, "schemathesis.toml")
    with open(config, "w") as f:
        f.write(config_text(ops, engine.ids, slow))
    cassette = os.path.join(outdir, "cassette.yaml")
    args = [cmd, "--config-file", config, "run", engine.base + "/ovirt-engine/api-docs/openapi.json",
            "--checks", checks, "--workers", str(workers), "--header", f"Authorization: Bearer {engine.token}",
            "--request-timeout", str(request_timeout), "--report", "vcr", "--report-vcr-path", cassette,
            "--report-preserve-bytes", "--no-color", "--suppress-health-check", "all",
            "--generation-database", "none", "--max-failures", "100000"]
    for path in EXCLUDED_PATHS:
        args += ["--exclude-path", path]
    if max_examples:
        args += ["--max-examples", str(max_examples)]
    if max_time:
        args += ["--max-time", str(int(max_time))]
    if seed is not None:
        args += ["--seed", str(seed)]
    log_path = os.path.join(outdir, "schemathesis.out")
    start = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=outdir, start_new_session=True,
                                env={**os.environ, "NO_PROXY": "*", "no_proxy": "*"})
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_group(proc)
    with open(log_path, "rb") as f:
        f.seek(max(0, os.path.getsize(log_path) - 4000))
        tail = f.read().decode("utf-8", "replace")
    return StRun(proc.returncode, time.monotonic() - start, cassette if os.path.exists(cassette) else None,
                 tail, timed_out)


# ---- the cassette ---------------------------------------------------------------------------
def interactions(cassette):
    """Each recorded exchange as {method, uri, headers, body (bytes|None), status, elapsed},
    read by cassette.py under .venv-fuzz's Python (which has the YAML parser)."""
    python = os.path.join(FUZZ_VENV, "bin", "python")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cassette.py")
    proc = subprocess.Popen([python, script, cassette], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    completed = False
    try:
        for line in proc.stdout:
            item = json.loads(line)
            b64 = item.pop("body_b64")
            item["body"] = base64.b64decode(b64) if b64 is not None else None
            yield item
        completed = True
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        if proc.wait() != 0 and completed:
            raise RuntimeError(f"cannot read the cassette {cassette}: {err.strip()[-300:]}")


def _matcher(ops):
    compiled = []
    for op in ops:
        rx = "^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(op.path)) + "$"
        literal = len([s for s in op.path.split("/") if s and not s.startswith("{")])
        compiled.append((re.compile(rx), op, literal))
    compiled.sort(key=lambda c: -c[2])

    def match(method, path):
        for rx, op, _ in compiled:
            if op.method == method and rx.match(path):
                return op.key
        for rx, op, _ in compiled:
            if rx.match(path):
                return f"{method} {op.path} (method not in the document)"
        return f"{method} (path not in the document)"
    return match


_DROP = {"authorization", "content-length", "user-agent", "accept-encoding", "connection", "host",
         "x-schemathesis-testcaseid"}


def read_results(cassette, ops, base):
    """(Stats, [Finding]) from the cassette: every request counted, every 5xx a finding."""
    stats, findings = Stats(), []
    match = _matcher(ops)
    for it in interactions(cassette):
        uri = it["uri"] or ""
        path_q = uri[len(base):] if uri.startswith(base) else uri
        path = path_q.split("?", 1)[0]
        method = (it["method"] or "").upper()
        operation = match(method, path)
        status = it["status"]
        stats.count(operation, status, it["body"], it["elapsed"])
        if status is not None and status >= 500:
            headers = it["headers"]
            ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
            kept = {k: v for k, v in headers.items() if k.lower() not in _DROP and k.lower() != "content-type"
                    and k.lower() != "accept"}
            accept = next((v for k, v in headers.items() if k.lower() == "accept"), "*/*")
            findings.append(Finding(SERVER_ERROR, operation, status, method, path_q, ctype, it["body"],
                                    f"schemathesis {it.get('what') or 'case'}", source="schemathesis",
                                    headers=kept, accept=accept,
                                    auth=any(k.lower() == "authorization" for k in headers)))
    return stats, findings
