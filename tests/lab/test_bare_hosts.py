"""Bare hosts (`keel-lab up --engine bare`): what `hosted-engine --deploy`
installs onto. One 2-host bare lab for the whole module.

A bare host runs its storage view, sanlock and libvirtd and nothing of
Keel's; the lab leaves the installer an answer file; and the host's init runs
the units an installer enables (`/etc/systemd/system`, the
`multi-user.target.wants` links, `kill -HUP 1`), reporting them in
`/run/keel/lab-units.json`, as the installer will drive it.
"""
from __future__ import annotations

import configparser
import json
import os
import stat
import sys
import time
import urllib.request

import pexpect
import pytest

from keel_lab import probe, procs
from lab_helpers import module_lab, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.root]

WEB_PORT = 8181
# socketserver, not `python3 -m http.server`: that one looks its own address up in DNS first
WEB_UNIT = f"""[Unit]
Description=a tiny web server, as a unit an installer writes

[Service]
Type=simple
Environment=PORT={WEB_PORT} "GREETING=hello from a unit"
ExecStart=/usr/bin/python3 -c "import os, http.server as h, socketserver as s; \\
s.TCPServer.allow_reuse_address = True; \\
s.TCPServer(('198.51.100.11', int(os.environ['PORT'])), h.SimpleHTTPRequestHandler).serve_forever()"
Restart=on-failure
TimeoutStopSec=5

[Install]
WantedBy=multi-user.target
"""


@pytest.fixture(scope="module")
def lab():
    with module_lab("keel-lab-bare-", "--engine", "bare", hosts=2) as driver:
        yield driver


def units_of(lab, host="host1") -> dict:
    with open(lab.layout.host(host).units_file) as f:
        return json.load(f)


def in_host(lab, script: str, *args: str, host: str = "host1") -> str:
    """Run a Python snippet inside the host (its own /etc/systemd/system), as the installer would."""
    return lab.cli("exec", host, "--", "python3", "-c", script, *args).stdout


INSTALL = """import os, sys
name, text = sys.argv[1], sys.argv[2]
with open("/etc/systemd/system/" + name, "w") as f:
    f.write(text)
wants = "/etc/systemd/system/multi-user.target.wants/" + name
if not os.path.lexists(wants):
    os.symlink("/etc/systemd/system/" + name, wants)
"""
DISABLE = """import os, sys
os.unlink("/etc/systemd/system/multi-user.target.wants/" + sys.argv[1])
"""


def reload_units(lab, host="host1") -> float:
    """`kill -HUP 1` inside the host: its init reads the enabled units again."""
    t = time.time()
    lab.cli("exec", host, "--", "kill", "-HUP", "1")
    return t


def enable(lab, name: str, text: str, host: str = "host1") -> float:
    in_host(lab, INSTALL, name, text, host=host)
    return reload_units(lab, host)


def disable(lab, name: str, host: str = "host1") -> None:
    in_host(lab, DISABLE, name, host=host)
    reload_units(lab, host)


def active_since(lab, name: str, t: float, host: str = "host1"):
    u = units_of(lab, host).get(name)
    return u if u and u["active"] and u["pid"] and u["started"] >= t else None


def http_get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except OSError:
        return None


def test_bare_hosts_run_sanlock_libvirtd_and_the_storage_at_its_mount_point_and_no_keel(lab):
    layout = lab.layout
    st = lab.status()
    assert layout.bare and [h["name"] for h in st["hosts"]] == ["host1", "host2"]
    for h in st["hosts"]:
        assert h["power"] == "on"
        assert h["daemons"] == {"storage": True, "sanlock": True, "libvirtd": True}
    assert st["etcd"] == {"endpoints": [], "members": []}
    assert st["deploy"]["storage_mount"] == layout.storage_domain_mount
    # no Keel: no config, no cluster key, nothing on the storage; the appliance is not copied
    for h in layout.all_hosts():
        assert os.listdir(h.config_dir) == []
    assert not os.path.exists(os.path.join(layout.dir, "cluster.key"))
    assert os.listdir(layout.shared) == []
    assert stat.S_IMODE(os.stat(layout.shared).st_mode) == 0o775
    state = json.load(open(layout.state_file))
    assert os.path.exists(os.path.join(state["appliance_image_dir"], "manifest.json"))
    # the mount point is a plain empty dir here; inside every host the shared dir is mounted on it
    mp = layout.storage_domain_mount
    assert os.path.isdir(mp) and not os.path.islink(mp) and os.listdir(mp) == []
    with open(os.path.join(layout.shared, "probe.txt"), "w") as f:
        f.write("through the mount point\n")
    try:
        for h in layout.all_hosts():
            out = lab.cli("exec", h.name, "--", "sh", "-c",
                          f"grep -F ' {mp} ' /proc/self/mountinfo; cat '{mp}/probe.txt'; "
                          "tr '\\0' ' ' < /proc/1/cmdline").stdout
            assert " - fuse keel-lab-shared " in out and "through the mount point" in out
            assert "keel_lab.hostinit" in out
            # the installer's files stay per host: /var/lib/keel and /etc/systemd/system are the host's
            mounts = {f[4]: f[3] for f in (line.split() for line in lab.cli(
                "exec", h.name, "--", "cat", "/proc/self/mountinfo").stdout.splitlines())}
            assert mounts["/var/lib/keel"].endswith(f"/hosts/{h.name}/var-lib-keel")
            assert mounts["/etc/systemd/system"].endswith(f"/hosts/{h.name}/etc-systemd")
            assert lab.cli("exec", h.name, "--", "ls", "/etc/systemd/system").stdout.split() == [
                "multi-user.target.wants"]
    finally:
        os.unlink(os.path.join(layout.shared, "probe.txt"))
    # a host's sanlock and libvirtd work; no etcd anywhere
    assert lab.cli("exec", "host2", "--", "sanlock", "client", "status").returncode == 0
    assert lab.cli("exec", "host2", "--", "virsh", "-c", "qemu:///system", "list", "--all").returncode == 0
    assert not [p for h in layout.all_hosts() for p in probe.ns_pid_map(h).values()
                if procs.alive(p, "etcd")]


