"""DICOM series out: a restored series written back with the source's tags, read back unchanged.

Real parts only: series written by ITK (``images.write_dicom_series``) and completed with
pydicom into what a scanner writes (so that the source itself passes dicom3tools' ``dciodvfy``),
the real pipeline with a real (tiny, random) model, and the files read back with SimpleITK, pydicom
and checked by ``dciodvfy``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")

from DiffCodeRestoreLib import dicom_out  # noqa: E402
from DiffCodeRestoreLib.dicom_out import write_dicom_series  # noqa: E402
from DiffCodeRestoreLib.pipeline import DiffCodePipeline  # noqa: E402
from DiffCodeRestoreLib.volume_io import VolumeError, read_volume  # noqa: E402
from images import oblique_image  # noqa: E402
from images import write_dicom_series as itk_dicom_series  # noqa: E402

SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "PT": "1.2.840.10008.5.1.4.1.1.128"}
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.2.1125.1.3"
PET_SLOPE = "7.25"  # Bq/mL per stored value: the source PET is float-valued, as scanners write it
PET_DOSE_BQ, PET_WEIGHT_KG = 3.7e8, 70.0


# ----------------------------------------------------------------------------------------------------
# Source series


def scanner_series(image: sitk.Image, folder: Path, modality: str = "CT") -> Path:
    """``images.write_dicom_series`` plus the tags a scanner writes and ITK does not (so that
    the source passes ``dciodvfy``), with the modality's SOP class."""
    itk_dicom_series(image, folder, modality)
    for index, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(str(path))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "DC-0042", "19700101", "O"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "A-1", ""
        ds.SeriesNumber, ds.SeriesDescription = "7", f"{modality} phantom"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = FRAME_OF_REFERENCE, ""
        ds.Manufacturer, ds.PatientPosition, ds.BodyPartExamined = "DiffCode test", "HFS", "CHEST"
        ds.AcquisitionNumber, ds.SeriesDate, ds.SeriesTime = "1", "20240102", "101500"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        del ds.RescaleType  # ITK writes "US" (unspecified), not a defined term
        if modality == "CT":
            ds.KVP, ds.RescaleType = "120", "HU"
        if modality == "MR":
            del ds.RescaleSlope, ds.RescaleIntercept  # not in the MR IOD
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "500", "15", "1"
            ds.MagneticFieldStrength, ds.ImagingFrequency, ds.ImagedNucleus = "3", "127.7", "1H"
        if modality == "PT":
            _pet_tags(ds, index, image.GetDepth())
        ds.save_as(str(path))
    return folder


def _pet_tags(ds, index: int, slices: int) -> None:
    """Units Bq/mL with the tags from which the reader computes the SUV factor (``input_rules``)."""
    from pydicom.dataset import Dataset

    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    del ds.PatientPosition  # PET gives it as the two code sequences below
    ds.RescaleSlope, ds.RescaleIntercept, ds.Units, ds.DecayCorrection = PET_SLOPE, "0", "BQML", "START"
    ds.PatientWeight, ds.SeriesType, ds.CountsSource, ds.CorrectedImage = str(PET_WEIGHT_KG), ["STATIC", "IMAGE"], \
        "EMISSION", ["ATTN", "DECY"]
    ds.NumberOfSlices, ds.ImageIndex, ds.FrameReferenceTime, ds.ActualFrameDuration = slices, index + 1, "0", 300000
    ds.DecayFactor, ds.RandomsCorrectionMethod, ds.AttenuationCorrectionMethod = "1.1", "DLYD", "CT"
    ds.ReconstructionMethod, ds.CollimatorType, ds.PrimaryPromptsCountsAccumulated = "OSEM", "NONE", 0
    ds.AcquisitionDate, ds.AcquisitionTime = "20240102", "101500"
    ds.SliceSensitivityFactor, ds.DoseCalibrationFactor, ds.DeadTimeFactor = "1", "1", "1"
    drug = Dataset()
    drug.RadiopharmaceuticalStartDateTime, drug.RadionuclideTotalDose = "20240102091500", str(PET_DOSE_BQ)
    drug.RadionuclideHalfLife, drug.Radiopharmaceutical = "6586.2", "Fluorodeoxyglucose"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "77004003", "SCT", "^18^Fluorine"
    drug.RadionuclideCodeSequence = [code]
    ds.RadiopharmaceuticalInformationSequence = [drug]
    ds.PatientOrientationCodeSequence, ds.PatientGantryRelationshipCodeSequence = [], []


