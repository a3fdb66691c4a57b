"""One resource model, two wire formats.

Views build plain Python structures: a dict is an element (its 'id', 'href'
and 'rel' keys are XML attributes), a Many is a wrapper element holding
repeated children (<nics><nic/>...</nics>), a list repeats its key, scalars
are text. The same structure renders as oVirt-style XML (what the SDK reads)
and oVirt-style JSON (numbers and booleans as strings, dates as epoch
milliseconds), and request bodies in either format parse back into the same
shape.

Rendering is a plain string builder (a list of 10,000 VMs is the common big
answer); parsing refuses DTDs in any encoding (defusedxml) and nesting deeper
than any oVirt body needs.
"""
import json
from datetime import datetime, timezone

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from xml.etree.ElementTree import ParseError

ATTRIBUTES = ("id", "href", "rel")
MAX_DEPTH = 32
XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


class Many:
    __slots__ = ("tag", "items")

    def __init__(self, tag, items):
        self.tag = tag
        self.items = items if isinstance(items, list) else list(items)


class BadBody(ValueError):
    pass


def _epoch_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def _text(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat(timespec="milliseconds")
    return str(value)


_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ESC_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;",
                           "\r": "&#13;", "\t": "&#9;"})


def _xml(out, tag, value, pad):
    if type(value) is dict:
        attrs, children = "", []
        for k, v in value.items():
            if v is None:
                continue
            if k in ATTRIBUTES:
                attrs += f' {k}="{_text(v).translate(_ESC_ATTR)}"'
            else:
                children.append((k, v))
        if not children:
            out.append(f"{pad}<{tag}{attrs}/>\n")
            return
        out.append(f"{pad}<{tag}{attrs}>\n")
        inner = pad + "  "
        for k, v in children:
            if type(v) is Many:
                _many(out, k, v, inner)
            elif type(v) is list:
                for item in v:
                    _xml(out, k, item, inner)
            else:
                _xml(out, k, v, inner)
        out.append(f"{pad}</{tag}>\n")
    elif type(value) is Many:
        _many(out, tag, value, pad)
    else:
        out.append(f"{pad}<{tag}>{_text(value).translate(_ESC)}</{tag}>\n")


def _many(out, tag, many, pad):
    if not many.items:
        out.append(f"{pad}<{tag}/>\n")
        return
    out.append(f"{pad}<{tag}>\n")
    inner = pad + "  "
    for item in many.items:
        _xml(out, many.tag, item, inner)
    out.append(f"{pad}</{tag}>\n")


def to_xml(tag, value) -> bytes:
    out = [XML_HEAD]
    if type(value) is Many:
        out.append(f"<{tag}>\n")
        for item in value.items:
            _xml(out, value.tag, item, "  ")
        out.append(f"</{tag}>\n")
    else:
        _xml(out, tag, value, "")
    return "".join(out).encode()


def _jsonable(value):
    """oVirt's JSON: numbers and booleans as strings, dates as epoch ms. Leaves
    (mostly strings) are handled inline: a 10,000-VM list has ~400,000 of them."""
    t = type(value)
    if t is dict:
        out = {}
        for k, v in value.items():
            tv = type(v)
            if tv is str:
                out[k] = v
            elif v is None:
                continue
            elif tv is int:
                out[k] = str(v)
            elif tv is bool:
                out[k] = "true" if v else "false"
            else:
                out[k] = _jsonable(v)
        return out
    if t is str:
        return value
    if t is Many:
        return {value.tag: [_jsonable(i) for i in value.items]}
    if t is list:
        return [_jsonable(i) for i in value]
    if t is bool:
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _epoch_ms(value)
    return str(value)


def to_json(tag, value) -> bytes:
    return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _from_elem(elem, depth):
    if depth > MAX_DEPTH:
        raise BadBody(f"the body is nested deeper than {MAX_DEPTH} levels")
    children = list(elem)
    if not children and not elem.attrib:
        return (elem.text or "").strip()
    out = dict(elem.attrib)
    for child in children:
        v = _from_elem(child, depth + 1)
        if child.tag in out:
            if not isinstance(out[child.tag], list) or child.tag in ATTRIBUTES:
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(v)
        else:
            out[child.tag] = v
    return out


def parse_xml(data: bytes):
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise BadBody("document type declarations and entities are not accepted") from None
    except ParseError as e:
        raise BadBody(f"malformed XML: {e}") from None
    except (ValueError, RecursionError) as e:
        raise BadBody(f"malformed XML: {type(e).__name__}") from None
    value = _from_elem(root, 0)
    return root.tag, value if isinstance(value, dict) else {}


def _depth_ok(value) -> bool:
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > MAX_DEPTH:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


def parse_json(data: bytes):
    try:
        value = json.loads(data)
    except RecursionError:
        raise BadBody(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadBody(f"malformed JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadBody("the JSON body must be an object")
    if not _depth_ok(value):
        raise BadBody(f"the body is nested deeper than {MAX_DEPTH} levels")
    return None, value
