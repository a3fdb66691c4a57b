"""The answers of hosted-engine --deploy: host facts, every value's rules,
answer files (loading, refusing, writing) and the non-interactive collection."""
import dataclasses
import os
import re

import pytest

from keel_installer import answers as A
from keel_installer.answers import BY_FIELD, AnswerError, HostFacts, load_answer_files, render_answer_file
from keel_installer.questions import collect, summary

FACTS = HostFacts(hostname="host1.example.test", memory_total_mb=16384, memory_available_mb=8192, cpus=4,
                  bridges=("br1", "ovirtmgmt"),
                  addresses={"lo": "127.0.0.1/8", "ovirtmgmt": "198.51.100.10/24", "br1": "203.0.113.5/24"},
                  default_gateway="198.51.100.1")
ADMIN_PW, BMC_PW = "Adm1n-pw-42", "ipmi-pw-7"
MINIMAL = "[storage]\nconnection = 198.51.100.1:/exports/engine\n[engine_vm]\naddress = 198.51.100.100/24\n"


@pytest.fixture(autouse=True)
def no_password_env(monkeypatch):
    for k in A.KEYS:
        if k.env:
            monkeypatch.delenv(k.env, raising=False)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def password_files(tmp_path):
    """An answer file naming the two password files."""
    admin = write(tmp_path, "admin.pw", ADMIN_PW + "\nsecond line ignored\n")
    ipmi = write(tmp_path, "bmc.pw", BMC_PW + "\n")
    return write(tmp_path, "secrets.conf", f"[engine]\nadmin_password_file = {admin}\n"
                                           f"[bmc]\naddress = 192.0.2.50\nuser = root\npassword_file = {ipmi}\n")


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(AnswerError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- host facts

def test_meminfo_in_mib():
    text = "MemTotal:       16384000 kB\nMemFree:         1000 kB\nMemAvailable:    8192000 kB\nBuffers: 1 kB\n"
    assert A.parse_meminfo(text) == (16000, 8000)
    assert A.parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n") == (2, 1)   # an old kernel
    assert A.parse_meminfo("") == (0, 0)


def test_first_ipv4_of_each_interface():
    text = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
            "4: ovirtmgmt    inet 198.51.100.10/24 brd 198.51.100.255 scope global ovirtmgmt\\  valid_lft forever\n"
            "4: ovirtmgmt    inet 198.51.100.11/24 brd 198.51.100.255 scope global secondary ovirtmgmt\n"
            "7: veth0@if6    inet 10.0.0.1/30 scope global veth0\n")
    assert A.parse_addresses(text) == {"lo": "127.0.0.1/8", "ovirtmgmt": "198.51.100.10/24",
                                       "veth0": "10.0.0.1/30"}
    assert A.parse_addresses("") == {}


def test_default_gateway():
    assert A.parse_default_gateway("default via 198.51.100.1 dev ovirtmgmt proto static\n") == "198.51.100.1"
    assert A.parse_default_gateway("default dev wg0 scope link\n") is None
    assert A.parse_default_gateway("") is None


def test_probe_reads_this_host():
    facts = HostFacts.probe()
    assert facts.hostname and facts.cpus >= 1
    assert 0 < facts.memory_available_mb <= facts.memory_total_mb
    assert all(os.path.isdir(f"/sys/class/net/{b}/bridge") for b in facts.bridges)
    assert all("/" in a for a in facts.addresses.values())