def dciodvfy_errors(path: Path) -> List[str]:
    """The "Error" lines dicom3tools' validator prints for one file."""
    run = subprocess.run([DCIODVFY, str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
                         universal_newlines=True)
    return [line.strip() for line in run.stdout.splitlines() if line.strip().startswith("Error")]


DCIODVFY = shutil.which("dciodvfy")


def source_files(folder: Path) -> List[str]:
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))


def assert_same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)


def stored_to_values(ds) -> np.ndarray:
    """The voxel values of one file as pydicom decodes them (no ITK involved)."""
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


class Case:
    """A source series, its volume, the pipeline's result and the DICOM series written from it."""

    def __init__(self, root: Path, pipe, modality: str, task: str, image: sitk.Image, **options) -> None:
        self.source = scanner_series(image, root / "source", modality)
        self.volume = read_volume(self.source)
        restored = pipe(self.volume, task, **options)
        self.result, self.metadata, self.task = restored.image, restored.metadata, task
        self.output = root / "restored"
        self.files = write_dicom_series(self.result, self.source, self.output, task, self.metadata)


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", precision="float32")


@pytest.fixture(scope="module")
def ct(pipe, tmp_path_factory) -> Case:
    image = oblique_image(size=(32, 28, 4), spacing=(0.7, 0.6, 2.5))
    return Case(tmp_path_factory.mktemp("ct"), pipe, "CT", "ct-denoise", image)


@pytest.fixture(scope="module")
def mr(pipe, tmp_path_factory) -> Case:
    image = oblique_image(size=(24, 20, 3), spacing=(1.6, 1.2, 4.0), seed=3)
    image = sitk.Abs(image) + 20  # MRI magnitude: positive
    return Case(tmp_path_factory.mktemp("mr"), pipe, "MR", "mri-sr", image, scale=2)


@pytest.fixture(scope="module")
def pet(pipe, tmp_path_factory) -> Case:
    image = sitk.Abs(oblique_image(size=(24, 24, 3), spacing=(2.0, 2.0, 3.0), seed=5)) * 4  # stored; x 7.25 = Bq/mL
    return Case(tmp_path_factory.mktemp("pet"), pipe, "PT", "pet-synthesis", image)


# ----------------------------------------------------------------------------------------------------
# Read back: SimpleITK and pydicom see the result's grid and voxels


def test_ct_reads_back_with_the_result_grid_and_exact_hu(ct):
    back = read_volume(ct.output)
    assert_same_grid(back, ct.result)
    restored = sitk.GetArrayFromImage(ct.result)
    assert not np.array_equal(restored, sitk.GetArrayFromImage(ct.volume))  # the pixels really were replaced
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), restored)
    for k, path in enumerate(ct.files):  # and without ITK: pydicom's stored values x slope + intercept
        ds = pydicom.dcmread(str(path))
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert ds.RescaleSlope == 1 and ds.RescaleType == "HU"
        np.testing.assert_array_equal(stored_to_values(ds), restored[k])
    assert [p.name for p in ct.output.parent.iterdir() if p.name.startswith(".")] == []  # no partial folder left


def test_ct_tags_changed_and_kept(ct):
    sources = [pydicom.dcmread(name, stop_before_pixels=True) for name in source_files(ct.source)]
    outputs = [pydicom.dcmread(str(path)) for path in ct.files]
    series = {ds.SeriesInstanceUID for ds in outputs}
    assert len(series) == 1 and series.isdisjoint({ds.SeriesInstanceUID for ds in sources})
    instances = [ds.SOPInstanceUID for ds in outputs]
    assert len(set(instances)) == len(outputs) and set(instances).isdisjoint(ds.SOPInstanceUID for ds in sources)
    for source, ds in zip(sources, outputs):
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SeriesDescription == "CT phantom (DiffCode ct-denoise)"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert int(ds.SeriesNumber) == 7 + dicom_out.SERIES_NUMBER_OFFSET
        description = ds.DerivationDescription
        assert ct.metadata["sha256"] in description and str(ct.metadata["model"]) in description
        assert "ct-denoise" in description and '"steps":' in description
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "Modality", "FrameOfReferenceUID",
                        "ImageOrientationPatient", "InstanceNumber", "KVP", "SeriesTime", "SOPClassUID"):
            assert ds.get(keyword) == source.get(keyword), keyword


