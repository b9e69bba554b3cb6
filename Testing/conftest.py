"""Shared fixtures. Real data comes from the cache that `make test` fills (make data) first."""

import os

import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest_plugins = ("cli_checks",)  # the `run` fixture of the CLI tests (shared with the Python 3.9 step)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A folder with config.json + model.safetensors of a seeded, random-initialised tiny model."""
    from DiffCodeRestoreLib.hub import write_manifest
    from DiffCodeRestoreLib.models import DiffCodeConfig, DiffCodeModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-weights")
    DiffCodeModel(DiffCodeConfig.preset("tiny")).save_pretrained(folder, fp16=False)
    write_manifest(folder)  # as every weights folder the project writes: loading verifies it
    return folder
