"""Run inside a private mount + network namespace (see test_libvirt_lease.py):
one real sanlock daemon, one real libvirtd with the sanlock lock driver,
then the agent's RealEnvironment starts the engine VM with its <lease> and
we check that the qemu process holds the engine lease. Prints one JSON line
of findings; every daemon started here is stopped by PID."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

WORK = sys.argv[1]
SHIM = sys.argv[2]
found = {}
procs = []


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def setup():
    for sub, target in (("run-libvirt", "/run/libvirt"), ("lib-libvirt", "/var/lib/libvirt"),
                        ("etc-libvirt", "/etc/libvirt"), ("log-libvirt", "/var/log/libvirt"),
                        ("cache-libvirt", "/var/cache/libvirt"), ("run-sanlock", "/run/sanlock")):
        src = os.path.join(WORK, sub)
        os.makedirs(src, exist_ok=True)
        if sub == "etc-libvirt":
            shutil.copytree("/etc/libvirt", src, dirs_exist_ok=True)
        # /run is a tmpfs: on a machine not rebooted since the packages were
        # installed, /run/sanlock may not exist yet
        os.makedirs(target, exist_ok=True)
        sh("mount", "--bind", src, target)
    os.makedirs("/var/log/libvirt/qemu", exist_ok=True)
    if os.path.exists("/dev/kvm"):
        # /dev/kvm exists here but KVM is unusable: libvirt would probe qemu with
        # KVM, find it gone, and re-probe every binary (~50 s) on each start.
        sh("mount", "--bind", "/dev/null", "/dev/kvm")
    shutil.chown("/run/sanlock", "sanlock", "sanlock")
    os.chmod("/run/sanlock", 0o775)
    with open("/etc/libvirt/qemu.conf", "a") as f:
        f.write('\nlock_manager = "sanlock"\nstdio_handler = "file"\nsecurity_driver = "none"\n'
                "cgroup_controllers = [ ]\n")
    with open("/etc/libvirt/qemu-sanlock.conf", "w") as f:
        f.write('auto_disk_leases = 0\nrequire_lease_for_disks = 0\nhost_id = 1\n'
                'user = "sanlock"\ngroup = "sanlock"\nio_timeout = 1\n')
    for net in ("default.xml",):
        p = os.path.join("/etc/libvirt/qemu/networks/autostart", net)
        if os.path.lexists(p):
            os.unlink(p)
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "link", "set", "br0", "up")


def start_daemons(cfg):
    env = dict(os.environ, LD_PRELOAD=SHIM)
    procs.append(subprocess.Popen(["sanlock", "daemon", "-w", "0", "-l", "0", "-D", "-L", "-1", "-S", "-1",
                                   "-e", "probe-host1"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(WORK, "sanlock.log"), "w")))
    wait(lambda: os.path.exists("/run/sanlock/sanlock.sock"), 15, "sanlock")
    import sanlock
    st = cfg.storage
    for path, size in ((st.lockspace_path, 2), (st.lease_path, 1)):
        with open(path, "wb") as f:
            f.truncate(size << 20)
        shutil.chown(path, "sanlock", "sanlock")
    sanlock.write_lockspace(st.lockspace.encode(), st.lockspace_path, iotimeout=1)
    sanlock.write_resource(st.lockspace.encode(), st.lease_name.encode(), [(st.lease_path, 0)])
    sanlock.add_lockspace(st.lockspace.encode(), 1, st.lockspace_path, iotimeout=1)
    procs.append(subprocess.Popen(["libvirtd", "-p", "/run/libvirt/libvirtd.pid"],
                                  stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(WORK, "libvirtd.log"), "w")))
    wait(lambda: os.path.exists("/run/libvirt/libvirt-sock"), 30, "libvirtd")


def main():
    from keel_agent.realenv import RealEnvironment
    from keel_agent.states import CHECK_LEASE, DESTROY_VM, START_VM, Action
    from keel_common.config import load_host_config
    setup()
    cfg = load_host_config(os.path.join(WORK, "host1.conf"))
    with open(cfg.engine.disk_path, "wb") as f:
        f.truncate(16 << 20)
    t0 = time.monotonic()
    start_daemons(cfg)
    found["daemons_s"] = round(time.monotonic() - t0, 1)
    env = RealEnvironment(cfg)
    t0 = time.monotonic()
    found["start"] = env.execute([Action(START_VM)])[0].__dict__
    found["start_s"] = round(time.monotonic() - t0, 1)
    found["vm_state"] = env.vm_state()
    qemu_pid = int(open(f"/run/libvirt/qemu/{cfg.engine.name}.pid").read().strip())
    status = sh("sanlock", "client", "status").stdout
    found["lease_held_by_qemu"] = any(line.startswith("r ") and ":engine:" in line and
                                      f":{cfg.storage.lease_path}:" in line for line in status.splitlines()) \
        and f"p {qemu_pid}" in status
    found["live_owners"] = list(env.leases.live_owners())
    # A second domain with the same lease is refused by sanlock: a lost race.
    import libvirt
    from keel_agent.domainxml import engine_domain_xml
    other = engine_domain_xml(cfg).replace(f"<name>{cfg.engine.name}</name>", "<name>Second</name>") \
        .replace(cfg.engine.uuid, "6c2c8f2e-5a38-4c53-9d6f-6b2f3a6f6e99")
    other = other.replace(cfg.engine.mac, "52:54:00:6b:ee:99").replace(cfg.engine.disk_path, cfg.engine.disk_path + "2")
    with open(cfg.engine.disk_path + "2", "wb") as f:
        f.truncate(16 << 20)
    try:
        env._connection().createXML(other, 0)
        found["second"] = "started"
    except libvirt.libvirtError as e:
        found["second"] = str(e).splitlines()[0]
    found["destroy"] = env.execute([Action(DESTROY_VM)])[0].ok
    t0 = time.monotonic()
    while env.leases.live_owners() and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    found["lease_free_after_destroy_s"] = round(time.monotonic() - t0, 2)
    found["check_after"] = env.execute([Action(CHECK_LEASE)])[0].ok


try:
    main()
except Exception as e:  # report, then clean up
    found["error"] = f"{e.__class__.__name__}: {e}"
finally:
    for p in reversed(procs):
        if p.poll() is None:
            if "sanlock" in p.args[0]:
                subprocess.run(["sanlock", "client", "shutdown", "-f", "1"], capture_output=True, timeout=30)
            else:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    print(json.dumps(found), flush=True)