def test_mri_super_resolution_writes_the_finer_grid(mr):
    sources = [pydicom.dcmread(name, stop_before_pixels=True) for name in source_files(mr.source)]
    restored = sitk.GetArrayFromImage(mr.result)
    assert mr.result.GetSize() == (48, 40, 3)
    for k, (source, path) in enumerate(zip(sources, mr.files)):
        ds = pydicom.dcmread(str(path))
        assert (ds.Rows, ds.Columns) == (2 * source.Rows, 2 * source.Columns)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [float(v) / 2 for v in source.PixelSpacing])
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   mr.result.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-4)
        assert ds.SeriesDescription == "MR phantom (DiffCode mri-sr)"
        np.testing.assert_allclose(stored_to_values(ds), restored[k], rtol=0, atol=2e-5 * np.abs(restored).max())
    back = read_volume(mr.output)
    assert_same_grid(back, mr.result)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), restored, rtol=0, atol=2e-5 * np.abs(restored).max())


def test_pet_keeps_its_units_and_suv_factor(pet):
    restored = sitk.GetArrayFromImage(pet.result)
    assert restored.max() > 1000  # Bq/mL, the units the volume was read in (not SUV)
    back = read_volume(pet.output)
    assert_same_grid(back, pet.result)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), restored, rtol=0, atol=2e-5 * np.abs(restored).max())
    ds = pydicom.dcmread(str(pet.files[0]))
    assert ds.Units == "BQML" and float(ds.RescaleIntercept) == 0 and float(ds.RescaleSlope) != float(PET_SLOPE)
    key = "DiffCode:SUVbwFactor"  # the decay and dose tags survive: the SUV factor read from the output is the source's
    assert float(back.GetMetaData(key)) == pytest.approx(float(pet.volume.GetMetaData(key)), rel=1e-12)


@pytest.mark.parametrize("name", ["ct", "mr", "pet"])
def test_dciodvfy_finds_no_new_errors(name, request):
    if DCIODVFY is None:
        pytest.skip("dciodvfy not found: install the Debian package dicom3tools (apt-get install -y dicom3tools)")
    case = request.getfixturevalue(name)
    for source, output in zip(source_files(case.source), case.files):
        assert dciodvfy_errors(Path(source)) == []  # the source is a valid series ...
        assert dciodvfy_errors(output) == [], output  # ... and so is the result


# ----------------------------------------------------------------------------------------------------
# Refusals and atomic writes


def test_files_named_against_slice_order_are_written_in_slice_order(tmp_path):
    """The output follows ITK's order (along the slice normal), not the file names."""
    folder = scanner_series(oblique_image(size=(16, 12, 4)), tmp_path / "source")
    names = sorted(folder.iterdir())
    for index, path in enumerate(names):
        path.rename(folder / f"x{len(names) - index}.dcm")
    volume = read_volume(folder)
    files = write_dicom_series(volume, folder, tmp_path / "out", "ct-denoise", {"model": "m", "sha256": "0" * 64})
    back = read_volume(tmp_path / "out")
    assert_same_grid(back, volume)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(volume))
    assert [p.name for p in files] == sorted(p.name for p in files)


