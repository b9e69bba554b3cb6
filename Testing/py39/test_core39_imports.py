"""The Python 3.9 step itself: what it covers imports without torch, it selects tests, `make test` runs it.

Runs in the main suite (so the step cannot silently test nothing or stop being run) and in the
step (where the compile check is the real Python 3.9 grammar, as in Slicer 5.8).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import core39_plugin
from core39_plugin import CORE_MODULES, ROOT, deselected, selected, selection

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # `import torch` now raises ImportError\n"
MIN_SELECTED = 60  # tests the step runs today: fewer means a file or node id fell out of the selection


def run_python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    paths = [str(ROOT / "DiffCodeRestore"), str(ROOT / "Testing" / "py39"), str(ROOT / "Testing"),  # as .ci/core-py39.sh
             os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT), env=env)


def test_core_modules_import_without_torch():
    done = run_python(BLOCK_TORCH + "import importlib\n"
                      f"for name in {list(CORE_MODULES)!r}:\n    importlib.import_module(name)\n"
                      "print(sorted(m for m, module in sys.modules.items()\n"
                      "             if module is not None and m.split('.')[0] in ('torch', 'PySide6', 'qt', 'slicer')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_python_file_of_the_module_compiles_on_this_interpreter():
    """In the step this is Python 3.9's own grammar (requires-python >= 3.9), for the torch code too: what
    Slicer 5.8 meets when it loads the module."""
    files = sorted((ROOT / "DiffCodeRestore").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)


def test_selection_collects_enough_tests_with_torch_blocked():
    """What the step runs, collected here as the step collects it, but with torch made unimportable."""
    items = selected()
    assert items, f"{core39_plugin.SELECTION} lists no tests"
    for item in items:
        assert (ROOT / item.split("::")[0]).is_file(), f"{core39_plugin.SELECTION}: {item} does not exist"
    for item in deselected():  # a stale --deselect would hide nothing and mislead
        path, _, name = item.partition("::")
        assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"deselected {item} does not exist"
    done = run_python(BLOCK_TORCH + "import pytest\n"
                      "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', '--noconftest', "
                      f"'-p', 'core39_plugin', *{selection()!r}]))", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(collected) >= MIN_SELECTED, done.stdout[-3000:]
    for item in items:
        assert any(line == item or line.startswith(item + "::") or line.startswith(item + "[")
                   for line in collected), f"{item} collected nothing"
    assert not set(deselected()) & set(collected)


def test_make_test_runs_the_step():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe and ".ci/core-py39.sh" in recipe.group(1)
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
