"""One policy for text, everywhere: characters that XML 1.0 cannot carry
(control characters other than tab and newline, lone UTF-16 surrogates,
U+FFFE and U+FFFF) are refused at input (400, naming the field) and, in text
the engine writes itself from other systems' words (a libvirt error in an
event), replaced. So every answer is well-formed XML and valid UTF-8."""
import re

INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def invalid_char(text: str) -> str | None:
    """The first character that may not be stored, as U+XXXX, or None."""
    m = INVALID.search(text)
    return None if m is None else f"U+{ord(m.group()):04X}"


def clean(text: str) -> str:
    return INVALID.sub("\ufffd", text)