def test_probe_without_ip_knows_no_addresses(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    facts = HostFacts.probe()
    assert facts.addresses == {} and facts.default_gateway is None


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("field,text,value", [
    ("storage_connection", "198.51.100.1:/exports//engine/", "198.51.100.1:/exports/engine"),
    ("storage_connection", "NFS.example.test:/e", "nfs.example.test:/e"),
    ("storage_connection", "2001:db8::1:/e", "[2001:db8::1]:/e"),
    ("storage_mount_options", "vers=4.2,soft,timeo=600", "vers=4.2,soft,timeo=600"),
    ("storage_mount_root", "/mnt/keel/", "/mnt/keel"),
    ("storage_domain", "hosted_storage", "hosted_storage"),
    ("vm_name", "HostedEngine", "HostedEngine"),
    ("vm_hostname", "Engine.Example.TEST", "engine.example.test"),
    ("vm_memory_mb", "1024", 1024),
    ("vm_vcpus", "3", 3),
    ("vm_mac", "52:54:00:AB:cd:01", "52:54:00:ab:cd:01"),
    ("vm_address", "198.51.100.100/24", "198.51.100.100/24"),
    ("vm_address", "DHCP", "dhcp"),
    ("gateway", "198.51.100.1", "198.51.100.1"),
    ("bridge", "ovirtmgmt", "ovirtmgmt"),
    ("host_address", "198.51.100.10", "198.51.100.10"),
    ("host_name", "host1.example.test", "host1.example.test"),
    ("timing_profile", "fast", "fast"),
    ("admin_password", "six ch", "six ch"),
    ("bmc_address", "bmc1.example.test", "bmc1.example.test"),
    ("bmc_address", "None", ""),
    ("bmc_port", "6230", 6230),
    ("bmc_user", "ADMIN", "ADMIN"),
    ("bmc_password", "x" * 20, "x" * 20),
    ("bmc_options", "lanplus=1,cipher=3,privlvl=operator", "lanplus=1,cipher=3,privlvl=operator"),
])
def test_good_values(field, text, value):
    assert BY_FIELD[field].parse(text) == value


@pytest.mark.parametrize("field,text,reason", [
    ("storage_connection", "198.51.100.1", "is not SERVER:/EXPORT"),
    ("storage_connection", "198.51.100.1:/", "the server's root"),
    ("storage_mount_options", "vers=4.2, soft", "is not NFS mount options"),
    ("storage_mount_options", "vers=4.2,,soft", "is not NFS mount options"),
    ("storage_mount_root", "mnt", "not an absolute path"),
    ("storage_mount_root", "/", "not a directory of its own"),
    ("storage_domain", "hosted storage", "is not a name"),
    ("vm_name", "...", "is not a name"),
    ("vm_name", "x" * 65, "is not a name"),
    ("vm_hostname", "engine_1", "expected a host name"),
    ("vm_memory_mb", "512", "the engine VM needs at least 1024 MiB"),
    ("vm_memory_mb", "4G", "is not a positive whole number"),
    ("vm_vcpus", "0", "is not a positive whole number"),
    ("vm_mac", "52:54:00:ab:cd", "expected a MAC address"),
    ("vm_mac", "01:00:5e:00:00:01", "multicast"),
    ("vm_address", "198.51.100.100", "expected ADDRESS/PREFIX"),
    ("vm_address", "198.51.100.0/24", "expected ADDRESS/PREFIX of a host"),
    ("vm_address", "2001:db8::5/64", "is not an IPv4 address"),
    ("vm_address", "engine.example.test", "expected ADDRESS/PREFIX"),
    ("gateway", "198.51.100.1/24", "is not an IPv4 address"),
    ("host_address", "host1", "is not an IPv4 address"),
    ("bridge", "a/b", "is not a network interface name"),
    ("bridge", "x" * 16, "is not a network interface name"),
    ("host_name", "host 1", "is not a name"),
    ("timing_profile", "slow", "is not a timing profile (production, fast)"),
    ("appliance", "/nonexistent/appliance", "is not a directory"),
    ("engine_extra_conf", "/nonexistent/engine.conf", "no such file"),
    ("engine_extra_conf", "engine.conf", "not an absolute path"),
    ("admin_password", "short", "at least 6 characters"),
    ("bmc_address", "bmc 1", "neither an IP address nor a host name"),
    ("bmc_port", "65536", "not a port number"),
    ("bmc_port", "0", "not a positive whole number"),
    ("bmc_user", "a" * 17, "1 to 16 characters"),
    ("bmc_user", "ad min", "no spaces"),
    ("bmc_password", "x" * 21, "longer than IPMI's 20 bytes"),
    ("bmc_password", "\u00e9" * 11, "longer than IPMI's 20 bytes"),
    ("bmc_options", "lanplus=1,cipher=17", "only cipher suite 3"),
    ("bmc_options", "ssl=1", "unknown fence agent option"),
])
def test_bad_values_say_why(field, text, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        BY_FIELD[field].parse(text)


def test_extra_conf_must_be_readable_ini(tmp_path):
    good = write(tmp_path, "good.conf", "[engine]\nworkers = 2\n")
    assert BY_FIELD["engine_extra_conf"].parse(good) == good
    with pytest.raises(ValueError, match="not a valid INI file"):
        BY_FIELD["engine_extra_conf"].parse(write(tmp_path, "bad.conf", "workers = 2\n"))


def test_appliance_is_a_directory(tmp_path):
    assert BY_FIELD["appliance"].parse(str(tmp_path) + "/") == str(tmp_path)


def test_random_macs_are_qemus_and_differ():
    macs = {A.random_mac() for _ in range(20)}
    assert len(macs) > 1
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) and BY_FIELD["vm_mac"].parse(m) == m for m in macs)


