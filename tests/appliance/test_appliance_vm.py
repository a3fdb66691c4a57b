"""The appliance image booted for real under qemu (TCG): configured by its
seed, the engine answers, its data stays on the VM's disk across a hard
power-off and a reboot, its logs are in journald, and a bad seed changes
nothing. One VM per scenario; the sqlite VM (static address on a bridge,
as in the lab) is shared by the tests of this module, in file order."""
import json
import re

import pytest

from keel_appliance import seed
from keel_appliance.seed import SeedConfig, StaticNetwork
from keel_appliance.vm import ApplianceVM

from .conftest import BRIDGE_ADDRESS, ENGINE_ADDRESS

pytestmark = [pytest.mark.slow, pytest.mark.root]

PASSWORD = "appliance-pw-1"
BOOT_TIMEOUT = 300     # a loaded 2-core machine; the benchmark reports the real figures


def _seed_config(database="sqlite"):
    return SeedConfig(hostname="engine.example.test", admin_password=PASSWORD, database=database,
                      network=StaticNetwork(f"{ENGINE_ADDRESS}/24", BRIDGE_ADDRESS, (BRIDGE_ADDRESS,)),
                      engine_conf={"monitor": {"interval": "3"}})


def _vm(image, tmp, net, seed_path, name):
    return ApplianceVM(image, str(tmp / f"{name}.qcow2"), seed=str(seed_path), memory_mb=1024, vcpus=2,
                       net=net, console_log=str(tmp / f"{name}-console.log"))


def _api(vm, token, method, path, body=None):
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/xml"
    status, out = vm.http(method, "/ovirt-engine/api" + path, body.encode() if body else None, headers,
                          timeout=60)
    return status, (json.loads(out) if out.strip().startswith(b"{") else out)


