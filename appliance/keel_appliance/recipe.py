"""What goes into the engine appliance image: pure data, and the cache keys
derived from it. Changing anything here changes the key, so the next build
rebuilds instead of reusing a stale image."""
from __future__ import annotations

import hashlib
import json

# Bump when the build steps change in a way the data below does not show.
RECIPE_VERSION = "1"

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)

# The Debian layer. The engine's Python packages that fit Debian come from
# the build environment's own split (see pyenv.debian_packages); these are
# the rest.
DEBIAN_PACKAGES = (
    # boot: systemd as init, the cloud kernel, a tiny initramfs (virtio-blk is a module)
    "systemd", "systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "tiny-initramfs",
    # the engine's runtime: Python, the libvirt bindings and PostgreSQL driver (both
    # Debian-only here), PostgreSQL for database = postgresql
    "python3", "python3-libvirt", "python3-psycopg2", "postgresql",
    # VM leases on storage domains (`sanlock direct init`); storage domains over NFS
    "sanlock", "nfs-common",
    # first boot reads the seed disk with mtools (no mount)
    "mtools",
    # cloud-init's NoCloud seeds for the engine's VMs are ISO images
    "genisoimage",
    # what a sysadmin reaches for
    "iproute2", "iputils-ping", "procps", "less", "vim-tiny", "curl", "sqlite3", "ca-certificates",
    "netbase",
)

# Files no appliance needs (dpkg path-exclude): docs, translations, udev's
# hardware database, and PostgreSQL's LLVM JIT (the JIT is off: 130 MB saved).
DPKG_EXCLUDES = (
    "/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/share/i18n/*", "/lib/udev/hwdb.d/*", "/usr/lib/udev/hwdb.d/*",
    "/usr/lib/postgresql/*/lib/llvmjit*", "/usr/lib/postgresql/*/lib/bitcode/*",
    "/usr/lib/x86_64-linux-gnu/libLLVM-*", "/usr/lib/x86_64-linux-gnu/libz3.so*",
)
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)

# virtio-blk is a module in the cloud kernel: the initramfs loads it (and
# what it depends on) to find the root disk; nothing else happens there.
# virtio-rng too: with it the kernel's random pool is ready at once, and
# Python (os.urandom) never waits for entropy at boot.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_rng")

# Units that cost boot time and do nothing useful in this VM.
UNITS_DISABLED = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer",
    "getty@tty1.service", "remote-fs.target", "postgresql.service", "systemd-pstore.service",
    # sanlock and nfs-common are here for their commands; their daemons are not needed
    "sanlock.service", "wdmd.service", "rpcbind.service", "rpcbind.socket", "nfs-client.target",
)
UNITS_MASKED = (
    "dev-hugepages.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "sys-kernel-config.mount",
    "systemd-udev-settle.service",
    "e2scrub_all.timer", "e2scrub_reap.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "modprobe@drm.service", "modprobe@dm_mod.service", "modprobe@loop.service",
)
UNITS_ENABLED = (
    "systemd-networkd.service", "keel-appliance-firstboot.service",
    "keel-engine.service", "keel-engine-worker.service", "keel-engine-console-proxy.service",
)

ROOT_LABEL = "keel-root"
ROOT_DEVICE = "/dev/vda1"
PARTITION_OFFSET = 1024 * 1024
DEFAULT_DISK_GIB = 6
KERNEL_CMDLINE = f"console=ttyS0,115200 root={ROOT_DEVICE} rw quiet systemd.show_status=auto"

ENGINE_USER = "keel"
VENV = "/opt/keel"

# The engine's configuration before the seed's overrides.
ENGINE_CONF_DEFAULTS = {
    "database": {"url": "sqlite:////var/lib/keel/engine.db"},
    "engine": {"listen": "0.0.0.0:80", "secret_key_file": "/var/lib/keel/fence-key"},
    "console": {"proxy_listen": "0.0.0.0:6100"},
}
POSTGRESQL_URL = "postgresql+psycopg2://keel@/engine?host=/run/postgresql"


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def base_key(debian_python: tuple[str, ...]) -> str:
    """The Debian layer: packages and dpkg filters."""
    return digest({"v": RECIPE_VERSION, "suite": SUITE, "mirrors": MIRRORS,
                   "packages": sorted(set(DEBIAN_PACKAGES) | set(debian_python)),
                   "excludes": DPKG_EXCLUDES, "includes": DPKG_INCLUDES})[:16]


def image_key(base: str, source_hash: str, pins: tuple[str, ...], guest_files_hash: str,
              disk_gib: int) -> str:
    """Everything the final image depends on."""
    return digest({"v": RECIPE_VERSION, "base": base, "source": source_hash, "pins": sorted(pins),
                   "guest": guest_files_hash, "disk_gib": disk_gib, "cmdline": KERNEL_CMDLINE,
                   "initramfs": INITRAMFS_MODULES, "disabled": UNITS_DISABLED,
                   "masked": UNITS_MASKED, "enabled": UNITS_ENABLED,
                   "conf": ENGINE_CONF_DEFAULTS})[:16]
