"""oVirt's ?search= subset: FIELD=VALUE and FIELD!=VALUE terms joined by
'and'; '*' is a wildcard; matching ignores case, as in oVirt. Terms become
SQL conditions, so a search over 10,000 VMs is one query."""
import re
import shlex

from sqlalchemy import and_, func, not_, or_

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


def like_pattern(value: str) -> str:
    """oVirt's '*' wildcard as a LIKE pattern (lower case, '%', '_' and '\\' escaped)."""
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def matches_column(column, value: str):
    return func.lower(column).like(like_pattern(value), escape="\\")


class Via:
    """A field that lives in another table: `build(value)` gives the condition
    on this table (e.g. cluster_id IN (clusters whose name matches))."""

    def __init__(self, build, column=None):
        self.build = build
        self.column = column     # the referencing column: NULL counts as "not equal"


def where(terms, columns: dict):
    """One SQL condition for the terms; columns: field -> a column or a Via."""
    conds = []
    for key, op, value in terms:
        target = columns[key]
        if isinstance(target, Via):
            cond = target.build(value)
            if op == "!=":
                cond = not_(cond) if target.column is None else or_(target.column.is_(None), not_(cond))
        else:
            cond = matches_column(target, value)
            if op == "!=":
                cond = or_(target.is_(None), not_(cond))
        conds.append(cond)
    return and_(*conds) if conds else None
