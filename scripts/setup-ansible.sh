#!/usr/bin/env bash
# oVirt's automation tools as users install them, in a venv of their own
# (.venv-ansible): ansible 8.7.0 from PyPI (it bundles the ovirt.ovirt 3.2.0
# collection) and ovirt-engine-sdk-python 4.6.2, which that collection's
# modules import. Kept apart from .venv so neither pins the other's
# libraries. Idempotent; quick when already done. The venv sees Debian's
# python3-pycurl (the SDK's transport), so nothing is compiled here.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-ansible
PINS="
ansible==8.7.0
ovirt-engine-sdk-python==4.6.2
"
stamp="$VENV/.keel-ansible-pins"
want="$(printf '%s' "$PINS" | sha256sum | cut -d' ' -f1)"

if [ -x "$VENV/bin/ansible-playbook" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-ansible: creating $VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
echo "setup-ansible: installing ansible and the oVirt SDK into $VENV"
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
printf '%s\n' "$PINS" | sed '/^$/d' > "$reqs"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$reqs"
"$VENV/bin/ansible-galaxy" collection list ovirt.ovirt 2>/dev/null | grep -q "ovirt.ovirt *3.2.0"
echo "$want" > "$stamp"
echo "setup-ansible: done ($("$VENV/bin/ansible-playbook" --version | head -1))"
