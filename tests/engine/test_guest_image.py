"""The test guest (keel_lab.guest_image) boots under a private libvirtd:
it applies a cloud-init NoCloud seed on an IDE CD-ROM (host name, runcmd,
network-config), Debian's qemu-guest-agent answers on the virtio-serial
channel, and the guest powers off from the agent's guest-shutdown and from
the ACPI power button. Its NICs are qemu's user-mode network: the addresses
the seeds give only live inside the guest. The YAML reader the guest's
cloud-init uses is checked on its own first (busybox awk, as in the guest)."""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import libvirt
import libvirt_qemu
import pytest

from keel_common.domainxml import Disk, Domain, Nic, device_xml, disk_element, domain_xml, nic_element
from keel_lab import guest_image

from . import libvirt_hosts

MiB = 2 ** 20
AGENT_DEADLINE = 240        # s: a TCG guest on a loaded 2-core machine
OFF_DEADLINE = 120

META_DATA = "instance-id: keel-test-1\nlocal-hostname: ci-local\n"
USER_DATA = """\
#cloud-config
hostname: ci-guest
fqdn: ci-guest.example.test
timezone: Europe/Paris
users:
  - name: tester
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeel tester@example.test
chpasswd:
  expire: false
write_files:
  - path: /etc/keel-written
    content: written by write_files
runcmd:
  - echo 'made by runcmd' > /run/keel-marker
  - [sh, -c, "echo second >> /run/keel-marker"]
"""
NETWORK_CONFIG = """\
version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - type: static
        address: 198.51.100.77/24
        gateway: 198.51.100.1
"""


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


@pytest.fixture(scope="module")
def conn():
    root = tempfile.mkdtemp(prefix="keel-guest-image-")
    hosts = libvirt_hosts.start_hosts(root, ["127.0.18.11"], first_index=12)
    c = libvirt.open(hosts[0].uri)
    yield c
    c.close()
    for h in hosts:
        h.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="keel-guest-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_seed(directory, meta_data, user_data, network_config=None):
    src = os.path.join(directory, "seed")
    os.makedirs(src)
    for name, text in (("meta-data", meta_data), ("user-data", user_data),
                       ("network-config", network_config)):
        if text is not None:
            with open(os.path.join(src, name), "w") as f:
                f.write(text)
    iso = os.path.join(directory, "seed.iso")
    subprocess.run(["genisoimage", "-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock", src],
                   check=True)
    return iso


def start(conn, image, directory, name, disks=(), cmdline=""):
    dom = Domain(
        name=name, uuid=str(uuid.uuid4()), memory_bytes=256 * MiB,
        kernel=image.kernel, initrd=image.initrd, cmdline=f"{image.cmdline} {cmdline}".strip(),
        guest_agent=True, disks=tuple(disks),
        nics=(Nic(mac="52:54:00:18:00:77", bridge=None),),
        serial_log=os.path.join(directory, "console.log"))
    d = conn.defineXML(domain_xml(dom))
    d.create()
    return d


def console(directory):
    try:
        with open(os.path.join(directory, "console.log"), errors="replace") as f:
            return f.read()
    except OSError:
        return "(no console log)"


def agent(dom, command, arguments=None, timeout=30):
    msg = {"execute": command}
    if arguments is not None:
        msg["arguments"] = arguments
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(msg), timeout, 0))["return"]


def wait_for_agent(dom, directory, started):
    end = started + AGENT_DEADLINE
    last = None
    while time.monotonic() < end:
        try:
            agent(dom, "guest-ping", timeout=5)
            return time.monotonic() - started
        except libvirt.libvirtError as e:
            last = e
            time.sleep(1)
    raise AssertionError(f"the guest agent did not answer in {AGENT_DEADLINE} s ({last});"
                         f" console:\n{console(directory)}")


def read_file(dom, path):
    handle = agent(dom, "guest-file-open", {"path": path, "mode": "r"})
    try:
        got = agent(dom, "guest-file-read", {"handle": handle, "count": 65536})
    finally:
        agent(dom, "guest-file-close", {"handle": handle})
    return base64.b64decode(got["buf-b64"]).decode()


def interfaces(dom):
    return {n["hardware-address"]: n for n in agent(dom, "guest-network-get-interfaces")}


