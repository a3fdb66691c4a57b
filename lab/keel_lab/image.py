"""The engine VM stand-in: a Debian cloud kernel and a busybox initramfs.

Until the appliance image exists, the lab's engine VM boots this tiny guest.
It is a real qemu guest (TCG) that the agent starts through libvirt; its
init loads the virtio network modules, takes the engine address, serves the
engine's health URL with busybox httpd and powers off on the ACPI power
button, so the agent's graceful shutdown works as on the real appliance.

The build is cached in a directory outside git; `build_image` is a no-op when
the cache is complete.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass

log = logging.getLogger("keel_lab.image")

DEFAULT_CACHE = os.environ.get("KEEL_LAB_CACHE", "/var/cache/keel-lab")
KERNEL_META = "linux-image-cloud-amd64"
ENGINE_ADDRESS = "198.51.100.100"
HEALTH_PATH = "/ovirt-engine/services/health"
# oVirt's health servlet answers this body; clients that grep for it work.
HEALTH_BODY = "DB Up!Welcome to Health Status!\n"

# Load order matters: each module needs the ones before it.
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "failover", "net_failover", "virtio_net",
           "evdev", "button")

GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/modules/$m.ko 2>/dev/null; done
ip link set lo up
ip link set eth0 up
ip addr add {address}/24 dev eth0
ip route add default via {gateway}
echo "keel-standin: engine stand-in up at {address}" > /dev/console
# The power button (libvirt's graceful shutdown) ends the guest cleanly.
mkdir -p /var/log /var/run
acpid -d -c /etc/acpi >/dev/console 2>&1 &
httpd -p 80 -h /www
httpd -p 8080 -h /www
while true; do sleep 3600; done
"""

POWER_BUTTON_ACTION = """#!/bin/sh
echo "keel-standin: power button, powering off" > /dev/console
sync
poweroff -f
"""


@dataclass(frozen=True)
class EngineImage:
    """What the engine VM boots. Relative paths are on the shared storage
    (each host reaches them through its own view of it)."""
    kernel: str
    initrd: str
    cmdline: str
    disk: str = "engine.img"
    disk_format: str = "raw"
    seed: str | None = None
    memory_mb: int = 256
    vcpus: int = 1
    rng: bool = False


def _kernel_package() -> str:
    out = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise RuntimeError(f"apt-cache knows no kernel behind {KERNEL_META}; run apt-get update")


def _fetch_kernel(cache: str) -> tuple[str, str]:
    """Download and unpack the cloud kernel; return (vmlinuz, modules dir)."""
    unpacked = os.path.join(cache, "kernel")
    if os.path.isdir(unpacked):
        boots = [f for f in os.listdir(os.path.join(unpacked, "boot")) if f.startswith("vmlinuz-")]
        if boots:
            version = boots[0][len("vmlinuz-"):]
            return (os.path.join(unpacked, "boot", boots[0]),
                    os.path.join(unpacked, "lib", "modules", version))
    pkg = _kernel_package()
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        # apt's sandbox user cannot write here; the download is still verified.
        subprocess.run(["apt-get", "download", "-o", "APT::Sandbox::User=root", pkg],
                       cwd=tmp, check=True, capture_output=True)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        staging = os.path.join(tmp, "x")
        subprocess.run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]), staging], check=True)
        os.rename(staging, unpacked)
    return _fetch_kernel(cache)


def _newc_archive(root: str) -> bytes:
    """The initramfs format (cpio "newc"), written here so the build needs
    no cpio tool: a header per entry, names and data padded to 4 bytes."""
    out = bytearray()
    ino = 1

    def entry(name: str, mode: int, data: bytes = b"") -> None:
        nonlocal ino
        namez = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(namez), 0)
        out.extend(b"070701" + b"".join(b"%08X" % v for v in fields))
        out.extend(namez)
        out.extend(b"\0" * (-(110 + len(namez)) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(data) % 4))
        ino += 1

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            entry(rel, stat.S_IFDIR | 0o755)
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            with open(full, "rb") as f:
                data = f.read()
            mode = stat.S_IMODE(os.stat(full).st_mode)
            entry(os.path.normpath(os.path.join(rel, fn)), stat.S_IFREG | mode, data)
    entry("TRAILER!!!", 0)
    return bytes(out)


# Public names: keel_lab.guest_image builds the test guest with them.
fetch_kernel = _fetch_kernel
newc_archive = _newc_archive


def _write_initramfs(path: str, modules_dir: str, address: str, gateway: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        for d in ("bin", "dev", "proc", "sys", "etc/acpi/PWRF", "lib/modules",
                  "www" + os.path.dirname(HEALTH_PATH)):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
        init = os.path.join(root, "init")
        with open(init, "w") as f:
            f.write(GUEST_INIT.format(modules=" ".join(MODULES), address=address, gateway=gateway))
        os.chmod(init, 0o755)
        action = os.path.join(root, "etc/acpi/PWRF/00000080")
        with open(action, "w") as f:
            f.write(POWER_BUTTON_ACTION)
        os.chmod(action, 0o755)
        with open(os.path.join(root, "www" + HEALTH_PATH), "w") as f:
            f.write(HEALTH_BODY)
        with open(os.path.join(root, "www/index.html"), "w") as f:
            f.write("Keel engine stand-in\n")
        for m in MODULES:
            found = [os.path.join(dp, fn) for dp, _, fns in os.walk(modules_dir)
                     for fn in fns if fn == m + ".ko"]
            if not found:
                raise RuntimeError(f"kernel module {m}.ko not found under {modules_dir}")
            shutil.copy(found[0], os.path.join(root, "lib/modules", m + ".ko"))
        cpio = _newc_archive(root)
    tmp = path + ".tmp"
    with gzip.open(tmp, "wb", compresslevel=6) as f:
        f.write(cpio)
    os.replace(tmp, path)


def build_image(cache: str = DEFAULT_CACHE, address: str = ENGINE_ADDRESS,
                gateway: str = "198.51.100.1") -> EngineImage:
    """Build (or reuse) the stand-in kernel + initramfs in `cache`."""
    os.makedirs(cache, exist_ok=True)
    vmlinuz, modules_dir = _fetch_kernel(cache)
    initrd = os.path.join(cache, f"standin-{address}.initrd.gz")
    if not os.path.exists(initrd):
        log.info("building the engine stand-in initramfs in %s", initrd)
        _write_initramfs(initrd, modules_dir, address, gateway)
    # Images are read by qemu running as root here, but keep them world-readable.
    for p in (vmlinuz, initrd):
        os.chmod(p, os.stat(p).st_mode | stat.S_IROTH | stat.S_IRGRP)
    return EngineImage(kernel=vmlinuz, initrd=initrd,
                       cmdline="console=ttyS0 panic=-1 quiet")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    img = build_image()
    print(f"kernel {img.kernel}\ninitrd {img.initrd}\ncmdline {img.cmdline}")


if __name__ == "__main__":
    main()
