"""The lab as a whole: bring it up, describe it, tear it down.

Every resource is recorded in `<dir>/lab.json` before it is created, so
`down` finds everything even after `keel-lab` crashed half-way.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from keel_common.config import PROFILES

from . import appliance, chassis, deploy, hostfiles, hosts, image, net, nfs, probe, procs
from .layout import (BMC_PASSWORD, BMC_USER, BRIDGE, BRIDGE_ADDRESS, ENGINE_NETNS, HEALTH_URL,
                     ENGINE_MODES, MAX_HOSTS, HostLayout, LabError, LabLayout, load_state, save_state,
                     write_private)

log = logging.getLogger("keel_lab")
OBSERVER_MODULE = "keel_lab.observer"
# what `status` shows of the engine's API, whichever way the engine runs
ENGINE_API_KEYS = ("api_url", "admin_user", "admin_password", "admin_password_file", "fence_agents")


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, daemons); run it as root")


def ha_daemons_installed() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None
               for m in ("keel_broker.daemon", "keel_agent.daemon"))


class Lab:
    def __init__(self, lab_dir: str):
        self.dir = os.path.abspath(lab_dir)

    # -- state -----------------------------------------------------------
    @property
    def state(self) -> dict | None:
        return load_state(self.dir)

    def layout(self) -> LabLayout:
        st = self.state
        if st is None:
            raise LabError(f"no lab in {self.dir}; run `keel-lab up --dir {self.dir}` first")
        return LabLayout.from_state(self.dir, st)

    def _update_state(self, **changes) -> dict:
        st = self.state or {}
        st.update(changes)
        save_state(self.dir, st)
        return st

    # -- up --------------------------------------------------------------
    def up(self, n_hosts: int = 3, profile: str = "fast", wait: bool = True,
           timeout: float = 300.0, out=print, engine: str = "appliance") -> dict:
        """engine: 'appliance' (the engine inside the engine VM), 'process'
        (a stand-in VM and the engine as a process beside the lab, for fast
        engine work), 'none' (a stand-in VM, no engine) or 'bare' (hosts
        without Keel, and the answers for `hosted-engine --deploy`)."""
        require_root()
        if engine not in ENGINE_MODES:
            raise LabError(f"--engine {engine!r} is unknown; expected one of: {', '.join(ENGINE_MODES)}")
        if not 1 <= n_hosts <= MAX_HOSTS:
            raise LabError(f"--hosts {n_hosts} is out of range; expected 1 to {MAX_HOSTS}")
        if profile not in PROFILES:
            raise LabError(f"--profile {profile!r} is unknown; expected one of: {', '.join(PROFILES)}")
        existing = self.state
        if existing and (existing["hosts"] != n_hosts or existing.get("profile") != profile
                         or existing.get("engine_mode", "process") != engine):
            raise LabError(f"a lab with {existing['hosts']} hosts (profile {existing.get('profile')}, engine "
                           f"{existing.get('engine_mode', 'process')}) already exists in {self.dir}; "
                           f"run `keel-lab down --dir {self.dir}` first")
        lab = LabLayout(self.dir, n_hosts, profile, engine)
        if not existing:
            # Record everything we are about to create before creating it.
            self._update_state(hosts=n_hosts, profile=profile, engine_mode=engine, created=time.time(),
                               bridge=BRIDGE,
                               netns=[h.netns for h in lab.all_hosts()],
                               links=[h.outer_veth for h in lab.all_hosts()], bmc_pids={},
                               observer_pid=None)
            log.info("creating a lab of %d hosts in %s (profile %s)", n_hosts, self.dir, profile)
        os.makedirs(self.dir, exist_ok=True)
        # The sanlock daemons run as user sanlock: they must reach the run
        # dirs and the shared storage below the lab dir.
        os.chmod(self.dir, 0o755)
        hostfiles.build_shim(lab)
        if lab.bare:    # the installer writes Keel's files on the storage
            hostfiles.prepare_bare_storage(lab)
        else:
            hostfiles.prepare_shared_storage(lab, PROFILES[profile].io_timeout)
        if engine == "appliance" or lab.bare:
            out("the engine appliance image: building it if this source tree has none cached "
                "(minutes the first time, ~30 s after a code change) ...")
            built = appliance.build_image()
            if lab.bare:    # the installer copies it; bare hosts boot no engine VM of the lab's
                img = None
                self._update_state(appliance_image_dir=built.directory)
                deploy.write_files(lab, built.directory)
            else:
                img, info = appliance.prepare(lab, built, self.state.get("engine_appliance") or {})
                self._update_state(engine_appliance=info)
        else:
            img = self._standin_image()
        for h in lab.all_hosts():
            hostfiles.prepare_host(lab, h, img)
        net.ensure_bridge()
        for h in lab.all_hosts():
            net.ensure_host_netns(h)
        if engine == "appliance" or lab.bare:
            nfs.start(lab, self.state.get("nfs_pid"), lambda pid: self._update_state(nfs_pid=pid))
        self.start_bmcs(lab)
        self.start_observer(lab)
        for h in lab.all_hosts():
            hosts.boot(lab, h)
        if wait:
            self.wait_infrastructure(lab, timeout)
        if wait and engine == "installed":
            self.install(lab, out)
        if wait and not lab.bare:
            if ha_daemons_installed():
                self.wait_engine(lab, timeout)
                self.register_bmcs(lab)
                if engine == "appliance":
                    self.register_in_engine(lab, timeout, out)
            else:
                out("note: the HA daemons (keel_broker/keel_agent) are not installed; "
                    "hosts run sanlock, libvirtd and etcd only, no engine VM")
        if engine == "process":
            self.start_engine_process(lab, out)
        return self.describe(lab)

    def install(self, lab: LabLayout, out=print) -> None:
        """Keel installed on the bare hosts as a user installs it: the real
        `hosted-engine --deploy` on host1, then a join on each other host,
        their progress shown as it runs. A host already installed is left
        as it is, so `up` again finishes an install that stopped."""
        for h, argv, installs in deploy.install_commands(lab):
            if all(deploy.deployed(x) for x in installs):
                continue
            out(f"\n$ keel-lab exec {h.name} -- {' '.join(argv)}")
            sys.stdout.flush()
            rc = self.exec(h.name, argv)
            if rc != 0:
                raise LabError(f"`{' '.join(argv[:2])}` failed on {h.name} (exit {rc}): see above; its log "
                               f"is {h.path('var-lib-keel', 'deploy.log')}. `keel-lab up` again resumes it.")

    @staticmethod
    def _standin_image():
        try:
            return image.build_image()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            detail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] \
                if isinstance(e, subprocess.CalledProcessError) and e.stderr else [str(e)]
            raise LabError(f"cannot build the engine stand-in image: {' '.join(detail)}") from None

    def register_in_engine(self, lab: LabLayout, timeout: float, out=print) -> None:
        """The hosts, the storage domain and the BMCs in the engine inside the
        VM, through its API (once; the engine keeps them on its disk)."""
        info = dict(self.state.get("engine_appliance") or {})
        if info.get("registered"):
            return
        done = appliance.register(lab, info["admin_password"], timeout)
        log.info("registered in the engine: %s", ", ".join(done) or "nothing new")
        info.update(registered=True, fence_agents=appliance.fence_agents(lab))
        self._update_state(engine_appliance=info)

    def start_engine_process(self, lab: LabLayout, out=print) -> None:
        from . import engineproc
        if not engineproc.available():
            return
        try:
            info = engineproc.start(lab, self.state)
        except (LabError, OSError, subprocess.SubprocessError) as e:
            out(f"note: the engine process did not start ({e}); the lab runs without it")
            return
        self._update_state(engine_process=info)
        if info.get("error"):
            out(f"note: {info['error']}")

    def start_bmcs(self, lab: LabLayout) -> None:
        from .bmc import BmcSimulator
        pids = dict(self.state.get("bmc_pids") or {})
        for h in lab.all_hosts():
            pid = pids.get(h.name)
            if pid and procs.alive(pid, "ipmi_sim") and h.bmc_dir in " ".join(procs.cmdline(pid)):
                continue
            bmc = BmcSimulator(BRIDGE_ADDRESS, h.bmc_port, BMC_USER, BMC_PASSWORD, h.bmc_dir,
                               chassis.argv(self.dir, h.name), name=h.name)
            bmc.start()
            pids[h.name] = bmc.pid
            self._update_state(bmc_pids=pids)

    def register_bmcs(self, lab: LabLayout, names: list[str] | None = None) -> None:
        """Every host's BMC for the HA agents, entered the way an administrator
        does (`hosted-engine --set-bmc` on a host), so that the engine's host
        is fenced in seconds when it loses power."""
        path = write_private(os.path.join(self.dir, "bmc-password"), BMC_PASSWORD + "\n")
        via = next((h for h in lab.all_hosts() if hosts.powered_on(h)), None)
        if via is None:
            raise LabError("no host is powered on to enter the BMCs through")
        for h in lab.all_hosts():
            if names is not None and h.name not in names:
                continue
            argv = ["hosted-engine", "--set-bmc", f"--host-id={h.index}", f"--bmc-address={BRIDGE_ADDRESS}",
                    f"--bmc-port={h.bmc_port}", f"--bmc-user={BMC_USER}", f"--bmc-password-file={path}"]
            # A broker restarted a moment ago (a host just reset) answers exit 3
            # until it holds its etcd lease again: that is worth a few retries.
            deadline = time.monotonic() + 30
            while (rc := self.exec(via.name, argv, quiet=True)) == 3 and time.monotonic() < deadline:
                time.sleep(1)
            if rc != 0:
                raise LabError(f"hosted-engine --set-bmc for {h.name} failed on {via.name} (exit {rc})")

    def start_observer(self, lab: LabLayout) -> None:
        pid = self.state.get("observer_pid")
        if pid and procs.alive(pid, OBSERVER_MODULE):
            return
        os.makedirs(lab.observer_dir, exist_ok=True)
        logf = open(os.path.join(lab.observer_dir, "observer.log"), "ab")
        try:
            p = subprocess.Popen([sys.executable, "-m", OBSERVER_MODULE, f"--dir={self.dir}"],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                 start_new_session=True)
        finally:
            logf.close()
        p.returncode = 0  # it outlives us; never waited for here
        self._update_state(observer_pid=p.pid)

    def wait_infrastructure(self, lab: LabLayout, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = ["etcd", "libvirtd", "sanlock", "storage"]
        while time.monotonic() < deadline:
            pending = []
            # bare hosts have no etcd until the installer sets it up
            if not lab.bare and not all(m["healthy"] for m in probe.etcd_health(lab)):
                pending.append("etcd")
            for h in lab.all_hosts():
                if not os.path.exists(h.libvirt_socket):
                    pending.append(f"libvirtd on {h.name}")
                if not os.path.exists(os.path.join(h.sanlock_run_dir, "sanlock.sock")):
                    pending.append(f"sanlock on {h.name}")
                if not hosts.storage_mounted(lab, h):
                    pending.append(f"the shared storage on {h.name}")
            if not pending:
                return
            time.sleep(0.5)
        raise LabError(f"the lab did not come up within {timeout:.0f} s: still waiting for "
                       + ", ".join(pending) + f" (logs in {self.dir}/hosts/*/logs)")

    def wait_engine(self, lab: LabLayout, timeout: float) -> str:
        """Wait until the engine VM runs on exactly one host and answers."""
        deadline = time.monotonic() + timeout
        running: dict = {}
        while time.monotonic() < deadline:
            running = probe.engine_qemu_pids(lab)
            if len(running) == 1 and probe.http_ok(HEALTH_URL, 2.0):
                return next(iter(running))
            time.sleep(1.0)
        raise LabError(f"the engine VM did not come up on exactly one host within {timeout:.0f} s "
                       f"(running on: {', '.join(running) or 'none'}; see {self.dir}/hosts/*/logs)")

    # -- describe / status -----------------------------------------------
    def describe(self, lab: LabLayout | None = None, detail: bool = True) -> dict:
        lab = lab or self.layout()
        running = probe.engine_qemu_pids(lab)
        # bare hosts: the installer's etcd, once a host is deployed
        etcd = probe.lab_etcd(lab)
        records = probe.ha_records(lab, etcd=etcd) if detail else {}
        host_list = []
        for h in lab.all_hosts():
            rec = records.get(h.index) or {}
            daemons = probe.daemon_pids(h)
            host_list.append({
                "name": h.name, "address": h.address, "netns": h.netns,
                "power": "on" if hosts.powered_on(h) else "off",
                "daemons": {k: v is not None for k, v in daemons.items()},
                "ha_state": rec.get("state"), "score": rec.get("score"),
                "engine_running": h.name in running,
                "network": "cut" if net.is_partitioned(h) else "ok",
                "storage": "cut" if os.path.exists(h.storage_fault_file) else "ok",
                "libvirt_uri": h.libvirt_tcp_uri,
                "bmc": {"address": BRIDGE_ADDRESS, "port": h.bmc_port,
                        "username": BMC_USER, "password": BMC_PASSWORD},
            })
        engine_host = next(iter(running)) if len(running) == 1 else (sorted(running) or [None])[0]
        engine = {"host": engine_host, "running_on": sorted(running), "health_url": HEALTH_URL,
                  "health_ok": probe.http_ok(HEALTH_URL, 1.5) if detail and running else False}
        meta = records.get(0) or {}
        engine["claim"] = meta.get("owner")
        engine["global_maintenance"] = meta.get("global_maintenance")
        engine.update(self._engine_api_info(lab))
        d = {"dir": self.dir, "profile": lab.profile, "hosts": host_list, "engine": engine,
             "etcd": {"endpoints": list(etcd.endpoints) if etcd else [],
                      "members": probe.etcd_health(lab, etcd=etcd) if detail else []},
             "shared_storage": lab.shared,
             "ha_daemons": ha_daemons_installed()}
        if lab.engine_mode == "bare":
            d["deploy"] = {"answers": deploy.path(lab, deploy.ANSWERS), "command": deploy.deploy_command(lab),
                           "storage_mount": lab.storage_domain_mount,
                           "appliance_image_dir": (self.state or {}).get("appliance_image_dir")}
        return d

    def _engine_api_info(self, lab: LabLayout) -> dict:
        st = self.state or {}
        if lab.bare:    # once the installer has deployed it
            return {"api_url": appliance.API_URL, "admin_user": appliance.ADMIN_USER,
                    "admin_password_file": deploy.path(lab, deploy.ADMIN_PASSWORD),
                    "engine_mode": lab.engine_mode}
        if st.get("engine_appliance"):
            info = st["engine_appliance"]
            return {**{k: info[k] for k in ENGINE_API_KEYS if k in info}, "engine_mode": "appliance"}
        info = st.get("engine_process") or {}
        if not info:
            return {}
        out = {k: info[k] for k in ENGINE_API_KEYS if k in info}
        alive = [p for p in info.get("pids", []) if procs.alive(p, "keel-engine")]
        out["engine_process"] = "running" if len(alive) == len(info.get("pids", [])) and alive \
            else "stopped"
        return out

    # -- down ------------------------------------------------------------
    def down(self) -> list[str]:
        require_root()
        st = self.state
        if st is None:
            return []
        done = []
        lab = LabLayout.from_state(self.dir, dict(st, hosts=st.get("hosts", 0)))
        if procs.kill(st.get("observer_pid"), signal.SIGKILL, OBSERVER_MODULE):
            done.append("observer")
        for name, pid in (st.get("bmc_pids") or {}).items():
            if procs.kill(pid, signal.SIGKILL, "ipmi_sim"):
                done.append(f"bmc {name}")
        if nfs.running(st.get("nfs_pid")):
            nfs.stop(st["nfs_pid"])
            done.append("NFS server")
        eng = st.get("engine_process") or {}
        for pid in eng.get("pids", []):
            if procs.kill(pid, signal.SIGKILL, "keel"):
                done.append(f"engine process {pid}")
        for h in lab.all_hosts():
            if hosts.power_off(h, "lab down"):
                done.append(f"{h.name} powered off")
        # Anything still living in our namespaces (there should be nothing).
        for ns in list(st.get("netns") or []) + [ENGINE_NETNS]:
            inode = net.netns_inode(ns)
            if inode is not None:
                for pid in procs.pids_in_netns(inode):
                    procs.kill(pid, signal.SIGKILL)
                    done.append(f"stray pid {pid} in {ns}")
        self._unmount_under_dir()
        for ns in list(st.get("netns") or []) + [ENGINE_NETNS]:
            net.remove_netns(ns)
        for link in list(st.get("links") or []) + ["lab-engine-o"]:
            net.remove_link(link)
        if st.get("bridge"):
            net.remove_link(st["bridge"])
        shutil.rmtree(self.dir, ignore_errors=True)
        done.append(f"removed {self.dir}")
        log.info("lab in %s is down", self.dir)
        return done

    def _unmount_under_dir(self) -> None:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for p in sorted((p for p in points if p.startswith(self.dir + "/")), reverse=True):
            subprocess.run(["umount", "-l", p], capture_output=True)

    # -- faults ----------------------------------------------------------
    def host(self, name: str) -> tuple[LabLayout, HostLayout]:
        lab = self.layout()
        return lab, lab.host(name)

    def kill(self, host_name: str, what: str) -> int:
        lab, h = self.host(host_name)
        if not hosts.powered_on(h):
            raise LabError(f"{h.name} is powered off")
        if what == "engine-vm":
            pid = probe.engine_qemu_pids(lab).get(h.name)
            if pid is None:
                raise LabError(f"the engine VM does not run on {h.name}")
        else:
            pid = probe.daemon_pids(h).get(what)
            if pid is None:
                raise LabError(f"{what} is not running on {h.name}")
        os.kill(pid, signal.SIGKILL)
        log.info("killed %s on %s (pid %d)", what, h.name, pid)
        return pid

    def partition(self, host_name: str, storage: bool = False) -> None:
        _, h = self.host(host_name)
        if storage:
            from . import storagefault
            storagefault.cut(h)
        else:
            net.set_partitioned(h, True)

    def heal(self, host_name: str) -> None:
        _, h = self.host(host_name)
        self.bmc_lies(host_name, False)
        net.set_partitioned(h, False)
        if os.path.exists(h.storage_fault_file):
            from . import storagefault
            storagefault.heal(h)

    def bmc_lies(self, host_name: str, lies: bool) -> None:
        """A fault no fencing survives alone: the BMC answers power off and
        reports the power off while the host runs on (`chassis` honours it)."""
        _, h = self.host(host_name)
        if lies:
            with open(h.bmc_lie_file, "w") as f:
                f.write(f"{time.time():.0f}\n")
        elif os.path.exists(h.bmc_lie_file):
            os.unlink(h.bmc_lie_file)

    def exec(self, host_name: str, argv: list[str], quiet: bool = False) -> int:
        _, h = self.host(host_name)
        pid = hosts.init_pid(h)
        if pid is None:
            raise LabError(f"{h.name} is powered off")
        if not argv:
            raise LabError("nothing to run; usage: keel-lab exec HOST -- CMD ...")
        venv_bin = os.path.dirname(sys.executable)
        env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", SANLOCK_RUN_DIR="/run/sanlock")
        out = subprocess.DEVNULL if quiet else None
        # Ctrl-C is the command's to handle, as a shell leaves it to the
        # program it runs. The terminal sends it to the whole foreground
        # group: this process and both nsenter processes (it forks to enter
        # the PID namespace) ignore it, so none of them returns before the
        # command has finished handling it; the command gets the default.
        wrapped = (["env", "--ignore-signal=INT", "nsenter", "-t", str(pid), "-m", "-p", "-n", "--",
                    "env", "--default-signal=INT"] + argv)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            child = subprocess.Popen(wrapped, env=env, stdout=out, stderr=out)
            rc = child.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
        # a command killed by a signal: nsenter cannot pass a signal it
        # ignores on, and reports 1; other signals it re-raises on itself
        return 128 - rc if rc < 0 else rc

    # -- power (through the host's BMC, over IPMI) -------------------------
    def bmc_of(self, h: HostLayout):
        from .ipmi import BmcAddress
        return BmcAddress(BRIDGE_ADDRESS, h.bmc_port, BMC_USER, BMC_PASSWORD)

    def power(self, host_name: str, op: str) -> str:
        from . import ipmi
        _, h = self.host(host_name)
        bmc = self.bmc_of(h)
        if op == "status":
            return ipmi.power_status(bmc)
        if op in ("on", "off"):
            return ipmi.set_power(bmc, op)
        if op == "cycle":
            ipmi.set_power(bmc, "off")
            return ipmi.set_power(bmc, "on")
        raise LabError(f"unknown power operation {op!r}; expected on, off, cycle or status")
