#!/usr/bin/env bash
# The Python 3.9 step of `make test`: the Qt-free core that needs no torch (volume I/O, tasks, hub, CLI
# checks, worker protocol) under what 3D Slicer 5.8 ships: Python 3.9, numpy 1.26.4, SimpleITK 2.3.1.
# Builds .venv39 from requirements-py39.txt once (no torch in it), then runs the tests listed in
# Testing/py39/selection.txt. A machine without a Python 3.9 interpreter skips the step, saying so.
# PYTHON39=/path/to/python3.9 chooses the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=.venv39
REQUIREMENTS=requirements-py39.txt
SELECTION=Testing/py39/selection.txt
STAMP=$VENV/.installed

is_python39() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' >/dev/null 2>&1; }

PY39=""
LOOKED=()
for candidate in "${PYTHON39:-}" python3.9 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3.9 \
                 /root/.pyenv/versions/3.9*/bin/python3.9 /usr/local/bin/python3.9 /usr/bin/python3.9; do
  [ -n "$candidate" ] || continue
  LOOKED+=("$candidate")
  if is_python39 "$candidate"; then
    PY39=$("$candidate" -c 'import sys; print(sys.executable)')  # the interpreter itself, not a pyenv shim
    break
  fi
done
if [ -z "$PY39" ]; then
  echo "Python 3.9 step SKIPPED: no Python 3.9 interpreter on this machine (looked for: ${LOOKED[*]})."
  echo "  The torch-free core was not tested under Slicer 5.8's Python; install Python 3.9 or set PYTHON39."
  exit 0
fi

# Built once; rebuilt when the requirements or the interpreter change. The lock keeps two `make test`
# in the same checkout from building it at the same time.
want="$(cksum < "$REQUIREMENTS") $PY39"
exec 9>"${TMPDIR:-/tmp}/diffcode-venv39-$(printf %s "$ROOT" | cksum | cut -d' ' -f1).lock"
flock 9 2>/dev/null || true
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "Python 3.9 step: building $VENV from $REQUIREMENTS with $PY39"
  rm -rf "$VENV"
  "$PY39" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  printf %s "$want" > "$STAMP"
fi
exec 9>&-

tests=()  # paths, node ids and `--deselect NODE_ID` pairs; comments after #
while IFS= read -r line || [ -n "$line" ]; do
  read -r -a words <<< "${line%%#*}" || true
  tests+=(${words[@]+"${words[@]}"})
done < "$SELECTION"
if [ ${#tests[@]} -eq 0 ]; then
  echo "Python 3.9 step: $SELECTION selects no tests" >&2
  exit 1
fi

echo "Python 3.9 step: $("$VENV/bin/python" -c 'import sys, numpy, SimpleITK, huggingface_hub as h
print("Python %s, numpy %s, SimpleITK %s, huggingface_hub %s, no torch" % (sys.version.split()[0],
      numpy.__version__, SimpleITK.Version_VersionString(), h.__version__))')"
# Testing/conftest.py imports torch: --noconftest, and the fixtures the selected tests need come from
# Testing/py39/core39_plugin.py (which also refuses to run where torch is importable).
export PYTHONPATH="$ROOT/DiffCodeRestore:$ROOT/Testing/py39:$ROOT/Testing${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider --noconftest -p core39_plugin "${tests[@]}"
