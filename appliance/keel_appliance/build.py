"""Build the engine appliance image (imperative shell around recipe.py).

Two cached layers under the cache directory (default
/var/cache/keel-appliance, or $KEEL_APPLIANCE_CACHE):

  base/<key>.tar       Debian packages only (mmdebstrap); rebuilt when the
                       package list changes
  images/<key>/        disk.qcow2, vmlinuz, initrd.img, manifest.json; rebuilt
                       when Keel's sources, the pinned wheels, the units in
                       systemd/appliance/ or the recipe change
  current -> images/<key>

A build holds cache/lock, so concurrent builds wait instead of colliding.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

from . import disk, pyenv, recipe, rootfs as finish
from .pyenv import BuildError
from .rootfs import run

log = logging.getLogger("keel_appliance.build")

DEFAULT_CACHE = "/var/cache/keel-appliance"
KEEP_IMAGES = 2


@dataclass(frozen=True)
class ApplianceImage:
    directory: str
    disk: str                 # qcow2, the engine VM's only disk (copy it, or use it as a backing file)
    kernel: str
    initrd: str
    cmdline: str
    disk_format: str
    key: str
    built_at: str
    size_bytes: int           # disk.qcow2 + vmlinuz + initrd.img, as stored

    @classmethod
    def load(cls, directory: str) -> "ApplianceImage":
        with open(os.path.join(directory, "manifest.json")) as f:
            m = json.load(f)
        fields = dict(m["image"])
        for name in ("disk", "kernel", "initrd"):
            fields[name] = os.path.join(directory, fields[name])
        return cls(directory=directory, **fields)


def default_cache() -> str:
    return os.environ.get("KEEL_APPLIANCE_CACHE") or DEFAULT_CACHE


@contextlib.contextmanager
def _locked(cache: str):
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- Debian layer

def _ensure_base(cache: str, key: str, packages: list[str], force: bool) -> str:
    tar = os.path.join(cache, "base", f"{key}.tar")
    if os.path.exists(tar) and not force:
        return tar
    for tool in ("mmdebstrap", "mkfs.ext4", "qemu-img", "mkfs.vfat", "mcopy"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found: apt-get install mmdebstrap e2fsprogs qemu-utils dosfstools mtools")
    os.makedirs(os.path.dirname(tar), exist_ok=True)
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    log.info("building the Debian layer %s (%d packages asked for; takes minutes)", key, len(packages))
    cmd = ["mmdebstrap", "--mode=unshare", "--variant=apt", "--format=tar", "--quiet",
           "--include=" + ",".join(packages),
           # downloaded .debs are kept between builds
           '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
           f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
           f"--customize-hook=sync-out /var/cache/apt/archives {debs}"]
    cmd += [f"--dpkgopt=path-exclude={p}" for p in recipe.DPKG_EXCLUDES]
    cmd += [f"--dpkgopt=path-include={p}" for p in recipe.DPKG_INCLUDES]
    partial = tar + ".partial"
    run(cmd + [recipe.SUITE, partial, *recipe.MIRRORS], "mmdebstrap (the Debian layer)")
    os.replace(partial, tar)
    for old in os.listdir(os.path.dirname(tar)):
        if old != os.path.basename(tar):
            os.unlink(os.path.join(os.path.dirname(tar), old))
    return tar


def _boot_files(rootfs: str, out: str) -> str:
    """The kernel and initramfs, next to the disk (direct kernel boot); the kernel's version."""
    boot = os.path.join(rootfs, "boot")
    kernels = sorted(f for f in os.listdir(boot) if f.startswith("vmlinuz-"))
    if len(kernels) != 1:
        raise BuildError(f"expected one kernel in the image's /boot, found {kernels}")
    version = kernels[0][len("vmlinuz-"):]
    initrd = os.path.join(boot, f"initrd.img-{version}")
    if not os.path.exists(initrd):
        raise BuildError(f"update-tirfs made no {initrd}")
    shutil.copy2(os.path.join(boot, kernels[0]), os.path.join(out, "vmlinuz"))
    shutil.copy2(initrd, os.path.join(out, "initrd.img"))
    return version


# ---------------------------------------------------------------- entry point

