"""One resource model, two wire formats.

Views build plain Python structures: a dict is an element (its 'id', 'href'
and 'rel' keys are XML attributes), a Many is a wrapper element holding
repeated children (<nics><nic/>...</nics>), scalars are text. The same
structure renders as oVirt-style XML (what the SDK reads) and oVirt-style
JSON (numbers and booleans as strings, dates as epoch milliseconds), and
request bodies in either format parse back into the same shape.
"""
import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

ATTRIBUTES = ("id", "href", "rel")


class Many:
    def __init__(self, tag, items):
        self.tag = tag
        self.items = list(items)


class BadBody(ValueError):
    pass


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat(timespec="milliseconds")
    return str(value)


def _fill(elem, value):
    if isinstance(value, dict):
        for key, v in value.items():
            if v is None:
                continue
            if key in ATTRIBUTES:
                elem.set(key, _text(v))
            elif isinstance(v, Many):
                wrapper = ET.SubElement(elem, key)
                for item in v.items:
                    _fill(ET.SubElement(wrapper, v.tag), item)
            elif isinstance(v, list):
                for item in v:
                    _fill(ET.SubElement(elem, key), item)
            else:
                _fill(ET.SubElement(elem, key), v)
    else:
        elem.text = _text(value)


def to_xml(tag, value):
    root = ET.Element(tag)
    if isinstance(value, Many):
        for item in value.items:
            _fill(ET.SubElement(root, value.tag), item)
    else:
        _fill(root, value)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(root) + b"\n"


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, Many):
        return {value.tag: [_jsonable(i) for i in value.items]}
    if isinstance(value, list):
        return [_jsonable(i) for i in value]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp() * 1000)
    return _text(value)


def to_json(tag, value):
    return json.dumps(_jsonable(value), indent=2).encode() + b"\n"


def _from_elem(elem):
    children = list(elem)
    if not children and not elem.attrib:
        return (elem.text or "").strip()
    out = dict(elem.attrib)
    for child in children:
        v = _from_elem(child)
        if child.tag in out:
            if not isinstance(out[child.tag], list) or child.tag in ATTRIBUTES:
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(v)
        else:
            out[child.tag] = v
    return out


def parse_xml(data):
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise BadBody("document type declarations are not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise BadBody(f"malformed XML: {e}")
    value = _from_elem(root)
    return root.tag, value if isinstance(value, dict) else {}


def parse_json(data):
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadBody(f"malformed JSON: {e}")
    if not isinstance(value, dict):
        raise BadBody("the JSON body must be an object")
    return None, value
