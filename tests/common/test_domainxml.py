"""The one domain XML builder's VNC display: on one address of its host,
always behind a password, never on every address."""
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest

from keel_common import domainxml
from keel_common.domainxml import Domain, Vnc

PW = "s3cr-Pw_"


def graphics_of(vnc):
    dom = ET.fromstring(domainxml.domain_xml(Domain(name="v", uuid="0" * 32, memory_bytes=2 ** 26, vnc=vnc)))
    return dom.findall("devices/graphics")


def test_a_vm_display_listens_on_its_host_address_with_a_password():
    g, = graphics_of(Vnc(listen="127.0.1.11", password=PW))
    assert (g.get("type"), g.get("autoport"), g.get("passwd")) == ("vnc", "yes", PW)
    assert g.get("passwdValidTo") is None and g.get("listen") is None
    assert [(x.get("type"), x.get("address")) for x in g.findall("listen")] == [("address", "127.0.1.11")]


def test_no_display_without_one():
    assert graphics_of(None) == []


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "0:0::0", "h1.example.org", "", "127.0.1.11:5900",
                                    "224.0.0.1", "127.0.1.11 "])
def test_every_address_or_a_name_is_refused(listen):
    with pytest.raises(ValueError):
        graphics_of(Vnc(listen=listen, password=PW))
    with pytest.raises(ValueError):
        domainxml.graphics_xml(Vnc(listen=listen, password=PW))


@pytest.mark.parametrize("password", ["", "short7!", "with spa", "tab\there", None, "é" * 8, "nine9nine"])
def test_a_password_is_eight_printable_characters(password):
    with pytest.raises(ValueError):
        graphics_of(Vnc(listen="127.0.1.11", password=password))


def test_an_ipv6_address_is_written_as_libvirt_reads_it():
    g, = graphics_of(Vnc(listen="fd00:0::1", password=PW))
    assert g.find("listen").get("address") == "fd00::1"


def test_a_ticket_update_carries_its_end_in_utc():
    end = datetime(2030, 1, 2, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    g = ET.fromstring(domainxml.graphics_xml(Vnc(listen="127.0.1.12", password=PW, valid_to=end)))
    assert g.tag == "graphics" and g.get("passwd") == PW
    assert g.get("passwdValidTo") == "2030-01-02T02:05:06"
    assert g.find("listen").get("address") == "127.0.1.12"
    with pytest.raises(ValueError):     # a naive time could be any zone's
        domainxml.graphics_xml(Vnc(listen="127.0.1.12", password=PW, valid_to=datetime(2030, 1, 2)))


def test_passwords_are_new_each_time_and_as_long_as_vnc_takes():
    made = {domainxml.new_password() for _ in range(50)}
    assert len(made) == 50 and all(len(p) == domainxml.VNC_PASSWORD_LENGTH for p in made)
    for p in made:
        graphics_of(Vnc(listen="127.0.1.11", password=p))


LIVE = """<domain type='qemu' id='3'><name>v</name><devices>
<serial type='pty'><target port='0'/></serial>
<graphics type='vnc' port='5901' autoport='yes' listen='127.0.1.11' passwd='old-pass-word'>
  <listen type='address' address='127.0.1.11'/>
</graphics></devices></domain>"""


def test_the_display_of_a_running_domain():
    assert domainxml.vnc_display(LIVE) == ("127.0.1.11", 5901)
    assert domainxml.vnc_display(LIVE.replace("port='5901'", "port='-1'")) == ("127.0.1.11", None)
    assert domainxml.vnc_display("<domain><devices/></domain>") == (None, None)


def test_a_migration_moves_the_display_to_the_destination_and_keeps_its_password():
    g = ET.fromstring(domainxml.with_vnc_listen(LIVE, "127.0.1.12")).find("devices/graphics")
    assert g.get("listen") == "127.0.1.12" and g.get("passwd") == "old-pass-word"
    assert [x.get("address") for x in g.findall("listen")] == ["127.0.1.12"]
    with pytest.raises(ValueError):
        domainxml.with_vnc_listen(LIVE, "0.0.0.0")