# ---------------------------------------------------------------- answer files

def test_an_answer_file_gives_typed_values(tmp_path):
    path = write(tmp_path, "a.conf", MINIMAL + "memory_mb = 2048\n[bmc]\nport = 6230\naddress = none\n")
    assert load_answer_files([path]) == {"storage_connection": "198.51.100.1:/exports/engine",
                                         "vm_address": "198.51.100.100/24", "vm_memory_mb": 2048,
                                         "bmc_port": 6230, "bmc_address": ""}


def test_an_empty_value_is_no_answer(tmp_path):
    assert load_answer_files([write(tmp_path, "a.conf", "[storage]\nmount_options =\n")]) == {}


def test_unknown_key_names_the_file_and_key(tmp_path):
    path = write(tmp_path, "a.conf", MINIMAL + "memory = 2048\n")
    message = error_of(load_answer_files, [path])
    assert message.startswith(f"{path}: unknown key [engine_vm] memory ")
    assert "memory_mb" in message        # the known keys are listed


def test_unknown_section_names_the_file(tmp_path):
    path = write(tmp_path, "a.conf", MINIMAL + "[vm]\nname = x\n")
    assert error_of(load_answer_files, [path]) == f"{path}: unknown section [vm]"


def test_bad_memory_names_file_key_and_expected(tmp_path):
    path = write(tmp_path, "a.conf", MINIMAL + "memory_mb = 512\n")
    assert error_of(load_answer_files, [path]) == (
        f"{path}: [engine_vm] memory_mb = '512' is invalid; expected {BY_FIELD['vm_memory_mb'].expected}")


def test_missing_or_broken_answer_files(tmp_path):
    missing = str(tmp_path / "nope.conf")
    assert error_of(load_answer_files, [missing]) == f"{missing}: no such file; expected an answer file"
    broken = write(tmp_path, "b.conf", "connection = x\n")
    assert error_of(load_answer_files, [broken]).startswith(f"{broken}: not a valid INI file")


@pytest.mark.parametrize("section,key,via,env", [
    ("engine", "admin_password", "[engine] admin_password_file", "$KEEL_ADMIN_PASSWORD"),
    ("bmc", "password", "[bmc] password_file", "$KEEL_BMC_PASSWORD"),
])
def test_a_password_in_an_answer_file_is_refused(tmp_path, section, key, via, env):
    path = write(tmp_path, "a.conf", f"[{section}]\n{key} = {BMC_PW}\n")
    message = error_of(load_answer_files, [path])
    assert message.startswith(f"{path}: [{section}] {key} is refused")
    assert via in message and env in message and BMC_PW not in message


def test_passwords_in_answer_files_when_allowed(tmp_path):
    path = write(tmp_path, "a.conf", f"[engine]\nadmin_password = {ADMIN_PW}\n[bmc]\npassword = {BMC_PW}\n")
    assert load_answer_files([path], allow_passwords=True) == {
        "admin_password": ADMIN_PW, "admin_password_file": "", "bmc_password": BMC_PW, "bmc_password_file": ""}


