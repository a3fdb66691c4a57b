"""What first boot writes from a seed (pure): networkd, hosts, resolv.conf,
engine.conf; and the rules that keep a configured appliance consistent."""
import configparser
import os
import struct

import pytest

from keel_appliance import disk, firstboot, recipe, seed
from keel_appliance.seed import DhcpNetwork, SeedConfig, SeedError, StaticNetwork

STATIC = seed.validate(SeedConfig(
    hostname="engine.example.test", admin_password="s3cret-pw", instance_id="i-7",
    network=StaticNetwork("198.51.100.100/24", "198.51.100.1", ("198.51.100.53", "198.51.100.54")),
    engine_conf={"libvirt": {"uri_template": "qemu+tls://{address}/system"}, "monitor": {"interval": "2"}}))


def _ini(text):
    p = configparser.ConfigParser(interpolation=None, strict=False)
    p.optionxform = str
    p.read_string(text)
    return p


def test_static_network_for_networkd():
    net = _ini(firstboot.network_text(STATIC))
    assert net["Match"]["Type"] == "ether"
    assert net["Network"]["Address"] == "198.51.100.100/24" and net["Network"]["Gateway"] == "198.51.100.1"
    assert net["Network"]["IPv6AcceptRA"] == "no" and "DHCP" not in net["Network"]
    assert firstboot.resolv_text(STATIC).splitlines()[1:] == ["nameserver 198.51.100.53", "nameserver 198.51.100.54"]
    assert "198.51.100.100 engine.example.test engine" in firstboot.hosts_text(STATIC)


def test_dhcp_on_a_chosen_nic():
    cfg = seed.validate(SeedConfig(hostname="engine", admin_password="s3cret-pw",
                                   network=DhcpNetwork(mac="52:54:00:6B:EE:01")))
    net = _ini(firstboot.network_text(cfg))
    assert net["Match"]["MACAddress"] == "52:54:00:6b:ee:01" and net["Network"]["DHCP"] == "yes"
    assert "127.0.1.1 engine\n" in firstboot.hosts_text(cfg)


def test_engine_conf_is_the_defaults_the_database_and_the_overrides():
    conf = _ini(firstboot.engine_conf_text(STATIC))
    assert conf["database"]["url"] == recipe.ENGINE_CONF_DEFAULTS["database"]["url"]
    assert conf["engine"]["listen"] == "0.0.0.0:80"
    assert conf["libvirt"]["uri_template"] == "qemu+tls://{address}/system"
    assert conf["monitor"]["interval"] == "2"
    pg = _ini(firstboot.engine_conf_text(seed.validate(SeedConfig(
        hostname="e", admin_password="s3cret-pw", database="postgresql"))))
    assert pg["database"]["url"] == recipe.POSTGRESQL_URL
    # the password never goes into a config file
    assert "s3cret-pw" not in firstboot.engine_conf_text(STATIC)


def test_the_engine_accepts_the_engine_conf_it_gets(tmp_path):
    from keel_engine import config as engine_config
    path = tmp_path / "engine.conf"
    path.write_text(firstboot.engine_conf_text(STATIC))
    cfg = engine_config.load(str(path))
    assert cfg.listen == "0.0.0.0:80" and cfg.monitor_interval == 2.0


def test_plan_writes_engine_conf_last_and_private():
    p = firstboot.plan(STATIC, current_engine_conf=None, database_exists=False)
    paths = list(p.files)
    assert paths[-1] == "/etc/keel/engine.conf" and p.files["/etc/keel/engine.conf"][1] == 0o600
    assert p.fresh_database and not p.postgresql


def test_the_database_cannot_change_once_it_holds_data():
    configured = firstboot.engine_conf_text(STATIC)
    pg = seed.validate(SeedConfig(hostname="e", admin_password="s3cret-pw", database="postgresql"))
    with pytest.raises(SeedError, match="keeps its data in sqlite"):
        firstboot.plan(pg, configured, database_exists=True)
    # no data yet (e.g. the first seed was refused halfway): the choice is free
    assert firstboot.plan(pg, configured, database_exists=False).postgresql


