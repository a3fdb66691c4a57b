"""The engine VM's domain XML: the lease is held by the VM itself, libvirt
never restarts it, and the lab's stand-in guest boots from kernel+initrd."""
import xml.etree.ElementTree as ET

from keel_agent.domainxml import engine_domain_xml
from keel_common.config import parse_host_config

CONF = """
[host]
host_id = 2
[etcd]
endpoints = http://127.0.0.1:2379
[storage]
shared_path = /srv/shared
lease_path = /srv/shared/he.lease
lease_name = engine
[engine]
health_url = http://198.51.100.100/health
domain_type = qemu
memory_mb = 256
vcpus = 1
kernel = /srv/img/vmlinuz
initrd = /srv/img/initrd <&>.gz
cmdline = console=ttyS0 quiet
mac = 52:54:00:AA:BB:CC
bridge = br0
console_log = /var/log/keel/engine-console.log
[network]
gateway = 198.51.100.1
"""


def test_domain_xml_from_config():
    dom = ET.fromstring(engine_domain_xml(parse_host_config(CONF)))
    assert dom.get("type") == "qemu"
    assert int(dom.findtext("memory")) == 256 * 2 ** 20 and dom.find("memory").get("unit") == "b"
    assert dom.findtext("os/kernel") == "/srv/img/vmlinuz"
    assert dom.findtext("os/initrd") == "/srv/img/initrd <&>.gz"  # escaped, not broken
    assert dom.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert [dom.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    lease = dom.find("devices/lease")
    assert lease.findtext("lockspace") == "hosted-engine" and lease.findtext("key") == "engine"
    assert lease.find("target").get("path") == "/srv/shared/he.lease"
    assert lease.find("target").get("offset") == "0"
    nic = dom.find("devices/interface")
    assert nic.get("type") == "bridge" and nic.find("source").get("bridge") == "br0"
    assert nic.find("mac").get("address") == "52:54:00:aa:bb:cc"
    # a pty for `hosted-engine --console`, logged to the file as well
    assert dom.find("devices/serial").get("type") == "pty"
    assert dom.find("devices/serial/log").get("file") == "/var/log/keel/engine-console.log"
    assert dom.find("devices/console").get("type") == "pty"
    assert dom.find("devices/disk/source").get("file") == "/srv/shared/engine.img"
    assert dom.find("features/acpi") is not None  # graceful stop needs ACPI


def test_no_kernel_boots_from_disk():
    text = CONF.replace("kernel = /srv/img/vmlinuz\n", "").replace("initrd = /srv/img/initrd <&>.gz\n", "")
    text = text.replace("cmdline = console=ttyS0 quiet\n", "").replace("console_log = /var/log/keel/engine-console.log\n", "")
    dom = ET.fromstring(engine_domain_xml(parse_host_config(text)))
    assert dom.find("os/kernel") is None
    assert dom.find("devices/serial").get("type") == "pty"   # `hosted-engine --console` attaches to it
    assert dom.find("devices/serial/log") is None


def test_the_appliance_gets_its_qcow2_disk_a_read_only_seed_and_an_rng():
    text = CONF.replace("[engine]\n", "[engine]\ndisk_path = /srv/shared/engine.qcow2\ndisk_format = qcow2\n"
                        "seed_path = /srv/shared/engine-seed.img\nrng = true\n")
    dom = ET.fromstring(engine_domain_xml(parse_host_config(text)))
    disks = dom.findall("devices/disk")
    assert [(d.find("source").get("file"), d.find("driver").get("type"), d.find("target").get("dev"),
             d.find("readonly") is not None) for d in disks] == [
        ("/srv/shared/engine.qcow2", "qcow2", "vda", False), ("/srv/shared/engine-seed.img", "raw", "vdb", True)]
    rng = dom.find("devices/rng")
    assert rng.get("model") == "virtio" and rng.findtext("backend") == "/dev/urandom"
    # without them: one disk, no rng
    dom = ET.fromstring(engine_domain_xml(parse_host_config(CONF)))
    assert len(dom.findall("devices/disk")) == 1 and dom.find("devices/rng") is None


def test_a_bad_rng_value_is_one_line():
    import pytest
    from keel_common.config import ConfigError
    with pytest.raises(ConfigError) as e:
        parse_host_config(CONF.replace("[engine]\n", "[engine]\nrng = maybe\n"))
    assert "rng" in str(e.value) and "\n" not in str(e.value)