def test_a_bad_literal_password_is_not_shown(tmp_path):
    path = write(tmp_path, "a.conf", "[engine]\nadmin_password = abc12\n")
    message = error_of(load_answer_files, [path], allow_passwords=True)
    assert message == f"{path}: [engine] admin_password is invalid; expected {BY_FIELD['admin_password'].expected}"


def test_a_password_and_its_file_together_are_refused(tmp_path):
    pw = write(tmp_path, "pw", ADMIN_PW)
    path = write(tmp_path, "a.conf", f"[engine]\nadmin_password = {ADMIN_PW}\nadmin_password_file = {pw}\n")
    assert "are both given; keep one" in error_of(load_answer_files, [path], allow_passwords=True)


def test_password_files_are_read(tmp_path):
    got = load_answer_files([password_files(tmp_path)])
    assert got["admin_password"] == ADMIN_PW and got["admin_password_file"] == str(tmp_path / "admin.pw")
    assert got["bmc_password"] == BMC_PW and got["bmc_password_file"] == str(tmp_path / "bmc.pw")


@pytest.mark.parametrize("content,reason", [
    (None, "no such file"), ("\nsecond\n", "its first line is empty"), ("", "its first line is empty"),
    ("abc\n", "the password in it breaks the rules"),
])
def test_bad_password_files_say_why(tmp_path, content, reason):
    pw = tmp_path / "pw"
    if content is not None:
        pw.write_text(content)
    path = write(tmp_path, "a.conf", f"[engine]\nadmin_password_file = {pw}\n")
    assert error_of(load_answer_files, [path]) == (
        f"{path}: [engine] admin_password_file = '{pw}': {reason}; "
        f"expected {BY_FIELD['admin_password_file'].expected}")


def test_later_files_win(tmp_path):
    first = write(tmp_path, "1.conf", MINIMAL + "memory_mb = 2048\nvcpus = 1\n")
    second = write(tmp_path, "2.conf", "[engine_vm]\nmemory_mb = 3072\n[engine]\ncluster = c2\n")
    got = load_answer_files([first, second])
    assert (got["vm_memory_mb"], got["vm_vcpus"], got["cluster"]) == (3072, 1, "c2")


def test_a_later_literal_password_replaces_an_earlier_file(tmp_path):
    first = password_files(tmp_path)
    second = write(tmp_path, "2.conf", "[engine]\nadmin_password = other-pw\n")
    got = load_answer_files([first, second], allow_passwords=True)
    assert (got["admin_password"], got["admin_password_file"]) == ("other-pw", "")


def full_answers(tmp_path, extra: str = "") -> A.Answers:
    """The answers of MINIMAL, then extra, then the password files."""
    paths = [write(tmp_path, "base.conf", MINIMAL), write(tmp_path, "extra.conf", "[engine_vm]\n" + extra),
             password_files(tmp_path)]
    return collect(load_answer_files(paths), FACTS, interactive=False, source=paths[-1])


def test_render_then_load_gives_the_same_answers(tmp_path):
    a = full_answers(tmp_path, f"appliance = {tmp_path}\n[storage]\nmount_options = vers=4.2\n")
    path = write(tmp_path, "generated.conf", render_answer_file(a))
    loaded = load_answer_files([path])
    public = a.public()
    assert {f: v for f, v in loaded.items() if f in public} == {f: v for f, v in public.items() if v != ""}
    assert collect(loaded, FACTS, interactive=False, source=path) == a