def test_up_leaves_the_installer_its_answer_file(lab):
    layout = lab.layout
    d = os.path.join(layout.dir, "deploy")
    answers = os.path.join(d, "answers.ini")
    assert f"keel-lab exec --dir {layout.dir} host1 -- hosted-engine --deploy --config-append={answers}" \
        in lab.up_output
    for name in ("answers.ini", "admin-password", "bmc-password"):
        assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o600
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(answers)
    a = {s: dict(cp[s]) for s in cp.sections()}
    state = json.load(open(layout.state_file))
    assert a["storage"] == {"connection": "198.51.100.1:/shared", "mount_root": os.path.join(layout.dir, "mnt"),
                            "domain_name": "shared"}
    assert a["engine_vm"] == {"name": "HostedEngine", "hostname": "engine.lab.test", "memory_mb": "1024",
                              "vcpus": "2", "mac": "52:54:00:6b:ee:01", "address": "198.51.100.100/24",
                              "appliance": state["appliance_image_dir"], "domain_type": "qemu"}
    assert a["network"] == {"bridge": "br0", "gateway": "198.51.100.1", "host_address": "198.51.100.11"}
    assert a["host"] == {"name": "host1", "timing_profile": "fast"}
    assert a["engine"] == {"data_center": "Default", "cluster": "Default",
                           "admin_password_file": os.path.join(d, "admin-password"),
                           "extra_conf": os.path.join(d, "engine-extra.conf")}
    assert a["bmc"] == {"address": "198.51.100.1", "port": "6231", "user": "admin",
                        "password_file": os.path.join(d, "bmc-password"), "options": "lanplus=1,cipher=3"}
    assert open(a["bmc"]["password_file"]).read().strip() == "keel-lab"
    assert len(open(a["engine"]["admin_password_file"]).read().strip()) >= 12
    extra = configparser.ConfigParser(interpolation=None)
    extra.read(a["engine"]["extra_conf"])
    assert sorted(extra.sections()) == ["libvirt", "monitor", "power"]   # no [ha], no [storage]
    assert extra["power"]["lockspace_path"] == os.path.join(layout.storage_domain_mount, "hosted-engine.lockspace")


def test_an_enabled_unit_runs_restarts_when_changed_and_stops_when_disabled(lab):
    url = f"http://198.51.100.11:{WEB_PORT}/"
    t = enable(lab, "web.service", WEB_UNIT)
    web = wait_for("web.service active in lab-units.json", lambda: active_since(lab, "web.service", t), 30)
    assert web["restarts"] == 0 and web["last_exit"] is None
    wait_for("the unit's web server answering", lambda: http_get(url) == 200, 30)
    # its pid is the host's own (PID namespace) and it is that server, with the unit's environment
    real = probe.ns_pid_map(lab.layout.host("host1"))[web["pid"]]
    assert "serve_forever" in " ".join(procs.cmdline(real))
    environ = open(f"/proc/{real}/environ", "rb").read().split(b"\0")
    assert b"GREETING=hello from a unit" in environ and f"PORT={WEB_PORT}".encode() in environ
    assert lab.status()["hosts"][0]["daemons"]["web.service"] is True
    log = os.path.join(lab.layout.host("host1").logs, "web.service.log")
    wait_for("the server's request log in logs/web.service.log", lambda: '"GET / HTTP' in open(log).read(), 10)

    # a changed unit file is restarted: the old server stops, the new one runs
    t = enable(lab, "web.service", WEB_UNIT.replace("hello from a unit", "changed"))
    new = wait_for("web.service restarted", lambda: active_since(lab, "web.service", t), 30)
    assert new["pid"] != web["pid"] and not procs.alive(real)
    wait_for("the restarted web server answering", lambda: http_get(url) == 200, 30)

    # disabled: stopped (SIGTERM) and gone from lab-units.json
    disable(lab, "web.service")
    wait_for("web.service gone from lab-units.json", lambda: "web.service" not in units_of(lab), 30)
    wait_for("the web server gone", lambda: http_get(url) is None, 10)
    assert "web.service" not in lab.status()["hosts"][0]["daemons"]


