"""Inputs and situations that used to end in a wrong result with exit code 0 (the reliability issue).

Each case ends in a correct result or in a one-line refusal that says what to do; the rules live in
the core (``input_rules``, ``options``, ``volume_io``) so that the command line, the worker and the
Slicer logic share them. Real files, real DICOM series (SimpleITK + pydicom), the real CLI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffCodeRestoreLib import input_rules
from DiffCodeRestoreLib.cli import main
from DiffCodeRestoreLib.data.volumes import load_volume
from DiffCodeRestoreLib.pipeline import DiffCodePipeline, NonFiniteResult
from DiffCodeRestoreLib.files import PARTIAL_MARK
from DiffCodeRestoreLib.volume_io import VolumeError, read_volume, write_volumes
from images import oblique_image, write_dicom_series

pydicom = pytest.importorskip("pydicom")


@pytest.fixture
def run(tiny_weights, capsys):
    def invoke(*args, model=True):
        extra = ["--model", str(tiny_weights), "--quiet"] if model else []
        code = main([*args, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", precision="float32")


def one_line(code, err, pattern, exit_code=1):
    lines = err.strip().splitlines()
    assert code == exit_code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


def write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


# ----------------------------------------------------------------------------------------------------
# 1, 19: DICOM series that ITK would put on a wrong grid


def test_dicom_series_with_a_missing_slice_is_refused_with_the_gap(run, tmp_path):
    folder = write_dicom_series(oblique_image(size=(16, 16, 6), spacing=(0.7, 0.7, 2.5)), tmp_path / "series")
    (folder / "s2-slice003.dcm").unlink()  # positions 0, 2.5, 5, 10, 12.5 mm along the normal
    code, _, err = run("restore", str(folder), str(tmp_path / "out.nrrd"), "--task", "ct-denoise")
    one_line(code, err, "not evenly spaced")
    assert "step of 5 mm where the others are 2.5 mm" in err and "missing slice" in err
    assert not (tmp_path / "out.nrrd").exists()


def test_several_volumes_under_one_series_uid_are_refused(tmp_path):
    image = oblique_image(size=(16, 16, 3), spacing=(0.7, 0.7, 2.5))
    folder = write_dicom_series(image, tmp_path / "echoes")
    for path in sorted(folder.iterdir()):  # a second echo: same positions, same series UID
        echo = pydicom.dcmread(str(path))
        echo.SOPInstanceUID = echo.SOPInstanceUID + ".2"
        echo.InstanceNumber = int(echo.InstanceNumber) + 3
        echo.EchoNumbers = 2
        echo.save_as(str(folder / ("echo2_" + path.name)))
    with pytest.raises(VolumeError, match="6 images at only 3 slice positions.*split them"):
        read_volume(folder)


def test_regular_dicom_series_still_reads(tmp_path):
    image = oblique_image(size=(16, 16, 4), spacing=(0.7, 0.7, 2.5))
    volume = read_volume(write_dicom_series(image, tmp_path / "series"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), sitk.GetArrayFromImage(image))


# ----------------------------------------------------------------------------------------------------
# 2: one extreme voxel; never a non-finite output


def _brain(size=64) -> sitk.Image:
    return sitk.Cast(load_volume("colin27")[60:60 + size, 70:70 + size, 90:92], sitk.sitkFloat32)


@pytest.mark.parametrize("spike", [1e12, 1e30])
@pytest.mark.parametrize("scale", [1, 2])
def test_one_extreme_voxel_stays_local(pipe, spike, scale):
    image = _brain()
    plain = sitk.GetArrayFromImage(pipe(image, "mri-sr", scale=scale).image)
    array = sitk.GetArrayFromImage(image)
    array[1, 20, 30] = spike
    spiked = sitk.GetImageFromArray(array)
    spiked.CopyInformation(image)
    out = sitk.GetArrayFromImage(pipe(spiked, "mri-sr", scale=scale).image)
    assert np.isfinite(out).all()
    block = (1, slice(20 * scale, 21 * scale), slice(30 * scale, 31 * scale))
    assert np.all(out[block] == np.float32(spike))  # the voxel the network cannot represent keeps its value
    rest = np.ones(out.shape, bool)
    rest[block] = False
    assert out[rest].max() <= 2.0 * array[0].max() + 1  # nothing else blows up
    assert np.abs(out[0] - plain[0]).max() < 1e-3 * array[0].max()  # the other slice is untouched


def test_float16_overflow_is_computed_again_in_float32(tiny_weights, monkeypatch):
    notes = []
    pipe = DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", precision="bfloat16",
                                            message=notes.append)
    original = pipe.model.restore

    def overflowing(x, *args, **kwargs):  # what a float16 overflow looks like to the pipeline
        y = original(x, *args, **kwargs)
        return y * float("inf") if torch.is_autocast_enabled("cpu") else y

    monkeypatch.setattr(pipe.model, "restore", overflowing)
    image = oblique_image(size=(32, 32, 2))
    out = sitk.GetArrayFromImage(pipe(image, "ct-denoise").image)
    assert np.isfinite(out).all() and any("computing it again in float32" in note for note in notes)

    monkeypatch.setattr(pipe.model, "restore", lambda x, *a, **k: original(x, *a, **k) * float("nan"))
    with pytest.raises(NonFiniteResult, match="nothing was written"):
        pipe(image, "ct-denoise")


def test_non_finite_images_are_never_written(tmp_path):
    image = sitk.GetImageFromArray(np.array([[[0.0, np.nan], [1.0, 2.0]]], np.float32))
    with pytest.raises(VolumeError, match="NaN or infinite values and was not written"):
        write_volumes([(image, tmp_path / "out.nrrd", None)])
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# 3: label maps, one rule for the command line and Slicer (test_slicer_mrml checks the Slicer side)


@pytest.mark.parametrize("name", ["itk_t1_classes", "aal"])
def test_label_maps_are_refused_by_the_command_line(run, tmp_path, name):
    source = write(load_volume(name)[:, :, 20:23], tmp_path / "labels.nrrd")
    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise")
    one_line(code, err, "looks like a label map or mask")
    assert not (tmp_path / "out.nrrd").exists()


@pytest.mark.parametrize("name", ["itk_t1", "colin27", "lung2", "mni152_t1"])
def test_integer_images_are_not_label_maps(name):
    assert input_rules.label_map_reason(sitk.GetArrayViewFromImage(load_volume(name))) is None


# ----------------------------------------------------------------------------------------------------
# 7: CT stays in the HU range the network represents


def test_ct_output_stays_within_the_hu_range(pipe):
    rng = np.random.default_rng(3)
    array = rng.choice([-1024, -1000, 2990, 3071], size=(2, 64, 64)).astype(np.int16)  # extremes of the range
    out = sitk.GetArrayFromImage(pipe(sitk.GetImageFromArray(array), "ct-denoise").image)
    assert out.min() >= -1024 and out.max() <= 3071


def test_ct_outside_the_range_keeps_its_values(pipe):
    array = np.random.default_rng(4).normal(40, 20, (2, 64, 64)).astype(np.int16)  # soft tissue, noisy
    array[:, :8] = -3024  # scanner padding
    array[:, 30:34, 30:34] = 8000  # metal
    array[0, 40, 40] = 41
    out = sitk.GetArrayFromImage(pipe(sitk.GetImageFromArray(array), "ct-denoise").image)
    assert np.all(out[:, :8] == -3024) and np.all(out[:, 30:34, 30:34] == 8000)
    inside = (array >= -1024) & (array <= 3071)
    assert out[inside].min() >= -1024 and out[inside].max() <= 3071


# ----------------------------------------------------------------------------------------------------
# 8: PET in Bq/mL


def _pet_suv(size=48) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:size, :size]
    body = ((rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (size / 2.5) ** 2) * 2.0
    return np.clip(np.stack([body, body * 1.1]) + rng.normal(0, 0.2, (2, size, size)), 0, None).astype(np.float32)


def test_pet_in_bq_per_ml_is_refused_without_a_factor(run, tmp_path):
    source = write(sitk.GetImageFromArray(_pet_suv() * 5000.0), tmp_path / "pet.nrrd")
    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "pet-synthesis")
    one_line(code, err, "does not look like PET in SUV")
    assert "--suv-factor" in err and not (tmp_path / "out.nrrd").exists()


def test_pet_in_bq_per_ml_with_a_factor_is_restored_in_suv_and_written_back(run, tmp_path, pipe):
    suv = _pet_suv()
    source = write(sitk.GetImageFromArray(suv * 5000.0), tmp_path / "pet.nrrd")
    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "pet-synthesis",
                       "--suv-factor", str(1 / 5000.0), "--precision", "float32")
    assert code == 0, err
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd")))
    in_suv = sitk.GetArrayFromImage(pipe(sitk.GetImageFromArray(suv), "pet-synthesis").image)
    np.testing.assert_allclose(out / 5000.0, in_suv, atol=1e-3)  # same restoration, back in Bq/mL


def _write_pet_dicom(folder: Path, bq_per_ml: np.ndarray, weight_kg=75.0, dose_bq=370e6, minutes_after=60.0) -> Path:
    image = sitk.GetImageFromArray(np.rint(bq_per_ml).astype(np.int16))
    image.SetSpacing((2.0, 2.0, 3.0))
    write_dicom_series(image, folder, modality="PT")
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(path))
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.PatientWeight = str(weight_kg)
        ds.SeriesDate = "20260101"
        ds.SeriesTime = f"{10 + int(minutes_after // 60):02d}{int(minutes_after % 60):02d}00"
        drug = pydicom.Dataset()
        drug.RadiopharmaceuticalStartTime = "100000"
        drug.RadionuclideTotalDose = str(dose_bq)
        drug.RadionuclideHalfLife = "6586.2"
        ds.RadiopharmaceuticalInformationSequence = pydicom.Sequence([drug])
        ds.save_as(str(path))
    return folder


def test_suv_factor_from_the_dicom_tags():
    ds = pydicom.Dataset()
    ds.Units, ds.DecayCorrection, ds.PatientWeight, ds.SeriesTime = "BQML", "START", "75", "110000"
    drug = pydicom.Dataset()
    drug.RadiopharmaceuticalStartTime, drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = "100000", "370e6", "6586.2"
    ds.RadiopharmaceuticalInformationSequence = pydicom.Sequence([drug])
    expected = 75000.0 / (370e6 * 2.0 ** (-3600 / 6586.2))  # dose decayed over the hour to the series start
    assert input_rules.suv_bw_factor(ds) == pytest.approx(expected, rel=1e-9)
    del ds.PatientWeight
    with pytest.raises(ValueError, match="PatientWeight"):
        input_rules.suv_bw_factor(ds)


def test_dicom_pet_in_bq_per_ml_is_converted_from_its_tags(run, tmp_path):
    factor = 75000.0 / (370e6 * 2.0 ** (-3600 / 6586.2))
    suv = _pet_suv()
    folder = _write_pet_dicom(tmp_path / "pet", suv / factor)
    code, _, err = run("restore", str(folder), str(tmp_path / "out.nrrd"), "--task", "pet-synthesis")
    assert code == 0, err
    out = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    values = sitk.GetArrayFromImage(out)
    assert 0.5 * (suv / factor).max() < values.max() < 2.0 * (suv / factor).max()  # written back in Bq/mL
    assert "SUVbw = stored value x" in out.GetMetaData("DiffCode_intensity_conversion")
    assert not any(key.startswith("DiffCode:") for key in out.GetMetaDataKeys())  # reader facts stay behind


# ----------------------------------------------------------------------------------------------------
# 9: unsigned CT stored as HU+1024


def test_unsigned_ct_is_detected_and_restored_with_the_offset(run, tmp_path):
    hu = sitk.GetArrayFromImage(load_volume("lung2")[180:244, 180:244, 30:32]).astype(np.int32)
    source = write(sitk.GetImageFromArray((hu + 1024).astype(np.uint16)), tmp_path / "ct.nrrd")
    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise")
    one_line(code, err, "looks like CT stored as HU+1024")
    assert "--hu-offset -1024" in err and not (tmp_path / "out.nrrd").exists()

    code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise",
                       "--hu-offset", "-1024")
    assert code == 0, err
    out = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert out.GetPixelID() == sitk.sitkUInt16  # the input's convention is kept
    reference = write(sitk.GetImageFromArray(hu.astype(np.int16)), tmp_path / "hu.nrrd")
    code, _, err = run("restore", str(reference), str(tmp_path / "hu_out.nrrd"), "--task", "ct-denoise")
    assert code == 0, err
    in_hu = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "hu_out.nrrd"))).astype(np.int32)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out).astype(np.int32) - 1024, in_hu)


def test_hu_ct_is_not_taken_for_unsigned():
    for name in ("lung1", "lung2"):
        assert input_rules.unsigned_ct_reason(sitk.GetArrayViewFromImage(load_volume(name))) is None


# ----------------------------------------------------------------------------------------------------
# 6: batch outputs that collide; what a batch skips


def test_batch_outputs_that_collide_are_refused_before_any_work(run, tmp_path):
    inputs = tmp_path / "in"
    write(oblique_image(size=(16, 16, 2)), inputs / "a.mha")
    write(oblique_image(size=(16, 16, 2)), inputs / "a.nrrd")
    write_dicom_series(oblique_image(size=(16, 16, 2)), inputs / "a")
    write(oblique_image(size=(16, 16, 2)), inputs / "b.nrrd")
    code, _, err = run("restore", str(inputs), str(tmp_path / "out"), "--task", "ct-denoise")
    one_line(code, err, "a/, a.mha, a.nrrd would all be written to")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_png_is_restored_alone_and_in_a_batch_and_other_files_are_named(run, tmp_path):
    inputs = tmp_path / "in"
    slice_ = sitk.Cast(sitk.RescaleIntensity(load_volume("colin27")[:, :, 90], 0, 255), sitk.sitkUInt8)
    write(slice_, inputs / "slice.png")
    (inputs / "scan.jpg").write_bytes(b"\xff\xd8 not a volume")
    code, _, err = run("restore", str(inputs / "slice.png"), str(tmp_path / "one.nrrd"), "--task", "mri-sr")
    assert code == 0, err
    code, _, err = run("restore", str(inputs), str(tmp_path / "out"), "--task", "mri-sr")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["diffcode-manifest.csv", "slice.nrrd"]
    assert "skipped 1 item(s) that are not volumes: scan.jpg" in err


# ----------------------------------------------------------------------------------------------------
# 10: partial files of a killed run


def _partial_name(stem: str, pid: int, suffix: str = ".nrrd") -> str:
    host = socket.gethostname().replace(".", "-")
    return f".{stem}.{host}.{pid}.0123abcd{PARTIAL_MARK}{suffix}"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_partial_files_are_never_inputs_and_stale_ones_are_removed(run, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write(oblique_image(size=(16, 16, 2)), inputs / "a.nrrd")
    (inputs / _partial_name("b", _dead_pid())).write_bytes(b"NRRD0004\ntruncated")
    outputs.mkdir()
    stale = outputs / _partial_name("a", _dead_pid())
    alive = outputs / _partial_name("c", os.getpid())  # another run still writing it
    stale.write_bytes(b"half")
    alive.write_bytes(b"half")
    code, _, err = run("restore", str(inputs), str(outputs), "--task", "ct-denoise")
    assert code == 0, err
    assert sorted(p.name for p in outputs.iterdir()) == sorted(["a.nrrd", alive.name, "diffcode-manifest.csv"])


# ----------------------------------------------------------------------------------------------------
# 11: option errors exit 2 before anything slow


@pytest.mark.parametrize("option,pattern", [
    (["--scale", "3"], "invalid choice: 3"),
    (["--steps", "0"], "out of range"),
    (["--steps", "9"], "steps must be between 1 and 4"),
    (["--fidelity", "2"], "out of range"),
    (["--tile-size", "1"], "out of range"),
    (["--tile-size", "258"], "multiple of 4"),
    (["--seed", str(2**32)], "out of range"),
    (["--suv-factor", "0.001"], "SUV factor is for PET only"),
    (["--task", "dental-xray"], "Unknown task 'dental-xray'"),
    (["--scale", "2"], "MRI super-resolution only"),
])
def test_option_errors_exit_2_without_loading_the_model(tiny_weights, tmp_path, option, pattern):
    source = write(oblique_image(size=(8, 8, 2)), tmp_path / "in.nrrd")
    args = ["restore", str(source), str(tmp_path / "out.nrrd"), "--model", str(tiny_weights)]
    args += option if "--task" in option else ["--task", "ct-denoise", *option]
    check = ("import sys; from DiffCodeRestoreLib.cli import main; code = main(sys.argv[1:]); "
             "assert 'torch' not in sys.modules, 'torch was loaded'; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", check, *args], capture_output=True, text=True, encoding="utf-8",
                          timeout=60)
    one_line(done.returncode, done.stderr, pattern, exit_code=2)
    assert not (tmp_path / "out.nrrd").exists()


# ----------------------------------------------------------------------------------------------------
# 12: outputs that cannot be written are found before the work


def test_output_that_is_a_folder_is_refused_in_one_line(run, tmp_path):
    source = write(oblique_image(size=(8, 8, 2)), tmp_path / "in.nrrd")
    (tmp_path / "out.nrrd").mkdir()
    for extra in ([], ["--overwrite"]):
        code, _, err = run("restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise", *extra)
        one_line(code, err, "is a folder; give an output file")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder that cannot be written: a read-only mount for root (who ignores permissions), else chmod."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot make a read-only folder here (no mount permission)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_read_only_output_folder_is_refused_before_the_restore(run, tmp_path, read_only_folder, monkeypatch):
    source = write(oblique_image(size=(8, 8, 2)), tmp_path / "in.nrrd")
    loads = []
    monkeypatch.setattr(DiffCodePipeline, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(1)))
    code, _, err = run("restore", str(source), str(read_only_folder / "out.nrrd"), "--task", "ct-denoise")
    one_line(code, err, "cannot write into this folder")
    assert loads == []  # refused before the model was even loaded


# ----------------------------------------------------------------------------------------------------
# 18: the result and its companions are written as one unit


def test_a_failed_write_leaves_nothing_of_the_set(tmp_path, monkeypatch):
    image = oblique_image(size=(8, 8, 2))
    calls = []
    real_write = sitk.WriteImage

    def failing(img, path, *args, **kwargs):  # the second file of the set fails (disk full, say)
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("No space left on device")
        return real_write(img, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", failing)
    with pytest.raises(VolumeError, match="No space left on device.*nothing of this output was kept"):
        write_volumes([(image, tmp_path / "out.nii.gz", {"task": "ct-denoise"}),
                       (sitk.Image(image), tmp_path / "out_uncertainty.nii.gz", {"map": "uncertainty"})])
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# 20: the host process is left as it was


def test_importing_the_pipeline_leaves_the_environment_alone():
    check = ("import os; os.environ.pop('OMP_WAIT_POLICY', None); import DiffCodeRestoreLib.pipeline; "
             "assert 'OMP_WAIT_POLICY' not in os.environ")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", check], env=env, timeout=120).returncode == 0


def test_a_restore_gives_the_host_its_torch_thread_count_back(tiny_weights):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", threads=2)
        assert torch.get_num_threads() == 1
        pipe(oblique_image(size=(16, 16, 2)), "ct-denoise")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
