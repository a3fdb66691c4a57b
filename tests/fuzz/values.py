"""Hostile values, each as the exact bytes sent in a JSON body and in an XML
body (the element's content), grouped by what the field holds: text, a
number, a true/false, or a reference to another object."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Value:
    label: str
    json: bytes                 # the JSON token, exactly as sent
    xml: bytes | None = None    # the element's content, exactly as sent; None: no XML form
    xml_repeat: int = 1         # the element written this many times (repeated elements)


HUGE_DIGITS = "9" * 5000       # above Python's 4300-digit int() limit


def _s(text: str) -> bytes:
    """A JSON string token with non-ASCII kept as UTF-8 (a lone surrogate stays a \\u escape)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out).encode("utf-8")


def _x(text: str) -> bytes:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode("utf-8")


TEXT = (
    Value("lone surrogate (JSON \\ud800)", b'"a\\ud800b"', b"a&#xD800;b"),
    Value("lone surrogate (raw bytes ED A0 80)", b'"a\xed\xa0\x80b"', b"a\xed\xa0\x80b"),
    Value("low surrogate alone (JSON \\udfff)", b'"\\udfff"', b"&#xDFFF;"),
    Value("control character U+0001", b'"a\\u0001b"', b"a&#x1;b"),
    Value("raw control byte 0x01", b'"a\x01b"', b"a\x01b"),
    Value("NUL character", b'"a\\u0000b"', b"a&#x0;b"),
    Value("invalid UTF-8 (C3 28)", b'"a\xc3\x28b"', b"a\xc3\x28b"),
    Value("astral character (emoji)", _s("fz\U0001F600"), _x("fz\U0001F600")),
    Value("right-to-left override", _s("fz\u202egnp"), _x("fz\u202egnp")),
    Value("whitespace only", b'"   "', b"   "),
    Value("100k characters", _s("A" * 100_000), _x("A" * 100_000)),
    Value("a list instead of text", b'["a", "b"]', b"a", xml_repeat=2),
    Value("an object instead of text", b'{"a": "b"}', b"<a>b</a>"),
    Value("a number instead of text", b"12", None),
    Value("true instead of text", b"true", None),
    Value("null", b"null", b""),
)

NUMBER = (
    Value("superscript two", _s("\u00b2"), _x("\u00b2")),
    Value("full-width digits", _s("\uff11\uff12\uff13"), _x("\uff11\uff12\uff13")),
    Value("Arabic-Indic digit", _s("\u0663"), _x("\u0663")),
    Value("5000 digits (string)", _s(HUGE_DIGITS), _x(HUGE_DIGITS)),
    Value("5000 digits (JSON number)", HUGE_DIGITS.encode(), None),
    Value("2**63", _s(str(2 ** 63)), _x(str(2 ** 63))),
    Value("2**63 (JSON number)", str(2 ** 63).encode(), None),
    Value("2**64 + 1", _s(str(2 ** 64 + 1)), _x(str(2 ** 64 + 1))),
    Value("-1", _s("-1"), b"-1"),
    Value("-2**63 - 1", _s(str(-2 ** 63 - 1)), _x(str(-2 ** 63 - 1))),
    Value("1e400 (JSON number)", b"1e400", None),
    Value("1.5 (JSON number)", b"1.5", b"1.5"),
    Value("NaN (JSON)", b"NaN", b"NaN"),
    Value("-Infinity (JSON)", b"-Infinity", b"-Infinity"),
    Value("hex 0x10", _s("0x10"), b"0x10"),
    Value("padded ' 12 '", _s(" 12 "), b" 12 "),
    Value("a list instead of a number", b"[1, 2]", b"1", xml_repeat=2),
    Value("an object instead of a number", b'{"a": 1}', b"<a>1</a>"),
    Value("true instead of a number", b"true", b"true"),
)

BOOL = (
    Value("'yes'", _s("yes"), b"yes"),
    Value("1 (JSON number)", b"1", b"1"),
    Value("a list instead of true/false", b"[true]", b"true", xml_repeat=2),
    Value("an object instead of true/false", b'{"a": true}', b"<a>true</a>"),
    Value("lone surrogate", b'"\\ud800"', b"&#xD800;"),
)

# the whole reference replaced (cluster: 5, cluster: [..])
REFERENCE = (
    Value("reference as text", _s("fz"), b"fz"),
    Value("reference as number", b"5", b"5"),
    Value("reference as list", b'[{"id": "x"}, {"id": "y"}]', b"<id>x</id>", xml_repeat=2),
    Value("reference as true", b"true", b"true"),
    Value("reference with both id and name empty", b'{"id": "", "name": ""}', b"<id/><name/>"),
)

# the reference's id replaced (cluster: {id: 5})
REFERENCE_ID = (
    Value("id as number", b"5", None),
    Value("id as list", b'["a", "b"]', b"a", xml_repeat=2),
    Value("id as object", b'{"a": "b"}', b"<a>b</a>"),
    Value("id as true", b"true", None),
    Value("id of 10k characters", _s("f" * 10_000), _x("f" * 10_000)),
    Value("id with a lone surrogate", b'"\\ud800"', b"&#xD800;"),
    Value("id '../..'", _s("../.."), b"../.."),
    Value("id with NUL", b'"a\\u0000"', b"a&#x0;"),
)

# the reference's name replaced (cluster: {name: [..]})
REFERENCE_NAME = (
    Value("name as list", b'["a", "b"]', b"a", xml_repeat=2),
    Value("name as object", b'{"a": "b"}', b"<a>b</a>"),
    Value("name as number", b"7", None),
    Value("name with a lone surrogate", b'"\\ud800"', b"&#xD800;"),
)

BY_KIND = {"text": TEXT, "name": TEXT, "int": NUMBER, "bool": BOOL, "ref": REFERENCE,
           "ref.id": REFERENCE_ID, "ref.name": REFERENCE_NAME}

# Names that must never become an object's name: path components.
PATH_NAMES = ("..", ".", "/", "../etc")
