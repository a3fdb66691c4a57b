"""The questions of hosted-engine --deploy: scripted (pure) and through a
pseudo-terminal (pexpect), where echo and getpass are the real ones."""
import dataclasses
import hashlib
import io
import json
import sys

import pexpect
import pytest

from keel_installer.answers import AnswerError
from keel_installer.questions import BMC_QUESTION, collect, confirm, summary, yes_no

from .test_answers import ADMIN_PW, BMC_PW, FACTS, no_password_env  # noqa: F401 (an autouse fixture)

REQUIRED = {"storage_connection": "198.51.100.1:/exports/engine", "vm_address": "198.51.100.100/24"}


class Terminal:
    """input() and getpass() answering from a script; records what was asked and said."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.prompts: list[str] = []
        self.out = io.StringIO()

    def input(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def collect(self, preset=None, facts=FACTS, **kwargs):
        return collect(preset or {}, facts, interactive=True, input_fn=self.input, getpass_fn=self.input,
                       out=self.out, **kwargs)

    @property
    def said(self) -> list[str]:
        return self.out.getvalue().splitlines()


def all_defaults(*before_password: str) -> Terminal:
    return Terminal("198.51.100.1:/exports/engine", "", "", "", "", "", "", "198.51.100.100/24",
                    "", "", "", "", "", "", *before_password, ADMIN_PW, ADMIN_PW, "")


def test_defaults_are_taken_on_enter():
    t = all_defaults()
    a = t.collect()
    assert [p.split(" [")[0].rstrip(": ") for p in t.prompts] == [
        "NFS export of the engine's storage (SERVER:/EXPORT)", "NFS mount options (e.g. vers=4.2; empty for none)",
        "Engine VM name", "Engine VM host name (FQDN or short name)", "Engine VM memory in MiB",
        "Engine VM virtual CPUs", "Engine VM MAC address", "Engine VM address (ADDRESS/PREFIX, or dhcp)",
        "Bridge of the management network", "Gateway (the HA agents ping it to check the network)",
        "This host's management address", "This host's name in the engine", "Data center name", "Cluster name",
        "admin@internal password", "Confirm admin@internal password", BMC_QUESTION + " (yes, no)"]
    assert t.prompts[4] == "Engine VM memory in MiB [4096]: "
    assert t.prompts[7] == "Engine VM address (ADDRESS/PREFIX, or dhcp): "
    assert (a.vm_memory_mb, a.bridge, a.gateway, a.host_address, a.host_name) == (
        4096, "ovirtmgmt", "198.51.100.1", "198.51.100.10", "host1.example.test")
    assert a.admin_password == ADMIN_PW and not a.has_bmc and a.bmc_password == ""
    assert t.prompts[6] == f"Engine VM MAC address [{a.vm_mac}]: "
    assert any("sanlock's lease expires (about 140 s with the production timing)" in line for line in t.said)


def test_a_question_without_default_is_asked_again_on_enter():
    t = Terminal("", "  ", "198.51.100.1:/e")
    with pytest.raises(AnswerError):
        t.collect()
    assert t.prompts[:3] == ["NFS export of the engine's storage (SERVER:/EXPORT): "] * 3
    assert t.said == []


@pytest.mark.parametrize("field_index,bad,reason", [
    (0, "nfs-server", "invalid: 'nfs-server' is not SERVER:/EXPORT"),
    (4, "9000", "invalid: this host has 8192 MiB available; the engine VM can have at most 7680 MiB"),
    (4, "512", "invalid: 512 MiB is too little"),
    (5, "9", "invalid: this host has 4 CPUs"),
    (7, "not-an-address", "invalid: expected ADDRESS/PREFIX of a host"),
    (7, "198.51.100.10/24", "invalid: 198.51.100.10 is this host's own address (on ovirtmgmt)"),
    (8, "eth0", "invalid: eth0 is not a bridge on this host (its bridges: br1, ovirtmgmt)"),
    (9, "203.0.113.1", "invalid: 203.0.113.1 is not another address in 198.51.100.0/24"),
    (10, "198.51.100.100", "invalid: 198.51.100.100 is the engine VM's address"),
])
def test_a_bad_answer_is_said_and_asked_again(field_index, bad, reason):
    t = all_defaults()
    t.answers.insert(field_index, bad)
    a = t.collect()
    assert t.prompts[field_index] == t.prompts[field_index + 1]
    invalid = [line for line in t.said if line.startswith("  invalid")]
    assert len(invalid) == 1 and invalid[0].startswith(f"  {reason}")
    assert a.vm_memory_mb == 4096


def test_a_default_that_does_not_fit_must_be_replaced():
    t = Terminal("198.51.100.1:/e", "", "", "", "", "", "", "203.0.113.100/24", "br1", "", "203.0.113.1", "", "",
                 "", "", ADMIN_PW, ADMIN_PW, "no")
    a = t.collect()
    assert t.prompts[9] == "Gateway (the HA agents ping it to check the network) [198.51.100.1]: "
    assert t.prompts[10] == t.prompts[9]
    assert t.said[0].startswith("  invalid: 198.51.100.1 is not another address in 203.0.113.0/24")
    assert (a.gateway, a.bridge, a.host_address) == ("203.0.113.1", "br1", "203.0.113.5")


def test_mismatched_or_short_passwords_are_asked_again():
    t = all_defaults("abc", ADMIN_PW, "typo-pw-42")
    a = t.collect()
    assert a.admin_password == ADMIN_PW
    assert [line for line in t.said if "invalid" in line] == [
        "  invalid: the password must be one line of at least 6 characters",
        "  invalid: the passwords do not match"]
    assert ADMIN_PW not in t.out.getvalue()


def test_presets_and_advanced_keys_are_not_asked():
    preset = REQUIRED | {"vm_memory_mb": 2048, "bridge": "br1", "gateway": "198.51.100.1",
                         "host_address": "203.0.113.5", "admin_password": ADMIN_PW, "bmc_address": ""}
    t = Terminal(*[""] * 8)
    a = t.collect(preset)
    asked = " ".join(t.prompts)
    for word in ("NFS export", "memory", "Bridge", "Gateway", "management address", "password", "BMC",
                 "mounted", "Storage domain", "Timing", "appliance", "Extra"):
        assert word not in asked
    assert len(t.prompts) == 8 and (a.vm_memory_mb, a.bridge, a.timing_profile) == (2048, "br1", "production")


def test_a_password_from_the_environment_is_not_asked(monkeypatch):
    monkeypatch.setenv("KEEL_ADMIN_PASSWORD", ADMIN_PW)
    t = Terminal(*[""] * 12, "no")
    a = t.collect(REQUIRED)
    assert a.admin_password == ADMIN_PW and "  admin@internal password: from $KEEL_ADMIN_PASSWORD" in t.said
    assert not any("password" in p for p in t.prompts)


def test_a_bmc_is_asked_after_yes():
    t = all_defaults()
    t.answers[-1:] = ["maybe", "y", "none", "bmc1.example.test", "6230", "", "root", "", BMC_PW,
                      "lanplus=1,cipher=9", "lanplus=1,cipher=3"]
    a = t.collect()
    assert t.prompts[-9:] == [
        "BMC address: ", "BMC address: ", "BMC port [623]: ", "BMC user: ", "BMC user: ", "BMC password: ",
        "BMC password: ", "BMC fence agent options [lanplus=1]: ", "BMC fence agent options [lanplus=1]: "]
    assert (a.bmc_address, a.bmc_port, a.bmc_user, a.bmc_password, a.bmc_options) == (
        "bmc1.example.test", 6230, "root", BMC_PW, "lanplus=1,cipher=3")
    invalid = [line for line in t.said if "invalid" in line]
    assert invalid[0] == "  invalid: answer yes or no" and "answers no to the BMC question" in invalid[1]
    assert "cipher suite 3" in invalid[2]


def test_a_bmc_user_in_the_file_means_a_bmc():
    t = Terminal(*[""] * 12, "192.0.2.50", "", "")
    a = t.collect(REQUIRED | {"admin_password": ADMIN_PW, "bmc_user": "root", "bmc_password": BMC_PW})
    assert BMC_QUESTION not in " ".join(t.prompts) and a.bmc_address == "192.0.2.50"


def test_input_closed_early_is_an_answer_error():
    t = Terminal("198.51.100.1:/e", "")
    with pytest.raises(AnswerError, match="^input closed before every question was answered$"):
        t.collect()


def test_ctrl_c_is_left_to_the_caller():
    t = Terminal("198.51.100.1:/e", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        t.collect()


@pytest.mark.parametrize("answers,result", [
    ([""], True), (["yes"], True), (["Y"], True), (["no"], False), (["nope", "N"], False),
])
def test_confirm(answers, result):
    t = Terminal(*answers)
    assert confirm(t.input, t.out) is result
    assert set(t.prompts) == {"Deploy with these settings? (yes, no) [yes]: "}
    assert t.said == ["  invalid: answer yes or no"] * (len(answers) - 1)


def test_yes_no():
    assert yes_no(" Yes ") and not yes_no("n")
    with pytest.raises(ValueError):
        yes_no("")


def test_summary_shows_everything_but_passwords():
    a = all_defaults().collect()
    text = summary(a)
    assert "Engine VM memory in MiB" in text and ": 4096" in text and "admin@internal password" in text
    assert "(set)" in text and ADMIN_PW not in text and "BMC address" in text and "BMC user" not in text
    assert "NFS mount options" in text and ": (none)" in text and "(the current cached build)" in text


# ---------------------------------------------------------------- through a pseudo-terminal

SCRIPT = r"""
import hashlib, json, sys
from keel_installer.answers import AnswerError, HostFacts
from keel_installer.questions import collect, confirm, summary
facts = json.loads(sys.argv[1])
facts["bridges"] = tuple(facts["bridges"])
try:
    a = collect(json.loads(sys.argv[2]), HostFacts(**facts), interactive=True)
    print(summary(a), end="")
    result = a.public() | {"confirmed": confirm(),
                           "admin": hashlib.sha256(a.admin_password.encode()).hexdigest(),
                           "bmc": hashlib.sha256(a.bmc_password.encode()).hexdigest()}
