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
    assert '<nics>\n    <nic id="n">' in xml and '<link rel="a" href="/a"/>' in xml
    import xml.etree.ElementTree as ET
    assert ET.fromstring(xml).find("nics/nic").get("id") == "n"
    import json
    j = json.loads(rep.to_json("vm", value))
    assert j["memory"] == "64" and j["ha"] == "true" and j["nics"] == {"nic": [{"id": "n", "name": "eth0"}]}


def test_text_is_escaped_in_both_formats():
    value = {"id": 'a"b', "name": "<x> & y", "description": "line\nbreak"}
    import json
    import xml.etree.ElementTree as ET
    root = ET.fromstring(rep.to_xml("vm", value))
    assert root.get("id") == 'a"b' and root.findtext("name") == "<x> & y"
    assert json.loads(rep.to_json("vm", value))["name"] == "<x> & y"


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
    assert terms == [("name", "=", "web*"), ("status", "!=", "down")]
    assert search.parse("Vms: name=x", {"name"}) == [("name", "=", "x")]
    for bad in ("name=a or name=b", "colour=red", "name", "name=a and"):
        with pytest.raises(Fault):
            search.parse(bad, {"name"})


def test_search_runs_as_sql_with_wildcards_and_case(tmp_path):
    from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select
    t = Table("t", MetaData(), Column("name", String), Column("status", String))
    eng = create_engine(f"sqlite:///{tmp_path}/s.db")
    t.metadata.create_all(eng)
    with eng.begin() as c:
        c.execute(insert(t), [{"name": n, "status": st} for n, st in
                              (("Web01", "up"), ("db01", "up"), ("web02", "down"), ("web_3", None), ("web%x", "up"))])

    def names(text):
        cond = search.where(search.parse(text, {"name", "status"}), {"name": t.c.name, "status": t.c.status})
        with eng.connect() as c:
            return sorted(r.name for r in c.execute(select(t).where(cond)))
    assert names("name=web* and status!=down") == ["Web01", "web%x", "web_3"]   # NULL status is "not down"
    assert names("name=web_*") == ["web_3"]           # '_' is a character, not LIKE's wildcard
    assert names("name=web%*") == ["web%x"]
    assert names("status=UP") == ["Web01", "db01", "web%x"]


def test_password_hashes_are_salted_and_verify():
    a, b = auth.hash_password("pw"), auth.hash_password("pw")
    assert a != b and a.startswith("scrypt$")
    assert auth.verify_password("pw", a) and not auth.verify_password("px", a)
    assert not auth.verify_password("pw", "garbage")
