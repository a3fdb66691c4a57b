"""The fuzzing harness's pure parts: exact hostile bytes on the wire, the
fields a body offers, the cases' expectations, the schemathesis config, and
how findings are grouped and what the engine's log summary says."""
import json
import xml.etree.ElementTree as ET

from . import bodies as B
from . import cases, enginelog, report, st_runner
from .engine import worker_subcommand
from .values import TEXT, Value

SURROGATE_BYTES = next(v for v in TEXT if "ED A0 80" in v.label)


def op(method, path, schema=None):
    return B.Operation(method, B.API + path if path.startswith("/") and not path.startswith("/ovirt") else path,
                       schema)


def test_hostile_bytes_go_out_exactly_in_json_and_xml():
    body = B.replaced({"name": "x", "cluster": {"id": "c1"}}, ("name",), SURROGATE_BYTES)
    assert b'"name": "a\xed\xa0\x80b"' in B.to_json(body)
    xml = B.to_xml("vm", body)
    assert b"<name>a\xed\xa0\x80b</name>" in xml and b'<cluster id="c1">' in xml


def test_repeated_xml_elements_and_json_only_values():
    as_list = Value("two", b'["a", "b"]', b"a", xml_repeat=2)
    assert B.to_xml("vm", {"name": as_list}).count(b"<name>a</name>") == 2
    try:
        B.to_xml("vm", {"memory": Value("json only", b"1e400")})
    except B.NoXmlForm:
        pass
    else:
        raise AssertionError("a JSON-only value must not be written as XML")


def test_plain_values_are_ovirt_style_and_parse():
    data = B.to_json({"name": "é", "memory": 5, "local": False, "cluster": {"id": "x"}})
    assert json.loads(data) == {"name": "é", "memory": "5", "local": "false", "cluster": {"id": "x"}}
    root = ET.fromstring(B.to_xml("vm", {"name": "<&>", "cluster": {"id": 'a"b'}}))
    assert root.findtext("name") == "<&>" and root.find("cluster").get("id") == 'a"b'


def test_fields_name_kinds_and_references():
    got = dict(B.fields({"name": "n", "memory": 1, "local": True, "cluster": {"id": "c"},
                         "storage_domains": {"storage_domain": [{"id": "s"}]}, "cpu": {"topology": {"cores": 1}}}))
    assert got[("name",)] == "name" and got[("memory",)] == "int" and got[("local",)] == "bool"
    assert got[("cluster",)] == "ref" and got[("cluster", "id")] == "ref.id"
    assert got[("storage_domains", "storage_domain", 0, "id")] == "ref.id"
    assert got[("cpu", "topology", "cores")] == "int"


def test_declared_schema_adds_fields_but_keeps_references_by_id():
    schema = {"type": "object", "properties": {
        "name": {"type": "string"}, "cluster": {"type": "object", "properties": {"id": {}, "name": {}}},
        "placement": {"type": "object", "properties": {"affinity": {"type": "string", "enum": ["pinned"]}}},
        "max_memory": {"type": "integer", "minimum": 16}}}
    body = B.base_body(op("POST", "/vms", schema), {"cluster": ["c1"]}, "fz-1")
    assert body["cluster"] == {"id": "c1"}
    assert body["placement"] == {"affinity": "pinned"} and body["max_memory"] == 16


def test_concrete_path_uses_the_seeded_id_of_each_kind():
    o = op("POST", "/vms/{ident}/snapshots/{snap}/restore")
    assert B.concrete_path(o, {"vm": ["v1"], "snapshot": ["s1"]}) == B.API + "/vms/v1/snapshots/s1/restore"
    assert B.UNKNOWN_ID in B.concrete_path(o, {})
    assert o.is_action and B.root_tag(o) == "action"


class _Traps:
    ext_script, ssh_script, unix_socket = "/t/ext.sh", "/t/ssh.sh", "/t/sock"
    tcp_libvirt, tcp_ssh = ("127.0.6.11", 16509), ("127.0.6.11", 2222)


def test_host_uri_cases_expect_a_refusal_and_are_watched():
    got = cases.host_address_cases([op("POST", "/hosts")], {"cluster": ["c"]}, _Traps())
    assert got and all(c.expect == (400,) and c.watched and c.stored_name for c in got)
    assert any(b"qemu+ext:///system?command=/t/ext.sh" in c.body for c in got)
    assert {c.content_type for c in got} == {cases.JSON, cases.XML}


def test_dtd_and_oversized_cases_are_security_cases():
    got = cases.structure_cases([op("POST", "/datacenters")], {}, max_body_bytes=1000)
    dtd = [c for c in got if "DTD" in c.label]
    big = [c for c in got if "size limit" in c.label]
    assert dtd and all(c.expect == (400,) and c.stored_in for c in dtd)
    assert any(c.body.startswith(b"\xff\xfe") for c in dtd)          # UTF-16 with its byte-order mark
    assert len(big) == 2 and all(c.expect == (413,) and len(c.body) > 1000 for c in big)
    assert any(c.chunked for c in big)


def test_schemathesis_config_binds_ids_except_for_delete_and_slow_operations():
    ops = [op("GET", "/vms/{ident}"), op("DELETE", "/vms/{ident}"), op("GET", "/vms/{ident}/nics/{nic}"),
           op("POST", "/hosts/{ident}/fence")]
    text = st_runner.config_text(ops, {"vm": ["v1"], "nic": ["n1"], "host": ["h1"]},
                                 slow={"POST " + B.API + "/hosts/{ident}/fence"})
    assert '[dictionaries.vm]\nvalues = ["v1"]' in text
    assert text.count('exclude-method = "DELETE"') == 2
    assert '"path.nic" = { dictionary = "nic"' in text
    assert "[dictionaries.host]" not in text and "max-examples = 3" in text


def test_engine_log_summary_names_the_innermost_engine_frame():
    log = """ERROR keel.engine.app: internal error
Traceback (most recent call last):
  File "/x/site-packages/flask/app.py", line 1, in dispatch
    rv = f()
  File "/x/appliance/keel_engine/api/audit.py", line 64, in event_get
    int(ident)
ValueError: invalid literal for int() with base 10: '\u00b2'
127.0.0.1 "GET /ovirt-engine/api/events/%C2%B2" 500 10 2ms"""
    got = enginelog.summary(log)
    assert got.startswith("ValueError: invalid literal") and got.endswith("keel_engine/api/audit.py:64 in event_get")
    assert enginelog.signature(got) == "ValueError at keel_engine/api/audit.py:64 in event_get"
    assert enginelog.distinct_errors(log + "\n" + log) == [(got, 2)]


def test_findings_group_by_cause_and_keep_the_shortest_request():
    def five(path, body, trace):
        return report.Finding(report.SERVER_ERROR, "GET /x", 500, "GET", path, None, body, "l", trace=trace)
    t = "ValueError: x at keel_engine/a.py:1 in f"
    groups = report.by_cause([five("/a", b"long body", t), five("/a", b"b", t), five("/b", None, "KeyError: k")])
    assert len(groups) == 2
    (example, count), = groups[(report.SERVER_ERROR, "ValueError at keel_engine/a.py:1 in f")]
    assert count == 2 and example.body == b"b"
    assert "\\x01" in report.printable("a\x01b") and "\\ud800" in report.printable("\ud800")


def test_worker_command_follows_the_engine_help():
    assert worker_subcommand("usage: keel-engine {serve,worker,db-upgrade} ...") == "worker"
    assert worker_subcommand("usage: keel-engine {serve,monitor,db-upgrade} ...") == "monitor"
