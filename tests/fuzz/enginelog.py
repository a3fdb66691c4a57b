"""What the engine's log says about a failed request: the exception and the
innermost engine frame of the last traceback, or the last error line."""
from __future__ import annotations

import re

FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')


def summary(text: str) -> str:
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        block = lines[starts[-1] + 1:]
        frames, exc = [], ""
        for line in block:
            m = FRAME.match(line)
            if m:
                frames.append(m.groups())
            elif line and not line.startswith(" ") and frames:
                exc = line.strip()
                break
        engine_frames = [f for f in frames if "keel_engine" in f[0]] or frames
        where = ""
        if engine_frames:
            path, lineno, func = engine_frames[-1]
            short = path[path.find("keel_engine"):] if "keel_engine" in path else path.rsplit("/", 2)[-1]
            where = f" at {short}:{lineno} in {func}"
        return (exc or "traceback without an exception line")[:240] + where
    errors = [line.strip() for line in lines
              if re.search(r"\b(ERROR|CRITICAL)\b", line) and "GET /" not in line and "POST /" not in line]
    return errors[-1][:300] if errors else ""


def signature(trace: str) -> str:
    """The part of a summary that identifies a bug: exception type and place."""
    exc, _, where = trace.partition(" at ")
    return f"{exc.split(':')[0]} at {where}" if where else exc[:80]


def distinct_errors(text: str):
    """[(summary, count)] of every traceback and ERROR line in a log, most frequent first."""
    counts = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback (most recent call last)"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            one = summary("\n".join(lines[i:j + 1]))
            i = j + 1
        elif re.search(r"\b(ERROR|CRITICAL)\b", line) and '"' not in line:
            i += 1
            if i < len(lines) and lines[i].startswith("Traceback"):
                continue   # the traceback that follows says more
            one = line.strip()[:300]
        else:
            i += 1
            continue
        counts[one] = counts.get(one, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])