def test_mbr_points_at_the_partition():
    table = disk.mbr(2048, 6 * 1024 ** 3 // 512)
    assert len(table) == 512 and table[510:] == b"\x55\xaa"
    entry = table[446:462]
    assert entry[4] == 0x83
    assert struct.unpack("<II", entry[8:16]) == (2048, 6 * 1024 ** 3 // 512)
    assert table[462:510] == bytes(48)
    with pytest.raises(ValueError):
        disk.mbr(0, 10)


def test_every_input_changes_the_image_key():
    base = ("b" * 16, "s" * 64, ("flask==3.1.3",), "g" * 64, 6)
    keys = {recipe.image_key(*base),
            recipe.image_key("c" * 16, *base[1:]),
            recipe.image_key(base[0], "t" * 64, *base[2:]),
            recipe.image_key(*base[:2], ("flask==3.1.4",), *base[3:]),
            recipe.image_key(*base[:3], "h" * 64, base[4]),
            recipe.image_key(*base[:4], 8)}
    assert len(keys) == 6
    assert recipe.base_key(("python3-six",)) != recipe.base_key(("python3-requests",))


UNITS = os.path.join(os.path.dirname(__file__), "..", "..", "systemd", "appliance")


def test_units_run_what_the_image_installs():
    for name in ("keel-engine.service", "keel-engine-worker.service", "keel-engine-console-proxy.service",
                 "keel-appliance-firstboot.service"):
        unit = _ini(open(os.path.join(UNITS, name)).read())
        assert unit["Service"]["ExecStart"].split()[0].startswith(recipe.VENV + "/bin/")
        assert name in recipe.UNITS_ENABLED
    engine = _ini(open(os.path.join(UNITS, "keel-engine.service")).read())["Service"]
    worker = _ini(open(os.path.join(UNITS, "keel-engine-worker.service")).read())["Service"]
    proxy = _ini(open(os.path.join(UNITS, "keel-engine-console-proxy.service")).read())["Service"]
    assert engine["ExecStart"].endswith(" serve") and worker["ExecStart"].endswith(" worker")
    assert proxy["ExecStart"].endswith(" console-proxy")
    for svc in (engine, worker, proxy):
        assert svc["Restart"] == "always" and svc["StateDirectoryMode"] == "0700" and svc["UMask"] == "0077"


def test_qemu_boots_the_kernel_with_the_image_and_a_read_only_seed():
    from keel_appliance.vm import TapNet, UserNet, qemu_command
    cmd = qemu_command("/i/vmlinuz", "/i/initrd.img", recipe.KERNEL_CMDLINE, "/d/engine.qcow2", "qcow2",
                       "/d/seed.img", 1024, 2, UserNet(host_address="127.0.7.1", host_port=8080), [])
    assert cmd[cmd.index("-kernel") + 1] == "/i/vmlinuz" and cmd[cmd.index("-initrd") + 1] == "/i/initrd.img"
    assert cmd[cmd.index("-append") + 1] == recipe.KERNEL_CMDLINE
    drives = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-drive"]
    assert drives[0].startswith("file=/d/engine.qcow2,format=qcow2,if=virtio")
    assert drives[1] == "file=/d/seed.img,format=raw,if=virtio,readonly=on"
    netdev = cmd[cmd.index("-netdev") + 1]
    # user-mode networking never lets the guest out of qemu
    assert "restrict=on" in netdev and "hostfwd=tcp:127.0.7.1:8080-198.51.100.100:80" in netdev
    assert "virtio-rng-pci,rng=rng0" in cmd
    tap = TapNet(netns="ns1", tap="tap0", guest_address="198.51.100.100")
    assert tap.wrap(["qemu-system-x86_64"]) == ["ip", "netns", "exec", "ns1", "qemu-system-x86_64"]


def test_the_storage_domain_is_mounted_before_the_worker_starts():
    from keel_appliance.seed import NfsMount
    # the lab's mount point, by oVirt's convention (keel_common.nfs)
    point = "/var/lib/keel-lab/mnt/198.51.100.1:_shared"
    cfg = seed.validate(SeedConfig(**{**STATIC.__dict__, "storage": NfsMount("198.51.100.1:/shared", point)}))
    p = firstboot.plan(cfg, current_engine_conf=None, database_exists=False)
    unit_path = "/etc/systemd/system/var-lib-keel\\x2dlab-mnt-198.51.100.1:_shared.mount"
    assert list(p.files)[-1] == "/etc/keel/engine.conf" and unit_path in p.files
    unit = _ini(p.files[unit_path][0])
    assert unit["Mount"]["What"] == "198.51.100.1:/shared" and unit["Mount"]["Where"] == point
    assert unit["Mount"]["Type"] == "nfs" and "vers=4.1" in unit["Mount"]["Options"]
    assert "hard" in unit["Mount"]["Options"].split(",")
    # mount.nfs gives up at once while the network is unreachable: the mount waits for the address
    assert unit["Unit"]["After"] == "systemd-networkd-wait-online.service"
    dropin = _ini(p.files[firstboot.WORKER_STORAGE_DROPIN][0])
    assert dropin["Unit"]["RequiresMountsFor"] == point
    assert "systemd-networkd-wait-online.service" not in recipe.UNITS_MASKED
    assert firstboot.mount_unit_name("/srv/a.b/c d") == "srv-a.b-c\\x20d.mount"
    # without [storage], nothing of the kind
    assert not any(path.startswith("/etc/systemd/system") for path in
                   firstboot.plan(STATIC, current_engine_conf=None, database_exists=False).files)


def test_the_engines_etcd_certificate_is_written_before_engine_conf_which_points_at_it():
    import dataclasses
    tls = seed.EtcdTls(ca_cert="-----BEGIN CERTIFICATE-----\nca\n", cert="-----BEGIN CERTIFICATE-----\nc\n",
                       key="-----BEGIN PRIVATE KEY-----\nk\n")
    cfg = dataclasses.replace(STATIC, engine_conf={"ha": {"etcd_endpoints": "https://198.51.100.11:2379"}},
                              etcd_tls=tls)
    p = firstboot.plan(cfg, current_engine_conf=None, database_exists=False)
    assert p.files["/etc/keel/etcd/client.key"] == (tls.key, 0o600)
    assert p.files["/etc/keel/etcd/ca.crt"] == (tls.ca_cert, 0o644)
    paths = list(p.files)
    assert paths.index("/etc/keel/etcd/client.key") < paths.index("/etc/keel/engine.conf")
    ha = _ini(p.files["/etc/keel/engine.conf"][0])["ha"]
    assert dict(ha) == {"etcd_endpoints": "https://198.51.100.11:2379", "etcd_ca_cert": "/etc/keel/etcd/ca.crt",
                        "etcd_cert": "/etc/keel/etcd/client.crt", "etcd_key": "/etc/keel/etcd/client.key"}
    # without the certificate, nothing of it
    assert not any(path.startswith("/etc/keel/etcd/")
                   for path in firstboot.plan(STATIC, current_engine_conf=None, database_exists=False).files)
