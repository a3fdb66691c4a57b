#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (run as root):
# the Debian packages Keel and its lab need, the venv in .venv with the
# project installed, the web UI's front-end libraries from npm, and the
# lab's engine VM stand-in image (cached; the engine appliance image is
# built by its first user, `keel-lab up` or the appliance tests, and cached
# too).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  etcd-server etcd-client sanlock python3-sanlock
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-sanlock libvirt-clients python3-libvirt
  qemu-system-x86 qemu-utils openipmi ipmitool fence-agents busybox-static
  iptables iproute2 bridge-utils procps psmisc curl gcc libc6-dev
  postgresql python3-psycopg2 python3-pycurl python3-venv python3-dev
  fuse3 python3-fusepy
  wrk slapd ldap-utils python3-websockify
  mmdebstrap dosfstools mtools genisoimage
  nfs-ganesha nfs-ganesha-vfs
  chromium chromium-driver
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # Services these packages ship are not started here: the lab and the
  # tests run their own daemons, one per simulated host.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (with Debian's python3-sanlock and python3-libvirt visible)"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.keel-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Keel into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

bash scripts/setup-webui.sh
bash scripts/setup-fuzz.sh
bash scripts/setup-ansible.sh

echo "setup: building the lab's engine VM image (cached)"
cache="${KEEL_LAB_CACHE:-/var/cache/keel-lab}"
if [ ! -d "$cache/kernel" ] && ! apt-cache depends linux-image-cloud-amd64 2>/dev/null | grep -q "Depends: linux-image-"; then
  apt-get update -q >/dev/null   # the image needs the cloud kernel package's name
fi
.venv/bin/python -m keel_lab.image >/dev/null
# the test guest the engine's VMs boot in tests and in the demo (cached)
.venv/bin/python -m keel_lab.guest_image >/dev/null
echo "setup: done"
