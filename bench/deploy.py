"""How long `hosted-engine --deploy` takes on a bare lab host, step by step.

Brings up a bare 1-host lab (`keel-lab up --engine bare`, the appliance
image cached), runs the deploy non-interactively from the lab's answer file
N times (each run followed by `--clean-deploy`, whose time is printed too),
and prints each step's time (median over the runs) and the total, the
figure the README quotes. Tears the lab down at the end.

    .venv/bin/python bench/deploy.py [--runs 2] [--keep]

Needs root and a machine where no other lab runs.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KEEL_LAB = [sys.executable, "-m", "keel_lab.cli"]
STEP = re.compile(r"^\[(\d+)/(\d+)\] (.+)$")
DONE = re.compile(r"^\s+done in ([\d.]+) s$")


def lab(lab_dir: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    argv = list(args)
    cut = argv.index("--") if "--" in argv else len(argv)
    argv[cut:cut] = ["--dir", lab_dir]
    return subprocess.run(KEEL_LAB + argv, capture_output=True, text=True, timeout=timeout)


def step_times(output: str) -> dict[str, float]:
    times, current = {}, None
    for line in output.splitlines():
        m = STEP.match(line)
        if m:
            current = m.group(3)
            continue
        m = DONE.match(line)
        if m and current:
            times[current] = float(m.group(1))
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="leave the lab (deployed) up at the end")
    args = ap.parse_args()
    lab_dir = tempfile.mkdtemp(prefix="keel-bench-deploy-")
    t0 = time.monotonic()
    up = lab(lab_dir, "up", "--hosts", "1", "--engine", "bare", "--timeout", "300")
    if up.returncode != 0:
        print(up.stdout, up.stderr, file=sys.stderr)
        return 1
    print(f"bare lab up in {time.monotonic() - t0:.1f} s ({lab_dir})")
    answers = os.path.join(lab_dir, "deploy", "answers.ini")
    runs: list[dict[str, float]] = []
    totals, cleans = [], []
    try:
        for i in range(args.runs):
            t = time.monotonic()
            r = lab(lab_dir, "exec", "host1", "--", "hosted-engine", "--deploy", f"--config-append={answers}")
            total = time.monotonic() - t
            if r.returncode != 0:
                print(r.stdout[-3000:], r.stderr[-2000:], file=sys.stderr)
                return 1
            runs.append(step_times(r.stdout))
            totals.append(total)
            print(f"run {i + 1}: deployed in {total:.1f} s")
            if i + 1 < args.runs or not args.keep:
                t = time.monotonic()
                c = lab(lab_dir, "exec", "host1", "--", "hosted-engine", "--clean-deploy")
                cleans.append(time.monotonic() - t)
                if c.returncode != 0:
                    print(c.stdout, c.stderr, file=sys.stderr)
                    return 1
        print(f"\n{'step':<40} {'median s':>9}")
        for name in runs[0]:
            print(f"{name:<40} {statistics.median(r.get(name, 0.0) for r in runs):>9.1f}")
        print(f"{'whole deploy (command start to end)':<40} {statistics.median(totals):>9.1f}"
              f"   (runs: {', '.join(f'{t:.1f}' for t in totals)})")
        if cleans:
            print(f"{'--clean-deploy':<40} {statistics.median(cleans):>9.1f}")
        print(f"host load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep:
            lab(lab_dir, "down", timeout=300)
            shutil.rmtree(lab_dir, ignore_errors=True)
        else:
            print(f"the lab stays up in {lab_dir}: keel-lab down --dir {lab_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
