"""Operations as the served OpenAPI document declares them, a valid-looking
body for each POST/PUT (so a hostile value in one field gets past the
others), the fields of a body and what each holds, and the two encoders
(oVirt-style JSON and XML) that write a hostile Value's exact bytes.

When the document declares a JSON request body, its properties are added to
the body, so new fields get fuzzed without changing this file."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from .values import Value

API = "/ovirt-engine/api"
UNKNOWN_ID = "00000000-0000-4000-8000-0000000000f0"

# collection segment -> kind of the id that follows it
SEGMENT_KIND = {
    "datacenters": "datacenter", "clusters": "cluster", "hosts": "host", "fenceagents": "agent",
    "storagedomains": "storagedomain", "networks": "network", "vnicprofiles": "network",
    "templates": "template", "vms": "vm", "nics": "nic", "diskattachments": "diskattachment",
    "snapshots": "snapshot", "disks": "disk", "events": "event", "jobs": "job", "users": "user",
    "roles": "role", "permissions": "permission",
}
# body key of a reference -> kind of the object it names
REF_KIND = {"data_center": "datacenter", "cluster": "cluster", "host": "host", "vm": "vm",
            "template": "template", "storage_domain": "storagedomain", "network": "network",
            "vnic_profile": "network", "disk": "disk", "role": "role", "user": "user"}
# XML root element per collection
ROOT_TAG = {"datacenters": "data_center", "clusters": "cluster", "hosts": "host", "fenceagents": "agent",
            "storagedomains": "storage_domain", "networks": "network", "templates": "template", "vms": "vm",
            "nics": "nic", "diskattachments": "disk_attachment", "snapshots": "snapshot", "disks": "disk",
            "events": "event"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str                                   # as in the document
    body_schema: dict | None = None             # declared JSON request body (refs resolved)
    query: tuple = ()                           # declared query parameter names
    headers: tuple = ()                         # declared header parameter names
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self):
        return f"{self.method} {self.path}"

    @property
    def relative(self):
        return self.path[len(API):] if self.path.startswith(API) else self.path

    @property
    def shape(self):
        """'/vms/{}/nics': the relative path with parameter names erased."""
        return re.sub(r"\{[^}]*\}", "{}", self.relative)

    @property
    def in_api(self):
        return self.path.startswith(API)

    @property
    def is_action(self):
        last = self.relative.rstrip("/").rpartition("/")[2]
        return self.method == "POST" and not last.startswith("{") and last not in ROOT_TAG and self.in_api


def _resolve(doc, node, depth=0):
    """Inline $ref (components) up to a depth, enough for request bodies."""
    if depth > 12:
        return {}
    if isinstance(node, dict):
        if "$ref" in node and isinstance(node["$ref"], str) and node["$ref"].startswith("#/"):
            target = doc
            for part in node["$ref"][2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            return _resolve(doc, target, depth + 1)
        return {k: _resolve(doc, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(doc, v, depth + 1) for v in node]
    return node


def operations(doc):
    """Every operation of the served document, in document order."""
    out = []
    for path, item in (doc.get("paths") or {}).items():
        shared = item.get("parameters", []) if isinstance(item, dict) else []
        for method, op in (item or {}).items():
            if method.upper() not in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
                continue
            params = [_resolve(doc, p) for p in shared + (op.get("parameters") or [])]
            content = ((_resolve(doc, op.get("requestBody") or {})).get("content") or {})
            schema = None
            for ctype, media in content.items():
                if "json" in ctype and isinstance(media, dict) and media.get("schema"):
                    schema = media["schema"]
                    break
            out.append(Operation(method.upper(), path, schema,
                                 tuple(p.get("name") for p in params if p.get("in") == "query"),
                                 tuple(p.get("name") for p in params if p.get("in") == "header")))
    return out


def concrete_path(op, ids):
    """The operation's path with each {param} replaced by a seeded id of the right kind."""
    segments = op.path.split("/")
    out = []
    for i, seg in enumerate(segments):
        if seg.startswith("{") and seg.endswith("}"):
            kind = SEGMENT_KIND.get(segments[i - 1]) if i else None
            out.append((ids.get(kind) or [UNKNOWN_ID])[0])
        else:
            out.append(seg)
    return "/".join(out)


def root_tag(op):
    if op.is_action:
        return "action"
    parts = [p for p in op.shape.split("/") if p and p != "{}"]
    return ROOT_TAG.get(parts[-1] if parts else "", "action") if parts else "action"


# ---- valid-looking bodies ---------------------------------------------------------
def _first(ids, kind):
    return (ids.get(kind) or [UNKNOWN_ID])[0]


