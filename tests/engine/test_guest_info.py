"""What a guest agent reports, from libvirt's answer to the VM's columns
(services/guest_info.py), and how the worker's monitor asks for it
(worker/guest_agents.py): answers stored at the next cycle without touching
the VM's version, a VM asked again only when due, a silent agent costing
only its own VM's answer, one log line when an agent first answers and one
when it stops, and the report gone as soon as the VM is down."""
import logging
import threading
import time

import libvirt
import pytest

from harness.engineapp import engine_app_with_host
from keel_engine import virt
from keel_engine.models import BLANK_TEMPLATE_ID, Cluster, Vm
from keel_engine.services import guest_info
from keel_engine.services.guest_info import GuestReport
from keel_engine.worker import guest_agents
from keel_engine.worker.guest_agents import GuestAgents

MiB = 2 ** 20

# virDomainGetGuestInfo(HOSTNAME | OS | TIMEZONE | INTERFACES) of a Debian 12 guest, as libvirt 9.0 gives it
DEBIAN = {
    "hostname": "web1.example.test",
    "os.id": "debian", "os.name": "Debian GNU/Linux", "os.pretty-name": "Debian GNU/Linux 12 (bookworm)",
    "os.version": "12 (bookworm)", "os.version-id": "12", "os.kernel-release": "6.1.0-18-amd64",
    "os.kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)", "os.machine": "x86_64",
    "timezone.name": "CET", "timezone.offset": 3600,
    "if.count": 2,
    "if.0.name": "lo", "if.0.hwaddr": "00:00:00:00:00:00", "if.0.addr.count": 2,
    "if.0.addr.0.type": "ipv4", "if.0.addr.0.addr": "127.0.0.1", "if.0.addr.0.prefix": 8,
    "if.0.addr.1.type": "ipv6", "if.0.addr.1.addr": "::1", "if.0.addr.1.prefix": 128,
    "if.1.name": "eth0", "if.1.hwaddr": "52:54:00:AA:BB:01", "if.1.addr.count": 2,
    "if.1.addr.0.type": "ipv4", "if.1.addr.0.addr": "198.51.100.15", "if.1.addr.0.prefix": 24,
    "if.1.addr.1.type": "ipv6", "if.1.addr.1.addr": "fe80::5054:ff:feaa:bb01%eth0", "if.1.addr.1.prefix": 64,
}
ETH0 = {"name": "eth0", "mac": "52:54:00:aa:bb:01",
        "ips": [{"address": "198.51.100.15", "prefix": 24, "version": "v4"},
                {"address": "fe80::5054:ff:feaa:bb01", "prefix": 64, "version": "v6"}]}


def test_libvirt_s_guest_info_becomes_the_vm_s_columns_without_the_loopback():
    got = guest_info.report(DEBIAN)
    assert got.fqdn == "web1.example.test"
    assert got.os == {"id": "debian", "name": "Debian GNU/Linux", "pretty_name": "Debian GNU/Linux 12 (bookworm)",
                      "version": "12 (bookworm)", "version_id": "12", "kernel_release": "6.1.0-18-amd64",
                      "kernel_version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
                      "machine": "x86_64", "timezone": {"name": "CET", "offset": 3600}}
    assert got.interfaces == [ETH0]


def test_an_older_host_s_interface_addresses_give_the_same_interfaces():
    # virDomainInterfaceAddresses(VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT): types are VIR_IP_ADDR_TYPE_*
    found = {"lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"type": 0, "addr": "127.0.0.1", "prefix": 8}]},
             "eth0": {"hwaddr": "52:54:00:aa:bb:01", "addrs": [
                 {"type": libvirt.VIR_IP_ADDR_TYPE_IPV4, "addr": "198.51.100.15", "prefix": 24},
                 {"type": libvirt.VIR_IP_ADDR_TYPE_IPV6, "addr": "fe80::5054:ff:feaa:bb01", "prefix": 64}]}}
    params = {k: v for k, v in DEBIAN.items() if not k.startswith("if.")}
    assert guest_info.report(params, found).interfaces == [ETH0]


def test_an_agent_that_says_little_gives_a_short_report():
    assert guest_info.report({}) == GuestReport(fqdn="", os=None, interfaces=[])
    got = guest_info.report({"timezone.offset": -12600})
    assert got.os == {"timezone": {"name": "", "offset": -12600}}


