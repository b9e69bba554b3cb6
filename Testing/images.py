"""Test images without torch: an oblique, anisotropic volume, its voxel centres, grid comparison, and
DICOM series written the way a scanner writes them. Shared by the main suite and the Python 3.9 step
(Testing/py39), which must not import torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

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


def write_dicom_series(image: sitk.Image, folder: Path, modality: str = "CT", series: int = 2) -> Path:
    """One file per slice (``s<series>-slice<k>.dcm``) with the tags a scanner writes (orientation,
    position, UIDs); ``series`` numbers the series UID, so two calls can share a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    uid = "1.2.826.0.1.3680043.2.1125.1.{}"
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        tags = {
            "0008|0060": modality, "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": uid.format(1000 * series + k), "0020|000d": uid.format(1), "0020|000e": uid.format(series),
            "0020|0013": str(k + 1), "0020|0037": "\\".join(f"{v:.9f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0018|0050": str(image.GetSpacing()[2]), "0028|1052": "0", "0028|1053": "1",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{series}-slice{k:03d}.dcm"))
        writer.Execute(plane)
    return folder
