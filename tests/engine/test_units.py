"""Pure logic: representations, search, password hashing."""
import pytest

from keel_engine import representation as rep
from keel_engine import search
from keel_engine.errors import Fault
from keel_engine.services import auth


def test_xml_and_json_come_from_one_structure():
    value = {"id": "1", "href": "/x/1", "name": "vm1", "memory": 64, "ha": True,
             "nics": rep.Many("nic", [{"id": "n", "name": "eth0"}]), "link": [{"rel": "a", "href": "/a"}]}
    xml = rep.to_xml("vm", value).decode()
    assert '<vm id="1" href="/x/1">' in xml and "<memory>64</memory>" in xml and "<ha>true</ha>" in xml
    assert '<nics>\n    <nic id="n">' in xml and '<link rel="a" href="/a" />' in xml
    import json
    j = json.loads(rep.to_json("vm", value))
    assert j["memory"] == "64" and j["ha"] == "true" and j["nics"] == {"nic": [{"id": "n", "name": "eth0"}]}


def test_xml_body_parses_to_the_json_shape():
    _tag, x = rep.parse_xml(b'<vm><name>a</name><cluster id="c1"/><template><name>Blank</name></template>'
                            b"<nics><nic><name>n1</name></nic><nic><name>n2</name></nic></nics></vm>")
    _t, j = rep.parse_json(b'{"name": "a", "cluster": {"id": "c1"}, "template": {"name": "Blank"},'
                           b' "nics": {"nic": [{"name": "n1"}, {"name": "n2"}]}}')
    assert x == j


def test_entity_declarations_are_refused():
    with pytest.raises(rep.BadBody):
        rep.parse_xml(b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>')


def test_search_terms():
    terms = search.parse("name=web* and status!=down", {"name", "status"})
    assert search.matches({"name": "Web01", "status": "up"}, terms)
    assert not search.matches({"name": "db01", "status": "up"}, terms)
    assert not search.matches({"name": "web02", "status": "down"}, terms)
    assert search.parse("Vms: name=x", {"name"}) == [("name", "=", "x")]
    for bad in ("name=a or name=b", "colour=red", "name", "name=a and"):
        with pytest.raises(Fault):
            search.parse(bad, {"name"})


def test_password_hashes_are_salted_and_verify():
    a, b = auth.hash_password("pw"), auth.hash_password("pw")
    assert a != b and a.startswith("scrypt$")
    assert auth.verify_password("pw", a) and not auth.verify_password("px", a)
    assert not auth.verify_password("pw", "garbage")