def test_what_a_hostile_guest_says_is_cut_cleaned_and_bounded():
    params = {"hostname": "a\x01b" + "x" * 1000, "os.name": "\ud800evil", "if.count": 10 ** 9,
              "if.0.name": "eth0", "if.0.hwaddr": "not-a-mac", "if.0.addr.count": 3,
              "if.0.addr.0.type": "ipv4", "if.0.addr.0.addr": "300.1.1.1", "if.0.addr.0.prefix": 24,
              "if.0.addr.1.type": "ipv4", "if.0.addr.1.addr": "10.1.1.1", "if.0.addr.1.prefix": "bad",
              "if.0.addr.2.type": "ipv6", "if.0.addr.2.addr": "<script>", "if.0.addr.2.prefix": 64}
    got = guest_info.report(params)
    assert got.fqdn.startswith("a\ufffdb") and len(got.fqdn) == guest_info.MAX_TEXT
    assert got.os == {"name": "\ufffdevil"}
    assert got.interfaces == [{"name": "eth0", "mac": "", "ips": [
        {"address": "10.1.1.1", "prefix": None, "version": "v4"}]}]


def test_the_agent_channel_s_state_is_read_from_the_domain_xml():
    def xml(state):
        attr = f" state='{state}'" if state else ""
        return (f"<domain><devices><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'{attr}/>"
                "</channel></devices></domain>")
    assert guest_info.agent_connected(xml("connected")) is True
    assert guest_info.agent_connected(xml("disconnected")) is False
    assert guest_info.agent_connected(xml(None)) is None
    assert guest_info.agent_connected("<domain><devices/></domain>") is False


# ---- asking the agents -----------------------------------------------------------------
class _Dom:
    def __init__(self, state="connected", answer=DEBIAN, hang=0.0):
        self.state, self.answer, self.hang, self.asked = state, answer, hang, 0

    def XMLDesc(self, _flags):
        return (f"<domain><devices><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' "
                f"state='{self.state}'/></channel></devices></domain>")

    def guestInfo(self, _types, _flags):
        self.asked += 1
        time.sleep(self.hang)
        return self.answer


class _Conn:
    def __init__(self, doms):
        self.doms = doms

    def lookupByUUIDString(self, uuid):
        return self.doms[uuid]

    def close(self):
        return 0


def test_a_silent_agent_costs_only_its_own_vm_s_answer(monkeypatch):
    doms = {"quiet": _Dom(hang=30), "chatty": _Dom(), "absent": _Dom(state="disconnected")}
    monkeypatch.setattr(virt, "connect", lambda uri, timeout: _Conn(doms))
    started = time.monotonic()
    got = guest_agents.ask_host("qemu+tcp://h/system", ["quiet", "chatty", "absent"], timeout=1)
    assert time.monotonic() - started < 5
    assert got["chatty"] == guest_info.report(DEBIAN)
    assert isinstance(got["quiet"], virt.VirtError) and "no answer within" in str(got["quiet"])
    # no agent: told by the channel's state, without asking libvirt for the agent at all
    assert "not connected" in str(got["absent"]) and doms["absent"].asked == 0


@pytest.fixture
def env(tmp_path):
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.14.61")
    with sm() as s:
        cl = s.query(Cluster).one()
        for name, status in (("v1", "up"), ("v2", "up"), ("off", "down")):
            s.add(Vm(name=name, cluster_id=cl.id, template_id=BLANK_TEMPLATE_ID, memory=64 * MiB, status=status,
                     host_id=host_id if status == "up" else None))
        s.commit()
        ids = {v.name: v.id for v in s.query(Vm)}
    return {"sm": sm, "ids": ids, "host": host_id, "cfg": cfg, "ctx": app.config["KEEL_CTX"]}


class _Agents:
    """A fake ask_host: each VM's answer, and the calls it got."""

    def __init__(self):
        self.answers, self.calls = {}, []

    def __call__(self, uri, vm_ids, timeout):
        self.calls.append(sorted(vm_ids))
        return {i: self.answers.get(i, virt.VirtError("guest agent: QEMU guest agent is not connected",
                                                      libvirt.VIR_ERR_AGENT_UNRESPONSIVE)) for i in vm_ids}


def _agents(env):
    fake, now = _Agents(), [1000.0]
    ga = GuestAgents(env["ctx"], ask=fake, start=lambda fn: fn(), clock=lambda: now[0])
    return ga, fake, now


