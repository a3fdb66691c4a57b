"""The seed format: what the writer accepts is what the guest applies, bad
values are refused with one line naming the key, and the vfat disk holds
exactly the files the guest reads (real mkfs.vfat and mtools)."""
import configparser
import os
import subprocess
import sys

import pytest

from keel_appliance import seed
from keel_appliance.seed import DhcpNetwork, SeedConfig, SeedError, StaticNetwork

GOOD = SeedConfig(hostname="engine.example.test", admin_password="s3cret-pw",
                  network=StaticNetwork("198.51.100.100/24", "198.51.100.1", ("198.51.100.53",)),
                  engine_conf={"monitor": {"interval": "2"}}, instance_id="i-1")


def test_written_seed_reads_back_as_the_same_config(tmp_path):
    path = tmp_path / "seed.img"
    written = seed.write_seed(str(path), GOOD)
    assert os.stat(path).st_mode & 0o777 == 0o600          # it carries the admin password
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(path)],
                           capture_output=True, text=True).stdout.strip()
    assert label == "CIDATA"
    files = seed.read_seed(str(path))
    assert set(files) == {"keel-seed.ini", "admin-password", "engine.conf"}
    assert seed.parse_files(files) == written
    assert written.instance_id == "i-1" and written.network.dns == ("198.51.100.53",)


def test_a_new_seed_gets_a_new_instance_id():
    a = seed.validate(SeedConfig(hostname="e", admin_password="s3cret-pw"))
    b = seed.validate(SeedConfig(hostname="e", admin_password="s3cret-pw"))
    assert a.instance_id and b.instance_id and a.instance_id != b.instance_id
    assert isinstance(a.network, DhcpNetwork)


@pytest.mark.parametrize("change, expected", [
    ({"hostname": "-bad-"}, "[appliance] hostname = '-bad-'"),
    ({"hostname": "a" * 64}, "[appliance] hostname"),
    ({"database": "mysql"}, "[appliance] database = 'mysql': expected sqlite or postgresql"),
    ({"network": StaticNetwork("198.51.100.300/24")}, "[network] address = '198.51.100.300/24'"),
    ({"network": StaticNetwork("198.51.100.100")}, "[network] address = '198.51.100.100': expected ADDRESS/PREFIX"),
    ({"network": StaticNetwork("198.51.100.0/24")}, "[network] address = '198.51.100.0/24'"),
    ({"network": StaticNetwork("198.51.100.100/24", "203.0.113.1")}, "[network] gateway = '203.0.113.1': not another address in 198.51.100.0/24"),
    ({"network": StaticNetwork("198.51.100.100/24", dns=("dns.example",))}, "[network] dns = 'dns.example'"),
    ({"network": DhcpNetwork(mac="52:54:00:zz:00:01")}, "[network] mac = '52:54:00:zz:00:01'"),
    ({"instance_id": "has space"}, "[seed] instance_id = 'has space'"),
    ({"engine_conf": {"engine": {"workers": "many"}}}, "engine.conf: [engine] workers = 'many'"),
    ({"engine_conf": {"libvirt": {"no_such_key": "1"}}}, "engine.conf: unknown key [libvirt] no_such_key"),
    ({"engine_conf": {"database": {"url": "sqlite:///x"}}}, "engine.conf: [database] url is not allowed here"),
    ({"engine_conf": {"engine": {"admin_password": "x"}}}, "engine.conf: [engine] admin_password is not allowed here"),
])
def test_bad_values_are_refused_with_one_line_naming_the_key(change, expected):
    kw = {**GOOD.__dict__, **change}
    with pytest.raises(SeedError) as e:
        seed.validate(SeedConfig(**kw))
    msg = str(e.value)
    assert expected in msg and "\n" not in msg


@pytest.mark.parametrize("password", ["short", "two\nlines"])
def test_a_bad_password_is_refused_without_being_shown(password):
    with pytest.raises(SeedError) as e:
        seed.validate(SeedConfig(hostname="e", admin_password=password))
    assert password not in str(e.value) and str(e.value).startswith("admin-password:")


def _files(ini_changes):
    files = seed.render_files(seed.validate(GOOD))
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(files["keel-seed.ini"])
    for (section, key), value in ini_changes.items():
        if value is None:
            ini.remove_option(section, key)
        else:
            if not ini.has_section(section):
                ini.add_section(section)
            ini.set(section, key, value)
    out = []
    for s in ini.sections():
        out.append(f"[{s}]")
        out += [f"{k} = {v}" for k, v in ini[s].items()]
    files["keel-seed.ini"] = "\n".join(out) + "\n"
    return files