def test_a_result_off_the_source_series_is_refused(ct, tmp_path):
    shifted = sitk.Image(ct.result)
    shifted.SetOrigin(ct.result.TransformIndexToPhysicalPoint((0, 0, 1)))
    with pytest.raises(VolumeError, match="does not lie on this series"):
        write_dicom_series(shifted, ct.source, tmp_path / "out", "ct-denoise", ct.metadata)
    with pytest.raises(VolumeError, match="does not lie on this series"):
        write_dicom_series(ct.result[:, :, :3], ct.source, tmp_path / "out", "ct-denoise", ct.metadata)
    with pytest.raises(VolumeError, match="lacks sha256"):
        write_dicom_series(ct.result, ct.source, tmp_path / "out", "ct-denoise", {"model": "m"})
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_unless_overwrite(ct, tmp_path):
    out = tmp_path / "out"
    first = write_dicom_series(ct.result, ct.source, out, "ct-denoise", ct.metadata)
    old_series = pydicom.dcmread(str(first[0])).SeriesInstanceUID
    with pytest.raises(VolumeError, match="exists already; pass --overwrite"):
        write_dicom_series(ct.result, ct.source, out, "ct-denoise", ct.metadata)
    assert pydicom.dcmread(str(first[0])).SeriesInstanceUID == old_series
    again = write_dicom_series(ct.result, ct.source, out, "ct-denoise", ct.metadata, overwrite=True)
    assert sorted(out.iterdir()) == again and pydicom.dcmread(str(again[0])).SeriesInstanceUID != old_series
    (out / "notes.txt").write_text("mine")  # a folder holding other things is never replaced
    with pytest.raises(VolumeError, match="not a DICOM file"):
        write_dicom_series(ct.result, ct.source, out, "ct-denoise", ct.metadata, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(VolumeError, match="hold or replace the source"):
        write_dicom_series(ct.result, ct.source, ct.source, "ct-denoise", ct.metadata, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()  # a folder made for the result is used
    assert len(write_dicom_series(ct.result, ct.source, empty, "ct-denoise", ct.metadata)) == ct.result.GetDepth()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]


def test_interrupted_write_leaves_nothing(ct, tmp_path):
    out = tmp_path / "out"

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dicom_series(ct.result, ct.source, out, "ct-denoise", ct.metadata, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(ct, tmp_path):
    """A real write error (file size limit: as a full disk) in a child process: one line, nothing kept."""
    result = tmp_path / "result.nrrd"
    sitk.WriteImage(ct.result, str(result))
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import resource, signal, sys, json
        import SimpleITK as sitk
        from DiffCodeRestoreLib.dicom_out import write_dicom_series
        from DiffCodeRestoreLib.volume_io import VolumeError
        image = sitk.ReadImage({str(result)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        try:
            write_dicom_series(image, {str(ct.source)!r}, {str(out)!r}, "ct-denoise", json.loads(sys.argv[1]))
        except VolumeError as error:
            print(error)
            sys.exit(3)
    """)
    import json

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(dicom_out.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", script, json.dumps(ct.metadata)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, env=env, check=False)
    assert run.returncode == 3, run.stdout
    assert "cannot write the DICOM series" in run.stdout and "nothing was kept" in run.stdout
    assert len(run.stdout.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.nrrd"]


def test_unwritable_target_is_refused_before_work(ct):
    with pytest.raises(VolumeError, match="cannot write into this folder|does not exist"):
        write_dicom_series(ct.result, ct.source, Path("/proc/diffcode-out"), "ct-denoise", ct.metadata)


def test_stale_partial_folder_of_a_killed_run_is_removed(ct, tmp_path):
    from DiffCodeRestoreLib.files import partial_path

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = partial_path(tmp_path / "out", keep_suffix=False)  # named like ours, with a process that is gone
    stale = mine.with_name(mine.name.replace(f".{os.getpid()}.", f".{finished.stdout.strip()}."))
    stale.mkdir()
    (stale / "slice_00001.dcm").write_bytes(b"half")
    write_dicom_series(ct.result, ct.source, tmp_path / "out", "ct-denoise", ct.metadata)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ----------------------------------------------------------------------------------------------------
# Pixel encoding


def test_unsigned_ct_with_intercept_and_padding_is_rewritten_in_hu(tmp_path):
    """A scanner's CT: unsigned stored values, intercept -3024, padding value 0 (-3024 HU). The output
    keeps the HU exactly, and its padding value names the same HU in the new stored values."""
    image = oblique_image(size=(16, 12, 3), spacing=(0.8, 0.8, 2.0))
    hu = sitk.GetArrayFromImage(image).astype(np.int32)
    hu[:, :2, :] = -3024  # padding outside the scan circle
    folder = scanner_series(image, tmp_path / "source")
    for path in source_files(folder):  # files sorted along the normal: slice k of the array
        ds = pydicom.dcmread(path)
        k = int(ds.InstanceNumber) - 1
        ds.PixelRepresentation, ds.RescaleIntercept = 0, "-3024"
        ds.PixelData = (hu[k] + 3024).astype("<u2").tobytes()
        ds.add_new(0x00280120, "US", 0)
        ds.save_as(path)
    volume = read_volume(folder)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), hu)
    files = write_dicom_series(volume, folder, tmp_path / "out", "ct-denoise", {"model": "m", "sha256": "0" * 64})
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(tmp_path / "out")), hu)
    ds = pydicom.dcmread(str(files[0]))
    assert (ds.PixelRepresentation, float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1, 1.0, 0.0)
    assert ds.PixelPaddingValue == -3024 and ds[0x00280120].VR == "SS"
    if DCIODVFY:
        assert dciodvfy_errors(files[0]) == []


def test_choose_encoding():
    wide = np.array([[[-1024, 60000]]], dtype=np.int32)  # uint16 CT with intercept -1024: does not fit int16
    encoding = dicom_out.choose_encoding(wide)
    assert encoding.exact and float(encoding.slope) == 1
    np.testing.assert_array_equal(encoding.encode(wide).astype(np.int64) + int(encoding.intercept), wide)
    pet = dicom_out.choose_encoding(wide.astype(np.float32), pet=True)  # PET: intercept 0 always
    assert not pet.exact and float(pet.intercept) == 0 and len(pet.slope) <= 16
    floats = np.random.default_rng(0).gamma(2.0, 900.0, (3, 20, 20)).astype(np.float32)
    encoding = dicom_out.choose_encoding(floats)
    stored = encoding.encode(floats)
    assert stored.dtype == np.dtype("<i2") and np.abs(stored).max() == dicom_out.INT16_MAX
    error = np.abs(stored * float(encoding.slope) - floats).max()
    assert error <= floats.max() / 65534 * 1.0001  # half a step of 1/32767 of the largest value
    assert dicom_out.choose_encoding(np.zeros((2, 3, 3), np.float32)).exact


# ----------------------------------------------------------------------------------------------------
# The command line: restore ... --format dicom


def _cli(tiny_weights, *args):
    from DiffCodeRestoreLib.cli import main

    return main([*args, "--model", str(tiny_weights), "--quiet", "--precision", "float32"])


def test_command_line_writes_a_series_that_reads_back_like_the_nrrd_result(tiny_weights, tmp_path, capsys):
    source = scanner_series(oblique_image(size=(32, 28, 3), spacing=(0.7, 0.6, 2.5)), tmp_path / "ct")
    assert _cli(tiny_weights, "restore", str(source), str(tmp_path / "out-dicom"), "--task", "ct-denoise",
                "--format", "dicom") == 0, capsys.readouterr().err
    assert _cli(tiny_weights, "restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise") == 0
    as_dicom, as_nrrd = read_volume(tmp_path / "out-dicom"), sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert_same_grid(as_dicom, as_nrrd)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(as_dicom), sitk.GetArrayFromImage(as_nrrd))
    first = pydicom.dcmread(str(source_files(tmp_path / "out-dicom")[0]))
    assert first.SeriesDescription == "CT phantom (DiffCode ct-denoise)" and first.PatientID == "DC-0042"


def test_command_line_dicom_batch_and_refusals(tiny_weights, tmp_path, capsys):
    study = tmp_path / "study"
    for name in ("s1", "s2"):
        scanner_series(oblique_image(size=(24, 24, 2), spacing=(0.7, 0.7, 2.5)), study / name)
    assert _cli(tiny_weights, "restore", str(study), str(tmp_path / "out"), "--task", "ct-denoise",
                "--format", "dicom") == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["diffcode-manifest.csv", "s1", "s2"]
    assert all(len(source_files(tmp_path / "out" / name)) == 2 for name in ("s1", "s2"))
    capsys.readouterr()
    nrrd = tmp_path / "plain.nrrd"
    sitk.WriteImage(oblique_image(size=(16, 16, 2)), str(nrrd))
    assert _cli(tiny_weights, "restore", str(nrrd), str(tmp_path / "x"), "--task", "ct-denoise",
                "--format", "dicom") == 1
    assert "needs a DICOM series folder as input" in capsys.readouterr().err
    assert _cli(tiny_weights, "restore", str(study / "s1"), str(tmp_path / "y"), "--task", "ct-denoise",
                "--format", "dicom", "--samples", "2") == 2
    assert "uncertainty maps" in capsys.readouterr().err
