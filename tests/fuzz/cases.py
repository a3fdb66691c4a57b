"""Hostile requests, built from the served document's operations: one field
at a time replaced by a hostile value (JSON and XML), hostile whole bodies
(deep nesting, DTDs, oversized, wrong types), hostile query parameters,
headers and ids, and the security cases whose answer must be exactly a
refusal with nothing stored."""
from __future__ import annotations

import pyexpat
import random
from dataclasses import dataclass, field

from . import bodies as B
from .values import BY_KIND, PATH_NAMES, TEXT, Value

DEPTH = 10_000
JSON, XML = "application/json", "application/xml"


@dataclass
class Case:
    operation: str                  # "POST /ovirt-engine/api/vms"
    method: str
    path: str                       # concrete, may carry a query string
    body: bytes | None
    content_type: str | None
    label: str                      # what is hostile about it
    accept: str = JSON
    headers: dict = field(default_factory=dict)
    auth: bool = True               # send the admin bearer token
    chunked: bool = False           # send the body with Transfer-Encoding: chunked
    expect: tuple = ()              # security case: the only acceptable statuses
    security: str = ""              # security case: the rule it checks
    stored_in: str | None = None    # collection that must not gain...
    stored_name: str | None = None  # ...an object of this name
    watched: bool = False           # host URI: no process run, no connection made


def body_ops(ops):
    return [op for op in ops if op.method in ("POST", "PUT")]


def creates(op):
    """A POST that adds a named object to the collection at its own path."""
    return op.method == "POST" and op.in_api and not op.is_action and op.shape != "/datacenters/{}/storagedomains"


def _encode(op, body, fmt):
    if fmt == JSON:
        return B.to_json(body)
    return B.to_xml(B.root_tag(op), body)


# ---- one field at a time ------------------------------------------------------------------
def field_cases(ops, ids, xml_fields=None):
    """Every field x every hostile value of its kind, in JSON; in XML too for
    the first `xml_fields` fields of each body (None: all). After parsing, both
    formats give the engine the same structure: XML on a few fields is enough
    to exercise the XML parser's side."""
    out = []
    for op in body_ops(ops):
        path = B.concrete_path(op, ids)
        auth = op.in_api
        for n, (fpath, kind) in enumerate(B.fields(B.base_body(op, ids, "fz-x"))):
            formats = (JSON, XML) if xml_fields is None or n < xml_fields else (JSON,)
            for value in BY_KIND[kind]:
                for fmt in formats:
                    name = B.unique_name()
                    body = B.replaced(B.base_body(op, ids, name), fpath, value)
                    try:
                        data = _encode(op, body, fmt)
                    except B.NoXmlForm:
                        continue
                    # XML answers: a value stored from JSON that XML cannot carry shows at once
                    out.append(Case(op.key, op.method, path, data, fmt,
                                    f"{'.'.join(map(str, fpath))}: {value.label} ({fmt.split('/')[1]})",
                                    accept=XML, auth=auth))
    return out


# ---- whole bodies ---------------------------------------------------------------------------
def _deep_json_object(name):
    return b'{"name": "' + name.encode() + b'", "description": ' + b'{"a": ' * DEPTH + b'"x"' + b"}" * DEPTH + b"}"


def _deep_json_list():
    return b'{"name": ' + b"[" * DEPTH + b'"x"' + b"]" * DEPTH + b"}"


def _deep_xml(tag, name):
    return (f'<{tag}><name>{name}</name>'.encode() + b"<a>" * DEPTH + b"x" + b"</a>" * DEPTH
            + f"</{tag}>".encode())


def _dtd_xml(tag, name, encoding):
    decl = f'<?xml version="1.0" encoding="{encoding}"?>'
    doc = (f'{decl}<!DOCTYPE {tag} [<!ENTITY fzname "{name}">]>'
           f"<{tag}><name>&fzname;</name><description>dtd</description></{tag}>")
    return doc.encode(encoding.lower())   # Python's utf-16 writes the byte-order mark


