"""Boot time of the engine appliance under qemu (TCG) on this machine.

Each run boots a fresh copy of the image (a qcow2 overlay) with a seed
disk (first boot: the seed is applied, the schema created, admin@internal
made), then powers it off hard and boots the same disk again (what a
failover does: the second boot is the figure that matters for HA). For
each boot it measures, from qemu's start: the first 200 of the health URL
and the first token for admin@internal; and, from the guest's journal,
where the seconds went. Prints the median of N runs and the image size.

    .venv/bin/python bench/appliance_boot.py [--runs 3] [--vcpus 2] [--memory 1024]
                                             [--database sqlite|postgresql]

Networking: qemu user-mode (restrict=on) with the guest's port 80
forwarded to 127.0.7.1. Needs root (the image build chroots).
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
import time

from keel_appliance.build import build
from keel_appliance.seed import SeedConfig, StaticNetwork, write_seed
from keel_appliance.vm import ApplianceVM, UserNet, VMError

FORWARD_ADDRESS = "127.0.7.1"
PASSWORD = "bench-admin-pw"

# journal line -> milestone name (kernel monotonic time = since the guest kernel started)
MILESTONES = (
    ("firstboot done", re.compile(r"Finished keel-appliance-firstboot")),
    ("engine starting", re.compile(r"Starting keel-engine\.service")),
    ("gunicorn listening", re.compile(r"Listening at: ")),
    ("engine ready (notify)", re.compile(r"Started keel-engine\.service")),
)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def guest_timeline(vm: ApplianceVM) -> dict[str, float]:
    """Milestones from the guest's own journal and systemd-analyze."""
    out = {}
    vm.wait_shell(120)
    analyze = vm.shell("systemd-analyze 2>&1 | head -1", 60)
    m = re.search(r"in ([\d.]+)s \(kernel\)", analyze)
    if m:
        out["kernel (to init)"] = float(m.group(1))
    # the whole journal: systemd's own lines from before journald started are
    # not filed under the units
    journal = vm.shell("journalctl -b -o short-monotonic --no-pager | "
                       "grep -E 'keel-engine\\.service|keel-appliance-firstboot\\.service|Listening at: ' | head -40", 60)
    for line in journal.splitlines():
        t = re.match(r"\[\s*([\d.]+)\]", line)
        if not t:
            continue
        for name, rx in MILESTONES:
            if name not in out and rx.search(line):
                out[name] = float(t.group(1))
    return out


def boot(vm: ApplianceVM, timeout: float, details: bool) -> dict[str, float]:
    vm.start()
    try:
        health = vm.wait_health(timeout)
        token_at, _ = vm.wait_token(PASSWORD, 120)
        figures = {"health 200": health, "token": token_at}
        if details:
            figures.update(guest_timeline(vm))
        return figures
    finally:
        vm.kill()


def median_table(runs: list[dict[str, float]]) -> list[tuple[str, float, float, float]]:
    names = []
    for r in runs:
        names += [n for n in r if n not in names]
    return [(n, statistics.median([r[n] for r in runs if n in r]),
             min(r[n] for r in runs if n in r), max(r[n] for r in runs if n in r)) for n in names]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--vcpus", type=int, default=2)
    p.add_argument("--memory", type=int, default=1024, help="MiB")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--cpu", help="qemu -cpu model (default: qemu's)")
    p.add_argument("--cache", help="image cache directory")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--no-details", action="store_true", help="skip the in-guest timeline")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("appliance_boot: needs root (the image build chroots)", file=sys.stderr)
        return 2
    started = time.monotonic()
    image = build(cache=args.cache)
    print(f"image {image.key}: built or reused in {time.monotonic() - started:.0f}s; "
          f"stored {image.size_bytes / 1e6:.0f} MB (disk.qcow2 {os.path.getsize(image.disk) / 1e6:.0f} MB, "
          f"kernel {os.path.getsize(image.kernel) / 1e6:.1f} MB, initrd {os.path.getsize(image.initrd) / 1e3:.0f} kB)")
    print(f"guest: {args.vcpus} vCPU, {args.memory} MiB, TCG, database {args.database}; "
          f"host load average {os.getloadavg()[0]:.2f} at start")
    first, second = [], []
    with tempfile.TemporaryDirectory(prefix="keel-appliance-bench-") as tmp:
        seed = os.path.join(tmp, "seed.img")
        write_seed(seed, SeedConfig(hostname="engine.bench.test", admin_password=PASSWORD,
                                    network=StaticNetwork("198.51.100.100/24", "198.51.100.2"),
                                    database=args.database))
        for i in range(args.runs):
            disk = os.path.join(tmp, f"disk{i}.qcow2")
            net = UserNet(host_address=FORWARD_ADDRESS, host_port=free_port(FORWARD_ADDRESS))
            vm = ApplianceVM(image, disk, seed=seed, memory_mb=args.memory, vcpus=args.vcpus, net=net,
                             cpu=args.cpu, console_log=os.path.join(tmp, f"console{i}.log"))
            try:
                a = boot(vm, args.timeout, not args.no_details)
                b = boot(vm, args.timeout, not args.no_details)
            except VMError as e:
                print(f"run {i + 1}: {e}", file=sys.stderr)
                return 1
            first.append(a)
            second.append(b)
            print(f"run {i + 1}/{args.runs}: first boot health {a['health 200']:.1f}s token {a['token']:.1f}s; "
                  f"second boot health {b['health 200']:.1f}s token {b['token']:.1f}s "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
            os.unlink(disk)
    for label, runs in (("first boot (seed applied)", first), ("second boot (same disk, after a hard power-off)", second)):
        print(f"\n{label}, median of {len(runs)} (min-max), seconds since qemu started:")
        for name, med, lo, hi in median_table(runs):
            where = "guest clock" if name not in ("health 200", "token") else "host clock"
            print(f"  {name:<24} {med:6.1f}   ({lo:.1f}-{hi:.1f})  {where}")
    print(f"\nhost load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
