"""Findings, grouped by cause, and their text for people: per cause the
engine's own words (the traceback summary), then each operation it hits
with the exact request (shortened) that shows it."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .enginelog import signature

SERVER_ERROR, SECURITY, MALFORMED, NO_ANSWER, RESTARTED = (
    "server error", "security", "malformed answer", "no answer", "engine restarted")
ORDER = {SERVER_ERROR: 0, SECURITY: 1, NO_ANSWER: 2, RESTARTED: 3, MALFORMED: 4}


@dataclass
class Finding:
    kind: str
    operation: str
    status: int | None
    method: str
    path: str
    content_type: str | None
    body: bytes | None
    label: str
    detail: str = ""
    trace: str = ""
    source: str = "targeted"
    headers: dict = field(default_factory=dict)
    accept: str = "application/json"
    auth: bool = True
    rule: str = ""          # security: the rule the answer broke
    note: str = ""          # e.g. why there is no traceback

    def cause(self):
        """What makes two findings the same problem."""
        if self.kind == SECURITY:
            return self.rule
        if self.kind == SERVER_ERROR:
            if self.trace:
                return signature(self.trace)
            return f"HTTP {self.status} '{fault_detail(self.detail)}', no traceback ({self.note or 'not sent again'})"
        return self.detail.split(":")[0][:80]

    def key(self):
        # a security case's JSON and XML forms are one finding when they fail alike
        label = self.label.rsplit(" (", 1)[0] if self.kind == SECURITY else ""
        return (self.kind, self.cause(), self.operation, label, self.status)


@dataclass
class Stats:
    requests: int = 0
    with_body: int = 0
    by_operation: Counter = field(default_factory=Counter)
    reached: set = field(default_factory=set)      # operations that answered past auth/lookup
    statuses: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)   # time spent waiting, per operation
    skipped: Counter = field(default_factory=Counter)   # cases left out of slow operations

    def count(self, operation, status, has_body, elapsed=0.0):
        self.seconds[operation] += elapsed
        self.requests += 1
        self.with_body += bool(has_body)
        self.by_operation[operation] += 1
        self.statuses[status] += 1
        if status is not None and status not in (401, 404, 405):
            self.reached.add(operation)

    def merge(self, other):
        self.requests += other.requests
        self.with_body += other.with_body
        self.by_operation.update(other.by_operation)
        self.reached |= other.reached
        self.statuses.update(other.statuses)
        self.seconds.update(other.seconds)
        self.skipped.update(other.skipped)


def fault_detail(text):
    """The <detail> of an oVirt fault (XML or JSON), else the text's start."""
    m = re.search(r"<detail>(.*?)</detail>", text or "") or re.search(r'"detail"\s*:\s*"([^"]*)"', text or "")
    return (m.group(1) if m else (text or "")).strip()[:100]


def distinct(findings):
    """[(example, count)]: one example (the shortest request) per distinct finding."""
    groups = {}
    for f in findings:
        groups.setdefault(f.key(), []).append(f)
    out = []
    for group in groups.values():
        example = min(group, key=lambda f: (len(f.body or b""), len(f.path)))
        out.append((example, len(group)))
    return sorted(out, key=lambda fc: (ORDER.get(fc[0].kind, 9), fc[0].cause(), fc[0].operation))


def by_cause(findings):
    """{(kind, cause): [(example, count)]} in report order."""
    out = {}
    for example, count in distinct(findings):
        out.setdefault((example.kind, example.cause()), []).append((example, count))
    return out


def shorten(data, limit=300):
    if data is None:
        return "(no body)"
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    text = data.decode("utf-8", "backslashreplace")
    text = text.replace("\n", "\\n")
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-limit // 4:]
    return f"{head}...[{len(data)} bytes in all]...{tail}"


def request_line(f: Finding) -> str:
    ctype = f"  [Content-Type: {f.content_type}]" if f.content_type else ""
    extra = "".join(f"  [{k}: {shorten(v, 60)}]" for k, v in f.headers.items())
    auth = "" if f.auth else "  [no token]"
    line = f"{f.method} {shorten(f.path, 200)}{ctype}{extra}{auth}"
    if f.body is not None:
        line += f"\n          body: {shorten(f.body)}"
    return line


def describe(findings) -> str:
    """The whole list, grouped by cause; empty string when there is nothing."""
    blocks = []
    for n, ((kind, cause), items) in enumerate(by_cause(findings).items(), 1):
        total = sum(c for _, c in items)
        head = f"[{n}] {kind}: {cause}  ({total} request(s), {len(items)} distinct)"
        trace = next((f.trace for f, _ in items if f.trace), "")
        lines = [head]
        if trace:
            lines.append(f"    engine log: {trace}")
        for f, count in items:
            times = f" x{count}" if count > 1 else ""
            status = f.status if f.status is not None else "-"
            lines.append(f"  - {status} {f.operation}: {f.label}{times} (found by {f.source})")
            if f.detail and kind != SERVER_ERROR:
                lines.append(f"        problem: {f.detail}")
            if f.method != "-":
                lines.append(f"        request: {request_line(f)}")
        blocks.append("\n".join(lines))
    return printable("\n".join(blocks))


def printable(text):
    """Control characters and lone surrogates shown as escapes, so the report is plain text."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def summary_lines(stats: Stats, operation_keys, findings, seconds):
    """operation_keys: every operation of the served document ("METHOD /path")."""
    causes = by_cause(findings)
    five = [f for f in findings if f.kind == SERVER_ERROR]
    keys = set(operation_keys)
    out = [f"requests: {stats.requests} ({stats.with_body} with a body) in {seconds:.0f} s "
           f"({stats.requests / max(seconds, 0.001):.0f}/s)",
           f"operations covered: {len(keys & set(stats.by_operation))} of {len(keys)} requested, "
           f"{len(keys & stats.reached)} answered past authentication and id lookup",
           f"5xx answers: {len(five)}, {sum(1 for k, _ in causes if k == SERVER_ERROR)} distinct causes, "
           f"{sum(len(v) for (k, _), v in causes.items() if k == SERVER_ERROR)} distinct operation+cause",
           "findings by kind: " + (", ".join(f"{k}: {n} cause(s)"
                                             for k, n in Counter(k for k, _ in causes).items()) or "none")]
    if stats.skipped:
        out.append("cases left out of slow operations: "
                   + ", ".join(f"{op} {n}" for op, n in stats.skipped.most_common()))
    return out
