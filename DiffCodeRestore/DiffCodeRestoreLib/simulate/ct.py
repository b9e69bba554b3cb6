"""Low-dose CT by projection-domain noise insertion (the standard reduced-dose simulation).

Physics: HU -> linear attenuation mu = mu_water (1 + HU/1000) (mu_water = 0.0192 /mm at ~70 keV
effective, air and below clipped to 0) -> parallel-beam line integrals p (pixel size in mm) ->
transmitted counts Poisson(I0 exp(-p)) plus Gaussian electronic noise (sigma_e counts) -> clamped to
``MIN_COUNTS`` (photon starvation) -> -log(counts / I0). Only the noise is reconstructed: the
difference to the clean sinogram goes through filtered back-projection and is added, in HU, to the
full-dose image, so the anatomy is untouched and the added noise has CT's texture: spatially
correlated (ramp-filtered), stronger behind dense and wide anatomy, with streaks.

I0 (incident photons per detector ray, the dose parameter) sets the noise: its std scales as
1/sqrt(I0). Parallel beam over 180 degrees with 2N views for an N x N slice by default.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from . import radon

MU_WATER_PER_MM = 0.0192
MIN_COUNTS = 1.0  # counts floor before the log: the scanner's photon-starvation clamp
AIR_HU = -1024.0
BATCH_PIXELS = 1 << 21  # slices per projector call = max(1, BATCH_PIXELS // (H*W)): bounds memory


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """Linear attenuation (1/mm) from HU; values below air clipped to 0."""
    return np.clip(MU_WATER_PER_MM * (1.0 + np.asarray(hu, dtype=np.float32) / 1000.0), 0.0, None)


def noise_sinogram(clean: torch.Tensor, i0: float, sigma_e: float, rng: np.random.Generator) -> torch.Tensor:
    """Log-domain noise (noisy - clean line integrals) of a transmission scan at I0 photons per ray."""
    expected = i0 * np.exp(-clean.double().numpy())
    counts = rng.poisson(expected).astype(np.float64)
    if sigma_e > 0:
        counts += rng.normal(0.0, sigma_e, counts.shape)
    noisy = -np.log(np.maximum(counts, MIN_COUNTS) / i0)
    return torch.from_numpy(noisy - clean.double().numpy()).float()


def low_dose(hu: np.ndarray, spacing_mm: radon.Spacing, i0: float, seed: Optional[int],
             n_views: Optional[int] = None, sigma_e: float = 10.0, window: str = "ramp") -> np.ndarray:
    """Simulated low-dose version of full-dose CT ``hu`` ((H, W) or (N, H, W), HU) -> same shape, HU.

    i0: incident photons per ray (5e4 is the benchmark's headline; lower = noisier).
    spacing_mm: square pixel size (scalar or (row, col)). seed: integer for a reproducible realisation.
    n_views: views over 180 degrees (default 2 x the padded square size).
    sigma_e: electronic noise std in counts. window: FBP filter apodisation (``radon.WINDOWS``).
    Non-square slices are padded with air to a square and cropped back.
    """
    if not (isinstance(i0, (int, float, np.floating, np.integer)) and math.isfinite(i0) and i0 > 0):
        raise ValueError(f"i0 (incident photons per ray) must be a positive number, got {i0}")
    if not (math.isfinite(sigma_e) and sigma_e >= 0):
        raise ValueError(f"sigma_e (electronic noise, counts) must be >= 0, got {sigma_e}")
    pixel_mm = radon.pixel_size(spacing_mm)
    hu = np.asarray(hu)
    if hu.ndim not in (2, 3) or min(hu.shape[-2:]) < 2:
        raise ValueError(f"expected a CT slice (H, W) or slices (N, H, W), got shape {hu.shape}")
    if not np.all(np.isfinite(hu)):
        raise ValueError("CT image contains NaN or infinite values")
    stack = hu.reshape((-1,) + hu.shape[-2:]).astype(np.float32)
    padded, window_in_square = radon.pad_square(stack, AIR_HU)
    size = padded.shape[-1]
    views = 2 * size if n_views is None else int(n_views)
    angles = radon.parallel_angles(views)
    rng = np.random.default_rng(seed)
    per_call = max(1, BATCH_PIXELS // (size * size))
    noise = np.empty_like(padded)
    for start in range(0, len(padded), per_call):
        mu = torch.from_numpy(hu_to_mu(padded[start:start + per_call]))
        clean = radon.forward(mu, angles, pixel_mm)
        noise_mu = radon.fbp(noise_sinogram(clean, float(i0), float(sigma_e), rng), angles, size, pixel_mm, window)
        noise[start:start + per_call] = noise_mu.numpy() * (1000.0 / MU_WATER_PER_MM)
    result = stack + noise[(Ellipsis,) + window_in_square]
    return result.reshape(hu.shape).astype(np.float32)
