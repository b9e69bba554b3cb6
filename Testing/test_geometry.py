"""Geometry: oblique directions, anisotropic spacing, LPS/RAS, DICOM series, the super-resolution grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffCodeRestoreLib.pipeline import DiffCodePipeline, slice_axis, super_resolution_geometry
from DiffCodeRestoreLib.volume_io import read_volume
from images import assert_same_grid, oblique_image, physical_points, write_dicom_series


@pytest.fixture(scope="module")
def identity_weights(tmp_path_factory) -> Path:
    """A real tiny model whose decoder adds nothing: restoration is the identity, so geometry shows."""
    from DiffCodeRestoreLib.hub import write_manifest
    from DiffCodeRestoreLib.models import DiffCodeConfig, DiffCodeModel

    torch.manual_seed(0)
    model = DiffCodeModel(DiffCodeConfig.preset("tiny"))
    with torch.no_grad():
        model.decoder.head[1].weight.zero_()
        model.decoder.head[1].bias.zero_()
    folder = model.save_pretrained(tmp_path_factory.mktemp("identity"), fp16=False)
    write_manifest(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu")


# ----------------------------------------------------------------------------------------------------


def test_dicom_series_in_keeps_geometry_and_modality(tmp_path, pipe):
    image = oblique_image(size=(32, 28, 5), spacing=(0.7, 0.7, 2.5))
    folder = write_dicom_series(image, tmp_path / "series")
    volume = read_volume(folder)
    assert_same_grid(volume, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), sitk.GetArrayFromImage(image))
    assert volume.GetMetaData("0008|0060") == "CT"
    result = pipe(volume, "ct-denoise")
    assert_same_grid(result.image, image)
    assert result.image.GetPixelID() == volume.GetPixelID()


@pytest.mark.parametrize("spacing,expected", [((0.5, 0.5, 3.0), 2), ((0.5, 3.0, 0.5), 1), ((4.0, 0.9, 0.9), 0),
                                              ((1.0, 1.0, 1.0), 2)])
def test_slice_axis_is_the_thickest_in_index_space(spacing, expected):
    image = oblique_image(size=(6, 7, 8), spacing=spacing)
    assert slice_axis(image) == expected


def test_slicing_follows_the_thick_axis_whatever_its_index(pipe):
    """A volume whose thick axis is i restores exactly like the same data stored with thick axis k."""
    thick_k = oblique_image(size=(36, 32, 4), spacing=(0.7, 0.7, 3.0))
    array = sitk.GetArrayFromImage(thick_k)  # (k, j, i)
    # Index (i', j', k') = (k, i, j): slices across i' have rows j and columns i, as the k slices do.
    thick_i = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(1, 2, 0)))
    thick_i.SetSpacing((3.0, 0.7, 0.7))
    assert slice_axis(thick_i) == 0
    from_k = sitk.GetArrayFromImage(pipe(thick_k, "ct-denoise").image)
    from_i = sitk.GetArrayFromImage(pipe(thick_i, "ct-denoise").image)
    np.testing.assert_array_equal(from_i.transpose(2, 0, 1), from_k)


def test_output_grid_equals_input_grid(pipe):
    for image in (oblique_image(), oblique_image(size=(40, 1, 30), spacing=(0.6, 5.0, 0.6))):
        result = pipe(image, "ct-denoise")
        assert_same_grid(result.image, image)


def test_super_resolution_grid_is_exact(tmp_path):
    image = oblique_image(size=(10, 12, 3), spacing=(2.0, 1.6, 5.0))
    for scale in (2, 4):
        size, spacing, origin = super_resolution_geometry(image, 2, scale)
        fine = sitk.Image(size, sitk.sitkFloat32)
        fine.SetSpacing(spacing)
        fine.SetOrigin(origin)
        fine.SetDirection(image.GetDirection())
        assert size == [10 * scale, 12 * scale, 3]
        # The first fine voxel's centre lies inside the first coarse voxel, 1/(2s) of it from the corner;
        # the corners of the two grids' fields of view coincide.
        corner_coarse = image.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, 0))
        corner_fine = fine.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, 0))
        far_coarse = image.TransformContinuousIndexToPhysicalPoint((9.5, 11.5, 2))
        far_fine = fine.TransformContinuousIndexToPhysicalPoint((10 * scale - 0.5, 12 * scale - 0.5, 2))
        np.testing.assert_allclose(corner_fine, corner_coarse, atol=1e-9)
        np.testing.assert_allclose(far_fine, far_coarse, atol=1e-9)
        centre_in_coarse = image.TransformPhysicalPointToContinuousIndex(fine.TransformIndexToPhysicalPoint((0, 0, 1)))
        np.testing.assert_allclose(centre_in_coarse, (-0.5 + 0.5 / scale, -0.5 + 0.5 / scale, 1), atol=1e-9)


@pytest.mark.parametrize("scale", [2, 4])
def test_super_resolution_overlays_the_input_at_physical_points(identity_weights, scale):
    """A smooth blob sampled on an oblique low-resolution grid comes out on the fine grid with the
    values the blob has at the fine voxels' physical centres."""
    pipe = DiffCodePipeline.from_pretrained(str(identity_weights), device="cpu")
    coarse = oblique_image(size=(40, 36, 3), spacing=(2.0, 1.6, 5.0), dtype=np.float32)
    centre = np.asarray(coarse.TransformContinuousIndexToPhysicalPoint((19.3, 17.6, 1.0)))

    def blob(points):
        return 100 + 500 * np.exp(-np.sum((points - centre) ** 2, 1) / (2 * 6.0 ** 2))

    values = blob(physical_points(coarse)).reshape(tuple(reversed(coarse.GetSize()))).astype(np.float32)
    source = sitk.GetImageFromArray(values)
    source.CopyInformation(coarse)
    result = pipe(source, "mri-sr", scale=scale).image
    assert result.GetSize() == (40 * scale, 36 * scale, 3)
    restored = sitk.GetArrayFromImage(result).ravel()
    np.testing.assert_allclose(restored, blob(physical_points(result)), atol=0.05)  # of a 600 range


def test_two_d_image_keeps_its_geometry(pipe):
    image = sitk.GetImageFromArray(np.random.default_rng(1).normal(0, 100, (30, 26)).astype(np.float32))
    image.SetSpacing((0.4, 0.9))
    image.SetOrigin((3.0, -4.0))
    image.SetDirection((0.0, 1.0, 1.0, 0.0))
    result = pipe(image, "ct-denoise")
    assert result.image.GetDimension() == 2
    assert_same_grid(result.image, image)