@pytest.mark.parametrize("changes, expected", [
    ({("network", "address"): "10.0.0.300/8"}, "keel-seed.ini: [network] address = '10.0.0.300/8'"),
    ({("network", "mode"): "magic"}, "keel-seed.ini: [network] mode = 'magic': expected static or dhcp"),
    ({("network", "mode"): "dhcp"}, "keel-seed.ini: [network] address is only for mode = static"),
    ({("network", "colour"): "red"}, "keel-seed.ini: unknown key [network] colour"),
    ({("extra", "x"): "1"}, "keel-seed.ini: unknown section [extra]"),
    ({("seed", "format"): "2"}, "keel-seed.ini: [seed] format = '2': this appliance reads format 1"),
    ({("seed", "instance_id"): None}, "keel-seed.ini: [seed] instance_id is required"),
    ({("appliance", "hostname"): None}, "keel-seed.ini: [appliance] hostname is required"),
])
def test_the_guest_refuses_a_hand_written_bad_seed(changes, expected):
    with pytest.raises(SeedError) as e:
        seed.parse_files(_files(changes))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_missing_files_are_named():
    files = seed.render_files(seed.validate(GOOD))
    with pytest.raises(SeedError, match="admin-password is missing"):
        seed.parse_files({k: v for k, v in files.items() if k != "admin-password"})
    with pytest.raises(SeedError, match="keel-seed.ini is missing"):
        seed.parse_files({})
    assert seed.instance_id_of(files) == "i-1" and seed.instance_id_of({}) is None


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "keel_appliance", "seed", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_cli_writes_a_seed_and_refuses_bad_input_in_one_line(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw\n")
    ok = _cli("out.img", "--hostname", "engine", "--admin-password-file", str(pw),
              "--address", "198.51.100.100/24", "--gateway", "198.51.100.1", "--dns", "198.51.100.53",
              "--set", "monitor.interval=2", "--database", "postgresql", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    cfg = seed.parse_files(seed.read_seed(str(tmp_path / "out.img")))
    assert cfg.database == "postgresql" and cfg.engine_conf == {"monitor": {"interval": "2"}}
    assert cfg.admin_password == "s3cret-pw" and cfg.network.gateway == "198.51.100.1"
    for args, expected in [
        (["--address", "198.51.100.100/33"], "[network] address = '198.51.100.100/33'"),
        (["--set", "nodot=1"], "--set expects SECTION.KEY=VALUE"),
        (["--gateway", "198.51.100.1"], "--gateway needs --address"),
    ]:
        bad = _cli("bad.img", "--hostname", "engine", "--admin-password-file", str(pw), *args, cwd=tmp_path)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode != 0 and len(lines) == 1 and expected in lines[0], bad.stderr
        assert "Traceback" not in bad.stderr and not (tmp_path / "bad.img").exists()
    nopw = _cli("bad.img", "--hostname", "engine", cwd=tmp_path)
    assert nopw.returncode == 2 and "--admin-password-file is required" in nopw.stderr


def test_the_storage_domain_mount_reads_back_and_bad_ones_are_named(tmp_path):
    from keel_appliance.seed import NfsMount
    cfg = SeedConfig(**{**GOOD.__dict__, "storage": NfsMount("198.51.100.1:/shared/", "/var/lib/keel-lab/shared/")})
    written = seed.write_seed(str(tmp_path / "seed.img"), cfg)
    assert written.storage == NfsMount("198.51.100.1:/shared", "/var/lib/keel-lab/shared")
    assert seed.parse_files(seed.read_seed(str(tmp_path / "seed.img"))) == written
    for mount, expected in [
            (NfsMount("198.51.100.1", "/mnt/sd"), "[storage] nfs = '198.51.100.1': expected SERVER:/EXPORT"),
            (NfsMount("198.51.100.1:shared", "/mnt/sd"), "[storage] nfs = '198.51.100.1:shared'"),
            (NfsMount("-bad-:/shared", "/mnt/sd"), "[storage] nfs server = '-bad-'"),
            (NfsMount("nfs.example:/shared", "/etc"), "[storage] mount_point = '/etc'"),
            (NfsMount("nfs.example:/shared", "/var/lib/keel"), "[storage] mount_point = '/var/lib/keel'"),
            (NfsMount("nfs.example:/shared", "mnt/sd"), "[storage] mount_point = 'mnt/sd'"),
            (NfsMount("nfs.example:/shared", "/mnt/../etc"), "[storage] mount_point = '/mnt/../etc'")]:
        with pytest.raises(SeedError) as e:
            seed.validate(SeedConfig(**{**GOOD.__dict__, "storage": mount}))
        assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
    files = seed.render_files(seed.validate(GOOD))
    half = files["keel-seed.ini"] + "\n[storage]\nnfs = 198.51.100.1:/shared\n"
    with pytest.raises(SeedError, match=r"\[storage\] needs both nfs and mount_point"):
        seed.parse_files({**files, "keel-seed.ini": half})


def _etcd_tls(tmp_path):
    from keel_installer.pki import Pki
    pki = Pki(str(tmp_path / "pki"))
    pki.ensure_ca()
    cert, key = pki.ensure_leaf("engine", server=False, client=True)
    return seed.EtcdTls(ca_cert=open(pki.ca_cert_path).read(), cert=open(cert).read(), key=open(key).read())


def test_the_engines_etcd_certificate_travels_on_the_disk_and_reads_back(tmp_path):
    import dataclasses
    cfg = dataclasses.replace(GOOD, etcd_tls=_etcd_tls(tmp_path))
    written = seed.write_seed(str(tmp_path / "seed.img"), cfg)
    files = seed.read_seed(str(tmp_path / "seed.img"))
    assert {"etcd-ca.crt", "etcd-client.crt", "etcd-client.key"} <= set(files)
    assert seed.parse_files(files) == written and written.etcd_tls == cfg.etcd_tls


def test_a_partial_or_bad_etcd_certificate_is_refused_in_one_line(tmp_path):
    import dataclasses
    tls = _etcd_tls(tmp_path)
    files = seed.render_files(seed.validate(dataclasses.replace(GOOD, etcd_tls=tls)))
    with pytest.raises(SeedError) as e:
        seed.parse_files({k: v for k, v in files.items() if k != "etcd-client.key"})
    assert str(e.value) == ("etcd-ca.crt, etcd-client.crt and etcd-client.key go together; "
                            "expected all three or none")
    with pytest.raises(SeedError) as e:
        seed.validate(dataclasses.replace(GOOD, etcd_tls=dataclasses.replace(tls, key=tls.cert)))
    assert str(e.value) == "etcd-client.key: expected a PEM private key"
    with pytest.raises(SeedError) as e:
        seed.parse_files({**files, "etcd-ca.crt": "not a certificate\n"})
    assert str(e.value) == "etcd-ca.crt: expected a PEM certificate"
