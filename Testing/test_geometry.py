"""Geometry: oblique directions, anisotropic spacing, LPS/RAS, DICOM series, the super-resolution grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffCodeRestoreLib.pipeline import DiffCodePipeline, slice_axis, super_resolution_geometry
from DiffCodeRestoreLib.volume_io import read_volume, write_volume

OBLIQUE = sitk.VersorTransform((0.3, 0.5, 0.8), 0.6).GetMatrix()  # a proper rotation, det +1


def oblique_image(size=(40, 36, 6), spacing=(0.8, 0.6, 3.0), dtype=np.int16, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.normal(40, 120, tuple(reversed(size))).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 31.0, -77.25))
    image.SetDirection(OBLIQUE)
    return image


def physical_points(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, in SimpleITK index order (i fastest)."""
    dim = image.GetDimension()
    grids = np.meshgrid(*[np.arange(s) for s in image.GetSize()], indexing="ij")
    index = np.stack([g.transpose(tuple(reversed(range(dim)))).ravel() for g in grids], 1).astype(float)
    direction = np.asarray(image.GetDirection()).reshape(dim, dim)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.fixture(scope="module")
def identity_weights(tmp_path_factory) -> Path:
    """A real tiny model whose decoder adds nothing: restoration is the identity, so geometry shows."""
    from DiffCodeRestoreLib.models import DiffCodeConfig, DiffCodeModel

    torch.manual_seed(0)
    model = DiffCodeModel(DiffCodeConfig.preset("tiny"))
    with torch.no_grad():
        model.decoder.head[1].weight.zero_()
        model.decoder.head[1].bias.zero_()
    return model.save_pretrained(tmp_path_factory.mktemp("identity"), fp16=False)


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu")


# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii"])
def test_oblique_anisotropic_round_trip(tmp_path, suffix):
    image = oblique_image()
    path = write_volume(image, tmp_path / f"v{suffix}", {"task": "ct-denoise"})
    back = read_volume(path)
    assert_same_grid(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(physical_points(back), physical_points(image), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_nifti_is_stored_ras_and_read_back_lps(tmp_path):
    """What ITK writes is RAS on disk (checked with nibabel), and LPS again when read."""
    nibabel = pytest.importorskip("nibabel")
    image = oblique_image()
    path = write_volume(image, tmp_path / "v.nii.gz")
    affine = nibabel.load(str(path)).affine  # index (i, j, k) -> RAS
    lps = physical_points(image)
    index = np.array([[0, 0, 0], [39, 0, 0], [0, 35, 5], [17, 9, 3]], dtype=float)
    flat = (index[:, 2] * 36 + index[:, 1]) * 40 + index[:, 0]
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(ras * [-1, -1, 1], lps[flat.astype(int)], atol=1e-4)


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
    point_ras = np.array([10, 20, 30]) + 3 * np.array([0, 0.5, 0]) + 2 * np.array([-0.7, 0, 0]) + 1 * np.array([0, 0, 2.5])
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((3, 2, 1)), point_ras * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.7, 2.5))
    assert slice_axis(image) == 2


def write_dicom_series(image: sitk.Image, folder: Path, modality: str = "CT") -> Path:
    """One file per slice with the tags a scanner writes (orientation, position, UIDs)."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    uid = "1.2.826.0.1.3680043.2.1125.1.{}"
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        tags = {
            "0008|0060": modality, "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": uid.format(1000 + k),
            "0020|000d": uid.format(1), "0020|000e": uid.format(2), "0020|0013": str(k + 1),
            "0020|0037": "\\".join(f"{v:.9f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0018|0050": str(image.GetSpacing()[2]), "0028|1052": "0", "0028|1053": "1",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


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


def test_two_series_in_one_folder_is_refused(tmp_path):
    first = write_dicom_series(oblique_image(size=(8, 8, 2)), tmp_path / "a")
    second = write_dicom_series(oblique_image(size=(8, 8, 2)), tmp_path / "b")
    for path in second.iterdir():  # same files, another series UID
        plane = sitk.ReadImage(str(path))
        plane.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.99")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(first / ("b" + path.name)))
        writer.Execute(plane)
    with pytest.raises(ValueError, match="holds 2 DICOM series"):
        read_volume(first)


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
