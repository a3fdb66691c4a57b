"""The fields of request bodies and query parameters, declared once: the
same declaration parses a body (XML or JSON, same shape) into plain typed
values, with a 400 that names the exact field, and writes that field's part
of the served OpenAPI document. A request's wire format stops here; the
service layer gets typed parameters.
"""
from __future__ import annotations

import re

from ..errors import bad_request
from ..services.lookup import Ref
from ..text import invalid_char

INT64 = 2 ** 63 - 1
_INT = re.compile(r"-?[0-9]{1,19}")        # ASCII digits only: no '²', no full-width digits
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _shown(value) -> str:
    """A client's value quoted in an error: printable ASCII, at most 40 characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= 40 else text[:37] + "..."


class Field:
    description = ""

    def parse(self, value, path):
        raise NotImplementedError

    def schema(self) -> dict:
        raise NotImplementedError


def check_text(value, path) -> str:
    bad = invalid_char(value)
    if bad is not None:
        raise bad_request(f"{path}: contains {bad}, a character that cannot be stored")
    return value


class Text(Field):
    def __init__(self, maxlen=1024, choices=None, description=""):
        self.maxlen, self.choices, self.description = maxlen, choices, description

    def parse(self, value, path):
        if isinstance(value, (dict, list)):
            raise bad_request(f"{path}: expected text")
        value = _scalar_text(value)
        check_text(value, path)
        if len(value) > self.maxlen:
            raise bad_request(f"{path}: longer than {self.maxlen} characters")
        if self.choices and value not in self.choices:
            raise bad_request(f"{path}: expected one of {', '.join(self.choices)}, got '{_shown(value)}'")
        return value

    def schema(self):
        out = {"type": "string", "maxLength": self.maxlen}
        if self.choices:
            out["enum"] = list(self.choices)
        return out


def _scalar_text(value) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


class Name(Text):
    """oVirt's rule for object names: letters, digits, '_', '-', '.', not only dots."""

    def __init__(self, description=""):
        super().__init__(maxlen=64, description=description)

    def parse(self, value, path):
        value = super().parse(value, path)
        if not NAME.fullmatch(value) or set(value) == {"."}:
            raise bad_request(f"{path}: '{_shown(value)}' is not a valid name "
                              "(1-64 letters, digits, '_', '-', '.'; not only dots)")
        return value

    def schema(self):
        return {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,64}$", "maxLength": 64}


class Int(Field):
    def __init__(self, minimum=-INT64, maximum=INT64, description=""):
        self.minimum, self.maximum, self.description = minimum, maximum, description

    def parse(self, value, path):
        return parse_int(value, path, self.minimum, self.maximum)

    def schema(self):
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


def parse_int(value, path, minimum=-INT64, maximum=INT64):
    """The one strict integer parser: ASCII digits (or a JSON integer), bounded."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise bad_request(f"{path}: expected an integer, got '{_shown(value)}'")
    if isinstance(value, str):
        if not _INT.fullmatch(value.strip()):
            raise bad_request(f"{path}: expected an integer, got '{_shown(value)}'")
        value = int(value.strip())
    if value < minimum:
        raise bad_request(f"{path}: must be at least {minimum}, got {value}")
    if value > maximum:
        raise bad_request(f"{path}: must be at most {maximum}, got {value}")
    return value


class Bool(Field):
    def parse(self, value, path):
        return parse_bool(value, path)

    def schema(self):
        return {"type": "boolean"}


def parse_bool(value, path):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise bad_request(f"{path}: expected true or false, got '{_shown(value)}'")


class Reference(Field):
    """<cluster id="..."/> or <cluster><name>x</name></cluster>: a Ref."""

    def parse(self, value, path):
        if value == "" or value == {}:
            return None
        if not isinstance(value, dict):
            raise bad_request(f"{path}: expected a reference with an id attribute or a name")
        ident, name = value.get("id"), value.get("name")
        for key, v in (("id", ident), ("name", name)):
            if v is not None and not isinstance(v, str):
                raise bad_request(f"{path}.{key}: expected text")
            if v is not None:
                check_text(v, f"{path}.{key}")
                if len(v) > 255:
                    raise bad_request(f"{path}.{key}: longer than 255 characters")
        if not ident and not name:
            raise bad_request(f"{path}: reference needs an id or a name")
        return Ref(id=ident or None, name=name or None)

    def schema(self):
        return {"type": "object", "properties": {"id": {"type": "string", "maxLength": 255},
                                                 "name": {"type": "string", "maxLength": 255}}}


class Obj(Field):
    """An element with named fields; parses to {field: value} of the fields given."""

    def __init__(self, /, **fields: Field):
        self.fields = fields

    def parse(self, value, path):
        if value == "" or value is None:
            return {}
        if not isinstance(value, dict):
            raise bad_request(f"{path}: expected an element with fields")
        out = {}
        for key, field in self.fields.items():
            raw = value.get(key)
            if raw is None or (raw == "" and not isinstance(field, Text)):
                continue
            out[key] = field.parse(raw, f"{path}.{key}" if path else key)
        return out

    def schema(self):
        return {"type": "object", "properties": {k: f.schema() for k, f in self.fields.items()}}


class ListOf(Field):
    """<wrapper><tag/>...</wrapper> (XML) or {"tag": [...]} (JSON): a list."""

    def __init__(self, tag: str, item: Field, max_items=64):
        self.tag, self.item, self.max_items = tag, item, max_items

    def parse(self, value, path):
        if value in ("", {}, None):
            return []
        if not isinstance(value, dict):
            raise bad_request(f"{path}: expected a list of {self.tag}")
        items = value.get(self.tag, [])
        if items in ("", None):
            return []    # <wrapper><tag/></wrapper>: an empty element carries nothing (the SDK writes it)
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise bad_request(f"{path}.{self.tag}: expected elements")
        if len(items) > self.max_items:
            raise bad_request(f"{path}: more than {self.max_items} {self.tag} elements")
        return [self.item.parse(i, f"{path}.{self.tag}") for i in items]

    def schema(self):
        return {"type": "object", "properties": {self.tag: {"type": "array", "maxItems": self.max_items,
                                                            "items": self.item.schema()}}}


def required(parsed: dict, *path: str):
    """parsed[a][b]... or a 400 naming the missing field."""
    cur = parsed
    for i, key in enumerate(path):
        if not isinstance(cur, dict) or key not in cur or cur[key] is None:
            raise bad_request(f"{'.'.join(path[:i + 1])}: required field is missing")
        cur = cur[key]
    return cur


def get(parsed: dict, *path: str, default=None):
    cur = parsed
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return cur
