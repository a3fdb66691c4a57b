"""oVirt's ?search= subset: FIELD=VALUE and FIELD!=VALUE terms joined by
'and'; '*' is a wildcard; matching ignores case unless the request says
case_sensitive=true, as in oVirt. Terms become SQL conditions, so a search
over 10,000 VMs is one query."""
import re
import shlex

from sqlalchemy import Boolean, and_, func, literal, not_, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from .errors import bad_request

TERM = re.compile(r"^([A-Za-z_.]+)\s*(!=|=)\s*(.*)$", re.S)
MAX_TERMS = 16


def parse(text, allowed):
    """[(field, op, value)] from the query text; fields must be in `allowed`."""
    if not text or not text.strip():
        return []
    text = text.strip()
    # "Vms: name=x" (the webadmin prefix) is accepted and ignored
    text = re.sub(r"^[A-Za-z]+\s*:\s*", "", text)
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise bad_request(f"search: {e}")
    terms, expect_term = [], True
    for tok in tokens:
        if not expect_term:
            if tok.lower() != "and":
                raise bad_request(f"search: expected 'and' between terms, got '{tok[:40]}' "
                                  "(only 'and' is supported)")
            expect_term = True
            continue
        m = TERM.match(tok)
        if not m:
            raise bad_request(f"search: '{tok[:40]}' is not FIELD=VALUE")
        key, op, value = m.group(1).lower(), m.group(2), m.group(3)
        if key not in allowed:
            raise bad_request(f"search: unknown field '{key}' (known: {', '.join(sorted(allowed))})")
        terms.append((key, op, value))
        expect_term = False
        if len(terms) > MAX_TERMS:
            raise bad_request(f"search: more than {MAX_TERMS} terms")
    if expect_term and terms:
        raise bad_request("search: dangling 'and'")
    return terms


def like_pattern(value: str, case_sensitive: bool = False) -> str:
    """oVirt's '*' wildcard as a LIKE pattern ('%', '_' and '\\' escaped;
    lower case unless the match is case-sensitive)."""
    escaped = (value if case_sensitive else value.lower()).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def matches_column(column, value: str, case_sensitive: bool = False):
    if case_sensitive:
        return CaseSensitiveMatch(column, value)
    return func.lower(column).like(like_pattern(value), escape="\\")


def glob_pattern(value: str) -> str:
    """oVirt's '*' wildcard as a GLOB pattern ('?', '[' and ']' taken literally)."""
    return re.sub(r"([?\[\]])", r"[\1]", value)


class CaseSensitiveMatch(ColumnElement):
    """column matches the wildcard value, case counting: SQLite's LIKE ignores
    ASCII case whatever it is told, so there it is GLOB; elsewhere LIKE."""
    inherit_cache = False
    type = Boolean()

    def __init__(self, column, value):
        self.column, self.value = column, value


@compiles(CaseSensitiveMatch)
def _like(el, compiler, **kw):
    return compiler.process(el.column.like(like_pattern(el.value, True), escape="\\"), **kw)


@compiles(CaseSensitiveMatch, "sqlite")
def _glob(el, compiler, **kw):
    return compiler.process(el.column.op("GLOB")(literal(glob_pattern(el.value))), **kw)


class Via:
    """A field that lives in another table: `build(value, case_sensitive)` gives the condition
    on this table (e.g. cluster_id IN (clusters whose name matches))."""

    def __init__(self, build, column=None):
        self.build = build
        self.column = column     # the referencing column: NULL counts as "not equal"


def where(terms, columns: dict, case_sensitive: bool = False):
    """One SQL condition for the terms; columns: field -> a column or a Via."""
    conds = []
    for key, op, value in terms:
        target = columns[key]
        if isinstance(target, Via):
            cond = target.build(value, case_sensitive)
            if op == "!=":
                cond = not_(cond) if target.column is None else or_(target.column.is_(None), not_(cond))
        else:
            cond = matches_column(target, value, case_sensitive)
            if op == "!=":
                cond = or_(target.is_(None), not_(cond))
        conds.append(cond)
    return and_(*conds) if conds else None
