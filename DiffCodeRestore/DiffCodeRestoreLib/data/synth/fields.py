"""Random fields shared by the shape, texture, bias and deformation generators.

Two kinds, chosen for speed at 512 x 512 (the engine must feed training on the fly):
- ``correlated_field``: Gaussian-correlated noise made in the Fourier domain (one FFT pair,
  ~10 ms at 512^2 whatever the correlation length; a spatial Gaussian filter of sigma 30 px costs
  ten times more). It is periodic, which is harmless for texture and shapes.
- ``coarse_field``: a few control values upsampled by cubic splines: non-periodic and very smooth,
  for bias fields and elastic displacements whose scale is a good part of the field of view.
Both return float32 fields of zero mean and unit standard deviation.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from scipy import ndimage


def _standardise(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    return (field / max(float(field.std()), 1e-12)).astype(np.float32)


def correlated_field(shape: Tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with a Gaussian autocorrelation of ``sigma_px`` pixels (white below 0.3)."""
    noise = rng.standard_normal(shape)
    if sigma_px < 0.3:
        return _standardise(noise)
    spectrum = np.fft.rfft2(noise)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    spectrum *= np.exp(-2.0 * math.pi ** 2 * sigma_px ** 2 * (fy ** 2 + fx ** 2))
    return _standardise(np.fft.irfft2(spectrum, s=shape))


def coarse_field(shape: Tuple[int, int], cells: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance smooth field: normal values on a grid of about ``cells`` cells across the
    larger side (at least 1), cubic-spline interpolated to ``shape``; not periodic."""
    cells = max(1.0, float(cells))
    side = max(shape)
    nodes = tuple(max(2, int(math.ceil(cells * n / side)) + 1) for n in shape)
    values = rng.standard_normal(nodes)
    if min(nodes) < 4:  # cubic splines need 4 nodes: pad the control grid by linear upsampling
        values = ndimage.zoom(values, [max(1.0, 4 / n) for n in nodes], order=1, mode="nearest")
        nodes = values.shape
    coords = [np.linspace(0, n - 1, s, dtype=np.float32) for n, s in zip(nodes, shape)]
    grid = np.meshgrid(*coords, indexing="ij")
    return _standardise(ndimage.map_coordinates(values, grid, order=3, mode="nearest"))


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (nearest-edge padding); sigma 0 returns the image unchanged."""
    if sigma_px <= 0:
        return image
    return ndimage.gaussian_filter(image, sigma_px, mode="nearest", truncate=3.0)
