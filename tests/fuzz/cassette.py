"""Schemathesis' VCR cassette (YAML) as JSON lines, one per recorded
exchange: {method, uri, headers, body_b64, status, elapsed, what}.

Runs under .venv-fuzz's Python, which has PyYAML, so the project's own venv
needs no YAML library:  .venv-fuzz/bin/python cassette.py CASSETTE
The cassette is read one interaction at a time (it can be large)."""
import base64
import json
import sys

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _exchange(chunk):
    try:
        items = yaml.load("".join(chunk), Loader=LOADER)
    except yaml.YAMLError:
        return None
    item = items[0] if isinstance(items, list) and items else None
    if not isinstance(item, dict):
        return None
    req, resp = item.get("request") or {}, item.get("response") or {}
    body, data = req.get("body"), None
    if isinstance(body, dict):
        if "base64_string" in body:
            data = body["base64_string"]
        elif "string" in body:
            data = base64.b64encode(str(body["string"]).encode("utf-8", "surrogatepass")).decode()
    status = (resp.get("status") or {}).get("code")
    try:
        elapsed = float(resp.get("elapsed") or 0)
    except (TypeError, ValueError):
        elapsed = 0.0
    headers = {k: (v[0] if isinstance(v, list) and v else v) for k, v in (req.get("headers") or {}).items()}
    phase = item.get("phase") or {}
    what = " ".join(str(x) for x in (phase.get("name"), (phase.get("data") or {}).get("description")) if x)
    return {"method": req.get("method"), "uri": req.get("uri"), "headers": headers, "body_b64": data,
            "status": int(status) if status not in (None, "") else None, "elapsed": elapsed, "what": what}


def exchanges(path):
    chunk = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            if line.startswith("- id: "):
                got = _exchange(chunk) if chunk else None
                if got:
                    yield got
                chunk = [line]
            elif chunk:
                chunk.append(line)
    got = _exchange(chunk) if chunk else None
    if got:
        yield got


def main(argv):
    out = sys.stdout
    for exchange in exchanges(argv[1]):
        out.write(json.dumps(exchange, ensure_ascii=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
