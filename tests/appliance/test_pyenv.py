"""What the engine wheel is made of: git's view of the package roots plus the
vendored front-end files that git ignores, never npm's node_modules; a
missing vendored file stops the build naming the script that makes it."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from keel_appliance import pyenv
from keel_appliance.pyenv import BuildError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENDOR = "webui/keel_webui/static/vendor"


def _write(root, name, text="x\n"):
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _tree(root, git=True, vendored=True):
    """A source tree shaped like Keel's, with the real pyproject.toml and the
    web UI package only, its vendor folder ignored as in the real tree."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        _write(root, "pyproject.toml", f.read())
    _write(root, ".gitignore", "/webui/node_modules/\n/webui/keel_webui/static/vendor/\n")
    _write(root, "webui/keel_webui/__init__.py", "")
    _write(root, "webui/keel_webui/static/keel.css", "body {}\n")
    _write(root, "webui/package-lock.json", "{}\n")
    _write(root, "webui/node_modules/htmx.org/dist/htmx.min.js", "npm's copy\n")
    if vendored:
        _write(root, f"{VENDOR}/htmx.min.js", "var htmx;\n")
        _write(root, f"{VENDOR}/novnc-rfb.js", "export default class RFB {}\n")
    if git:
        subprocess.run(["git", "init", "-q", root], check=True)
    return str(root)


@pytest.mark.parametrize("git", [True, False], ids=["git", "no-git"])
def test_vendored_files_are_in_the_wheel_sources_and_node_modules_is_not(tmp_path, git):
    root = _tree(tmp_path, git=git)
    names = pyenv.source_files(root)
    assert f"{VENDOR}/htmx.min.js" in names
    assert "webui/keel_webui/static/keel.css" in names
    assert not [n for n in names if "node_modules" in n]
    assert len(names) == len(set(names))


def test_the_image_key_follows_the_vendored_file(tmp_path):
    root = _tree(tmp_path)
    before = pyenv.tree_hash(root, pyenv.source_files(root))
    _write(root, f"{VENDOR}/htmx.min.js", "var htmx = 2;\n")
    assert pyenv.tree_hash(root, pyenv.source_files(root)) != before


def test_a_missing_vendored_file_stops_the_build_naming_the_script(tmp_path):
    root = _tree(tmp_path, vendored=False)
    with pytest.raises(BuildError, match=r"^webui/keel_webui/static/vendor/htmx.min.js is missing: "
                                         r"run scripts/setup-webui.sh$"):
        pyenv.source_files(root)


def test_no_vendored_file_is_needed_without_the_web_ui_package(tmp_path):
    root = _tree(tmp_path, vendored=False)
    shutil.rmtree(os.path.join(root, "webui/keel_webui"))
    assert "pyproject.toml" in pyenv.source_files(root)


def test_the_wheel_packages_static_vendor(tmp_path):
    """The real pyproject's package-data on a copy made from source_files,
    as build_wheels makes it (without build isolation: no download)."""
    root = _tree(tmp_path / "tree")
    _write(root, f"{VENDOR}/LICENSE")          # no "*.js" pattern matches it
    src = tmp_path / "src"
    for name in pyenv.source_files(root):
        os.makedirs(os.path.dirname(src / name), exist_ok=True)
        shutil.copy2(os.path.join(root, name), src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "-w", str(tmp_path / "wheel"), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    [wheel] = os.listdir(tmp_path / "wheel")
    with zipfile.ZipFile(tmp_path / "wheel" / wheel) as z:
        files = set(z.namelist())
    assert {"keel_webui/static/vendor/htmx.min.js", "keel_webui/static/vendor/LICENSE",
            "keel_webui/static/keel.css"} <= files
