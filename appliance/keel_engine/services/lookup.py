"""Find rows by id or by name (references accept both), or fail with a fault."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from ..errors import Fault, bad_request, not_found
from ..text import invalid_char


@dataclass(frozen=True)
class Ref:
    """A reference to an object, as a client gives it: its id, its name, or both."""
    id: str | None = None
    name: str | None = None

    def __bool__(self):
        return bool(self.id or self.name)


def get(session, model, ident, kind):
    if ident is None:
        raise not_found(kind, ident)
    ident = str(ident)
    if len(ident) > 64 or invalid_char(ident):
        raise not_found(kind, "?")
    row = session.get(model, ident)
    if row is None:
        raise not_found(kind, ident)
    return row


def resolve(session, model, ref: Ref | None, kind, field):
    """A bad reference is the client's error (400), naming the field."""
    if not ref:
        return None
    if ref.id:
        row = session.get(model, ref.id)
        if row is None:
            raise bad_request(f"{field}: {kind} with id '{ref.id}' does not exist")
        if ref.name and getattr(row, "name", ref.name) != ref.name:
            raise bad_request(f"{field}: id '{ref.id}' and name '{ref.name}' name different {kind}s")
        return row
    row = session.scalar(select(model).where(model.name == ref.name))
    if row is None:
        raise bad_request(f"{field}: {kind} named '{ref.name}' does not exist")
    return row


def require(session, model, ref: Ref | None, kind, field):
    row = resolve(session, model, ref, kind, field)
    if row is None:
        raise bad_request(f"{field}: required reference is missing (give id or name)")
    return row


def unique_name(session, model, name, kind, exclude_id=None, **scope):
    q = select(model).where(model.name == name)
    for col, val in scope.items():
        q = q.where(getattr(model, col) == val)
    row = session.scalar(q)
    if row is not None and row.id != exclude_id:
        raise Fault(409, "Operation Failed", f"a {kind} named '{name}' already exists")


def valid_uuid(value):
    try:
        uuid.UUID(value)
        return True
    except (ValueError, TypeError, AttributeError):
        return False