except AnswerError as e:
    print("ERROR", e)
    sys.exit(1)
print("RESULT", json.dumps(result, sort_keys=True))
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Session:
    def __init__(self, preset=None):
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(sys.executable, ["-c", SCRIPT, json.dumps(dataclasses.asdict(FACTS)),
                                                    json.dumps(preset or {})],
                                   encoding="utf-8", timeout=5, dimensions=(24, 250))
        self.child.logfile_read = self.transcript
        self.child.delaybeforesend = None     # the prompt is there: the answer cannot come too early

    def answer(self, prompt: str, text: str) -> None:
        self.child.expect_exact(prompt)
        self.child.sendline(text)

    def result(self) -> dict:
        self.child.expect(r"RESULT (.*)\r\n")
        result = json.loads(self.child.match.group(1))
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0
        return result


def test_tty_a_full_run_with_the_defaults():
    s = Session()
    s.answer("NFS export of the engine's storage (SERVER:/EXPORT): ", "198.51.100.1:/exports/engine")
    for prompt in ("NFS mount options (e.g. vers=4.2; empty for none) []: ", "Engine VM name [HostedEngine]: ",
                   "Engine VM host name (FQDN or short name) [keel-engine]: ", "Engine VM memory in MiB [4096]: ",
                   "Engine VM virtual CPUs [2]: ", "Engine VM MAC address [52:54:00:"):
        s.answer(prompt, "")
    s.answer("Engine VM address (ADDRESS/PREFIX, or dhcp): ", "dhcp")
    for prompt in ("Bridge of the management network [ovirtmgmt]: ",
                   "Gateway (the HA agents ping it to check the network) [198.51.100.1]: ",
                   "This host's management address [198.51.100.10]: ",
                   "This host's name in the engine [host1.example.test]: ", "Data center name [Default]: ",
                   "Cluster name [Default]: "):
        s.answer(prompt, "")
    s.answer("admin@internal password: ", ADMIN_PW)
    s.answer("Confirm admin@internal password: ", ADMIN_PW)
    s.answer(f"{BMC_QUESTION} (yes, no) [no]: ", "")
    s.answer("Deploy with these settings? (yes, no) [yes]: ", "")
    result = s.result()
    assert result["confirmed"] is True and result["admin"] == sha(ADMIN_PW) and result["bmc"] == sha("")
    assert (result["vm_address"], result["vm_memory_mb"], result["bmc_address"]) == ("dhcp", 4096, "")
    assert "--== Deployment settings ==--" in s.transcript.getvalue()


