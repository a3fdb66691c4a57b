"""The NoCloud seed made from a VM's cloud-init configuration (services/
cloud_init.py: pure) and the ISO image around it (genisoimage), read back
with isoinfo: what cloud-init will find, the checks that refuse a
configuration by field name (never quoting secrets), and which
configuration a start gives."""
import subprocess

import pytest
import yaml

from keel_engine.errors import Fault
from keel_engine.services import cloud_init as ci
from keel_engine.services import vm_init

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0aGlzaXNub3RhcmVhbGtleWF0YWxsMTIzNDU2Nzg5 admin@example.test"
FULL = ci.Initialization(
    host_name="ci-1.example.test", user_name="admin", root_password="pa ss:word", authorized_ssh_keys=KEY + "\n",
    dns_servers="198.51.100.1 198.51.100.2", dns_search="example.test lab.test", timezone="Europe/Prague",
    custom_script="runcmd:\n  - [sh, -c, 'echo done > /run/ci-test']\nwrite_files:\n  - path: /etc/motd\n"
                  "    content: |\n      hello\n      there\npackages: [htop]\ntimezone: UTC\n",
    nic_configurations=(ci.NicConfiguration(name="eth0", boot_protocol="static", address="198.51.100.7", netmask="24",
                                            gateway="198.51.100.1"),
                        ci.NicConfiguration(name="eth1", boot_protocol="dhcp", on_boot=False),
                        ci.NicConfiguration(name="eth2", boot_protocol="none")))


def user_data(init, password_hash=None):
    text = ci.user_data(init, password_hash)
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_meta_data_names_the_instance_by_the_vms_id_and_the_host_name():
    assert yaml.safe_load(ci.meta_data("1d2c-id", "vm1", FULL)) == {"instance-id": "1d2c-id",
                                                                    "local-hostname": "ci-1.example.test"}
    # no host name: the VM's name
    assert yaml.safe_load(ci.meta_data("1d2c-id", "vm1", ci.Initialization()))["local-hostname"] == "vm1"


def test_user_data_sets_names_users_keys_time_dns_and_merges_the_custom_cloud_config():
    hashed = "$6$saltsalt$" + "x" * 86
    doc = user_data(FULL, hashed)
    assert doc["hostname"] == "ci-1" and doc["fqdn"] == "ci-1.example.test"
    assert doc["users"] == ["default", {"name": "admin", "shell": "/bin/bash", "lock_passwd": False,
                                        "ssh_authorized_keys": [KEY]}]
    assert doc["chpasswd"] == {"expire": False, "users": [{"name": "admin", "password": hashed, "type": "hash"}]}
    assert doc["ssh_pwauth"] is True
    assert doc["resolv_conf"] == {"nameservers": ["198.51.100.1", "198.51.100.2"],
                                  "searchdomains": ["example.test", "lab.test"]}
    # the custom script is merged: its lists added, its other values over the generated ones
    assert doc["runcmd"] == [["sh", "-c", "echo done > /run/ci-test"]]
    assert doc["write_files"] == [{"path": "/etc/motd", "content": "hello\nthere\n"}]
    assert doc["packages"] == ["htop"] and doc["timezone"] == "UTC"
    assert "pa ss:word" not in ci.user_data(FULL, hashed)


def test_root_and_merging_lists_of_both():
    init = ci.Initialization(root_password="pw", authorized_ssh_keys=KEY,
                             custom_script="users:\n  - name: extra\n")
    doc = user_data(init, "$6$salt$" + "y" * 86)
    # root: its keys (cloud-init gives them to root with disable_root false), its password
    assert doc["disable_root"] is False and doc["ssh_authorized_keys"] == [KEY]
    assert doc["chpasswd"]["users"][0]["name"] == "root"
    assert doc["users"] == [{"name": "extra"}]
    # without a hash (never so from the engine) the password would be text
    assert user_data(ci.Initialization(root_password="pw"))["chpasswd"]["users"][0]["type"] == "text"
    with pytest.raises(ValueError):
        ci.user_data(ci.Initialization(root_password="pw"), "not-a-hash")


def test_the_seed_is_written_as_a_guest_reads_it():
    """Lists of plain values on one line, text blocks as literal blocks, no
    flow mappings: the shapes the test guest's small reader (and everyone)
    understands."""
    text = ci.user_data(FULL, "$6$s$" + "z" * 86)
    assert "runcmd:\n- [sh, -c, echo done > /run/ci-test]\n" in text
    assert "  content: |\n    hello\n    there\n" in text
    assert "{" not in text
    assert f"ssh_authorized_keys: [{KEY}]" in text


def test_network_config_version_1():
    doc = yaml.safe_load(ci.network_config(FULL))
    assert doc == {"version": 1, "config": [
        {"type": "physical", "name": "eth0", "subnets": [{"type": "static", "address": "198.51.100.7",
                                                         "netmask": "255.255.255.0", "gateway": "198.51.100.1"}]},
        {"type": "physical", "name": "eth1", "subnets": [{"type": "dhcp", "control": "manual"}]},
        {"type": "physical", "name": "eth2"},
        {"type": "nameserver", "address": ["198.51.100.1", "198.51.100.2"], "search": ["example.test", "lab.test"]}]}
    assert ci.network_config(ci.Initialization(host_name="a")) is None
    files = ci.seed_files("id", "vm1", ci.Initialization(host_name="a"))
    assert sorted(files) == ["meta-data", "user-data"]


