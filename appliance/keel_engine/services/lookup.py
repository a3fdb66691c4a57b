"""Find rows by id or by name (references accept both), or fail with a fault."""
import uuid

from sqlalchemy import select

from ..errors import Fault, bad_request, not_found


def get(session, model, ident, kind):
    if ident is None:
        raise not_found(kind, ident)
    row = session.get(model, str(ident))
    if row is None:
        raise not_found(kind, ident)
    return row


def resolve(session, model, ref, kind, field):
    """ref is (id, name) from Body.ref; a bad reference is the client's error (400)."""
    if ref is None:
        return None
    ident, name = ref
    if ident:
        row = session.get(model, ident)
        if row is None:
            raise bad_request(f"{field}: {kind} with id '{ident}' does not exist")
        if name and getattr(row, "name", name) != name:
            raise bad_request(f"{field}: id '{ident}' and name '{name}' name different {kind}s")
        return row
    row = session.scalar(select(model).where(model.name == name))
    if row is None:
        raise bad_request(f"{field}: {kind} named '{name}' does not exist")
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
    except (ValueError, TypeError):
        return False
