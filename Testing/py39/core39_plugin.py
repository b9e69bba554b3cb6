"""Fixtures of the Python 3.9 step (`make test` runs it through .ci/core-py39.sh), loaded with ``-p core39_plugin``.

That step runs the torch-free core under what 3D Slicer 5.8 ships (Python 3.9, numpy 1.26.4, SimpleITK
2.3.1) in a venv without torch, with ``--noconftest``: Testing/conftest.py imports torch. What the
selected tests need from it is provided here without torch. ``SELECTION`` and ``CORE_MODULES`` are the
one place that says what the step covers; Testing/py39/test_core39_imports.py checks both from the
main suite too, so the step cannot silently test nothing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest

pytest_plugins = ("cli_checks",)  # the `run` fixture of the CLI tests, shared with the main suite

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SELECTION = HERE / "selection.txt"

# The Qt-free core modules that must import, and work, without torch (torch is imported lazily inside
# the functions that restore).
CORE_MODULES = (
    "DiffCodeRestoreLib",
    "DiffCodeRestoreLib.errors",
    "DiffCodeRestoreLib.files",
    "DiffCodeRestoreLib.tasks",
    "DiffCodeRestoreLib.volume_io",
    "DiffCodeRestoreLib.hub",
    "DiffCodeRestoreLib.cli",
    "DiffCodeRestoreLib.worker",
    "DiffCodeRestoreLib.options",
    "DiffCodeRestoreLib.input_rules",
    "DiffCodeRestoreLib.runtime",
    "DiffCodeRestoreLib.cohort",
    "DiffCodeRestoreLib.dicom_out",
)


def selection() -> List[str]:
    """The pytest arguments of the step: test files, node ids and ``--deselect NODE_ID`` pairs."""
    words: List[str] = []
    for line in SELECTION.read_text(encoding="utf-8").splitlines():
        words += line.split("#")[0].split()
    return words


def selected() -> List[str]:
    """The files and node ids the step runs (``selection()`` without the deselected ones)."""
    words = selection()
    return [w for i, w in enumerate(words) if not w.startswith("-") and (i == 0 or words[i - 1] != "--deselect")]


def deselected() -> List[str]:
    words = selection()
    return [w for i, w in enumerate(words) if i > 0 and words[i - 1] == "--deselect"]


def pytest_report_header(config):
    import SimpleITK as sitk

    versions = [f"numpy {np.__version__}", f"SimpleITK {sitk.Version_VersionString()}"]
    for name in ("huggingface_hub", "safetensors", "tqdm"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            versions.append(f"{name} missing")
    torch = "not importable" if importlib.util.find_spec("torch") is None else "INSTALLED"
    return f"torch-free core step: Python {sys.version.split()[0]}, {', '.join(versions)}, torch {torch}"


def pytest_sessionstart(session):
    if importlib.util.find_spec("torch") is not None:
        raise pytest.UsageError("the torch-free core step found torch; run it in a venv without torch "
                                "(requirements-py39.txt), or with torch blocked")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights folder (config.json + model.safetensors) made without torch.

    The hub and the CLI's weights commands only move, hash and check these files; they never load
    the model, so a small safetensors file written from numpy stands in for the tiny model of
    Testing/conftest.py.
    """
    from safetensors.numpy import save_file

    from DiffCodeRestoreLib.hub import write_manifest

    folder = tmp_path_factory.mktemp("tiny-weights")
    rng = np.random.default_rng(0)
    save_file({"encoder.weight": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
               "codebook.codes": rng.standard_normal((3, 16, 8)).astype(np.float32)},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "diffcode-restore", "stand_in": "torch-free"},
                                                   indent=2) + "\n")
    write_manifest(folder)  # as Testing/conftest.py does for the real tiny model
    return folder
