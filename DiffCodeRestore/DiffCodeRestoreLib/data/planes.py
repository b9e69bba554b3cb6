"""2D slices out of LPS volumes: plane extraction, resampling to a pixel size, cropping, choosing slices.

The dataset builder draws training slices over a range of pixel sizes and fields of view (a network
trained on one grid over-smooths on another), and test slices spread through the anatomy.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from skimage.transform import resize

Spacing2D = Tuple[float, float]
PLANES = ("axial", "coronal", "sagittal")


def plane_stack(volume: sitk.Image, plane: str = "axial") -> Tuple[np.ndarray, Spacing2D]:
    """All slices of ``plane`` as (n, rows, cols) with (row, col) spacing in mm, radiological display.

    ``volume`` is in LPS (as :func:`.volumes.load_volume` returns it); a 2D image is one axial slice.
    Coronal and sagittal slices have the head at the top; sagittal slices have anterior on the left.
    """
    array = sitk.GetArrayFromImage(volume)
    spacing = volume.GetSpacing()
    if array.ndim == 2:
        return array[None], (spacing[1], spacing[0])
    sx, sy, sz = spacing
    if plane == "axial":
        return array, (sy, sx)
    if plane == "coronal":
        return np.ascontiguousarray(array.transpose(1, 0, 2)[:, ::-1, :]), (sz, sx)
    if plane == "sagittal":
        return np.ascontiguousarray(array.transpose(2, 0, 1)[:, ::-1, :]), (sz, sy)
    raise ValueError(f"Unknown plane {plane!r}: choose one of {', '.join(PLANES)}.")


def resample(images: np.ndarray, spacing: Spacing2D, pixel_mm: float, order: int = 1) -> Tuple[np.ndarray, Spacing2D]:
    """Resample (n, rows, cols) onto square pixels of about ``pixel_mm``; anti-aliased when shrinking.

    Returns the images (float32) and their exact (row, col) spacing (the extent is preserved, so the
    pixel size differs from ``pixel_mm`` by the rounding of the new matrix size). ``order`` 0 keeps
    label values.
    """
    rows, cols = images.shape[-2:]
    shape = (max(1, round(rows * spacing[0] / pixel_mm)), max(1, round(cols * spacing[1] / pixel_mm)))
    exact = (rows * spacing[0] / shape[0], cols * spacing[1] / shape[1])
    if shape == (rows, cols):
        return images.astype(np.float32), exact
    shrink = order > 0 and (shape[0] < rows or shape[1] < cols)
    out = np.stack([resize(image.astype(np.float32), shape, order=order, mode="edge", preserve_range=True,
                           anti_aliasing=shrink) for image in images])
    return out.astype(np.float32), exact


def window(images: np.ndarray, shape: Tuple[int, int], centre: Tuple[float, float], fill: float) -> np.ndarray:
    """Crop (n, rows, cols) to ``shape`` around ``centre`` (row, col), padding with ``fill`` beyond the edge."""
    out = np.full(images.shape[:-2] + tuple(shape), fill, dtype=np.float32)
    rows, cols = images.shape[-2:]
    top = int(round(centre[0] - shape[0] / 2))
    left = int(round(centre[1] - shape[1] / 2))
    src_r = slice(max(top, 0), min(top + shape[0], rows))
    src_c = slice(max(left, 0), min(left + shape[1], cols))
    dst_r = slice(src_r.start - top, src_r.stop - top)
    dst_c = slice(src_c.start - left, src_c.stop - left)
    out[..., dst_r, dst_c] = images[..., src_r, src_c]
    return out


def centroid(mask: np.ndarray) -> Tuple[float, float]:
    """Mean (row, col) of a 2D mask (the image centre when empty)."""
    points = np.argwhere(mask)
    if points.size == 0:
        return (mask.shape[0] - 1) / 2, (mask.shape[1] - 1) / 2
    return float(points[:, 0].mean()), float(points[:, 1].mean())


def occupied(foreground: np.ndarray, keep: float = 0.5) -> np.ndarray:
    """Indices of slices whose foreground area is at least ``keep`` times the largest one's.

    Skips the near-empty ends of a volume (vertex, neck, first and last chest slices).
    """
    area = foreground.reshape(len(foreground), -1).sum(axis=1)
    return np.flatnonzero(area >= keep * area.max())


def spread(indices: Sequence[int], count: Optional[int]) -> np.ndarray:
    """``count`` indices evenly spread over ``indices``, the middle of each of ``count`` equal runs
    (all of them if ``count`` is None or larger; the middle one for a count of 1)."""
    indices = np.asarray(indices)
    if count is None or count >= len(indices):
        return indices
    return indices[((np.arange(count) + 0.5) * len(indices) / count).astype(int)]