@pytest.mark.parametrize("change, field", [
    (dict(host_name="bad_name.example"), "initialization.host_name"),
    (dict(host_name="-x"), "initialization.host_name"),
    (dict(user_name="Root Admin"), "initialization.user_name"),
    (dict(root_password="two\nlines"), "initialization.root_password"),
    (dict(authorized_ssh_keys=KEY + "\nnot a key"), "initialization.authorized_ssh_keys: line 2"),
    (dict(dns_servers="10.0.0.1 dns.example"), "initialization.dns_servers"),
    (dict(dns_search="ok.test bad_domain"), "initialization.dns_search"),
    (dict(timezone="Not A Zone"), "initialization.timezone"),
    (dict(custom_script="runcmd: [unclosed"), "initialization.custom_script: not valid YAML (line 1"),
    (dict(custom_script="#!/bin/sh\necho hi\n"), "initialization.custom_script: cloud-config is a YAML mapping"),
    (dict(nic_configurations=(ci.NicConfiguration(boot_protocol="dhcp"),)),
     "initialization.nic_configurations.nic_configuration.name"),
    (dict(nic_configurations=(ci.NicConfiguration(name="eth0"), ci.NicConfiguration(name="eth0"))),
     "interface eth0 is configured twice"),
    (dict(nic_configurations=(ci.NicConfiguration(name="eth0", boot_protocol="static", address="10.0.0.2"),)),
     "boot_protocol static needs ip.address and ip.netmask"),
    (dict(nic_configurations=(ci.NicConfiguration(name="eth0", boot_protocol="static", address="10.0.0.300",
                                                  netmask="24"),)), "nic_configuration.ip.address"),
    (dict(nic_configurations=(ci.NicConfiguration(name="eth0", boot_protocol="static", address="10.0.0.3",
                                                  netmask="255.0.255.0"),)), "nic_configuration.ip.netmask"),
    (dict(nic_configurations=(ci.NicConfiguration(name="eth0", boot_protocol="dhcp", address="10.0.0.3"),)),
     "an address is set only with boot_protocol static"),
])
def test_a_configuration_a_seed_cannot_be_made_from_is_refused_by_field(change, field):
    with pytest.raises(Fault) as e:
        ci.check(ci.Initialization(**change))
    assert e.value.status == 400 and field in e.value.detail
    for secret in ("two\nlines", "Root Admin", "unclosed"):
        assert secret not in e.value.detail


def test_which_configuration_a_start_gives():
    stored, once = ci.Initialization(host_name="stored"), ci.Initialization(host_name="once")
    # run-once: its own, else the stored one
    assert ci.for_start(True, once, stored, ever_started=True) == ("run_once", once)
    assert ci.for_start(True, None, stored, ever_started=True) == ("stored", stored)
    assert ci.for_start(True, None, None, ever_started=False) is None
    # oVirt's rule: a stored configuration initializes a VM's first run only
    assert ci.for_start(False, None, stored, ever_started=False) == ("stored", stored)
    assert ci.for_start(False, None, stored, ever_started=True) is None
    assert ci.for_start(False, once, None, ever_started=False) is None
    assert ci.for_start(False, None, ci.Initialization(host_name=""), ever_started=False) is None


def test_an_update_merges_the_fields_it_gives_and_round_trips_as_stored():
    merged = FULL.merged(ci.Initialization(host_name="other", timezone=""))
    assert merged.host_name == "other" and merged.timezone == "" and merged.user_name == "admin"
    assert ci.from_dict(ci.to_dict(FULL)) == FULL.merged(ci.Initialization(nic_configurations=tuple(
        ci.NicConfiguration(**{**n.__dict__, "boot_protocol": ci.boot_protocol(n)}) for n in FULL.nic_configurations)))
    # a boot protocol left out is inferred (static with an address) and stored so
    inferred = ci.to_dict(ci.Initialization(nic_configurations=(
        ci.NicConfiguration(name="eth0", address="10.0.0.2", netmask="8"), ci.NicConfiguration(name="eth1"))))
    assert [n["boot_protocol"] for n in inferred["nic_configurations"]] == ["static", "dhcp"]


def isoinfo(path, *args):
    return subprocess.run(["isoinfo", "-i", str(path), *args], capture_output=True, text=True, check=True).stdout


def test_the_iso_is_labelled_cidata_and_holds_the_documents(tmp_path):
    files = ci.seed_files("vm-id-1", "vm1", FULL, vm_init._hash(FULL.root_password))
    iso = tmp_path / "seed.iso"
    iso.write_bytes(vm_init.make_iso(files))
    assert "Volume id: cidata" in isoinfo(iso, "-d")
    for name, text in files.items():
        assert isoinfo(iso, "-R", "-x", f"/{name}") == text
    # the password only as a SHA-512 crypt hash, which openssl agrees with
    hashed = yaml.safe_load(files["user-data"])["chpasswd"]["users"][0]["password"]
    assert hashed.startswith("$6$") and "pa ss:word" not in iso.read_bytes().decode("latin-1")
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input="pa ss:word\n",
                           capture_output=True, text=True, check=True).stdout.strip()
    assert again == hashed


def test_a_tool_that_fails_is_a_conflict_naming_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Fault) as e:
        vm_init.make_iso({"meta-data": "x"})
    assert e.value.status == 409 and "genisoimage is not installed" in e.value.detail
    with pytest.raises(Fault) as e:
        vm_init._hash("secret-pw")
    assert "openssl is not installed" in e.value.detail and "secret-pw" not in e.value.detail
