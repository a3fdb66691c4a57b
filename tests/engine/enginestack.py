"""Real parts for the engine tests: a private PostgreSQL cluster, and the
engine itself (gunicorn via `keel-engine serve`) plus its worker, as
subprocesses of the test run."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import requests
from harness.procs import stop_group

PG_BIN = "/usr/lib/postgresql/15/bin"
VENV_BIN = os.path.dirname(sys.executable)


class Postgres:
    """initdb'd in a temp dir, run as the postgres user, Unix socket only."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="keel-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.makedirs(self.sock)
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.sock, "postgres", "postgres")
        self.proc = None

    def _as_pg(self, *cmd, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)

    def start(self):
        self._as_pg(f"{PG_BIN}/initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "UTF8")
        self.log = open(os.path.join(self.dir, "postgres.log"), "wb")
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", f"{PG_BIN}/postgres", "-D", self.data, "-k", self.sock,
             "-c", "listen_addresses=", "-c", "fsync=on"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            r = subprocess.run([f"{PG_BIN}/pg_isready", "-h", self.sock], capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise RuntimeError("postgres did not start")

    def create_db(self, name):
        self._as_pg(f"{PG_BIN}/createdb", "-h", self.sock, name)
        return f"postgresql+psycopg2://postgres@/{name}?host={self.sock}"

    def stop(self):
        if self.proc:
            stop_group(self.proc, signal.SIGINT, grace=30)   # SIGINT: PostgreSQL's fast shutdown
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def write_config(path, db_url, listen, workdir, **extra):
    sections = {
        "database": {"url": db_url},
        "engine": {"listen": listen, "workers": "2", "admin_password": "keel-test-pw",
                   "secret_key_file": os.path.join(workdir, "fence.key"), "token_lifetime": "3600"},
        "libvirt": {"timeout": "10", "storage_shared_unrecognised": "true",
                    "uri_template": "qemu+tcp://{address}/system", "transports": "tcp"},
        "monitor": {"interval": "1"},
        "vms": {"shutdown_timeout": "4", "migration_timeout": "120"},
    }
    for key, value in extra.items():
        sec, _, k = key.partition("__")
        sections.setdefault(sec, {})[k] = str(value)
    with open(path, "w") as f:
        for sec, kv in sections.items():
            f.write(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n")


class Engine:
    """`keel-engine serve` and `keel-engine worker` as child processes."""

    def __init__(self, config_path, listen, workdir):
        self.config_path, self.listen, self.workdir = config_path, listen, workdir
        self.url = f"http://{listen}/ovirt-engine/api"
        self.procs = {}

    def _spawn(self, name, *args):
        log = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        self.procs[name] = (subprocess.Popen([os.path.join(VENV_BIN, "keel-engine"), "--config",
                                              self.config_path, *args],
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)

    def start(self, worker=True, console_proxy=False):
        self.start_serve()
        if worker:
            self._spawn("worker", "worker")
        if console_proxy:
            self._spawn("console-proxy", "console-proxy")

    def start_serve(self):
        self._spawn("serve", "serve")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.procs["serve"][0].poll() is not None:
                raise RuntimeError(f"engine exited; see {self.workdir}/serve.log")
            try:
                if requests.get(f"http://{self.listen}/ovirt-engine/services/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        else:
            raise RuntimeError("engine did not answer")

    def stop(self, name=None, sig=signal.SIGTERM):
        for n in ([name] if name else list(self.procs)):
            proc, log = self.procs.pop(n)
            stop_group(proc, sig, grace=30)
            log.close()


@contextmanager
def engine_with_hosts(prefix, addresses, listen, first_index=0, console_proxy=False, **config):
    """Private libvirtd hosts at `addresses` and the engine (SQLite, serve and
    worker, and the console proxy if asked) in a temp dir; everything stopped
    and removed afterwards. `config` as write_config's extra keys."""
    from . import libvirt_hosts
    root = tempfile.mkdtemp(prefix=prefix)
    hosts = libvirt_hosts.start_hosts(os.path.join(root, "hosts"), addresses, first_index)
    eng = None
    try:
        storage = os.path.join(root, "storage")
        os.makedirs(storage)
        cfg = os.path.join(root, "engine.conf")
        write_config(cfg, f"sqlite:///{root}/engine.db", listen, root, **config)
        eng = Engine(cfg, listen, root)
        eng.storage, eng.hosts, eng.root = storage, hosts, root
        eng.start(console_proxy=console_proxy)
        yield eng
    finally:
        if eng is not None:
            eng.stop()
        for h in hosts:
            h.stop()
        shutil.rmtree(root, ignore_errors=True)
