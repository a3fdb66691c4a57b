"""The engine VM's journal, read from outside: `keel-lab journal`.

The appliance has no sshd, and its serial console is a log file in the lab,
so this reads the journal straight from a copy of the engine VM's disk:
`qemu-img convert -U` (a consistent-enough snapshot of a running disk),
the ext4 journal replayed on the copy (`e2fsck -E journal_only`, so the
latest writes show), the journal files taken out with `debugfs rdump` (no
mount, no loop device), then `journalctl --directory`. The running VM is
never touched. A few seconds of the newest lines may not be on disk yet.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from .layout import LabError, LabLayout

PARTITION_OFFSET_MIB = 1   # the appliance's root partition starts at 1 MiB (keel_appliance.recipe)


def _run(cmd: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} is not installed (needed to {what})") from None
    if check and cp.returncode != 0:
        raise LabError(f"cannot {what}: {(cp.stderr or cp.stdout).strip().splitlines()[-1:] or cp.returncode}")
    return cp


def journal(lab: LabLayout, disk_name: str, args: list[str]) -> str:
    disk = os.path.join(lab.shared, disk_name)
    if not os.path.exists(disk):
        raise LabError(f"no engine VM disk at {disk} (the lab runs the appliance only with --engine appliance)")
    with tempfile.TemporaryDirectory(prefix="keel-lab-journal-") as tmp:
        raw, part = os.path.join(tmp, "disk.raw"), os.path.join(tmp, "root.ext4")
        _run(["qemu-img", "convert", "-U", "-O", "raw", disk, raw], "copy the engine VM's disk")
        _run(["dd", f"if={raw}", f"of={part}", "bs=1M", f"skip={PARTITION_OFFSET_MIB}", "status=none"],
             "cut out its root partition")
        os.unlink(raw)
        _run(["e2fsck", "-y", "-E", "journal_only", part], "replay the file system's journal", check=False)
        out = os.path.join(tmp, "journal")
        os.makedirs(out)
        _run(["debugfs", "-R", f"rdump /var/log/journal {out}", part], "read /var/log/journal")
        dirs = [os.path.join(out, "journal", d) for d in os.listdir(os.path.join(out, "journal"))]
        if not dirs:
            raise LabError("the engine VM's disk holds no journal yet")
        if shutil.which("journalctl") is None:
            raise LabError("journalctl is not installed")
        cp = subprocess.run(["journalctl", "--no-pager", "--directory", dirs[0], *args],
                            capture_output=True, text=True, timeout=120)
        return cp.stdout + (cp.stderr if cp.returncode else "")
