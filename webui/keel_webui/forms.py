"""Form fields to typed values, with one clear message per bad field."""
from __future__ import annotations

from flask import request

from keel_engine.errors import bad_request
from keel_engine.services.lookup import Ref

MIB = 1024 * 1024


def text_field(name: str, label: str, required: bool = False, max_len: int = 255) -> str:
    value = request.form.get(name, "").strip()
    if required and not value:
        raise bad_request(f"{label}: required")
    if len(value) > max_len:
        raise bad_request(f"{label}: at most {max_len} characters")
    return value


def int_field(name: str, label: str, lo: int, hi: int, default: int | None = None) -> int | None:
    raw = request.form.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{label}: a whole number, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise bad_request(f"{label}: from {lo} to {hi}, got {value}")
    return value


def ref_field(name: str, label: str, required: bool = False) -> Ref | None:
    """A <select> of objects posts the chosen object's id."""
    value = request.form.get(name, "").strip()
    if not value:
        if required:
            raise bad_request(f"{label}: choose one")
        return None
    return Ref(id=value)


def checkbox(name: str) -> bool:
    return request.form.get(name) in ("on", "true", "1")


def page_param() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 10 ** 6 else 1


def back_field(default: str) -> str:
    """Where to return after a form: a page of this UI only."""
    from .signin import PREFIX
    target = request.form.get("back", "")
    if target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return default