def _xxe_xml(tag, name):
    doc = (f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE {tag} [<!ENTITY fzfile SYSTEM '
           f'"file:///etc/hostname">]><{tag}><name>{name}</name><description>&fzfile;</description></{tag}>')
    return doc.encode("utf-16")


def _laughs_xml(tag, name):
    ents = '<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    doc = (f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE {tag} [{ents}]>'
           f"<{tag}><name>{name}</name><description>&l9;</description></{tag}>")
    return doc.encode("utf-16")


def _expat_limits_amplification():
    # expat >= 2.4 stops entity amplification; an older one would hang here
    try:
        major, minor = (int(x) for x in pyexpat.EXPAT_VERSION.split("_")[1].split(".")[:2])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (2, 4)


def structure_cases(ops, ids, max_body_bytes):
    out = []
    for op in body_ops(ops):
        path = B.concrete_path(op, ids)
        tag = B.root_tag(op)
        auth = op.in_api
        stored_in = path if creates(op) else None
        # no seeded object for this path: "no such object" is a refusal too
        missing = (404,) if B.UNKNOWN_ID in path else ()

        def add(label, data, ctype, accept=JSON, expect=(), **kw):
            out.append(Case(op.key, op.method, path, data, ctype, label, accept=accept, auth=auth,
                            expect=expect + missing if expect else (), **kw))

        name = B.unique_name()
        add("JSON nested 10000 objects deep", _deep_json_object(name), JSON)
        add("JSON nested 10000 lists deep", _deep_json_list(), JSON)
        add("XML nested 10000 elements deep", _deep_xml(tag, B.unique_name()), XML, XML)
        add("JSON top level is a list", b"[]", JSON)
        add("JSON top level is a string", b'"x"', JSON)
        add("JSON top level is null", b"null", JSON)
        add("JSON cut short", b'{"name": ', JSON)
        add("empty JSON object", b"{}", JSON)
        add("empty body, JSON content type", b"", JSON)
        add("JSON in UTF-16", B.to_json(B.base_body(op, ids, B.unique_name())).decode("utf-8").encode("utf-16"), JSON)
        add("JSON with a UTF-8 BOM", b"\xef\xbb\xbf" + B.to_json(B.base_body(op, ids, B.unique_name())), JSON)
        add("JSON duplicate keys", b'{"name": "fz-dup", "name": ["a"], "description": {"x": 1}}', JSON)
        add("JSON sent as text/plain", B.to_json(B.base_body(op, ids, B.unique_name())), "text/plain")
        add("form-encoded body", b"name=fz&description=%ED%A0%80", "application/x-www-form-urlencoded")
        add("multipart body", b"--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nfz\r\n--b--\r\n",
            "multipart/form-data; boundary=b")
        add("JSON declared charset=utf-16 but UTF-8", B.to_json(B.base_body(op, ids, B.unique_name())),
            "application/json; charset=utf-16")
        add("XML with a namespace prefix",
            f'<k:{tag} xmlns:k="urn:fz"><k:name>{B.unique_name()}</k:name></k:{tag}>'.encode(), XML, XML)
        add("XML root holding only text", f"<{tag}>just text</{tag}>".encode(), XML, XML)
        add("XML CDATA name", f"<{tag}><name><![CDATA[{B.unique_name()}]]></name></{tag}>".encode(), XML, XML)
        add("XML name repeated 10000 times",
            f"<{tag}>".encode() + b"<name>fz</name>" * 10_000 + f"</{tag}>".encode(), XML, XML)
        attrs = b" ".join(f'a{i}="x"'.encode() for i in range(5000))
        add("XML element with 5000 attributes",
            f"<{tag} ".encode() + attrs + f"><name>{B.unique_name()}</name></{tag}>".encode(), XML, XML)
        add("XML declared ISO-8859-1 with UTF-8 bytes",
            f'<?xml version="1.0" encoding="ISO-8859-1"?><{tag}><name>fz-\u00e9</name></{tag}>'.encode(), XML, XML)
        add("XML cut short", f"<{tag}><name>fz".encode(), XML, XML)
        add("XML processing instruction",
            f'<?fz x="1"?><{tag}><name>{B.unique_name()}</name></{tag}>'.encode(), XML, XML)
        # ---- security: documents with a DTD are refused, whatever their encoding
        dtds = [("XML internal DTD entity (UTF-8)", lambda n: _dtd_xml(tag, n, "UTF-8")),
                ("XML internal DTD entity (UTF-16)", lambda n: _dtd_xml(tag, n, "UTF-16")),
                ("XML external entity SYSTEM file:///etc/hostname (UTF-16)", lambda n: _xxe_xml(tag, n))]
        if _expat_limits_amplification():
            dtds.append(("XML entity expansion, 10**9 'lol's (UTF-16)", lambda n: _laughs_xml(tag, n)))
        for label, builder in dtds:
            n = B.unique_name()
            if op.in_api:
                add(label, builder(n), XML, XML, expect=(400,), security="DTD refused, nothing stored",
                    stored_in=stored_in, stored_name=n)
            else:   # the SSO endpoints do not read XML at all
                add(label, builder(n), XML, XML)
        # ---- security: a body over the limit is refused before it is read
        n = B.unique_name()
        big = b'{"name": "' + n.encode() + b'", "description": "' + b"A" * (max_body_bytes + 65536) + b'"}'
        add("body over the size limit (Content-Length)", big, JSON, expect=(413,),
            security="oversized body refused with 413, nothing stored", stored_in=stored_in, stored_name=n)
        n = B.unique_name()
        big = b'{"name": "' + n.encode() + b'", "description": "' + b"A" * (max_body_bytes + 65536) + b'"}'
        add("body over the size limit (chunked)", big, JSON, chunked=True, expect=(413,),
            security="oversized body refused with 413, nothing stored", stored_in=stored_in, stored_name=n)
    return out