def base_body(op, ids, name):
    """A body the engine would accept for op (as far as this engine can without
    real hosts), or a small generic one for an operation not known here."""
    def f(kind):
        return _first(ids, kind)
    sd_list = {"storage_domain": [{"id": f("storagedomain")}]}
    bodies = {
        "POST /datacenters": {"name": name, "description": "fz", "local": False},
        "PUT /datacenters/{}": {"name": name, "description": "fz"},
        "POST /datacenters/{}/storagedomains": {"id": f("storagedomain")},
        "POST /clusters": {"name": name, "description": "fz", "data_center": {"id": f("datacenter")},
                           "scheduling_policy": {"name": "evenly_distributed"}},
        "PUT /clusters/{}": {"name": name, "description": "fz"},
        "POST /networks": {"name": name, "description": "fz", "data_center": {"id": f("datacenter")},
                           "vlan": {"id": 12}, "mtu": 1500},
        "POST /hosts": {"name": name, "address": "127.0.6.30", "root_password": "unused",
                        "cluster": {"id": f("cluster")}},
        "PUT /hosts/{}": {"name": name},
        "POST /hosts/{}/fenceagents": {"type": "ipmilan", "address": "198.51.100.78", "port": 623,
                                       "username": "admin", "password": "pw", "order": 2,
                                       "encrypt_options": False,
                                       "options": {"option": [{"name": "lanplus", "value": "1"}]}},
        "PUT /hosts/{}/fenceagents/{}": {"address": "198.51.100.79", "port": 624, "username": "admin",
                                         "password": "pw", "order": 1},
        "POST /hosts/{}/fence": {"fence_type": "status"},
        "POST /storagedomains": {"name": name, "type": "data", "description": "fz",
                                 "storage": {"type": "posixfs", "path": "/srv/keel-fuzz/none"},
                                 "data_center": {"id": f("datacenter")}, "host": {"id": f("host")}},
        "POST /disks": {"name": name, "description": "fz", "provisioned_size": 16 * 2 ** 20,
                        "format": "cow", "storage_domains": sd_list},
        "POST /vms": {"name": name, "description": "fz", "cluster": {"id": f("cluster")},
                      "template": {"name": "Blank"}, "memory": 64 * 2 ** 20,
                      "cpu": {"topology": {"sockets": 1, "cores": 1, "threads": 1}},
                      "os": {"type": "other"}, "high_availability": {"enabled": False, "priority": 1}},
        "PUT /vms/{}": {"description": "fz", "memory": 64 * 2 ** 20,
                        "cpu": {"topology": {"sockets": 1, "cores": 1, "threads": 1}},
                        "high_availability": {"enabled": False, "priority": 1},
                        "cluster": {"id": f("cluster")}},
        "POST /vms/{}/start": {"vm": {"placement_policy": {"hosts": {"host": [{"id": f("host")}]}}}},
        "POST /vms/{}/migrate": {"host": {"id": f("host")}},
        "POST /vms/{}/nics": {"name": name, "interface": "virtio", "vnic_profile": {"id": f("network")},
                              "mac": {"address": "56:6f:00:00:00:01"}},
        "POST /vms/{}/diskattachments": {"interface": "virtio", "bootable": False, "active": True,
                                         "disk": {"name": name, "provisioned_size": 16 * 2 ** 20,
                                                  "format": "cow", "storage_domains": sd_list}},
        "POST /vms/{}/snapshots": {"description": name},
        "POST /templates": {"name": name, "description": "fz", "vm": {"id": f("vm")}},
        "POST /events": {"description": "fz", "origin": "fz", "custom_id": 7, "severity": "normal",
                         "vm": {"id": f("vm")}, "host": {"id": f("host")}, "cluster": {"id": f("cluster")}},
        # a user that does not exist: sign-in failures must not throttle admin@internal
        "POST /ovirt-engine/sso/oauth/token": {"grant_type": "password", "username": "fz-nobody@internal",
                                               "password": "wrong-password", "scope": "ovirt-app-api"},
        "POST /ovirt-engine/services/sso-logout": {"token": "fz-not-a-token"},
    }
    key = f"{op.method} {op.shape}"
    if key in bodies:
        body = bodies[key]
    elif op.is_action:
        body = {"async": False}
    else:
        body = {"name": name, "description": "fz"}
    if op.body_schema:
        body = merge_schema(body, op.body_schema, ids, name)
    return body


def merge_schema(body, schema, ids, name, depth=0):
    """Add every property the declared schema names and the body lacks, with a
    plausible value, so that fields added to the API get fuzzed too."""
    if depth > 5 or not isinstance(schema, dict):
        return body
    for sub in schema.get("allOf", []) or []:
        body = merge_schema(body, sub, ids, name, depth + 1)
    props = schema.get("properties") or {}
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for key, prop in props.items():
        if not isinstance(prop, dict):
            continue
        if key in out:
            if key in REF_KIND and isinstance(out[key], dict) and "id" in out[key]:
                continue   # a reference by id stays one (adding a name would contradict it)
            if isinstance(out[key], dict) and prop.get("properties"):
                out[key] = merge_schema(out[key], prop, ids, name, depth + 1)
            continue
        out[key] = _placeholder(key, prop, ids, name, depth)
    return out