@pytest.fixture(scope="module")
def engine_vm(appliance_image, static_net, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("appliance-sqlite")
    seed_path = tmp / "seed.img"
    seed.write_seed(str(seed_path), _seed_config())
    vm = _vm(appliance_image, tmp, static_net, seed_path, "engine")
    vm.start()
    try:
        vm.first_health = vm.wait_health(BOOT_TIMEOUT)
        yield vm
    finally:
        vm.kill()


def test_the_engine_answers_with_the_seeded_admin_password(engine_vm):
    status, body = engine_vm.http("GET", "/ovirt-engine/services/health")
    assert status == 200 and body == b"DB Up!Welcome to Health Status!"
    _t, token = engine_vm.wait_token(PASSWORD, 120)
    assert token
    assert engine_vm.token("not-the-password") is None


def test_the_seed_configured_the_guest(engine_vm):
    engine_vm.wait_shell(120)
    assert engine_vm.shell("hostname").strip() == "engine.example.test"
    assert f"inet {ENGINE_ADDRESS}/24" in engine_vm.shell("ip -4 -o addr show scope global")
    assert f"default via {BRIDGE_ADDRESS}" in engine_vm.shell("ip route show default")
    conf = engine_vm.shell("cat /etc/keel/engine.conf")
    assert "listen = 0.0.0.0:80" in conf and "interval = 3" in conf and PASSWORD not in conf
    # the password was handed over once and is gone from /run
    assert engine_vm.shell("ls /run/keel-appliance/ 2>/dev/null | wc -l").strip() == "0"
    assert engine_vm.shell("systemctl is-active keel-engine keel-engine-worker").split() == ["active", "active"]


def test_engine_and_worker_log_to_the_journal(engine_vm):
    engine_vm.wait_shell(120)
    engine = engine_vm.shell("journalctl -b --no-pager -o cat -u keel-engine | grep -c 'Listening at: http://0.0.0.0:80'")
    worker = engine_vm.shell("journalctl -b --no-pager -o cat -u keel-engine-worker | grep -ci 'worker'")
    assert int(engine.strip()) >= 1 and int(worker.strip()) >= 1
    # the password never reaches a log line
    assert engine_vm.shell(f"journalctl -b --no-pager | grep -c '{PASSWORD}'").strip() == "0"


def test_state_is_private_on_the_vms_disk(engine_vm):
    engine_vm.wait_shell(120)
    modes = dict(line.split(" ", 1)[::-1] for line in engine_vm.shell(
        "stat -c '%a %n' /var/lib/keel /var/lib/keel/engine.db* /etc/keel/engine.conf").splitlines())
    assert modes.pop("/var/lib/keel") == "700" and modes.pop("/etc/keel/engine.conf") == "600"
    assert "/var/lib/keel/engine.db" in modes and set(modes.values()) == {"600"}, modes
    # whatever else the engine and its worker create (the fence-agent key on
    # first use) is private too
    for unit in ("keel-engine", "keel-engine-worker"):
        pid = engine_vm.shell(f"systemctl show -p MainPID --value {unit}").strip()
        assert engine_vm.shell(f"grep Umask /proc/{pid}/status").split() == ["Umask:", "0077"]
    assert engine_vm.shell("findmnt -n -o SOURCE --target /var/lib/keel").strip() == "/dev/vda1"


def test_data_survives_a_hard_power_off_and_a_reboot(engine_vm):
    _t, token = engine_vm.wait_token(PASSWORD, 120)
    status, dc = _api(engine_vm, token, "POST", "/datacenters",
                      "<data_center><name>kept-on-disk</name></data_center>")
    assert status in (200, 201), dc
    dc_id = dc["id"]
    engine_vm.kill()                      # what a failover does to the old engine VM
    engine_vm.start()
    engine_vm.wait_health(BOOT_TIMEOUT)
    _t, token = engine_vm.wait_token(PASSWORD, 120)   # the seed is not applied twice
    status, got = _api(engine_vm, token, "GET", f"/datacenters/{dc_id}")
    assert status == 200 and got["name"] == "kept-on-disk"
    engine_vm.wait_shell(120)
    firstboot = engine_vm.shell("journalctl -b --no-pager -o cat -u keel-appliance-firstboot")
    assert "exec-condition" in firstboot and "applying seed" not in firstboot, firstboot
    engine_vm.reboot(BOOT_TIMEOUT)
    engine_vm.wait_health(BOOT_TIMEOUT)
    _t, token = engine_vm.wait_token(PASSWORD, 120)
    status, got = _api(engine_vm, token, "GET", f"/datacenters/{dc_id}")
    assert status == 200 and got["name"] == "kept-on-disk"


def test_the_power_button_shuts_it_down_cleanly(engine_vm):
    """The HA agent's graceful stop is an ACPI power-button press."""
    engine_vm.wait_shell(120)
    engine_vm.powerdown()
    assert engine_vm.wait_exit(180), "the guest did not power off within 180 s"
    assert "reboot: Power down" in engine_vm.console_text()


def test_a_bad_seed_is_refused_in_one_line_and_nothing_is_applied(appliance_image, user_net, tmp_path):
    files = seed.render_files(seed.validate(_seed_config()))
    files["keel-seed.ini"] = files["keel-seed.ini"].replace(f"address = {ENGINE_ADDRESS}/24",
                                                            "address = 198.51.100.300/24")
    seed_path = tmp_path / "bad-seed.img"
    seed.write_files(str(seed_path), files)
    vm = _vm(appliance_image, tmp_path, user_net, seed_path, "bad")
    vm.start()
    try:
        _t, line = vm.wait_console(r"keel-appliance: error: bad seed", BOOT_TIMEOUT)
        assert "[network] address = '198.51.100.300/24'" in line and "nothing applied" in line
        vm.wait_shell(120)
        assert vm.shell("test -e /etc/keel/engine.conf && echo yes || echo no").strip() == "no"
        assert vm.shell("test -e /etc/systemd/network/10-keel-appliance.network && echo yes || echo no").strip() == "no"
        assert vm.shell("hostname").strip() == "keel-engine"
        assert vm.shell("systemctl is-active keel-engine").strip() == "inactive"
        journal = vm.shell("journalctl -b --no-pager -o cat -u keel-appliance-firstboot | grep 'bad seed'")
        assert len(journal.strip().splitlines()) == 1 and "198.51.100.300/24" in journal
        assert vm.shell("systemctl is-failed keel-appliance-firstboot").strip() == "failed"
    finally:
        vm.kill()


def test_postgresql_runs_inside_and_keeps_the_data_across_a_reboot(appliance_image, user_net, tmp_path):
    seed_path = tmp_path / "seed.img"
    seed.write_seed(str(seed_path), _seed_config(database="postgresql"))
    vm = _vm(appliance_image, tmp_path, user_net, seed_path, "pg")
    vm.start()
    try:
        vm.wait_health(BOOT_TIMEOUT)
        _t, token = vm.wait_token(PASSWORD, 120)
        vm.wait_shell(120)
        assert "postgresql+psycopg2://keel@/engine" in vm.shell("grep '^url' /etc/keel/engine.conf")
        assert re.search(r"^active$", vm.shell("systemctl is-active postgresql@15-main"), re.M)
        assert vm.shell("test -e /var/lib/keel/engine.db && echo yes || echo no").strip() == "no"
        status, dc = _api(vm, token, "POST", "/datacenters", "<data_center><name>in-postgres</name></data_center>")
        assert status in (200, 201), dc
        vm.reboot(BOOT_TIMEOUT)
        vm.wait_health(BOOT_TIMEOUT)
        _t, token = vm.wait_token(PASSWORD, 120)
        status, got = _api(vm, token, "GET", f"/datacenters/{dc['id']}")
        assert status == 200 and got["name"] == "in-postgres"
    finally:
        vm.kill()
