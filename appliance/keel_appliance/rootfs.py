"""Finishing the image's root file system (the Keel layer): the venv with
Keel and its pinned wheels, the units, the appliance's system settings, the
initramfs. Runs on an unpacked Debian layer, with chroot where a command
must see the image's own files."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

from . import pyenv, recipe
from .pyenv import BuildError

log = logging.getLogger("keel_appliance.build")

CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
              "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1"}


def run(cmd: list[str], what: str, **kw) -> str:
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if out.returncode != 0:
        tail = [ln for ln in (out.stderr or out.stdout).strip().splitlines() if ln.strip()]
        raise BuildError(f"{what} failed (exit status {out.returncode}): {tail[-1] if tail else 'no output'}")
    log.debug("%s took %.1fs", what, time.monotonic() - started)
    return out.stdout


def chroot(rootfs: str, cmd: list[str], what: str) -> str:
    return run(["chroot", rootfs, *cmd], what, env=CHROOT_ENV)


def install_python(rootfs: str, wheels: str, pins: tuple[str, ...]) -> None:
    """A venv at /opt/keel that also sees Debian's Python packages, with Keel
    and the pinned wheels installed offline and byte-compiled."""
    inside = os.path.join(rootfs, "tmp", "keel-wheels")
    shutil.copytree(wheels, inside)
    with open(os.path.join(inside, "constraints.txt"), "w") as f:
        f.write("\n".join(pins) + "\n")
    pip = next(n for n in os.listdir(inside) if n.startswith("pip-") and n.endswith(".whl"))
    chroot(rootfs, ["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", recipe.VENV],
           "creating the venv")
    chroot(rootfs, [f"{recipe.VENV}/bin/python", f"/tmp/keel-wheels/{pip}/pip", "install", "--quiet",
                    "--no-index", "--find-links", "/tmp/keel-wheels", "--constraint",
                    "/tmp/keel-wheels/constraints.txt", "--disable-pip-version-check", "keel"],
           "installing Keel into the image")
    shutil.rmtree(inside)
    # byte-compile everything the engine imports, once, at build time
    chroot(rootfs, [f"{recipe.VENV}/bin/python", "-m", "compileall", "-q", "-j", "0",
                    f"{recipe.VENV}/lib"], "byte-compiling")
    _check_imports(rootfs)
    help_text = chroot(rootfs, [f"{recipe.VENV}/bin/keel-engine", "--help"], "keel-engine --help")
    if "worker" not in help_text.split("}")[0]:
        raise BuildError("this keel-engine has no `worker` subcommand, which keel-engine-worker.service runs")
    os.symlink(f"{recipe.VENV}/bin/keel-engine", os.path.join(rootfs, "usr/bin/keel-engine"))


# Imports every module of the engine, as the image's Python sees them: a
# dependency the code uses but pyproject.toml does not declare fails the
# build here, not the engine at its first boot.
_IMPORT_CHECK = """
import importlib, pkgutil, sys
import keel_common, keel_engine
for pkg in (keel_common, keel_engine):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if ".migrations" in m.name:
            continue
        try:
            importlib.import_module(m.name)
        except ImportError as e:
            sys.exit(f"{m.name} imports {e.name}, which is not installed in the image "
                     "(is it declared in pyproject.toml's dependencies?)")
