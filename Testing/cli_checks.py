"""The command line run in-process, and the one-line error rule it is held to. Torch-free: shared by the
main suite and the Python 3.9 step (Testing/py39), like ``images``."""

from __future__ import annotations

import re

import pytest

from DiffCodeRestoreLib.cli import main


@pytest.fixture
def run(capsys):
    """``run(*args)`` -> (exit code, stdout, stderr) of ``diffcode-restore *args``."""

    def invoke(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def assert_one_line_error(code, err, pattern, exits=(1,), only_line=True):
    """The exit code is one of ``exits``, no traceback, and the error is one ``diffcode-restore: error:``
    line matching the regular expression ``pattern``: the only line on stderr, or with ``only_line=False``
    the last (after progress a long command printed first)."""
    lines = err.strip().splitlines()
    assert code in exits and "Traceback" not in err, err
    assert not only_line or len(lines) == 1, err
    assert lines[-1].startswith("diffcode-restore: error: "), lines[-1]
    assert re.search(pattern, lines[-1]), lines[-1]
