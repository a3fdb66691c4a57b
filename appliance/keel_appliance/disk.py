"""The appliance's disk: one ext4 file system in one MBR partition, made
from a directory with mke2fs -d (no loop device, no mount), then qcow2."""
from __future__ import annotations

import os
import struct
import subprocess

SECTOR = 512


def mbr(first_sector: int, sectors: int, partition_type: int = 0x83) -> bytes:
    """A DOS partition table with one partition: boot code left empty (the
    kernel is booted directly), CHS fields saturated as for any large disk."""
    if first_sector <= 0 or sectors <= 0 or first_sector + sectors > 2 ** 32:
        raise ValueError("partition outside what an MBR can address")
    chs_max = b"\xfe\xff\xff"
    entry = (b"\x00" + chs_max + bytes([partition_type]) + chs_max
             + struct.pack("<II", first_sector, sectors))
    return b"\x00" * 446 + entry + b"\x00" * 48 + b"\x55\xaa"


def make_raw(rootfs: str, path: str, size_bytes: int, offset: int, label: str) -> None:
    """ext4 of `size_bytes` filled from `rootfs`, starting at `offset` of a
    raw image file, behind a partition table that points at it."""
    if offset % SECTOR or size_bytes % SECTOR:
        raise ValueError("offset and size must be whole sectors")
    if os.path.exists(path):
        os.unlink(path)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", f"offset={offset}",
                    "-d", rootfs, path, str(size_bytes // 1024) + "k"],
                   check=True, capture_output=True)
    with open(path, "r+b") as f:
        f.write(mbr(offset // SECTOR, size_bytes // SECTOR))


def to_qcow2(raw: str, qcow2: str, compress: bool) -> None:
    cmd = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2"]
    if compress:
        cmd.append("-c")
    subprocess.run(cmd + [raw, qcow2], check=True, capture_output=True)


def allocated_bytes(path: str) -> int:
    return os.stat(path).st_blocks * 512