"""


def _check_imports(rootfs: str) -> None:
    chroot(rootfs, [f"{recipe.VENV}/bin/python", "-c", _IMPORT_CHECK], "checking the engine's imports")


def _write(rootfs: str, path: str, text: str, mode: int = 0o644) -> None:
    full = os.path.join(rootfs, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if os.path.lexists(full):
        os.unlink(full)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)


def _install_units(rootfs: str, source: str) -> None:
    src = os.path.join(source, pyenv.GUEST_FILES_DIR)
    dest = os.path.join(rootfs, "usr/lib/systemd/system")
    for dirpath, _dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for name in files:
            with open(os.path.join(dirpath, name)) as f:
                text = f.read()
            _write(dest, os.path.join(rel, name), text)


def configure(rootfs: str, source: str, key: str) -> None:
    """The units, the appliance's system settings, the initramfs."""
    _install_units(rootfs, source)
    _write(rootfs, "/etc/hostname", "keel-engine\n")
    _write(rootfs, "/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 keel-engine\n"
                                 "::1 localhost ip6-localhost ip6-loopback\n")
    _write(rootfs, "/etc/fstab", f"# the kernel mounts the root file system read-write (cmdline)\n"
                                 f"LABEL={recipe.ROOT_LABEL} / ext4 rw,noatime,errors=remount-ro 0 0\n")
    _write(rootfs, "/etc/resolv.conf", "# written by keel-appliance-firstboot from the seed's [network] dns\n")
    # A new VM gets its own machine id at first boot; "disable *" keeps
    # systemd's first-boot preset-all from enabling what the image disabled.
    _write(rootfs, "/etc/machine-id", "")
    _write(rootfs, "/etc/systemd/system-preset/00-keel-appliance.preset", "disable *\n")
    _write(rootfs, "/etc/systemd/journald.conf.d/keel-appliance.conf",
           "[Journal]\nStorage=persistent\nSystemMaxUse=200M\n")
    # The engine may listen on the seed's address before networkd has set it.
    _write(rootfs, "/etc/sysctl.d/60-keel-appliance.conf",
           "net.ipv4.ip_nonlocal_bind = 1\nnet.ipv6.ip_nonlocal_bind = 1\n")
    _write(rootfs, "/etc/tiny-initramfs/tiny-initramfs.conf",
           "AUTO_MODULES=no\nMICROCODE=no\nINCLUDE_MODULES=\"%s\"\n" % ",".join(recipe.INITRAMFS_MODULES))
    # a serial console shows bracketed-paste escapes as noise
    inputrc = os.path.join(rootfs, "etc/inputrc")
    if os.path.exists(inputrc):
        with open(inputrc) as f:
            text = f.read()
        _write(rootfs, "/etc/inputrc", text + "\nset enable-bracketed-paste off\n")
    _write(rootfs, "/etc/keel/README",
           "engine.conf is written at first boot from the seed disk (keel-appliance-firstboot).\n")
    os.chmod(os.path.join(rootfs, "etc/keel"), 0o700)
    _write(rootfs, "/etc/motd",
           "\nKeel engine appliance (image %s)\n"
           "  logs:    journalctl -u keel-engine -u keel-engine-worker -u keel-appliance-firstboot\n"
           "  config:  /etc/keel/engine.conf (from the seed disk at first boot)\n"
           "  state:   /var/lib/keel (database, fence key)\n"
           "  health:  curl -s http://127.0.0.1/ovirt-engine/services/health\n\n" % key)
    # PostgreSQL's package made a cluster; the appliance makes its own on a
    # first boot with database = postgresql.
    if os.path.isdir(os.path.join(rootfs, "etc/postgresql")):
        for version in os.listdir(os.path.join(rootfs, "etc/postgresql")):
            chroot(rootfs, ["pg_dropcluster", version, "main"], "dropping the packaged PostgreSQL cluster")
    conf = os.path.join(rootfs, "etc/postgresql-common/createcluster.conf")
    if os.path.exists(conf):
        with open(conf) as f:
            text = f.read().replace("#create_main_cluster = true", "create_main_cluster = false")
        _write(rootfs, "/etc/postgresql-common/createcluster.conf", text)
    run(["systemctl", f"--root={rootfs}", "disable", "--quiet", *_existing(rootfs, recipe.UNITS_DISABLED)],
         "disabling units")
    run(["systemctl", f"--root={rootfs}", "mask", "--quiet", *recipe.UNITS_MASKED], "masking units")
    run(["systemctl", f"--root={rootfs}", "enable", "--quiet", *recipe.UNITS_ENABLED], "enabling units")
    chroot(rootfs, ["update-tirfs"], "making the initramfs")


def _existing(rootfs: str, units: tuple[str, ...]) -> list[str]:
    def present(unit):
        name = unit.split("@")[0] + ("@." + unit.rsplit(".", 1)[1] if "@" in unit else "")
        return any(os.path.exists(os.path.join(rootfs, d, name))
                   for d in ("usr/lib/systemd/system", "lib/systemd/system", "etc/systemd/system"))
    return [u for u in units if present(u)]
