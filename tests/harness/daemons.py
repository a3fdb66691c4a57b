"""Real etcd and sanlock daemons for single-machine integration tests.

The sanlock daemon cannot raise RLIMIT_MEMLOCK in this sandbox (no
CAP_SYS_RESOURCE), so the harness builds a tiny LD_PRELOAD shim whose
setrlimit() reports success on EPERM. This is a test-environment shim only:
production uses the distribution's sanlock as is."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/resource.h>
int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim) {
    static int (*real)(__rlimit_resource_t, const struct rlimit *);
    if (!real) real = dlsym(RTLD_NEXT, "setrlimit");
    int r = real(resource, rlim);
    if (r != 0 && errno == EPERM) { errno = 0; return 0; }
    return r;
}
"""


def build_shim(directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    so = os.path.join(directory, "setrlimit-shim.so")
    if not os.path.exists(so):
        src = os.path.join(directory, "setrlimit-shim.c")
        with open(src, "w") as f:
            f.write(SHIM_SOURCE)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", so, src, "-ldl"], check=True)
    return so


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:g} s")


class EtcdProcess:
    def __init__(self, workdir: str, address: str = "127.0.3.1", client_port: int = 23790,
                 peer_port: int = 23800, name: str = "test"):
        self.dir = os.path.join(workdir, f"etcd-{name}")
        self.url = f"http://{address}:{client_port}"
        self.peer = f"http://{address}:{peer_port}"
        self.name = name
        self.proc: subprocess.Popen | None = None

    def start(self) -> "EtcdProcess":
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            ["etcd", "--name", self.name, "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
             "--initial-cluster", f"{self.name}={self.peer}",
             "--heartbeat-interval", "100", "--election-timeout", "1000"],
            stdout=self.log, stderr=subprocess.STDOUT)
        _wait(self.healthy, 30, "etcd")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


class SanlockDaemon:
    """One sanlock daemon with its own run dir (one per simulated host)."""

    def __init__(self, workdir: str, name: str, shim: str):
        self.run_dir = os.path.join(workdir, f"sanlock-{name}")
        self.name = name
        self.shim = shim
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        return dict(os.environ, SANLOCK_RUN_DIR=self.run_dir)

    def start(self) -> "SanlockDaemon":
        os.makedirs(self.run_dir, exist_ok=True)
        shutil.chown(self.run_dir, "sanlock", "sanlock")
        self.proc = subprocess.Popen(
            ["sanlock", "daemon", "-w", "0", "-l", "0", "-D", "-L", "-1", "-S", "-1", "-e", self.name],
            env=dict(self.env, LD_PRELOAD=self.shim), stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.run_dir, "daemon.log"), "ab"))
        _wait(lambda: os.path.exists(os.path.join(self.run_dir, "sanlock.sock")), 15, "sanlock daemon")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            subprocess.run(["sanlock", "client", "shutdown", "-f", "1"], env=self.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
