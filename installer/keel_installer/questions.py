"""The questions of `hosted-engine --deploy`: every answer an answer file
did not give is asked in the order of `answers.KEYS`, checked on entry and
asked again when wrong; a run without a terminal asks nothing and stops at
the first missing answer instead.

    Engine VM memory in MiB [4096]: 900000
      invalid: this host has 15872 MiB available; the engine VM can have at most 15360 MiB ...
    Engine VM memory in MiB [4096]:

Ctrl-C is left to the caller (KeyboardInterrupt); input closed early is an AnswerError.
"""
from __future__ import annotations

import getpass
import os
import sys

from keel_common.config import PROFILES

from .answers import BY_FIELD, KEYS, AnswerError, Answers, HostFacts, Key, file_key_of

BMC_WHY = ("Without a BMC, if this host loses power while it runs the engine VM, the engine restarts elsewhere "
           "only once sanlock's lease expires (about {expiry:.0f} s with the {profile} timing); with one, "
           "the HA agents power this host off and restart the engine without that wait.")
BMC_QUESTION = "Does this host have a BMC (IPMI) the HA agents may use to fence it?"
CONFIRM_QUESTION = "Deploy with these settings?"
CLOSED = "input closed before every question was answered"


def yes_no(text: str) -> bool:
    low = text.strip().lower()
    if low in ("y", "yes"):
        return True
    if low in ("n", "no"):
        return False
    raise ValueError("answer yes or no")


def _read(read, prompt: str) -> str:
    try:
        return read(prompt)
    except EOFError:
        raise AnswerError(CLOSED) from None


def ask_yes_no(question: str, default: bool, input_fn=input, out=sys.stdout) -> bool:
    prompt = f"{question} (yes, no) [{'yes' if default else 'no'}]: "
    while True:
        text = _read(input_fn, prompt).strip()
        if not text:
            return default
        try:
            return yes_no(text)
        except ValueError as e:
            print(f"  invalid: {e}", file=out, flush=True)


def confirm(input_fn=input, out=sys.stdout) -> bool:
    return ask_yes_no(CONFIRM_QUESTION, True, input_fn, out)


def collect(preset: dict, facts: HostFacts, *, interactive: bool, source: str = "",
            input_fn=input, getpass_fn=getpass.getpass, out=sys.stdout) -> Answers:
    """Every answer: from `preset` (validated answer-file values), else asked
    (interactive) or taken from its default; secrets from preset, else their
    environment variable, else typed without echo. Raises AnswerError
    ("SOURCE: [section] key ...") on a missing or unfitting answer."""
    unknown = set(preset) - set(BY_FIELD)
    if unknown:
        raise AnswerError(f"unknown answers: {', '.join(sorted(unknown))}")
    return _Collector(preset, facts, interactive, source or "the answers", input_fn, getpass_fn, out).run()