# ---- security cases on particular fields --------------------------------------------------
def name_cases(ops, ids):
    out = []
    for op in body_ops(ops):
        if not creates(op) or "name" not in B.base_body(op, ids, "x"):
            continue
        path = B.concrete_path(op, ids)
        for bad in PATH_NAMES:
            for fmt in (JSON, XML):
                body = B.base_body(op, ids, bad)
                out.append(Case(op.key, op.method, path, _encode(op, body, fmt), fmt,
                                f"name {bad!r} ({fmt.split('/')[1]})", accept=fmt, expect=(400,),
                                security="a path component is not a name: refused, nothing stored",
                                stored_in=path, stored_name=bad))
    return out


STORAGE_PATHS = ("/", "//", "/x/../../etc", "/srv/../etc")


def storage_path_cases(ops, ids):
    out = []
    for op in body_ops(ops):
        if not (op.method == "POST" and op.shape == "/storagedomains"):
            continue
        for bad in STORAGE_PATHS:
            for fmt in (JSON, XML):
                n = B.unique_name()
                body = B.replaced(B.base_body(op, ids, n), ("storage", "path"), bad)
                out.append(Case(op.key, op.method, B.concrete_path(op, ids), _encode(op, body, fmt), fmt,
                                f"storage.path {bad!r} ({fmt.split('/')[1]})", accept=fmt, expect=(400,),
                                security="storage path must be a normalised directory below /: refused, "
                                         "nothing stored", stored_in=B.concrete_path(op, ids), stored_name=n))
    return out


