"""oVirt's os.kernel, os.initrd and os.cmdline: stored on the VM, shown back,
written into the domain XML (with the guest agent's channel every VM has);
a relative path, an initramfs without a kernel and a change on a running VM
are refused, and nothing changes then."""
import xml.etree.ElementTree as ET

import pytest

from harness.engineapp import admin_headers, engine_app_with_host
from keel_common import domainxml
from keel_engine.models import Cluster, Vm
from keel_engine.services import vms as vm_svc

API = "/ovirt-engine/api"
MiB = 2 ** 20


@pytest.fixture
def env(tmp_path):
    _cfg, app, sm, host_id = engine_app_with_host(tmp_path, "127.0.1.61")
    with sm() as s:
        cluster = s.query(Cluster).one().name
    return {"c": app.test_client(), "h": admin_headers(app), "sm": sm, "cluster": cluster, "host": host_id}


def send(env, method, path, body):
    return env["c"].open(API + path, method=method, data=body,
                         headers={**env["h"], "Content-Type": "application/xml", "Accept": "application/json"})


def _vm_body(env, os_xml):
    return (f"<vm><name>k1</name><cluster><name>{env['cluster']}</name></cluster>"
            f"<template><name>Blank</name></template><memory>{64 * MiB}</memory><os>{os_xml}</os></vm>")


def test_a_vm_boots_the_kernel_it_names_and_has_a_guest_agent_channel(env):
    r = send(env, "POST", "/vms", _vm_body(env, "<type>other_linux</type><kernel>/var/lib/guest/vmlinuz</kernel>"
                                          "<initrd>/var/lib/guest/initrd.img</initrd><cmdline>console=ttyS0</cmdline>"))
    assert r.status_code in (201, 202), r.data
    got = r.get_json()["os"]
    assert got == {"type": "other_linux", "kernel": "/var/lib/guest/vmlinuz",
                   "initrd": "/var/lib/guest/initrd.img", "cmdline": "console=ttyS0"}
    with env["sm"]() as s:
        vm = s.query(Vm).filter_by(name="k1").one()
        vm.host_id = env["host"]
        xml = ET.fromstring(domainxml.domain_xml(vm_svc.domain_of(None, s, vm)))
    assert xml.findtext("os/kernel") == "/var/lib/guest/vmlinuz"
    assert xml.findtext("os/initrd") == "/var/lib/guest/initrd.img"
    assert xml.findtext("os/cmdline") == "console=ttyS0"
    assert xml.find("os/boot") is None     # a kernel given: no boot device order
    channel = xml.find("devices/channel/target")
    assert channel.get("name") == "org.qemu.guest_agent.0" and channel.get("type") == "virtio"


@pytest.mark.parametrize("os_xml, says", [
    ("<kernel>vmlinuz</kernel>", "os.kernel: an absolute path"),
    ("<kernel>/a/../etc/x</kernel>", "os.kernel: an absolute path"),
    ("<initrd>/boot/initrd.img</initrd>", "os.initrd: an initramfs needs os.kernel too"),
    ("<cmdline>quiet</cmdline>", "os.cmdline: kernel parameters need os.kernel too"),
])
def test_a_bad_boot_setting_is_refused_by_name_and_nothing_is_created(env, os_xml, says):
    r = send(env, "POST", "/vms", _vm_body(env, os_xml))
    assert r.status_code == 400 and says in r.get_json()["detail"], r.data
    with env["sm"]() as s:
        assert s.query(Vm).filter_by(name="k1").count() == 0


def test_boot_settings_change_only_while_the_vm_is_down_and_clear_with_empty_values(env):
    r = send(env, "POST", "/vms", _vm_body(env, "<kernel>/k</kernel><cmdline>quiet</cmdline>"))
    vm_id = r.get_json()["id"]
    with env["sm"]() as s:
        s.get(Vm, vm_id).status, s.get(Vm, vm_id).host_id = "up", env["host"]
        s.commit()
    r = send(env, "PUT", f"/vms/{vm_id}", "<vm><os><kernel>/other</kernel></os></vm>")
    assert r.status_code == 409 and "while it is down" in r.get_json()["detail"]
    with env["sm"]() as s:
        vm = s.get(Vm, vm_id)
        assert vm.kernel_path == "/k"
        vm.status, vm.host_id = "down", None
        s.commit()
    r = send(env, "PUT", f"/vms/{vm_id}", "<vm><os><kernel></kernel><cmdline></cmdline></os></vm>")
    assert r.status_code == 200, r.data
    assert "kernel" not in r.get_json()["os"]