def build(cache: str | None = None, force: bool = False, source: str | None = None,
          disk_gib: int = recipe.DEFAULT_DISK_GIB, compress: bool = True) -> ApplianceImage:
    """Build the image, or return the cached one when nothing it is made of changed."""
    if os.geteuid() != 0:
        raise BuildError("building the appliance image needs root (chroot, file ownership)")
    if not 2 <= disk_gib <= 1024:
        raise BuildError(f"disk size {disk_gib} GiB: expected 2 to 1024")
    cache = os.path.abspath(cache or default_cache())
    source = os.path.abspath(source or pyenv.source_root())
    names = pyenv.source_files(source)
    py = pyenv.python_side(source)
    base = recipe.base_key(py.debian)
    key = recipe.image_key(base, pyenv.tree_hash(source, names), py.pins,
                           pyenv.tree_hash(source, pyenv.guest_files(source)), disk_gib)
    with _locked(cache):
        out = os.path.join(cache, "images", key)
        if os.path.exists(os.path.join(out, "manifest.json")) and not force:
            log.info("appliance image %s is up to date", key)
            _point_current(cache, key)
            return ApplianceImage.load(out)
        started = time.monotonic()
        tar = _ensure_base(cache, base, sorted(set(recipe.DEBIAN_PACKAGES) | set(py.debian)), force)
        os.makedirs(os.path.join(cache, "tmp"), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=os.path.join(cache, "tmp")) as work:
            rootfs, staging = os.path.join(work, "root"), os.path.join(work, "out")
            os.makedirs(rootfs)
            os.makedirs(staging)
            run(["tar", "--numeric-owner", "-xpf", tar, "-C", rootfs], "unpacking the Debian layer")
            wheels = os.path.join(work, "wheels")
            os.makedirs(wheels)
            for path in pyenv.build_wheels(source, names, py.pins, os.path.join(cache, "wheelhouse"), work):
                shutil.copy2(path, wheels)
            log.info("installing Keel and %d pinned wheels into the image", len(py.pins))
            finish.install_python(rootfs, wheels, py.pins)
            finish.configure(rootfs, source, key)
            kernel_version = _boot_files(rootfs, staging)
            raw = os.path.join(work, "disk.raw")
            log.info("making the %d GiB ext4 disk", disk_gib)
            disk.make_raw(rootfs, raw, disk_gib * 1024 ** 3, recipe.PARTITION_OFFSET, recipe.ROOT_LABEL)
            disk.to_qcow2(raw, os.path.join(staging, "disk.qcow2"), compress)
            sizes = sum(os.path.getsize(os.path.join(staging, f)) for f in os.listdir(staging))
            image = {"disk": "disk.qcow2", "kernel": "vmlinuz", "initrd": "initrd.img",
                     "cmdline": recipe.KERNEL_CMDLINE, "disk_format": "qcow2", "key": key,
                     "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "size_bytes": sizes}
            manifest = {"image": image, "base": base, "kernel_version": kernel_version,
                        "pins": list(py.pins), "debian_python": list(py.debian),
                        "disk_gib": disk_gib,
                        "rootfs_bytes": _tree_bytes(rootfs), "compressed": compress}
            with open(os.path.join(staging, "manifest.json"), "w") as f:
                json.dump(manifest, f, indent=2)
            for name in os.listdir(staging):
                os.chmod(os.path.join(staging, name), 0o644)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            if os.path.exists(out):
                shutil.rmtree(out)
            os.rename(staging, out)
        _point_current(cache, key)
        _prune(cache, key)
        log.info("appliance image %s built in %.0fs: %.0f MB", key, time.monotonic() - started, sizes / 1e6)
        return ApplianceImage.load(out)


def _tree_bytes(root: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total


def _point_current(cache: str, key: str) -> None:
    link = os.path.join(cache, "current")
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("images", key), tmp)
    os.replace(tmp, link)


def _prune(cache: str, keep: str) -> None:
    images = os.path.join(cache, "images")
    others = sorted((d for d in os.listdir(images) if d != keep),
                    key=lambda d: os.path.getmtime(os.path.join(images, d)), reverse=True)
    for old in others[KEEP_IMAGES - 1:]:
        shutil.rmtree(os.path.join(images, old), ignore_errors=True)


def describe(image: ApplianceImage) -> dict:
    return asdict(image)
