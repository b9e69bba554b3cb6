"""The `diffcode-restore` command line on real files: formats, DICOM, batches, provenance, bad input."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DiffCodeRestoreLib.cli import main
from DiffCodeRestoreLib.volume_io import read_provenance
from cli_checks import assert_one_line_error
from images import assert_same_grid, oblique_image, write_dicom_series

CONSOLE_SCRIPT = Path(sys.executable).with_name("diffcode-restore")


def digest(path: Path) -> tuple:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def run(tiny_weights, capsys):
    """Run the CLI in-process with the tiny weights; returns (exit code, stdout, stderr)."""

    def invoke(*args, model=True):
        extra = ["--model", str(tiny_weights), "--quiet"] if model and args and args[0] == "restore" else []
        code = main([*args, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


# ----------------------------------------------------------------------------------------------------


def test_restore_nrrd_to_nifti_with_provenance_sidecar(run, tmp_path, tiny_weights):
    source = write(oblique_image(), tmp_path / "ct.nrrd")
    before = digest(source)
    code, out, err = run("restore", str(source), str(tmp_path / "out.nii.gz"), "--task", "ct-denoise", "--seed", "5")
    assert code == 0, err
    result = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert_same_grid(result, oblique_image())
    assert result.GetPixelID() == sitk.sitkInt16
    meta = json.loads((tmp_path / "out.json").read_text())
    assert meta["task"] == "ct-denoise" and meta["model"] == tiny_weights.name and meta["input"] == "ct.nrrd"
    assert meta["options"]["seed"] == 5 and len(meta["sha256"]) == 64 and meta["version"]
    assert digest(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "out.json", "out.nii.gz"]


def test_restore_to_nrrd_keeps_provenance_in_the_header(run, tmp_path):
    source = write(sitk.Abs(oblique_image(dtype=np.float32)) / 40.0, tmp_path / "pet.mha")  # SUV-like
    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "pet-synthesis",
                       "--samples", "2", "--steps", "2", "--fidelity", "0.7", "--self-ensemble")
    assert code == 0, err
    meta = read_provenance(sitk.ReadImage(str(tmp_path / "out.nrrd")))
    assert meta["task"] == "pet-synthesis" and meta["options"]["fidelity"] == 0.7 and meta["options"]["samples"] == 2
    assert meta["options"]["self_ensemble"] is True
    spread = sitk.ReadImage(str(tmp_path / "out_uncertainty.nrrd"))
    assert read_provenance(spread)["map"] == "uncertainty (std)"
    assert sitk.GetArrayFromImage(spread).max() > 0


def test_mri_super_resolution_from_the_command_line(run, tmp_path):
    source = write(oblique_image(size=(20, 18, 3), dtype=np.float32), tmp_path / "t1.nii.gz")
    code, _, err = run("restore", str(source), str(tmp_path / "sr.nii.gz"), "--task", "mri-sr", "--scale", "2")
    assert code == 0, err
    result = sitk.ReadImage(str(tmp_path / "sr.nii.gz"))
    assert result.GetSize() == (40, 36, 3)
    np.testing.assert_allclose(result.GetSpacing(), (0.4, 0.3, 3.0), rtol=1e-6)


def test_two_d_image_file_is_restored_as_one_slice(run, tmp_path):
    from DiffCodeRestoreLib.data.volumes import load_volume

    volume = load_volume("lung2")
    source = write(volume[100:228, 150:278, 30], tmp_path / "slice.nrrd")  # a real 2D CT slice, LPS geometry
    before = digest(source)
    code, _, err = run("restore", str(source), str(tmp_path / "out.nii.gz"), "--task", "ct-denoise")
    assert code == 0, err
    result = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert result.GetDimension() == 2 and result.GetSize() == (128, 128)
    np.testing.assert_allclose(result.GetSpacing(), volume.GetSpacing()[:2], rtol=1e-6)
    np.testing.assert_allclose(result.GetOrigin(), sitk.ReadImage(str(source)).GetOrigin(), atol=1e-4)
    assert digest(source) == before


def test_dicom_series_folder_in(run, tmp_path):
    folder = write_dicom_series(oblique_image(size=(24, 20, 4), spacing=(0.7, 0.7, 2.5)), tmp_path / "series")
    code, _, err = run("restore", str(folder), str(tmp_path / "ct.nrrd"), "--task", "ct-denoise")
    assert code == 0, err
    assert_same_grid(sitk.ReadImage(str(tmp_path / "ct.nrrd")), read_dicom(folder))


def read_dicom(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_batch_folder_keeps_names_and_reports_bad_files(run, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(oblique_image(size=(16, 16, 2)), inputs / "a.nrrd")
    write(oblique_image(size=(16, 16, 2)), inputs / "b.nii.gz")
    write(oblique_image(size=(16, 16, 2)), inputs / "c.mha")
    write_dicom_series(oblique_image(size=(16, 16, 2)), inputs / "series1")
    write(sitk.GetImageFromArray(np.full((2, 16, 16), 5, np.int16)), inputs / "flat.nrrd")
    (inputs / "notes.txt").write_text("not an image")
    before = {p.name: digest(p) for p in inputs.iterdir() if p.is_file()}
    code, out, err = run("restore", str(inputs), str(tmp_path / "out"), "--task", "ct-denoise")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nrrd", "b.json", "b.nii.gz", "c.nrrd",
                                                                    "diffcode-manifest.csv", "series1.nrrd"]
    lines = err.strip().splitlines()
    assert len(lines) == 4 and "skipped 1 item(s) that are not volumes: notes.txt" in lines[0]
    assert "flat.nrrd: the volume is constant" in lines[1] and "1 of 5 inputs failed" in lines[3]
    assert "5 inputs: 4 restored, 0 already complete, 1 failed" in lines[2]
    assert before == {p.name: digest(p) for p in inputs.iterdir() if p.is_file()}


def test_overwrite_is_explicit(run, tmp_path):
    source = write(oblique_image(size=(16, 16, 2)), tmp_path / "in.nrrd")
    target = tmp_path / "out.nrrd"
    assert run("restore", str(source), str(target), "--task", "ct-denoise")[0] == 0
    first = digest(target)
    code, _, err = run("restore", str(source), str(target), "--task", "ct-denoise", "--seed", "9")
    assert_one_line_error(code, err, "exists already; pass --overwrite")
    assert digest(target) == first
    code, _, err = run("restore", str(source), str(target), "--task", "ct-denoise", "--seed", "9", "--overwrite")
    assert code == 0 and digest(target) != first


def test_existing_nifti_sidecar_is_not_replaced_silently(run, tmp_path):
    source = write(oblique_image(size=(16, 16, 2)), tmp_path / "in.nrrd")
    sidecar = tmp_path / "out.json"
    sidecar.write_text('{"RepetitionTime": 2.3}')
    code, _, err = run("restore", str(source), str(tmp_path / "out.nii.gz"), "--task", "ct-denoise")
    assert_one_line_error(code, err, "sidecar of this output exists already")
    assert sidecar.read_text() == '{"RepetitionTime": 2.3}' and not (tmp_path / "out.nii.gz").exists()


def make_bad_inputs(folder: Path) -> dict:
    """Each kind of input the command must refuse, as a real file."""
    folder.mkdir()
    files = {}
    files["unreadable"] = folder / "garbage.nrrd"
    files["unreadable"].write_bytes(b"this is not an image" * 10)
    files["empty file"] = folder / "empty.nii.gz"
    files["empty file"].write_bytes(b"")
    files["4D"] = write(sitk.JoinSeries([oblique_image(size=(8, 8, 3), dtype=np.float32)] * 2), folder / "4d.nii.gz")
    files["RGB"] = write(sitk.GetImageFromArray(np.random.randint(0, 255, (12, 12, 3), np.uint8), isVector=True),
                         folder / "rgb.nrrd")
    files["constant"] = write(sitk.GetImageFromArray(np.zeros((3, 8, 8), np.float32)), folder / "zeros.nrrd")
    nan = np.random.rand(3, 8, 8).astype(np.float32)
    nan[1, 2, 3] = np.nan
    files["NaN"] = write(sitk.GetImageFromArray(nan), folder / "nan.nrrd")
    inf = np.random.rand(3, 8, 8).astype(np.float32)
    inf[0, 0, 0] = -np.inf
    files["Inf"] = write(sitk.GetImageFromArray(inf), folder / "inf.mha")
    files["truncated"] = folder / "cut.nrrd"
    whole = (folder / "whole.nrrd")
    sitk.WriteImage(oblique_image(size=(32, 32, 4)), str(whole))
    files["truncated"].write_bytes(whole.read_bytes()[:-500])
    whole.unlink()
    return files


@pytest.mark.parametrize("kind,pattern", [
    ("unreadable", "cannot read this file"), ("empty file", "cannot read this file"), ("4D", "4D image"),
    ("RGB", "vector/RGB"), ("constant", "constant"), ("NaN", "NaN or infinite"), ("Inf", "NaN or infinite"),
    ("truncated", "damaged or truncated"),
])
def test_bad_input_exits_with_one_line(run, tmp_path, kind, pattern):
    source = make_bad_inputs(tmp_path / "bad")[kind]
    before = digest(source)
    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise")
    assert_one_line_error(code, err, pattern)
    assert digest(source) == before and not (tmp_path / "out.nrrd").exists()


@pytest.mark.parametrize("args,pattern", [
    (["restore", "{missing}", "{out}", "--task", "ct-denoise"], "no such file or folder"),
    (["restore", "{good}", "{good}", "--task", "ct-denoise", "--overwrite"], "would replace the input"),
    (["restore", "{good}", "{tmp}/out.png", "--task", "ct-denoise"], r"must end with \.nrrd, \.nii or \.nii\.gz"),
    (["restore", "{good}", "{tmp}/nofolder/out.nrrd", "--task", "ct-denoise"], "output folder does not exist"),
    (["restore", "{good}", "{out}", "--task", "ct-denoise", "--device", "tpu"], "unknown device 'tpu'"),
    (["restore", "{good}", "{out}", "--task", "ct-denoise", "--model", "{tmp}"], "not a weights folder"),
    (["restore", "{tmp}", "{tmp}", "--task", "ct-denoise"], "output folder is the input folder"),
])
def test_command_line_mistakes_exit_with_one_line(run, tmp_path, args, pattern):
    good = write(oblique_image(size=(8, 8, 2)), tmp_path / "good.nrrd")
    before = digest(good)
    values = {"missing": tmp_path / "missing.nrrd", "out": tmp_path / "out.nrrd", "good": good, "tmp": tmp_path}
    args = [a.format(**values) for a in args]
    code, _, err = run(*args, model="--model" not in args)
    assert_one_line_error(code, err, pattern)
    assert digest(good) == before


def test_usage_errors_exit_2_with_one_line(run):
    code, _, err = run("restore", "only-one-argument", model=False)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "required" in err
    code, _, err = run("restore", "in.nrrd", "out.nrrd", "--task", "ct-denoise", "--precision", "int8", model=False)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "invalid choice: 'int8'" in err
    code, _, err = run("weights", "destroy", model=False)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "invalid choice" in err


def test_console_script_and_module_run(tiny_weights, tmp_path):
    source = write(oblique_image(size=(16, 16, 2)), tmp_path / "in.nrrd")
    for command in ([str(CONSOLE_SCRIPT)], [sys.executable, "-m", "DiffCodeRestoreLib"]):
        target = tmp_path / f"out{len(command)}.nrrd"
        done = subprocess.run([*command, "restore", str(source), str(target), "--task", "ct-denoise", "--model",
                               str(tiny_weights)], capture_output=True, text=True, encoding="utf-8", timeout=120)
        assert done.returncode == 0 and target.is_file(), done.stderr
        assert f"-> {target}" in done.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, and a scheduler's time limit
def test_interrupt_exits_130_and_leaves_nothing_unfinished(tiny_weights, tmp_path, signum):
    big = write(oblique_image(size=(256, 256, 60), spacing=(0.7, 0.7, 1.0)), tmp_path / "big.nrrd")
    process = subprocess.Popen([str(CONSOLE_SCRIPT), "restore", str(big), str(tmp_path / "never.nrrd"), "--task",
                                "ct-denoise", "--model", str(tiny_weights)], stderr=subprocess.PIPE, text=True,
                               encoding="utf-8")
    seen = ""
    while "slice" not in seen and process.poll() is None:
        seen += process.stderr.read(1)
    time.sleep(0.3)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted; nothing unfinished was written" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nrrd"]  # no partial file either


def test_default_model_unavailable_is_explained(tmp_path, capsys, monkeypatch):
    catalog = tmp_path / "Models.json"
    catalog.write_text(json.dumps({"default": "diffcode-small", "models": []}))
    monkeypatch.setenv("DIFFCODE_CATALOG", str(catalog))
    source = write(oblique_image(size=(8, 8, 2)), tmp_path / "in.nrrd")
    code = main(["restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise"])
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "unknown model 'diffcode-small'.*--model FOLDER")