def test_tty_bad_answers_are_asked_again_and_passwords_not_echoed():
    s = Session(REQUIRED | {"data_center": "dc1", "cluster": "c1", "host_name": "h1"})
    for prompt in ("NFS mount options (e.g. vers=4.2; empty for none) []: ", "Engine VM name [HostedEngine]: ",
                   "Engine VM host name (FQDN or short name) [keel-engine]: "):
        s.answer(prompt, "")
    s.answer("Engine VM memory in MiB [4096]: ", "20000")
    s.child.expect_exact("  invalid: this host has 8192 MiB available")
    s.answer("Engine VM memory in MiB [4096]: ", "2048")
    for prompt in ("Engine VM virtual CPUs [2]: ", "Engine VM MAC address [52:54:00:"):
        s.answer(prompt, "")
    s.answer("Bridge of the management network [ovirtmgmt]: ", "198.51.100.7")
    s.child.expect_exact("  invalid: 198.51.100.7 is not a bridge on this host (its bridges: br1, ovirtmgmt)")
    s.answer("Bridge of the management network [ovirtmgmt]: ", "")
    s.answer("Gateway (the HA agents ping it to check the network) [198.51.100.1]: ", "gw")
    s.child.expect_exact("  invalid: 'gw' is not an IPv4 address")
    s.answer("Gateway (the HA agents ping it to check the network) [198.51.100.1]: ", "")
    s.answer("This host's management address [198.51.100.10]: ", "")
    s.answer("admin@internal password: ", ADMIN_PW)
    s.answer("Confirm admin@internal password: ", ADMIN_PW + "x")
    s.child.expect_exact("  invalid: the passwords do not match")
    s.answer("admin@internal password: ", ADMIN_PW)
    s.answer("Confirm admin@internal password: ", ADMIN_PW)
    s.answer("(yes, no) [no]: ", "yes")
    s.answer("BMC address: ", "192.0.2.50")
    s.answer("BMC port [623]: ", "")
    s.answer("BMC user: ", "root")
    s.answer("BMC password: ", BMC_PW)
    s.answer("BMC fence agent options [lanplus=1]: ", "")
    s.answer("Deploy with these settings? (yes, no) [yes]: ", "no")
    result = s.result()
    assert result["confirmed"] is False and (result["vm_memory_mb"], result["bmc_user"]) == (2048, "root")
    assert result["admin"] == sha(ADMIN_PW) and result["bmc"] == sha(BMC_PW)
    transcript = s.transcript.getvalue()
    assert ADMIN_PW not in transcript and BMC_PW not in transcript
    assert "20000" in transcript and "192.0.2.50" in transcript     # what is not secret is echoed