def _row(env, name):
    with env["sm"]() as s:
        return s.get(Vm, env["ids"][name])


def test_answers_are_stored_at_the_next_cycle_and_leave_the_vm_s_version(env, caplog):
    ga, fake, _now = _agents(env)
    fake.answers[env["ids"]["v1"]] = guest_info.report(DEBIAN)
    before = _row(env, "v1").version
    with caplog.at_level(logging.INFO, logger="keel.engine.guest"):
        ga.refresh()                      # asks the two running VMs (not the down one)
        assert fake.calls == [sorted([env["ids"]["v1"], env["ids"]["v2"]])]
        ga.refresh()                      # stores
    v1, v2 = _row(env, "v1"), _row(env, "v2")
    assert v1.guest_fqdn == "web1.example.test" and v1.guest_interfaces == [ETH0]
    assert v1.guest_os["pretty_name"] == "Debian GNU/Linux 12 (bookworm)" and v1.guest_reported_at is not None
    assert v1.version == before           # an API worker's write based on an earlier read stays valid
    assert v2.guest_fqdn == "" and v2.guest_os is None
    said = [r.getMessage() for r in caplog.records]
    assert said == ["VM v1: its guest agent answers (host name web1.example.test, "
                    "Debian GNU/Linux 12 (bookworm), 1 network interfaces)"]


def test_each_vm_is_asked_when_due_and_an_agent_that_stops_is_said_once(env, caplog):
    ga, fake, now = _agents(env)
    v1, v2 = env["ids"]["v1"], env["ids"]["v2"]
    fake.answers[v1] = guest_info.report(DEBIAN)
    ga.refresh()
    ga.refresh()
    fake.calls.clear()
    now[0] += ga.silent_every           # v2 (silent) is due again, v1 (answering) is not
    ga.refresh()
    assert fake.calls == [[v2]]
    now[0] += ga.answering_every
    del fake.answers[v1]                # v1's agent stops
    with caplog.at_level(logging.INFO, logger="keel.engine.guest"):
        ga.refresh()
        ga.refresh()
        for _ in range(3):
            now[0] += ga.silent_every
            ga.refresh()
    stopped = [r.getMessage() for r in caplog.records if "stopped answering" in r.getMessage()]
    assert len(stopped) == 1 and stopped[0].startswith("VM v1: its guest agent stopped answering (")
    assert _row(env, "v1").guest_fqdn == "web1.example.test"    # the last report stays while the VM runs


def test_a_report_never_lands_on_a_vm_that_went_down_meanwhile_and_down_clears_it(env):
    ga, fake, _now = _agents(env)
    v1, v2 = env["ids"]["v1"], env["ids"]["v2"]
    fake.answers.update({v1: guest_info.report(DEBIAN), v2: guest_info.report(DEBIAN)})
    ga.refresh()                        # asked while up ...
    with env["sm"]() as s:              # ... and stopped before the answer is stored
        vm = s.get(Vm, v2)
        vm.status, vm.host_id = "down", None
        s.commit()
    ga.refresh()
    assert _row(env, "v2").guest_fqdn == "" and _row(env, "v2").guest_reported_at is None
    assert _row(env, "v1").guest_fqdn == "web1.example.test"
    with env["sm"]() as s:              # any path to down takes the report with it
        vm = s.get(Vm, v1)
        vm.status, vm.host_id = "down", None
        s.commit()
    v = _row(env, "v1")
    assert (v.guest_fqdn, v.guest_os, v.guest_interfaces, v.guest_reported_at) == ("", None, None, None)


def test_a_host_is_asked_again_only_once_its_last_round_is_over(env):
    v1 = env["ids"]["v1"]
    gate, calls = threading.Event(), []

    def slow(uri, vm_ids, timeout):
        calls.append(list(vm_ids))
        gate.wait(10)
        return {i: guest_info.report(DEBIAN) for i in vm_ids}
    now = [0.0]
    ga = GuestAgents(env["ctx"], ask=slow, clock=lambda: now[0])
    ga.refresh()
    for _ in range(3):
        now[0] += 1000
        ga.refresh()                    # the round is still out: no second one, and no wait
    assert len(calls) == 1
    gate.set()
    end = time.monotonic() + 10
    while _row(env, "v1").guest_fqdn == "" and time.monotonic() < end:
        time.sleep(0.05)
        ga.refresh()
    assert _row(env, "v1").guest_fqdn == "web1.example.test" and v1 in calls[0]