def eth0_addresses(dom):
    eth0 = interfaces(dom)["52:54:00:18:00:77"]
    assert eth0["name"] == "eth0"
    return {(a["ip-address"], a["prefix"]) for a in eth0.get("ip-addresses", ())}


def wait_off(dom, directory):
    end = time.monotonic() + OFF_DEADLINE
    while time.monotonic() < end:
        if not dom.isActive():
            return
        time.sleep(0.5)
    raise AssertionError(f"the guest did not power off in {OFF_DEADLINE} s; console:\n{console(directory)}")


def cleanup(dom):
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass


@pytest.mark.slow
def test_the_guest_applies_its_cloud_init_seed_and_the_agent_answers(image, conn, workdir):
    seed = make_seed(workdir, META_DATA, USER_DATA, NETWORK_CONFIG)
    started = time.monotonic()
    dom = start(conn, image, workdir, "keel-guest-seeded",
                disks=(Disk(path=seed, device="cdrom", interface="ide", format="raw"),))
    try:
        took = wait_for_agent(dom, workdir, started)
        print(f"\nboot to agent (with a seed): {took:.1f} s")
        log = console(workdir)
        assert agent(dom, "guest-get-host-name")["host-name"] == "ci-guest.example.test", log
        assert read_file(dom, "/run/keel-marker") == "made by runcmd\nsecond\n", log
        assert read_file(dom, "/etc/keel-written") == "written by write_files"
        assert read_file(dom, "/run/cloud-init/instance-id") == "keel-test-1\n"
        osinfo = agent(dom, "guest-get-osinfo")
        assert osinfo["id"] == "keel-test-guest" and osinfo["pretty-name"] == "Keel test guest 1"
        assert ("198.51.100.77", 24) in eth0_addresses(dom)
        for line in ("keel-guest: cloud-init: host name ci-guest.example.test",
                     "keel-guest: cloud-init: runcmd 1 ran", "keel-guest: cloud-init: runcmd 2 ran",
                     "keel-guest: cloud-init done"):
            assert line in log, log
        # the agent's shutdown runs /sbin/shutdown, which powers the guest off
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
        wait_off(dom, workdir)
    finally:
        cleanup(dom)


@pytest.mark.slow
def test_without_a_seed_the_guest_boots_and_the_power_button_stops_it(image, conn, workdir):
    started = time.monotonic()
    # an empty CD-ROM drive: no medium is no seed either
    dom = start(conn, image, workdir, "keel-guest-plain",
                disks=(Disk(path=None, device="cdrom", interface="ide", format="raw"),),
                cmdline="keel.ip=198.51.100.79/24 keel.gw=198.51.100.1")
    try:
        took = wait_for_agent(dom, workdir, started)
        print(f"\nboot to agent (no seed): {took:.1f} s")
        assert agent(dom, "guest-get-host-name")["host-name"] == guest_image.DEFAULT_HOSTNAME
        assert "keel-guest: no cloud-init seed" in console(workdir)
        assert agent(dom, "guest-get-osinfo")["id"] == "keel-test-guest"
        assert ("198.51.100.79", 24) in eth0_addresses(dom)
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        wait_off(dom, workdir)
        assert "keel-guest: power button" in console(workdir)
    finally:
        cleanup(dom)


@pytest.mark.slow
def test_network_config_v2_a_script_and_hot_plugged_devices(image, conn, workdir):
    network_config = ("network:\n  version: 2\n  ethernets:\n    nic0:\n      match:\n"
                      "        macaddress: '52:54:00:18:00:77'\n      addresses:\n"
                      "      - 198.51.100.78/24\n      routes:\n        - to: default\n"
                      "          via: 198.51.100.1\n      nameservers:\n        addresses: [198.51.100.53]\n")
    seed = make_seed(workdir, "instance-id: v2\nlocal-hostname: v2-guest\n",
                     "#!/bin/sh\necho \"script ran in $(hostname)\" > /run/keel-script\n", network_config)
    # the seed on a SCSI CD-ROM this time (virtio-scsi)
    dom = start(conn, image, workdir, "keel-guest-v2",
                disks=(Disk(path=seed, device="cdrom", interface="virtio_scsi", format="raw"),))
    try:
        wait_for_agent(dom, workdir, time.monotonic())
        assert agent(dom, "guest-get-host-name")["host-name"] == "v2-guest"
        assert read_file(dom, "/run/keel-script") == "script ran in v2-guest\n"
        assert read_file(dom, "/etc/resolv.conf") == "nameserver 198.51.100.53\n"
        assert ("198.51.100.78", 24) in eth0_addresses(dom)
        # hot-plug: a NIC (brought up by the guest) and a virtio disk
        disk = os.path.join(workdir, "hot.img")
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", disk, "16M"], check=True)
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.attachDeviceFlags(device_xml(nic_element(Nic(mac="52:54:00:18:00:78"))), live)
        dom.attachDeviceFlags(device_xml(disk_element(Disk(path=disk, format="raw"), "vda")), live)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            nic = interfaces(dom).get("52:54:00:18:00:78")
            disks = [d["name"] for d in agent(dom, "guest-get-disks")]
            if nic is not None and "/dev/vda" in disks and "up (hot-plugged" in console(workdir):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"hot-plugged devices not seen: {nic} {disks}\n{console(workdir)}")
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
        wait_off(dom, workdir)
    finally:
        cleanup(dom)


