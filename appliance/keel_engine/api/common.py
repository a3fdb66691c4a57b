"""Helpers shared by the API's collection modules: reads through the
service layer, lists with oVirt's search and max, and the ORM object a
write needs."""
from ..services import lookup, reads
from ..representation import Many
from .framework import bool_param, ctx, max_param, reader, render, search_param, session


def row(coll, ident, *where):
    return reads.get_row(ctx(), reader(), coll, ident, *where)


def obj(model, ident, kind):
    """The ORM object a write works on (404 if it does not exist)."""
    return lookup.get(session(), model, ident, kind)


def listing(tag, item_tag, coll, to_view, *where, page=None):
    """A collection answer: rows searched and limited in SQL; `page(rows)` loads
    what the views need beside the rows, in one go."""
    rows = reads.list_rows(ctx(), reader(), coll, search_param(), max_param(), *where,
                           case_sensitive=bool_param("case_sensitive"))
    extra = page(rows) if page is not None else None
    return render(tag, Many(item_tag, [to_view(r, extra) for r in rows]))