def host_uris(traps):
    """Host addresses that are libvirt URIs (or smuggle one in). Each either
    runs a program, or connects somewhere a trap listens."""
    return (
        "qemu+ext:///system?command=/bin/true",
        f"qemu+ext:///system?command={traps.ext_script}",
        f"qemu+ssh://root@{traps.tcp_ssh[0]}:{traps.tcp_ssh[1]}/system?command={traps.ssh_script}&no_verify=1",
        "qemu+tcp://127.0.0.1:1/system",
        f"qemu+tcp://{traps.tcp_libvirt[0]}:{traps.tcp_libvirt[1]}/system",
        "qemu+unix:///system?socket=/tmp/x",
        f"qemu+unix:///system?socket={traps.unix_socket}",
        "qemu:///system",
        "qemu:///session",
        "test:///default",
        f"{traps.tcp_libvirt[0]}:{traps.tcp_libvirt[1]}/system?socket={traps.unix_socket}&x=",
        f"{traps.tcp_libvirt[0]}/system?command={traps.ext_script}#",
    )


def host_address_cases(ops, ids, traps):
    out = []
    for op in body_ops(ops):
        if not (op.method == "POST" and op.shape == "/hosts"):
            continue
        for uri in host_uris(traps):
            for fmt in (JSON, XML):
                n = B.unique_name()
                body = B.replaced(B.base_body(op, ids, n), ("address",), uri)
                out.append(Case(op.key, op.method, B.concrete_path(op, ids), _encode(op, body, fmt), fmt,
                                f"address {uri!r} ({fmt.split('/')[1]})", accept=fmt, expect=(400,),
                                security="a host address is a host name or IP, never a URI: refused, nothing "
                                         "stored, no program run, no connection made",
                                stored_in=B.concrete_path(op, ids), stored_name=n, watched=True))
    return out


# ---- queries, headers, ids --------------------------------------------------------------------
DEFAULT_QUERY = ("search", "max", "from", "follow")
QUERY_VALUES = (
    ("superscript two", "%C2%B2"), ("full-width digits", "%EF%BC%91%EF%BC%92"), ("5000 digits", "9" * 5000),
    ("-1", "-1"), ("2**63", str(2 ** 63)), ("lone surrogate bytes", "%ED%A0%80"), ("NUL", "%00"),
    ("unbalanced quote", "name%3D%22x"), ("500 wildcards", "name%3D" + "*a" * 500 + "b"),
    ("10k characters", "x" * 10_000), ("repeated", "1&{name}=2"),
)


def query_cases(ops, ids):
    out = []
    for op in ops:
        if op.method != "GET" or not op.in_api:
            continue
        names = op.query or (DEFAULT_QUERY if not op.path.endswith("}") else ("follow",))
        path = B.concrete_path(op, ids)
        for name in names:
            for label, raw in QUERY_VALUES:
                out.append(Case(op.key, "GET", f"{path}?{name}={raw.replace('{name}', name)}", None, None,
                                f"query {name}: {label}"))
    return out


AUTH_VALUES = (("Basic, not base64", "Basic %%%"), ("Basic, non-UTF-8 user", "Basic 7aCAOng="),
               ("Basic, no colon", "Basic YWRtaW4="), ("Bearer, invalid UTF-8", b"Bearer \xed\xa0\x80"),
               ("Bearer, 10k characters", "Bearer " + "t" * 10_000), ("Bearer, empty", "Bearer "),
               ("Negotiate", "Negotiate x"))


