"""Volume I/O without torch: formats, LPS geometry, DICOM series, provenance, the inputs it refuses.

Part of the Python 3.9 step (Slicer 5.8: numpy 1.26.4, SimpleITK 2.3.1) and of the main suite. The
geometry through the pipeline is in Testing/test_geometry.py (needs torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DiffCodeRestoreLib.volume_io import (OUTPUT_SUFFIXES, VolumeError, check_output_path, dicom_series_ids,
                                          image_from_array, read_provenance, read_volume, sidecar_path,
                                          write_volume)
from images import assert_same_grid, oblique_image, physical_points, write_dicom_series



def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", OUTPUT_SUFFIXES)
def test_round_trip_keeps_grid_voxels_and_provenance(tmp_path, suffix):
    image = oblique_image()
    metadata = {"task": "ct-denoise", "options": {"seed": 3, "fidelity": 0.7}}
    path = write_volume(image, tmp_path / f"v{suffix}", metadata)
    back = read_volume(path)
    assert_same_grid(back, image)
    assert back.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(physical_points(back), physical_points(image), atol=1e-4)
    if suffix == ".nrrd":
        assert read_provenance(back) == metadata  # NRRD header fields
    else:
        assert json.loads(sidecar_path(path).read_text()) == metadata  # NIfTI: a JSON sidecar
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_nifti_is_stored_ras_and_read_back_lps(tmp_path):
    """What ITK writes is RAS on disk (checked with nibabel), and LPS again when read."""
    nibabel = pytest.importorskip("nibabel")
    image = oblique_image()
    path = write_volume(image, tmp_path / "v.nii.gz")
    affine = nibabel.load(str(path)).affine  # index (i, j, k) -> RAS
    size = image.GetSize()
    index = np.array([[0, 0, 0], [size[0] - 1, 0, 0], [0, size[1] - 1, size[2] - 1], [7, 9, 3]], dtype=float)
    flat = (index[:, 2] * size[1] + index[:, 1]) * size[0] + index[:, 0]
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(ras * [-1, -1, 1], physical_points(image)[flat.astype(int)], atol=1e-4)


def test_nrrd_written_in_ras_space_is_read_as_lps(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.int16).reshape(2, 3, 4)
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\nsizes: 4 3 2\n"
        "space directions: (0,0.5,0) (-0.7,0,0) (0,0,2.5)\nkinds: domain domain domain\n"
        "endian: little\nencoding: raw\nspace origin: (10,20,30)\n\n"
    )
    path = tmp_path / "ras.nrrd"
    path.write_bytes(header.encode() + data.astype("<i2").tobytes())
    image = read_volume(path)
    ras = np.array([10, 20, 30]) + 3 * np.array([0, 0.5, 0]) + 2 * np.array([-0.7, 0, 0]) + np.array([0, 0, 2.5])
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((3, 2, 1)), ras * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.7, 2.5))


def test_dicom_series_keeps_geometry_and_modality(tmp_path):
    image = oblique_image(size=(16, 14, 4), spacing=(0.7, 0.7, 2.5))
    folder = write_dicom_series(image, tmp_path / "series", modality="MR")
    assert len(dicom_series_ids(folder)) == 1 and dicom_series_ids(tmp_path) == []
    volume = read_volume(folder)
    assert_same_grid(volume, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), sitk.GetArrayFromImage(image))
    assert volume.GetMetaData("0008|0060") == "MR"
    out = write_volume(volume, tmp_path / "out.nrrd")  # the reader's tags describe the input, not the output
    assert "0008|0060" not in sitk.ReadImage(str(out)).GetMetaDataKeys()


def test_two_series_in_one_folder_are_refused(tmp_path):
    folder = write_dicom_series(oblique_image(size=(8, 8, 2)), tmp_path / "mixed", series=2)
    write_dicom_series(oblique_image(size=(8, 8, 2), seed=1), folder, series=3)
    with pytest.raises(VolumeError, match="holds 2 DICOM series"):
        read_volume(folder)


def test_trailing_singleton_axis_is_a_3d_volume(tmp_path):
    volume = oblique_image(size=(8, 8, 3), dtype=np.float32)
    path = write(sitk.JoinSeries([volume]), tmp_path / "x-y-z-1.nii.gz")
    image = read_volume(path)
    assert image.GetDimension() == 3 and image.GetSize() == (8, 8, 3)


def bad_inputs(folder: Path) -> dict:
    """Each kind of input the core must refuse, as a real file."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = {"unreadable": folder / "garbage.nrrd", "empty file": folder / "empty.nii.gz"}
    files["unreadable"].write_bytes(b"this is not an image" * 10)
    files["empty file"].write_bytes(b"")
    files["4D"] = write(sitk.JoinSeries([oblique_image(size=(8, 8, 3), dtype=np.float32)] * 2), folder / "4d.nii.gz")
    files["RGB"] = write(sitk.GetImageFromArray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), isVector=True),
                         folder / "rgb.nrrd")
    files["constant"] = write(sitk.GetImageFromArray(np.zeros((3, 8, 8), np.float32)), folder / "zeros.nrrd")
    nan = rng.random((3, 8, 8)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    files["NaN"] = write(sitk.GetImageFromArray(nan), folder / "nan.nrrd")
    inf = rng.random((3, 8, 8)).astype(np.float32)
    inf[0, 0, 0] = -np.inf
    files["Inf"] = write(sitk.GetImageFromArray(inf), folder / "inf.mha")
    whole = write(oblique_image(size=(32, 32, 4)), folder / "whole.nrrd")
    files["truncated"] = folder / "cut.nrrd"
    files["truncated"].write_bytes(whole.read_bytes()[:-500])
    whole.unlink()
    files["missing"] = folder / "missing.nrrd"
    return files


BAD_INPUTS = [
    ("unreadable", "cannot read this file"), ("empty file", "cannot read this file"), ("4D", "4D image"),
    ("RGB", "vector/RGB"), ("constant", "constant"), ("NaN", "NaN or infinite"), ("Inf", "NaN or infinite"),
    ("truncated", "damaged or truncated"), ("missing", "no such file or folder"),
]


@pytest.mark.parametrize("kind,pattern", BAD_INPUTS)
def test_bad_input_is_refused_with_one_line(tmp_path, kind, pattern):
    with pytest.raises(VolumeError, match=pattern) as error:
        read_volume(bad_inputs(tmp_path / "bad")[kind])
    assert "\n" not in str(error.value)


def test_output_paths_are_checked_before_any_work(tmp_path):
    source = write(oblique_image(size=(8, 8, 2)), tmp_path / "in.nrrd")
    with pytest.raises(VolumeError, match=r"must end with \.nrrd, \.nii or \.nii\.gz"):
        check_output_path(tmp_path / "out.png")
    with pytest.raises(VolumeError, match="would replace the input"):
        check_output_path(source, overwrite=True, inputs=[source])
    with pytest.raises(VolumeError, match="exists already; pass --overwrite"):
        check_output_path(source)
    with pytest.raises(VolumeError, match="does not exist"):
        check_output_path(tmp_path / "nofolder" / "out.nrrd")
    (tmp_path / "out.json").write_text("{}")
    with pytest.raises(VolumeError, match="sidecar of this output exists already"):
        check_output_path(tmp_path / "out.nii.gz")
    assert check_output_path(tmp_path / "out.nii.gz", overwrite=True) == tmp_path / "out.nii.gz"


def test_image_from_array_takes_ijk_geometry_and_refuses_bad_arrays():
    image = image_from_array(np.zeros((3, 4, 5), np.float16), spacing=(0.5, 0.6, 2.0), origin=(1, 2, 3),
                             direction=np.eye(3)[:, [1, 0, 2]])
    assert image.GetSize() == (5, 4, 3) and image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSpacing() == (0.5, 0.6, 2.0) and image.GetOrigin() == (1.0, 2.0, 3.0)
    with pytest.raises(VolumeError, match="give a 2D"):
        image_from_array(np.zeros(5))
    with pytest.raises(VolumeError, match="dtype complex"):
        image_from_array(np.zeros((2, 2), complex))
    with pytest.raises(VolumeError, match="positive numbers"):
        image_from_array(np.zeros((2, 2)), spacing=(1.0, 0.0))
    with pytest.raises(VolumeError, match="orthonormal"):
        image_from_array(np.zeros((2, 2)), direction=[[2, 0], [0, 1]])