def test_render_without_a_bmc_says_none(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_ADMIN_PASSWORD", ADMIN_PW)
    a = collect(load_answer_files([write(tmp_path, "a.conf", MINIMAL)]), FACTS, interactive=False)
    text = render_answer_file(a)
    assert text.endswith("\n[bmc]\naddress = none\n") and "password_file =" not in text
    path = write(tmp_path, "generated.conf", text)
    assert collect(load_answer_files([path]), FACTS, interactive=False) == a


def test_no_password_in_render_summary_or_repr(tmp_path):
    a = full_answers(tmp_path)
    shown = render_answer_file(a) + summary(a) + repr(a) + repr(a.public())
    assert ADMIN_PW not in shown and BMC_PW not in shown
    assert "(set, from " in summary(a)
    assert "admin_password" not in a.public() and "bmc_password" not in a.public()


# ---------------------------------------------------------------- without a terminal

def test_defaults_fill_what_the_file_leaves_out(tmp_path):
    a = full_answers(tmp_path)
    assert (a.vm_name, a.vm_hostname, a.vm_memory_mb, a.vm_vcpus) == ("HostedEngine", "keel-engine", 4096, 2)
    assert (a.bridge, a.gateway, a.host_address) == ("ovirtmgmt", "198.51.100.1", "198.51.100.10")
    assert (a.host_name, a.data_center, a.cluster) == ("host1.example.test", "Default", "Default")
    assert (a.storage_mount_root, a.storage_domain, a.timing_profile) == (
        "/rhev/data-center/mnt", "hosted_storage", "production")
    assert (a.appliance, a.engine_extra_conf, a.storage_mount_options) == ("", "", "")
    assert (a.bmc_port, a.bmc_options, a.bmc_user) == (623, "lanplus=1", "root")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", a.vm_mac)


def test_defaults_shrink_to_a_small_host():
    small = dataclasses.replace(FACTS, memory_available_mb=2000, cpus=1, bridges=("br1",))
    a = collect({"storage_connection": "h:/e", "vm_address": "dhcp", "admin_password": ADMIN_PW},
                small, interactive=False)
    assert (a.vm_memory_mb, a.vm_vcpus, a.bridge, a.host_address) == (1488, 1, "br1", "203.0.113.5")
    assert not a.has_bmc and (a.bmc_user, a.bmc_password, a.bmc_password_file) == ("", "", "")


def test_a_missing_answer_names_the_last_file(tmp_path):
    path = write(tmp_path, "a.conf", "[engine_vm]\naddress = dhcp\n")
    assert error_of(collect, load_answer_files([path]), FACTS, interactive=False, source=path) == (
        f"{path}: [storage] connection is missing; expected {BY_FIELD['storage_connection'].expected}")
    assert error_of(collect, {}, FACTS, interactive=False).startswith("the answers: [storage] connection is missing")


def test_a_missing_password_says_where_it_may_come_from():
    message = error_of(collect, {"storage_connection": "h:/e", "vm_address": "dhcp"}, FACTS, interactive=False)
    assert message.startswith("the answers: [engine] admin_password_file is missing; expected")
    assert message.endswith("or $KEEL_ADMIN_PASSWORD set")


def test_passwords_from_the_environment(monkeypatch):
    monkeypatch.setenv("KEEL_ADMIN_PASSWORD", ADMIN_PW)
    monkeypatch.setenv("KEEL_BMC_PASSWORD", BMC_PW)
    a = collect({"storage_connection": "h:/e", "vm_address": "dhcp", "bmc_address": "192.0.2.50",
                 "bmc_user": "root"}, FACTS, interactive=False)
    assert (a.admin_password, a.bmc_password, a.admin_password_file) == (ADMIN_PW, BMC_PW, "")


def test_a_bad_password_in_the_environment_is_not_shown(monkeypatch):
    monkeypatch.setenv("KEEL_BMC_PASSWORD", "x" * 21)
    message = error_of(collect, {"storage_connection": "h:/e", "vm_address": "dhcp", "admin_password": ADMIN_PW,
                                 "bmc_address": "192.0.2.50", "bmc_user": "root"}, FACTS, interactive=False)
    assert message == "$KEEL_BMC_PASSWORD: the BMC password is longer than IPMI's 20 bytes"


def test_a_bmc_needs_its_user_and_password():
    preset = {"storage_connection": "h:/e", "vm_address": "dhcp", "admin_password": ADMIN_PW}
    assert error_of(collect, preset | {"bmc_address": "192.0.2.50"}, FACTS, interactive=False) == (
        f"the answers: [bmc] user is missing; expected {BY_FIELD['bmc_user'].expected}")
    assert "[bmc] address is missing" in error_of(collect, preset | {"bmc_user": "root"}, FACTS, interactive=False)
    assert error_of(collect, preset | {"bmc_address": "", "bmc_user": "root"}, FACTS, interactive=False) == (
        "the answers: [bmc] user is given but [bmc] address is none")


@pytest.mark.parametrize("extra,message", [
    ("memory_mb = 8000\n", "[engine_vm] memory_mb = 8000 does not fit: this host has 8192 MiB available; "
                           "the engine VM can have at most 7680 MiB"),
    ("vcpus = 8\n", "[engine_vm] vcpus = 8 does not fit: this host has 4 CPUs"),
    ("[network]\nbridge = br9\n", "[network] bridge = 'br9' does not fit: br9 is not a bridge on this host "
                                  "(its bridges: br1, ovirtmgmt)"),
    ("[network]\ngateway = 203.0.113.1\n", "[network] gateway = '203.0.113.1' does not fit: 203.0.113.1 is not "
                                           "another address in 198.51.100.0/24 (the engine VM's subnet)"),
    ("[network]\ngateway = 198.51.100.100\n", "is not another address in 198.51.100.0/24"),
    ("[network]\nhost_address = 198.51.100.100\n", "198.51.100.100 is the engine VM's address"),
])
def test_answers_that_do_not_fit_this_host(tmp_path, extra, message):
    path = write(tmp_path, "a.conf", MINIMAL + extra)
    preset = load_answer_files([path]) | {"admin_password": ADMIN_PW}
    got = error_of(collect, preset, FACTS, interactive=False, source=path)
    assert got.startswith(f"{path}: ") and message in got


def test_a_default_that_does_not_fit_is_said():
    preset = {"storage_connection": "h:/e", "vm_address": "203.0.113.100/24", "admin_password": ADMIN_PW}
    assert error_of(collect, preset, FACTS, interactive=False) == (
        "the answers: [network] gateway is missing and its default '198.51.100.1' does not fit: "
        "198.51.100.1 is not another address in 203.0.113.0/24 (the engine VM's subnet)")


def test_the_engine_vm_may_not_take_this_hosts_address():
    preset = {"storage_connection": "h:/e", "vm_address": "198.51.100.10/24", "admin_password": ADMIN_PW}
    assert "198.51.100.10 is this host's own address (on ovirtmgmt)" in error_of(
        collect, preset, FACTS, interactive=False)


@pytest.mark.parametrize("facts,needle", [
    (dataclasses.replace(FACTS, memory_available_mb=1500), "[engine_vm] memory_mb: this host has 1500 MiB of "
                                                           "memory available: too little for the engine VM"),
    (dataclasses.replace(FACTS, bridges=()), "[network] bridge: this host has no network bridge"),
])
def test_a_host_no_answer_can_fit_is_said_at_once(facts, needle):
    preset = {"storage_connection": "h:/e", "vm_address": "dhcp", "admin_password": ADMIN_PW}
    for interactive in (False, True):
        assert needle in error_of(collect, preset, facts, interactive=interactive,
                                  input_fn=lambda prompt: "")


def test_a_bad_preset_password_is_not_shown():
    preset = {"storage_connection": "h:/e", "vm_address": "dhcp", "admin_password": "abc12"}
    assert error_of(collect, preset, FACTS, interactive=False) == (
        f"the answers: [engine] admin_password is invalid; expected {BY_FIELD['admin_password'].expected}")


def test_unknown_preset_fields_are_refused():
    assert error_of(collect, {"vm_memory": 1}, FACTS, interactive=False) == "unknown answers: vm_memory"


# ---------------------------------------------------------------- the table and the docs

def test_every_answer_has_one_key():
    assert sorted(k.field for k in A.KEYS) == sorted(f.name for f in dataclasses.fields(A.Answers))
    assert len({(k.section, k.key) for k in A.KEYS}) == len(A.KEYS)


def test_the_docs_list_every_key():
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "installer.md")) as f:
        doc = f.read()
    missing = [row for row in A.doc_rows() if row not in doc]
    assert not missing, "docs/installer.md lacks (or words differently): " + "\n".join(missing)