class _Collector:
    def __init__(self, preset, facts, interactive, source, input_fn, getpass_fn, out):
        self.preset, self.facts, self.interactive, self.source = preset, facts, interactive, source
        self.input_fn, self.getpass_fn, self.out = input_fn, getpass_fn, out
        self.got: dict = {}

    def run(self) -> Answers:
        for k in KEYS:
            if k.field in self.got:
                continue
            if k.field == "bmc_address" and not self._has_bmc():
                self._no_bmc()
            elif k.secret:
                self.got[k.field] = self._secret(k)
            elif k.password_of:
                self.got[k.field] = self.preset.get(k.field, "")
            else:
                self.got[k.field] = self._answer(k)
        return Answers(**self.got)

    # ---- one answer
    def _answer(self, k: Key):
        why = k.impossible(self.facts) if k.impossible else None
        if why:
            raise AnswerError(f"{self.source}: [{k.section}] {k.key}: {why}")
        default = k.default(self.facts, self.got) if k.default else None
        if k.field in self.preset:
            value = self.preset[k.field]
            self._fits(k, value, f"= {value!r} does not fit")
            return value
        if not (self.interactive and k.asked):
            if default is None:
                raise AnswerError(f"{self.source}: [{k.section}] {k.key} is missing; expected {k.expected}")
            self._fits(k, default, f"is missing and its default {default!r} does not fit")
            return default
        return self._ask(k, default)

    def _fits(self, k: Key, value, what: str) -> None:
        try:
            if k.check:
                k.check(value, self.facts, self.got)
        except ValueError as e:
            raise AnswerError(f"{self.source}: [{k.section}] {k.key} {what}: {e}") from None

    def _ask(self, k: Key, default):
        prompt = f"{k.prompt}: " if default is None else f"{k.prompt} [{default}]: "
        while True:
            text = _read(self.input_fn, prompt).strip()
            if not text and default is None:
                continue
            try:
                value = k.parse(text) if text else default
                if k.check:
                    k.check(value, self.facts, self.got)
                return value
            except ValueError as e:
                self._invalid(e)

    def _invalid(self, reason) -> None:
        print(f"  invalid: {reason}", file=self.out, flush=True)

    # ---- passwords
    def _secret(self, k: Key) -> str:
        via = file_key_of(k)
        if k.field in self.preset:
            try:
                return k.parse(self.preset[k.field])
            except ValueError:       # never show the password
                raise AnswerError(f"{self.source}: [{k.section}] {k.key} is invalid; expected {k.expected}") from None
        if os.environ.get(k.env):
            try:
                value = k.parse(os.environ[k.env])
            except ValueError as e:
                raise AnswerError(f"${k.env}: {e}") from None
            if self.interactive:
                print(f"  {k.question}: from ${k.env}", file=self.out, flush=True)
            return value
        if not self.interactive:
            raise AnswerError(f"{self.source}: [{via.section}] {via.key} is missing; expected {via.expected}, "
                              f"or ${k.env} set")
        while True:
            typed = _read(self.getpass_fn, f"{k.question}: ")
            if not typed:
                continue
            try:
                value = k.parse(typed)
            except ValueError as e:
                self._invalid(e)
                continue
            if k.twice and _read(self.getpass_fn, f"Confirm {k.question}: ") != typed:
                self._invalid("the passwords do not match")
                continue
            return value

    # ---- the BMC
    def _has_bmc(self) -> bool:
        others = [f for f, k in BY_FIELD.items() if k.section == "bmc" and f != "bmc_address" and f in self.preset]
        if "bmc_address" in self.preset:
            if not self.preset["bmc_address"] and others:
                k = BY_FIELD[others[0]]
                raise AnswerError(f"{self.source}: [{k.section}] {k.key} is given but [bmc] address is none")
            return bool(self.preset["bmc_address"])
        if others:           # a BMC is meant: its address is asked, or missing
            return True
        if not self.interactive:
            return False
        timing = PROFILES[self.got["timing_profile"]]
        print(BMC_WHY.format(expiry=timing.lease_expiry_s, profile=timing.profile), file=self.out, flush=True)
        return ask_yes_no(BMC_QUESTION, False, self.input_fn, self.out)

    def _no_bmc(self) -> None:
        for f, k in BY_FIELD.items():
            if k.section == "bmc":
                self.got[f] = "" if k.secret or k.default is None else k.default(self.facts, self.got)


def summary(a: Answers) -> str:
    """The answers for a last look before the deploy: no password, "(set)" in its place."""
    lines = ["", "--== Deployment settings ==--", ""]
    width = max(len(k.question) for k in KEYS)
    for k in KEYS:
        value = getattr(a, k.field)
        if k.password_of or (k.section == "bmc" and not a.has_bmc and k.field != "bmc_address"):
            continue
        if k.secret:
            source = getattr(a, file_key_of(k).field)
            value = f"(set, from {source})" if source else "(set)"
        elif value == "":
            value = k.empty
        lines.append(f"  {k.question:<{width}} : {value}")
    return "\n".join(lines) + "\n"
