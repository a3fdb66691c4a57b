"""Private libvirtd daemons for the engine tests.

Each daemon runs in its own mount namespace with per-daemon copies of
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt bind-mounted over the real ones, and listens on TCP
(no auth) on its own 127.0.1.x address, so the engine reaches it exactly as
it reaches a production host: qemu+tcp://ADDRESS/system.
"""
import os
import shutil
import subprocess
import time
import uuid

import libvirt
from harness.procs import stop_group

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

BIND_DIRS = ("etc", "run", "lib", "log", "cache")
REAL = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
        "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}


class LibvirtHost:
    def __init__(self, root, address, index):
        self.root = root
        self.address = address
        self.index = index
        self.proc = None
        self.uri = f"qemu+tcp://{address}/system"

    def _prepare(self):
        for d in BIND_DIRS:
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        etc = os.path.join(self.root, "etc")
        shutil.rmtree(etc)
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        # No default network autostart: these daemons share one kernel.
        autostart = os.path.join(etc, "qemu", "networks", "autostart")
        shutil.rmtree(autostart, ignore_errors=True)
        os.makedirs(os.path.join(self.root, "log", "qemu"), exist_ok=True)
        with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
            f.write(
                'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n'
                f'listen_addr = "{self.address}"\n'
                f'host_uuid = "{uuid.uuid4()}"\n'
                'log_outputs = "3:stderr"\n'
            )
        port0 = 49200 + self.index * 20
        with open(os.path.join(etc, "qemu.conf"), "w") as f:
            f.write(
                'stdio_handler = "file"\nsecurity_driver = "none"\n'
                'cgroup_controllers = [ ]\nuser = "root"\ngroup = "root"\n'
                # No migration_host: the engine must aim the memory stream at the
                # address it knows the host by, as on hosts whose hostname does not resolve.
                f'migration_address = "{self.address}"\n'
                f'migration_port_min = {port0}\nmigration_port_max = {port0 + 19}\n'
            )

    def start(self):
        self._prepare()
        mounts = " && ".join(
            f"mkdir -p {REAL[d]} && mount --bind {os.path.join(self.root, d)} {REAL[d]}" for d in BIND_DIRS)
        script = f"{mounts} && exec libvirtd --listen -p /run/libvirt/libvirtd.pid"
        self.log = open(os.path.join(self.root, "libvirtd.log"), "wb")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, deadline=60):
        end = time.monotonic() + deadline
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd {self.address} exited: see {self.log.name}")
            try:
                conn = libvirt.open(self.uri)
                conn.close()
                return
            except libvirt.libvirtError as e:
                last = e
                time.sleep(0.3)
        raise RuntimeError(f"libvirtd {self.address} not ready: {last}")

    def stop(self):
        if self.proc is None:
            return
        try:
            conn = libvirt.open(self.uri)
            for dom in conn.listAllDomains():
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
            conn.close()
        except libvirt.libvirtError:
            pass
        stop_group(self.proc)
        self.proc = None
        self.log.close()


def start_hosts(root, addresses, first_index=0):
    """libvirtd per address; `first_index` keeps migration port ranges apart
    from another set of hosts started by the same test run."""
    hosts = [LibvirtHost(os.path.join(root, f"h{i}"), a, i) for i, a in enumerate(addresses, first_index)]
    for h in hosts:
        h.start()
    try:
        for h in hosts:
            h.wait_ready()
            # a fresh libvirtd probes qemu for seconds first: done here, so that
            # no engine call waiting for it runs into its timeout
            conn = libvirt.open(h.uri)
            conn.getCapabilities()
            conn.close()
    except Exception:
        for h in hosts:
            h.stop()
        raise
    return hosts
