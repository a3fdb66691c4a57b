"""systemd unit files: the small part of them a simulated host's init runs.

A lab host has no systemd; its init (`hostinit`) plays it for the services
an installer sets up. A unit is `/etc/systemd/system/NAME.service` (drop-ins
in `NAME.service.d/*.conf` are appended); it is enabled while
`/etc/systemd/system/multi-user.target.wants/NAME.service` exists (a link,
dangling or not, or a file; a link to a unit file elsewhere is followed
when `/etc/systemd/system` has none of that name).

What is read, from `[Service]`:
- `ExecStart=`: one command line, split as a POSIX shell would (shlex), a
  leading `-`, `+`, `!` or `:` dropped; `$VAR` (a whole word: split on
  white space) and `${VAR}` are replaced from the unit's environment, as
  systemd does; an empty `ExecStart=` clears the ones before it;
- `Environment=`: repeatable, each a shell-quoted list of `KEY=VALUE`; an
  empty one clears the list;
- `EnvironmentFile=`: repeatable, `KEY=VALUE` lines (`#` comments), a
  leading `-` for "ignore if missing"; read at every start, and its values
  win over `Environment=`'s;
- `Restart=` (no, always, on-success, on-failure, on-abnormal, on-abort,
  on-watchdog), `RestartSec=` (default 100 ms), `TimeoutStopSec=` (default
  10 s here), `KillMode=` (control-group, mixed, process, none): time spans
  as systemd writes them (`2`, `500ms`, `1min 30s`, `infinity`).

Everything else (Type=, WatchdogSec=, User=, ordering and dependencies,
ExecStartPre=, ...) is accepted and ignored.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

UNIT_DIR = "/etc/systemd/system"
WANTS = "multi-user.target.wants"
RESTART_VALUES = ("no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog")
KILL_MODES = ("control-group", "mixed", "process", "none")
DEFAULT_RESTART_SEC = 0.1
DEFAULT_TIMEOUT_STOP_SEC = 10.0
_SPAN_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
               "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "": 1.0,
               "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
               "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
               "d": 86400.0, "day": 86400.0, "days": 86400.0}
_VAR_WORD = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_VAR_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UnitError(ValueError):
    """A unit file the init cannot run; str() is one line."""


@dataclass(frozen=True)
class Unit:
    name: str                               # NAME.service
    exec_start: tuple[str, ...]             # before $VAR expansion
    environment: tuple[tuple[str, str], ...] = ()
    environment_files: tuple[str, ...] = ()
    restart: str = "no"
    restart_sec: float = DEFAULT_RESTART_SEC
    timeout_stop_sec: float = DEFAULT_TIMEOUT_STOP_SEC
    kill_mode: str = "control-group"
    text: str = ""                          # the file(s) as read: a change restarts the unit

    def env(self) -> dict[str, str]:
        """The unit's own variables: Environment=, then EnvironmentFile= (read now)."""
        env = dict(self.environment)
        for spec in self.environment_files:
            optional = spec.startswith("-")
            path = spec[1:] if optional else spec
            try:
                env.update(read_environment_file(path))
            except FileNotFoundError:
                if not optional:
                    raise UnitError(f"{self.name}: EnvironmentFile {path} does not exist") from None
        return env

    def argv(self, env: dict[str, str]) -> list[str]:
        """ExecStart's words with the variables of `env` substituted."""
        out: list[str] = []
        for word in self.exec_start:
            m = _VAR_WORD.match(word)
            if m:
                out.extend(env.get(m.group(1), "").split())
            else:
                out.append(_VAR_BRACED.sub(lambda v: env.get(v.group(1), ""), word))
        if not out:
            raise UnitError(f"{self.name}: ExecStart is empty once its variables are substituted")
        return out


def parse_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} in file order, repeated keys kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):            # continued on the next line
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise UnitError(f"line {number}: {line!r} is not a [Section] header")
            current = sections.setdefault(line[1:-1].strip(), [])
            continue
        key, eq, value = line.partition("=")
        if not eq or not key.strip():
            raise UnitError(f"line {number}: {line!r} is not KEY=VALUE")
        if current is None:
            raise UnitError(f"line {number}: {key.strip()} comes before any [Section]")
        current.append((key.strip(), value.strip()))
    if pending:
        raise UnitError("the last line ends with a continuation backslash")
    return sections


def parse_timespan(value: str) -> float:
    """systemd's time span in seconds: '2', '2s', '500ms', '1min 30s', 'infinity'."""
    s = value.strip().lower()
    if s == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([a-z]*)", "", s).strip():
        raise UnitError(f"{value!r} is not a time span")
    total = 0.0
    for number, unit in parts:
        if unit not in _SPAN_UNITS:
            raise UnitError(f"{value!r} is not a time span (unknown unit {unit!r})")
        total += float(number) * _SPAN_UNITS[unit]
    return total


