"""``--task auto`` and the Python default: the Slicer panel's rule (input_rules.suggest_task) on real volumes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from DiffCodeRestoreLib.cli import main
from DiffCodeRestoreLib.data.volumes import load_volume
from DiffCodeRestoreLib.pipeline import DiffCodePipeline
from DiffCodeRestoreLib.volume_io import VolumeError, read_provenance
from images import write_dicom_series


@pytest.fixture
def run(tiny_weights, capsys):
    def invoke(*args):
        code = main([*args, "--model", str(tiny_weights), "--quiet"])
        return (code, *capsys.readouterr())

    return invoke


def _write(image: sitk.Image, path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


def test_auto_takes_ct_from_hounsfield_air_and_says_why(run, tmp_path):
    source = _write(load_volume("lung2")[150:214, 150:214, 30:32], tmp_path / "scan.nrrd")
    code, _, err = run("restore", source, str(tmp_path / "out.nrrd"), "--task", "auto")
    assert code == 0, err
    assert "scan.nrrd: task ct-denoise (intensities reach -" in err and "(air in Hounsfield units))" in err
    assert read_provenance(sitk.ReadImage(str(tmp_path / "out.nrrd")))["task"] == "ct-denoise"


def test_auto_takes_the_dicom_modality(run, tmp_path):
    brain = sitk.Cast(load_volume("colin27")[60:92, 70:102, 88:91], sitk.sitkInt16)
    folder = write_dicom_series(brain, tmp_path / "series", modality="MR")
    code, _, err = run("restore", str(folder), str(tmp_path / "out.nrrd"), "--task", "auto", "--scale", "2")
    assert code == 0, err
    assert "task mri-sr (DICOM modality MR)" in err
    assert sitk.ReadImage(str(tmp_path / "out.nrrd")).GetSize() == (64, 64, 3)


def test_auto_refuses_an_unclear_case_and_asks_for_the_task(run, tmp_path):
    source = _write(load_volume("colin27")[60:92, 70:102, 88:91], tmp_path / "subject01.nii.gz")
    code, _, err = run("restore", source, str(tmp_path / "out.nrrd"), "--task", "auto")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "cannot tell the task for sure" in err and "--task mri-sr" in err
    assert not (tmp_path / "out.nrrd").exists()
    named = _write(load_volume("colin27")[60:92, 70:102, 88:91], tmp_path / "subject01_T1w.nii.gz")
    code, _, err = run("restore", named, str(tmp_path / "out.nrrd"), "--task", "auto")
    assert code == 0 and "task mri-sr (volume name 'subject01_T1w.nii.gz')" in err


def test_auto_checks_task_options_per_input(run, tmp_path):
    source = _write(load_volume("lung2")[150:214, 150:214, 30:32], tmp_path / "scan.nrrd")
    code, _, err = run("restore", source, str(tmp_path / "out.nrrd"), "--task", "auto", "--scale", "2")
    assert code == 1 and "task ct-denoise" in err and "MRI super-resolution only" in err


def test_python_default_task_is_auto(tiny_weights):
    pipe = DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu")
    result = pipe(load_volume("lung2")[150:214, 150:214, 30:31])
    assert result.metadata["task"] == "ct-denoise" and "Hounsfield" in result.metadata["task_reason"]
    with pytest.raises(VolumeError, match="cannot tell the task"):
        pipe(sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 5, (1, 32, 32)).astype(np.float32)))
