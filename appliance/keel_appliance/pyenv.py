"""The image's Python side: Keel as a wheel, plus the same dependency
versions as the environment that runs the build (the project's venv, where
the tests run). A dependency that environment takes from Debian
(/usr/lib/python3/dist-packages) comes from the same Debian package in the
image; every other one is a wheel pinned to the installed version."""
from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass

# Folders of the source tree that the wheel is built from (pyproject's
# package roots) besides pyproject.toml itself.
GUEST_FILES_DIR = os.path.join("systemd", "appliance")


@dataclass(frozen=True)
class Generated:
    """Files a set-up script makes and git ignores, which the wheel needs all
    the same (the web UI's vendored front-end libraries). They are required
    only when `package` is in the tree."""
    folder: str
    required: tuple[str, ...]
    package: str
    made_by: str


GENERATED = (
    Generated(folder="webui/keel_webui/static/vendor", required=("htmx.min.js", "novnc-rfb.js"),
              package="webui/keel_webui", made_by="scripts/setup-webui.sh"),
)


class BuildError(RuntimeError):
    """One line for the operator."""


@dataclass(frozen=True)
class PythonSide:
    pins: tuple[str, ...]             # "name==version" for wheels
    debian: tuple[str, ...]           # Debian packages providing the rest


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def source_root() -> str:
    """The Keel source tree this package sits in."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        raise BuildError(f"no Keel source tree around {here}: pass --source DIR")
    return root


def project(root: str) -> dict:
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def source_files(root: str) -> list[str]:
    """Files the wheel is made of: pyproject.toml and the package roots, as
    git sees them (tracked or new, not ignored), or every file there when
    the tree is not a git checkout, and the GENERATED files; never caches
    or npm's node_modules."""
    where = project(root)["tool"]["setuptools"]["packages"]["find"]["where"]
    roots = [w for w in where if os.path.isdir(os.path.join(root, w))]
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "--", "pyproject.toml", *roots],
                         cwd=root, capture_output=True, check=False)
    if out.returncode == 0:
        names = [n for n in out.stdout.decode().split("\0") if n]
    else:
        names = ["pyproject.toml"] + [os.path.relpath(os.path.join(dp, f), root)
                                      for r in roots for dp, _, fs in os.walk(os.path.join(root, r)) for f in fs]
    names += generated_files(root)
    return sorted({n for n in names if "__pycache__" not in n and not n.endswith(".pyc")
                   and ".egg-info" not in n and "node_modules" not in n.split(os.sep)
                   and os.path.isfile(os.path.join(root, n))})


def generated_files(root: str) -> list[str]:
    """The GENERATED files present; a required one that is missing while its
    package is in the tree stops the build, naming the script that makes it."""
    names = []
    for gen in GENERATED:
        if not os.path.isdir(os.path.join(root, gen.package)):
            continue
        for req in gen.required:
            if not os.path.isfile(os.path.join(root, gen.folder, req)):
                raise BuildError(f"{gen.folder}/{req} is missing: run {gen.made_by}")
        folder = os.path.join(root, gen.folder)
        names += [os.path.relpath(os.path.join(dp, f), root) for dp, _, fs in os.walk(folder) for f in fs]
    return names


def tree_hash(root: str, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        path = os.path.join(root, name)
        h.update(name.encode() + b"\0" + oct(os.stat(path).st_mode & 0o111).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def guest_files(root: str) -> list[str]:
    d = os.path.join(root, GUEST_FILES_DIR)
    if not os.path.isdir(d):
        raise BuildError(f"{d} is missing (the units that go into the image)")
    return sorted(os.path.relpath(os.path.join(dp, f), root)
                  for dp, _, fs in os.walk(d) for f in fs)


def _debian_package_of(dist) -> str:
    path = str(getattr(dist, "_path", "") or "")
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=False)
    if out.returncode != 0 or ":" not in out.stdout:
        raise BuildError(f"{dist.metadata['Name']} {dist.version} lives in {path}, "
                         "which no Debian package owns")
    return out.stdout.split(":", 1)[0].strip()


def resolve(requirements: list[str]) -> PythonSide:
    """Walk the installed dependency closure of `requirements`."""
    from packaging.requirements import Requirement
    pins, debian, seen = set(), set(), set()
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        key = _canon(req.name)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise BuildError(f"{req.name} (needed by the engine) is not installed in this Python "
                             "environment; run `make setup` first") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise BuildError(f"installed {req.name} {dist.version} does not satisfy {req}; run `make setup`")
        location = str(dist.locate_file(""))
        if location.startswith("/usr/lib/python3/"):
            debian.add(_debian_package_of(dist))
        else:
            pins.add(f"{_canon(dist.metadata['Name'])}=={dist.version}")
        todo.extend(dist.requires or [])
    return PythonSide(pins=tuple(sorted(pins)), debian=tuple(sorted(debian)))


def python_side(root: str) -> PythonSide:
    return resolve(list(project(root)["project"].get("dependencies", [])))


def _pip(args: list[str], what: str) -> None:
    import sys
    out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        lines = [ln for ln in (out.stderr or out.stdout).splitlines() if ln.startswith("ERROR")]
        raise BuildError(f"{what} failed: {lines[-1] if lines else 'pip exit status %d' % out.returncode}")


def build_wheels(root: str, names: list[str], pins: tuple[str, ...], wheelhouse: str, staging: str) -> list[str]:
    """Keel's wheel from a copy of its source files (so the build leaves
    nothing in the source tree), plus the pinned dependency wheels (kept in
    `wheelhouse` between builds) and pip's own; returns this build's wheels."""
    import shutil
    src, own = os.path.join(staging, "src"), os.path.join(staging, "keel-wheel")
    for name in names:
        dest = os.path.join(src, name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(os.path.join(root, name), dest)
    os.makedirs(wheelhouse, exist_ok=True)
    _pip(["wheel", "-q", "--no-deps", "-w", own, src], "building the Keel wheel")
    pip_pin = f"pip=={metadata.version('pip')}"
    wanted = set(pins) | {pip_pin}

    def available():
        return {_wheel_pin(f): os.path.join(wheelhouse, f) for f in os.listdir(wheelhouse) if f.endswith(".whl")}
    missing = sorted(p for p in wanted - set(available()) if p != pip_pin)
    if missing:
        _pip(["wheel", "-q", "--no-deps", "-w", wheelhouse, *missing], "fetching dependency wheels")
    if pip_pin not in available():
        # pip runs from its wheel inside the image and is not installed there
        _pip(["download", "-q", "--no-deps", "-d", wheelhouse, pip_pin], "fetching pip's wheel")
    have = available()
    absent = sorted(wanted - set(have))
    if absent:
        raise BuildError(f"no wheel for {', '.join(absent)} after pip wheel")
    return [os.path.join(own, f) for f in os.listdir(own)] + [have[p] for p in sorted(wanted)]


def _wheel_pin(filename: str) -> str:
    name, version = filename.split("-")[:2]
    return f"{_canon(name)}=={version}"
