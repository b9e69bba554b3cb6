"""The command line's checks that come before any model work, without torch.

Part of the Python 3.9 step (Slicer 5.8) and of the main suite. Every mistake here must end as one
line on stderr, before the pipeline (and so torch) is imported; restoring itself is tested in
Testing/test_cli.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import assert_one_line_error
from images import oblique_image
from test_core39_volume_io import BAD_INPUTS, bad_inputs, write

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # `import torch` now raises ImportError\n"


@pytest.mark.parametrize("kind,pattern", BAD_INPUTS)
def test_bad_input_exits_with_one_line(run, tmp_path, kind, pattern):
    source = bad_inputs(tmp_path / "bad")[kind]
    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise")
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "out.nrrd").exists()


@pytest.mark.parametrize("args,pattern", [
    (["restore", "{good}", "{out}", "--task", "dental-xray"], "[Uu]nknown task 'dental-xray'"),
    (["restore", "{good}", "{good}", "--task", "ct-denoise", "--overwrite"], "would replace the input"),
    (["restore", "{good}", "{good}", "--task", "ct-denoise"], "would replace the input"),
    (["restore", "{good}", "{tmp}/out.png", "--task", "ct-denoise"], r"must end with \.nrrd, \.nii or \.nii\.gz"),
    (["restore", "{good}", "{tmp}/nofolder/out.nrrd", "--task", "ct-denoise"], "output folder does not exist"),
    (["restore", "{tmp}", "{tmp}", "--task", "ct-denoise"], "output folder is the input folder"),
    (["restore", "{empty}", "{tmp}/out", "--task", "ct-denoise"], "no NRRD, NIfTI"),
])
def test_command_line_mistakes_exit_with_one_line(run, tmp_path, args, pattern):
    good = write(oblique_image(size=(8, 8, 2)), tmp_path / "good.nrrd")
    before = good.read_bytes()
    (tmp_path / "empty").mkdir()
    values = {"out": tmp_path / "out.nrrd", "good": good, "tmp": tmp_path, "empty": tmp_path / "empty"}
    code, _, err = run(*[a.format(**values) for a in args])
    assert_one_line_error(code, err, pattern, exits=(1, 2))  # 2: refused as a wrong command line
    assert good.read_bytes() == before


def test_existing_outputs_are_not_replaced_silently(run, tmp_path):
    source = write(oblique_image(size=(8, 8, 2)), tmp_path / "in.nrrd")
    (tmp_path / "done.nrrd").write_bytes(b"earlier result")
    code, _, err = run("restore", str(source), str(tmp_path / "done.nrrd"), "--task", "ct-denoise")
    assert_one_line_error(code, err, "exists already; pass --overwrite")
    (tmp_path / "out.json").write_text('{"RepetitionTime": 2.3}')
    code, _, err = run("restore", str(source), str(tmp_path / "out.nii.gz"), "--task", "ct-denoise")
    assert_one_line_error(code, err, "sidecar of this output exists already")
    code, _, err = run("restore", str(source), str(tmp_path / "out.nii.gz"), "--task", "mri-sr", "--samples", "2")
    assert_one_line_error(code, err, "sidecar of this output exists already")
    assert (tmp_path / "done.nrrd").read_bytes() == b"earlier result"
    assert json.loads((tmp_path / "out.json").read_text()) == {"RepetitionTime": 2.3}


def test_usage_errors_exit_2_with_one_line(run):
    code, _, err = run("restore", "only-one-argument")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "required" in err
    code, _, err = run("restore", "in.nrrd", "out.nrrd", "--task", "ct-denoise", "--precision", "int8")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "invalid choice: 'int8'" in err
    code, _, err = run("restore", "in.nrrd", "out.nrrd", "--task", "ct-denoise", "--scale", "two")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "invalid int value: 'two'" in err
    code, _, err = run("weights", "destroy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "invalid choice" in err
    with pytest.raises(SystemExit) as done:
        run("--version")
    assert done.value.code == 0


def test_checks_never_import_torch(tmp_path):
    """With torch blocked, the checks still answer, and nothing tried to import torch."""
    good = write(oblique_image(size=(8, 8, 2)), tmp_path / "good.nrrd")
    script = BLOCK_TORCH + (
        "from DiffCodeRestoreLib.cli import main\n"
        f"codes = [main(['restore', {str(tmp_path / 'missing.nrrd')!r}, 'out.nrrd', '--task', 'ct-denoise']),\n"
        f"         main(['restore', {str(good)!r}, {str(tmp_path / 'out.png')!r}, '--task', 'ct-denoise']),\n"
        f"         main(['restore', {str(good)!r}, {str(good)!r}, '--task', 'pet-synthesis']),\n"
        "         main(['weights', 'list'])]\n"
        "print(codes, sys.modules['torch'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).parent))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[1, 1, 1, 0] None", done.stdout + done.stderr
    assert "No module named" not in done.stderr and "import of torch" not in done.stderr