def parse_assignments(value: str) -> list[tuple[str, str]]:
    """`Environment=` words: shell-quoted KEY=VALUE tokens."""
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise UnitError(f"Environment={value}: {e}") from None
    out = []
    for w in words:
        key, eq, val = w.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UnitError(f"Environment={value}: {w!r} is not KEY=VALUE")
        out.append((key, val))
    return out


def read_environment_file(path: str) -> dict[str, str]:
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            key, eq, value = line.partition("=")
            if eq and key.strip():
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                env[key.strip()] = value
    return env


def parse_unit(name: str, text: str) -> Unit:
    """A unit from its text; UnitError names what is wrong."""
    try:
        service = parse_sections(text).get("Service", [])
    except UnitError as e:
        raise UnitError(f"{name}: {e}") from None
    exec_start: tuple[str, ...] = ()
    env: list[tuple[str, str]] = []
    env_files: list[str] = []
    settings = {"Restart": "no", "RestartSec": None, "TimeoutStopSec": None, "KillMode": "control-group"}
    try:
        for key, value in service:
            if key == "ExecStart":
                if not value:
                    exec_start = ()
                    continue
                words = shlex.split(value)
                if words:
                    words[0] = words[0].lstrip("-+!:")
                if not words or not words[0]:
                    raise UnitError(f"ExecStart={value} has no command")
                if words[0].startswith("@"):
                    raise UnitError(f"ExecStart={value}: the '@' prefix is not supported")
                exec_start = tuple(words)
            elif key == "Environment":
                env = [] if not value else env + parse_assignments(value)
            elif key == "EnvironmentFile":
                env_files = [] if not value else env_files + [value]
            elif key in settings:
                settings[key] = value
    except ValueError as e:      # shlex's "No closing quotation", UnitError
        raise UnitError(f"{name}: {e}") from None
    if not exec_start:
        raise UnitError(f"{name}: [Service] has no ExecStart")
    restart, kill_mode = settings["Restart"], settings["KillMode"]
    if restart not in RESTART_VALUES:
        raise UnitError(f"{name}: Restart={restart} is not one of {', '.join(RESTART_VALUES)}")
    if kill_mode not in KILL_MODES:
        raise UnitError(f"{name}: KillMode={kill_mode} is not one of {', '.join(KILL_MODES)}")
    try:
        restart_sec = parse_timespan(settings["RestartSec"]) if settings["RestartSec"] \
            else DEFAULT_RESTART_SEC
        timeout = parse_timespan(settings["TimeoutStopSec"]) if settings["TimeoutStopSec"] \
            else DEFAULT_TIMEOUT_STOP_SEC
    except UnitError as e:
        raise UnitError(f"{name}: {e}") from None
    return Unit(name=name, exec_start=exec_start, environment=tuple(env),
                environment_files=tuple(env_files), restart=restart, restart_sec=restart_sec,
                timeout_stop_sec=timeout, kill_mode=kill_mode, text=text)


def enabled(unit_dir: str = UNIT_DIR) -> list[str]:
    """The names of the enabled services (NAME.service, no templates), sorted."""
    try:
        entries = os.listdir(os.path.join(unit_dir, WANTS))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e for e in entries if e.endswith(".service") and "@" not in e and not e.startswith("."))


def unit_text(name: str, unit_dir: str = UNIT_DIR) -> str:
    """The unit's file (plus its drop-ins) as one text; FileNotFoundError if it has none."""
    path = os.path.join(unit_dir, name)
    if not os.path.isfile(path):
        wanted = os.path.join(unit_dir, WANTS, name)
        if os.path.isfile(wanted):        # `systemctl enable` of a unit kept elsewhere
            path = wanted
        else:
            raise FileNotFoundError(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    drop_ins = os.path.join(unit_dir, name + ".d")
    if os.path.isdir(drop_ins):
        for conf in sorted(c for c in os.listdir(drop_ins) if c.endswith(".conf")):
            with open(os.path.join(drop_ins, conf), encoding="utf-8") as f:
                text += "\n" + f.read()
    return text


def load_enabled(unit_dir: str = UNIT_DIR) -> tuple[dict[str, Unit], dict[str, str]]:
    """Every enabled unit, parsed: ({name: Unit}, {name: why it cannot run})."""
    units: dict[str, Unit] = {}
    errors: dict[str, str] = {}
    for name in enabled(unit_dir):
        try:
            units[name] = parse_unit(name, unit_text(name, unit_dir))
        except FileNotFoundError:
            errors[name] = f"{name}: enabled, but {os.path.join(unit_dir, name)} does not exist"
        except (OSError, UnicodeDecodeError) as e:
            errors[name] = f"{name}: cannot read its unit file: {e.__class__.__name__}"
        except UnitError as e:
            errors[name] = str(e)
    return units, errors
