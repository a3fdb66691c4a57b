"""A command piped into `head` ends quietly when the reader goes away: no
traceback, no "Exception ignored" at exit, the shell's SIGPIPE code."""
import subprocess
import sys

import pytest

# each command's dispatcher replaced by one that prints far more than a pipe holds
SCRIPT = """
import sys
import {module} as cli
def flood(args):
    for _ in range(200000):
        print("x" * 79)
    return 0
cli.run = flood
sys.exit(cli.main({argv!r}))
"""


@pytest.mark.parametrize("module,argv", [("keel_lab.cli", ["status"]),
                                         ("keel_installer.cli", ["--vm-status"])])
def test_output_cut_short_by_the_reader_ends_quietly(module, argv):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(module=module, argv=argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()   # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert first.startswith(b"x")
    assert err == ""