def test_a_failing_unit_shows_its_exit_and_is_restarted_on_failure(lab):
    t = enable(lab, "broken.service", "[Service]\nExecStart=/bin/sh -c 'echo trying; exit 3'\n"
                                      "Restart=on-failure\nRestartSec=1\n")
    u = wait_for("broken.service restarted twice", lambda: (u := units_of(lab).get("broken.service"))
                 and u["restarts"] >= 2 and u, 30)
    assert u["last_exit"] == "exited with status 3" and u["started"] >= t
    log = open(os.path.join(lab.layout.host("host1").logs, "broken.service.log")).read()
    assert log.count("trying") >= 2     # the restart counted is the one scheduled
    # without Restart= it stays down after one try
    t = enable(lab, "broken.service", "[Service]\nExecStart=/bin/sh -c 'exit 3'\n")
    time.sleep(3)
    u = units_of(lab)["broken.service"]
    assert u["started"] >= t and u["restarts"] == 0 and not u["active"] and u["last_exit"] == "exited with status 3"
    # a unit file that cannot run says why
    enable(lab, "nonsense.service", "[Service]\nType=simple\n")
    wait_for("nonsense.service's reason", lambda: "has no ExecStart" in
             ((units_of(lab).get("nonsense.service") or {}).get("last_exit") or ""), 10)
    for name in ("broken.service", "nonsense.service"):
        disable(lab, name)
    wait_for("both gone", lambda: not {"broken.service", "nonsense.service"} & set(units_of(lab)), 10)


def test_enabled_units_come_back_after_a_power_cycle_and_the_init_services_run_once(lab):
    # named like a daemon the init runs on full hosts: a unit of its own here
    t = enable(lab, "etcd.service", "[Service]\nExecStart=/bin/sleep 1000\n", host="host2")
    wait_for("etcd.service active", lambda: active_since(lab, "etcd.service", t, "host2"), 30)
    # enabling a service the init runs itself starts nothing more; it reports the init's daemon
    in_host(lab, "import os; os.symlink('/lib/systemd/system/sanlock.service', "
                 "'/etc/systemd/system/multi-user.target.wants/sanlock.service')", host="host2")
    reload_units(lab, "host2")
    sanlock = wait_for("sanlock.service reported", lambda: units_of(lab, "host2").get("sanlock.service"), 10)
    assert sanlock["active"]
    h2 = lab.layout.host("host2")
    sanlock_real = probe.daemon_pids(h2)["sanlock"]
    assert probe.ns_pid_map(h2)[sanlock["pid"]] == sanlock_real
    assert sum(1 for p in probe.ns_pid_map(h2).values() if procs.cmdline(p)[:2] == ["sanlock", "daemon"]) <= 2

    lab.cli("power", "host2", "off")
    assert probe.ns_pid_map(h2) == {}       # the unit died with the host
    t = time.time()
    lab.cli("power", "host2", "on")
    after = wait_for("etcd.service back after power on", lambda: os.path.exists(h2.units_file)
                     and active_since(lab, "etcd.service", t, "host2"), 60)
    assert after["restarts"] == 0
    assert units_of(lab, "host2")["sanlock.service"]["active"]
    st = {h["name"]: h for h in lab.status()["hosts"]}["host2"]
    assert st["daemons"] == {"storage": True, "sanlock": True, "libvirtd": True, "etcd.service": True}


CTRL_C_HANDLER = """
import sys, time
print('ready', flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    time.sleep(3)          # a command that takes its time to stop cleanly
    print('stopped cleanly', flush=True)
    sys.exit(130)
"""


def test_ctrl_c_reaches_the_command_and_exec_waits_until_it_has_stopped(lab):
    child = pexpect.spawn(sys.executable, ["-m", "keel_lab.cli", "exec", "--dir", lab.dir, "host1", "--",
                                           "python3", "-c", CTRL_C_HANDLER], encoding="utf-8", timeout=60)
    try:
        child.expect_exact("ready")
        child.sendintr()
        child.expect(pexpect.EOF)
        output = child.before
    finally:
        child.close()
    assert "stopped cleanly" in output, output
    assert child.exitstatus == 130


def test_zz_down_leaves_nothing_behind(lab):
    lab.down_leaves_nothing()