# ---- the guest's YAML reader, on its own --------------------------------

def flatten(tmp_path, text):
    prog = tmp_path / "yaml-flat"
    prog.write_text(guest_image.YAML_FLAT)
    doc = tmp_path / "doc.yaml"
    doc.write_text(text)
    out = subprocess.run(["busybox", "awk", "-f", str(prog), str(doc)], capture_output=True, text=True,
                         check=True).stdout
    return [tuple(line.split("\t", 1)) for line in out.splitlines()]


def test_yaml_reader_flattens_a_cloud_config(tmp_path):
    got = flatten(tmp_path, USER_DATA + "bootcmd: []\nempty:\nlast: 'it''s' # a comment\n")
    assert got == [
        ("hostname", "ci-guest"), ("fqdn", "ci-guest.example.test"), ("timezone", "Europe/Paris"),
        ("users.0.name", "tester"),
        ("users.0.ssh_authorized_keys.0", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeel tester@example.test"),
        ("chpasswd.expire", "false"),
        ("write_files.0.path", "/etc/keel-written"), ("write_files.0.content", "written by write_files"),
        ("runcmd.0", "echo 'made by runcmd' > /run/keel-marker"),
        ("runcmd.1.0", "sh"), ("runcmd.1.1", "-c"), ("runcmd.1.2", "echo second >> /run/keel-marker"),
        ("empty", ""), ("last", "it's"),
    ]


def test_yaml_reader_network_configs_quotes_and_block_scalars(tmp_path):
    assert flatten(tmp_path, NETWORK_CONFIG) == [
        ("version", "1"), ("config.0.type", "physical"), ("config.0.name", "eth0"),
        ("config.0.subnets.0.type", "static"), ("config.0.subnets.0.address", "198.51.100.77/24"),
        ("config.0.subnets.0.gateway", "198.51.100.1")]
    v2 = ("version: 2\nethernets:\n  eth0:\n    addresses:\n    - 198.51.100.5/24\n"
          "    gateway4: 198.51.100.1\n  eth1:\n    dhcp4: true\n")
    assert flatten(tmp_path, v2) == [
        ("version", "2"), ("ethernets.eth0.addresses.0", "198.51.100.5/24"),
        ("ethernets.eth0.gateway4", "198.51.100.1"), ("ethernets.eth1.dhcp4", "true")]
    text = ('#cloud-config\n---\nwrite_files:\n- path: "/a b"\n  content: |\n    one\n\n      two\n'
            '  permissions: "0600"\n- {path: /x}\nrun: "say \\"hi\\": now"\nurl: http://h:1/p\n')
    assert flatten(tmp_path, text) == [
        ("write_files.0.path", "/a b"), ("write_files.0.content+", "one"), ("write_files.0.content+", ""),
        ("write_files.0.content+", "  two"), ("write_files.0.permissions", "0600"),
        ("write_files.1.path", "/x"), ("run", 'say "hi": now'), ("url", "http://h:1/p")]
    # JSON on one line (meta-data written by a JSON library)
    assert flatten(tmp_path, '{"instance-id":"i-1", "local-hostname": "h1", "n": 3}\n') == [
        ("instance-id", "i-1"), ("local-hostname", "h1"), ("n", "3")]