def _placeholder(key, prop, ids, name, depth):
    typ = prop.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "string")
    if "enum" in prop and prop["enum"]:
        return prop["enum"][0]
    if key in REF_KIND and (typ in (None, "object")):
        return {"id": _first(ids, REF_KIND[key])}
    if typ == "object" or prop.get("properties"):
        return merge_schema({}, prop, ids, name, depth + 1)
    if typ == "array":
        item = prop.get("items") or {}
        return [_placeholder(key, item, ids, name, depth + 1)]
    if typ == "integer" or typ == "number":
        return max(1, int(prop.get("minimum", 1) or 1))
    if typ == "boolean":
        return False
    return name if key == "name" else "fz"


# ---- fields ---------------------------------------------------------------------------
def fields(body, prefix=()):
    """[(path, kind)] of every leaf and reference in body; kind is a values.BY_KIND key."""
    out = []
    if not isinstance(body, dict):
        return out
    for key, value in body.items():
        path = prefix + (key,)
        if isinstance(value, dict):
            if ("id" in value or "name" in value) and (key in REF_KIND or set(value) <= {"id", "name"}):
                out.append((path, "ref"))
                out.append((path + ("id",), "ref.id"))
                out.append((path + ("name",), "ref.name"))
            else:
                out.extend(fields(value, path))
        elif isinstance(value, list):
            if value and isinstance(value[0], dict):
                if set(value[0]) <= {"id", "name"}:
                    out.append((path + (0,), "ref"))
                    out.append((path + (0, "id"), "ref.id"))
                else:
                    out.extend(fields(value[0], path + (0,)))
        elif isinstance(value, bool):
            out.append((path, "bool"))
        elif isinstance(value, int):
            out.append((path, "int"))
        else:
            out.append((path, "name" if key == "name" else "text"))
    return out


def replaced(body, path, value):
    """A copy of body with the thing at path replaced by value (made if missing)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(body, list):
        copy = list(body) or [{}]
        idx = head if isinstance(head, int) and head < len(copy) else 0
        copy[idx] = replaced(copy[idx], rest, value)
        return copy
    copy = dict(body) if isinstance(body, dict) else {}
    copy[head] = replaced(copy.get(head, [] if rest and isinstance(rest[0], int) else {}), rest, value)
    return copy


def get(body, path):
    for p in path:
        try:
            body = body[p]
        except (KeyError, IndexError, TypeError):
            return None
    return body


# ---- encoders ---------------------------------------------------------------------------
def to_json(obj) -> bytes:
    """oVirt-style JSON (numbers and booleans as strings); Values as their exact bytes."""
    if isinstance(obj, Value):
        return obj.json
    if isinstance(obj, dict):
        return b"{" + b", ".join(json.dumps(str(k)).encode() + b": " + to_json(v) for k, v in obj.items()) + b"}"
    if isinstance(obj, list):
        return b"[" + b", ".join(to_json(v) for v in obj) + b"]"
    if isinstance(obj, bool):
        return b'"true"' if obj else b'"false"'
    if isinstance(obj, int):
        return json.dumps(str(obj)).encode()
    if obj is None:
        return b"null"
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def esc(text: str, quote=False) -> bytes:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote:
        text = text.replace('"', "&quot;")
    return text.encode("utf-8", "surrogatepass")


def _element(tag, obj) -> bytes:
    t = tag.encode()
    if isinstance(obj, Value):
        if obj.xml is None:
            raise NoXmlForm(obj.label)
        return (b"<" + t + b">" + obj.xml + b"</" + t + b">") * obj.xml_repeat
    if isinstance(obj, list):
        return b"".join(_element(tag, item) for item in obj)
    if isinstance(obj, dict):
        attrs, children = b"", []
        for k, v in obj.items():
            if k in ("id", "href") and isinstance(v, str):
                attrs += b" " + k.encode() + b'="' + esc(v, quote=True) + b'"'
            else:
                children.append(_element(k, v))
        return b"<" + t + attrs + b">" + b"".join(children) + b"</" + t + b">"
    if isinstance(obj, bool):
        return b"<" + t + b">" + (b"true" if obj else b"false") + b"</" + t + b">"
    if obj is None:
        return b"<" + t + b"/>"
    return b"<" + t + b">" + esc(str(obj)) + b"</" + t + b">"


class NoXmlForm(ValueError):
    """The hostile value only exists in JSON (e.g. a bare JSON number)."""


def to_xml(tag, obj) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + _element(tag, obj)


def unique_name(counter=[0]):   # noqa: B006  (a process-wide counter on purpose)
    counter[0] += 1
    return f"fz-{uuid.uuid4().hex[:6]}-{counter[0]}"
