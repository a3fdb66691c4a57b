"""oVirt's ?search= subset: FIELD=VALUE and FIELD!=VALUE terms joined by
'and'; '*' is a wildcard; matching ignores case, as in oVirt."""
import fnmatch
import re
import shlex

from .errors import bad_request

TERM = re.compile(r"^([A-Za-z_.]+)\s*(!=|=)\s*(.*)$")


def parse(text, allowed):
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
                raise bad_request(f"search: expected 'and' between terms, got '{tok}' "
                                  "(only 'and' is supported)")
            expect_term = True
            continue
        m = TERM.match(tok)
        if not m:
            raise bad_request(f"search: '{tok}' is not FIELD=VALUE")
        key, op, value = m.group(1).lower(), m.group(2), m.group(3)
        if key not in allowed:
            raise bad_request(f"search: unknown field '{key}' (known: {', '.join(sorted(allowed))})")
        terms.append((key, op, value))
        expect_term = False
    if expect_term and terms:
        raise bad_request("search: dangling 'and'")
    return terms


def matches(values, terms):
    """values: {field: str or None}."""
    for key, op, pattern in terms:
        actual = values.get(key)
        hit = actual is not None and fnmatch.fnmatchcase(str(actual).lower(), pattern.lower())
        if hit != (op == "="):
            return False
    return True