def test_tty_input_closed_early():
    s = Session()
    s.child.expect_exact("NFS export of the engine's storage (SERVER:/EXPORT): ")
    s.child.sendeof()
    s.child.expect_exact("ERROR input closed before every question was answered")
    s.child.expect(pexpect.EOF)
    s.child.close()
    assert s.child.exitstatus == 1


def test_an_answer_file_with_an_unknown_key_stops_the_deploy_on_a_terminal_before_anything(tmp_path):
    """The real command on a pseudo-terminal: one line naming the file, the
    key and the known ones, exit 2, no question asked, nothing written."""
    import os
    bad = tmp_path / "answers.ini"
    bad.write_text("[engine_vm]\nmemory_mb = 2048\ncolour = red\n")
    record = "/var/lib/keel/deploy.json"
    existed = os.path.exists(record)
    # the installed command (`-m keel_installer.cli` would load the module twice)
    command = os.path.join(os.path.dirname(sys.executable), "hosted-engine")
    child = pexpect.spawn(command, ["--deploy", f"--config-append={bad}"], encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    out = child.before.strip()
    assert child.exitstatus == 2, out
    assert out == (f"hosted-engine: {bad}: unknown key [engine_vm] colour (known in [engine_vm]: address, "
                   "appliance, domain_type, hostname, mac, memory_mb, name, vcpus)")
    assert os.path.exists(record) == existed
