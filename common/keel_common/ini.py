"""The one INI loader of every Keel part (host daemons, the engine, the
installer's answer files).

A file is read into an `IniFile`; each value is taken through a typed getter
that names what it expects. A bad value, a missing one, or a key no getter
asked for is a `ConfigError` whose message is one line naming the file,
the section, the key and what is expected:

    /etc/keel/engine.conf: [engine] workers = 'many' is invalid; expected a positive integer
"""
from __future__ import annotations

import configparser
import ipaddress
import os
import re
from typing import Any, Callable

REQUIRED = object()   # a getter's default when the key must be present


class ConfigError(Exception):
    """A configuration problem a user can fix; str() is the whole message."""


class IniFile:
    def __init__(self, text: str, path: str = "<string>"):
        self.path = path
        self._cp = configparser.ConfigParser(interpolation=None, default_section="\0none")
        try:
            self._cp.read_string(text, source=path)
        except configparser.Error as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"{path}: not a valid INI file: {first}") from None
        self._read: set[tuple[str, str]] = set()
        self._sections_read: set[str] = set()

    @classmethod
    def load(cls, path: str, what: str = "the configuration") -> "IniFile":
        try:
            with open(path, encoding="utf-8") as f:
                return cls(f.read(), path)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file; expected {what}") from None
        except (PermissionError, IsADirectoryError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read: {e.__class__.__name__}") from None

    # ---- reading ---------------------------------------------------------
    def has_section(self, section: str) -> bool:
        return self._cp.has_section(section)

    def require_section(self, section: str) -> None:
        if not self._cp.has_section(section):
            raise ConfigError(f"{self.path}: missing section [{section}]")

    def keys(self, section: str) -> list[str]:
        """Every key of a section whose keys are free-form (e.g. overrides by name)."""
        self._sections_read.add(section)
        return list(self._cp[section]) if self._cp.has_section(section) else []

    def raw(self, section: str, key: str) -> str | None:
        self._read.add((section, key))
        if not self._cp.has_section(section):
            return None
        value = self._cp[section].get(key)
        return None if value is None or value.strip() == "" else value.strip()

    def get(self, section: str, key: str, parse: Callable[[str], Any] = str,
            expected: str = "a value", default: Any = REQUIRED) -> Any:
        raw = self.raw(section, key)
        if raw is None:
            if default is REQUIRED:
                raise ConfigError(f"{self.path}: [{section}] {key} is missing; expected {expected}")
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError):
            raise ConfigError(f"{self.path}: [{section}] {key} = {raw!r} is invalid; "
                              f"expected {expected}") from None

    def error(self, section: str, key: str, message: str) -> ConfigError:
        """A rule that spans keys (e.g. two that go together), in the same one-line shape."""
        return ConfigError(f"{self.path}: [{section}] {key} {message}")

    def finish(self) -> None:
        """Refuse what no getter asked for: a misspelt key must not be silently ignored."""
        for section in self._cp.sections():
            if section in self._sections_read:
                continue
            known = sorted(k for s, k in self._read if s == section)
            if not known and not any(s == section for s, _ in self._read):
                raise ConfigError(f"{self.path}: unknown section [{section}]")
            for key in self._cp[section]:
                if (section, key) not in self._read:
                    raise ConfigError(f"{self.path}: unknown key [{section}] {key} "
                                      f"(known in [{section}]: {', '.join(known)})")


def render(values: dict[str, dict[str, Any]]) -> str:
    """{section: {key: value}} as INI text (None values are left out)."""
    out = []
    for sec, kv in values.items():
        out.append(f"[{sec}]")
        out.extend(f"{k} = {v}" for k, v in kv.items() if v is not None)
        out.append("")
    return "\n".join(out)


# ---- value parsers (raise ValueError; the getter turns it into one line) ----
def positive_int(s: str) -> int:
    if not re.fullmatch(r"[0-9]+", s):
        raise ValueError(s)
    v = int(s)
    if v <= 0:
        raise ValueError(s)
    return v


def non_negative_int(s: str) -> int:
    if not re.fullmatch(r"[0-9]+", s):
        raise ValueError(s)
    return int(s)


def positive_float(s: str) -> float:
    v = _float(s)
    if v <= 0:
        raise ValueError(s)
    return v


def non_negative_float(s: str) -> float:
    v = _float(s)
    if v < 0:
        raise ValueError(s)
    return v


def _float(s: str) -> float:
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", s):
        raise ValueError(s)
    return float(s)


def boolean(s: str) -> bool:
    low = s.lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError(s)


def abs_path(s: str) -> str:
    if not os.path.isabs(s):
        raise ValueError(s)
    return s


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(s: str) -> str:
        if s not in choices:
            raise ValueError(s)
        return s
    return parse


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def is_host_address(s: str) -> bool:
    """A DNS host name or an IPv4/IPv6 address: nothing else (no URI, no port, no path)."""
    if not s.isascii():
        return False
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(s)) and not re.fullmatch(r"[0-9.]+", s)


def host_address(s: str) -> str:
    if not is_host_address(s):
        raise ValueError(s)
    return s


def ip_address(s: str) -> str:
    ipaddress.ip_address(s)
    return s
