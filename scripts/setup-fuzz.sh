#!/usr/bin/env bash
# The fuzzing tools in a venv of their own, .venv-fuzz (schemathesis and its
# dependencies, all pinned), kept apart from .venv so that neither pins the
# other's libraries. Idempotent; quick when already done. Used by
# tests/fuzz/ and bench/fuzz.py, which run schemathesis as a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-fuzz
# schemathesis and everything it pulls in, as resolved for Python 3.11
PINS="
schemathesis==4.32.5
anyio==4.16.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
graphql-core==3.3.2
harfile==0.6.0
hypothesis==6.170.17
hypothesis-graphql==0.13.5
idna==3.20
iniconfig==2.3.1
jsonschema_rs==0.60.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
packaging==26.4
pluggy==1.7.0
Pygments==2.21.0
pyrate-limiter==4.5.1
pytest==9.2.0
PyYAML==6.0.4
requests==2.34.2
rich==15.0.0
sortedcontainers==2.4.0
typing_extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9
"
stamp="$VENV/.keel-fuzz-pins"
want="$(printf '%s' "$PINS" | sha256sum | cut -d' ' -f1)"

if [ -x "$VENV/bin/schemathesis" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-fuzz: creating $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
echo "setup-fuzz: installing schemathesis into $VENV"
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
printf '%s\n' "$PINS" | sed '/^$/d' > "$reqs"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$reqs"
"$VENV/bin/schemathesis" --version >/dev/null
echo "$want" > "$stamp"
echo "setup-fuzz: done ($("$VENV/bin/schemathesis" --version))"