def header_cases(ops, ids):
    out = []
    for op in ops:
        if not op.in_api or op.method not in ("GET", "POST"):
            continue
        path = B.concrete_path(op, ids)
        body = B.to_json(B.base_body(op, ids, B.unique_name())) if op.method == "POST" else None
        ctype = JSON if body is not None else None
        for header in tuple(h for h in op.headers if h.lower() != "authorization") or ("Filter",):
            for label, value in (("'maybe'", "maybe"), ("empty", ""), ("superscript", "\u00b2".encode()),
                                 ("invalid UTF-8", b"\xed\xa0\x80")):
                out.append(Case(op.key, op.method, path, body, ctype, f"header {header}: {label}",
                                headers={header: value}))
        out.append(Case(op.key, op.method, path, body, ctype, "Accept: garbage", headers={"Accept": "\u00b2/\u00b2"}))
        if op.shape in ("", "/vms", "/vms/{}", "/datacenters"):
            # credentials are checked once for every route: a few routes stand for all
            for label, value in AUTH_VALUES:
                out.append(Case(op.key, op.method, path, body, ctype, f"Authorization: {label}",
                                headers={"Authorization": value}, auth=False, expect=(401, 429, 431),
                                security="a bad credential is refused (401; 429 throttled; 431 oversized)"))
    return out


ID_VALUES = (("superscript two", "%C2%B2"), ("10k characters", "f" * 10_000), ("lone surrogate bytes", "%ED%A0%80"),
             ("encoded ../..", "..%2F.."), ("NUL", "%00"), ("5000 digits", "9" * 5000), ("-1", "-1"))


def id_cases(ops, ids):
    out = []
    for op in ops:
        if not op.in_api or "{" not in op.path:
            continue
        body = B.to_json(B.base_body(op, ids, B.unique_name())) if op.method in ("POST", "PUT") else None
        for label, raw in ID_VALUES:
            # the last id in the path is the hostile one; the others stay real
            segs = B.concrete_path(op, ids).split("/")
            last = max(i for i, seg in enumerate(op.path.split("/")) if seg.startswith("{"))
            segs[last] = raw
            out.append(Case(op.key, op.method, "/".join(segs), body, JSON if body else None, f"id: {label}"))
    return out


def systematic(ops, ids, traps, max_body_bytes, xml_fields=None):
    """Every targeted case, security ones first (they check a clean state)."""
    # reads first: a hostile value stored by a later case cannot spoil their answers
    return (host_address_cases(ops, ids, traps) + storage_path_cases(ops, ids) + name_cases(ops, ids)
            + query_cases(ops, ids) + header_cases(ops, ids) + id_cases(ops, ids)
            + structure_cases(ops, ids, max_body_bytes) + field_cases(ops, ids, xml_fields))


# ---- random, for the long run ---------------------------------------------------------------
def random_case(rng: random.Random, ops, ids):
    """A body with one to three fields hostile, in JSON or XML."""
    op = rng.choice(body_ops(ops))
    name = B.unique_name()
    body = B.base_body(op, ids, name)
    flds = B.fields(body)
    labels = []
    for fpath, kind in rng.sample(flds, min(len(flds), rng.randint(1, 3))) if flds else []:
        pool = BY_KIND[kind] + (TEXT if kind == "int" and rng.random() < 0.2 else ())
        value = rng.choice(pool)
        if rng.random() < 0.3:
            value = _mixed(rng, value)
        body = B.replaced(body, fpath, value)
        labels.append(f"{'.'.join(map(str, fpath))}: {value.label}")
    fmt = rng.choice((JSON, XML))
    try:
        data = _encode(op, body, fmt)
    except B.NoXmlForm:
        fmt = JSON
        data = _encode(op, body, fmt)
    return Case(op.key, op.method, B.concrete_path(op, ids), data, fmt,
                f"{'; '.join(labels) or 'base body'} ({fmt.split('/')[1]})", accept=fmt, auth=op.in_api)


def _mixed(rng, value):
    """A hostile value glued to random printable and unprintable text."""
    junk = "".join(rng.choice("ab.-_/\\\"'<>&;%\u00e9\u00b2\uff11\u0663 \t") for _ in range(rng.randint(1, 12)))
    if value.json.startswith(b'"') and value.json.endswith(b'"'):
        j = b'"' + B.to_json(junk)[1:-1] + value.json[1:-1] + b'"'
        x = None if value.xml is None else B.esc(junk) + value.xml
        return Value(f"{value.label} + junk", j, x, value.xml_repeat)
    return value
