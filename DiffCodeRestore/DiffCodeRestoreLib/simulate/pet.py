"""Low-dose / full-dose PET pairs by emission simulation and matched MLEM reconstruction.

Physics (per 2D slice, parallel-beam sinograms):
- FDG-like activity from tissue probability maps: grey matter ~4x white matter, CSF near zero,
  regional variation (per atlas region, or a smooth random field) and a few small hot lesions,
  in SUV-like units.
- Attenuation at 511 keV: soft tissue 0.0096 /mm, a skull-like rim 0.0151 /mm around the brain.
- Data: Gaussian scanner PSF, forward projection, attenuation factors exp(-integral of mu);
  Poisson counts scaled so that a slice has ``full_counts`` true counts at full dose. The low-dose
  data are a binomial thinning of the same counts (as list-mode subsampling of a real scan gives), so
  both are Poisson and share the acquisition.
- Reconstruction: the same MLEM (attenuation in the system model, no PSF model; positivity from the
  multiplicative update) and Gaussian post-filter for both, then divided by the known count scale, so
  both images are calibrated to the activity's units. HQ is itself noisy, like real full-dose PET.
Randoms and scatter are not modelled.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import radon

SUV_GREY = 8.0
SUV_WHITE = 2.0
SUV_CSF = 0.1
MU_TISSUE_PER_MM = 0.0096
MU_BONE_PER_MM = 0.0151
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _stack(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3) or min(image.shape[-2:]) < 2:
        raise ValueError(f"{name} must be a slice (H, W) or slices (N, H, W), got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return image.reshape((-1,) + image.shape[-2:])


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) with zero padding (activity outside the field is zero)."""
    if sigma_px <= 0:
        return images
    radius = max(1, int(math.ceil(3 * sigma_px)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    x = images[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1))
    return x[:, 0]


def _dilate(mask: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Binary dilation of (N, H, W) by a disc of ``radius_px``."""
    r = int(math.ceil(radius_px))
    if r < 1:
        return mask > 0
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    disc = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius_px ** 2 + 1e-6).float()
    hits = F.conv2d(F.pad((mask > 0).float()[:, None], (r, r, r, r)), disc[None, None])
    return hits[:, 0] > 0.5


def activity_from_tissues(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray, spacing_mm: radon.Spacing,
                          seed: Optional[int], regions: Optional[np.ndarray] = None,
                          lesions: int = 3) -> np.ndarray:
    """FDG-like activity (SUV-like, float32) from grey/white-matter probabilities and a brain mask.

    gm, wm: probabilities in [0, 1]; mask: brain mask; all (H, W) or (N, H, W) slices.
    Uptake GM 8, WM 2, CSF (the rest of the mask) 0.1. Regional variation: one factor per atlas
    label of ``regions`` (log-normal, 10 %), else a smooth random field (~15 mm, 10 %). ``lesions``
    hot spots per slice (radius 2.5-6 mm, +4..+10 SUV) inside the brain.
    """
    gm_s, wm_s, mask_s = _stack(gm, "gm"), _stack(wm, "wm"), _stack(mask, "mask")
    if not (gm_s.shape == wm_s.shape == mask_s.shape):
        raise ValueError(f"gm, wm and mask must have one shape, got {gm.shape}, {wm.shape}, {mask.shape}")
    if lesions < 0:
        raise ValueError(f"lesions must be >= 0, got {lesions}")
    pixel_mm = radon.pixel_size(spacing_mm)
    rng = np.random.default_rng(seed)
    brain = mask_s > 0.5
    grey, white = np.clip(gm_s, 0, 1), np.clip(wm_s, 0, 1)
    csf = np.clip(1.0 - grey - white, 0, 1)
    activity = (SUV_GREY * grey + SUV_WHITE * white + SUV_CSF * csf) * brain
    if regions is not None:
        labels = np.asarray(regions).reshape(activity.shape).astype(np.int64)
        unique, inverse = np.unique(labels, return_inverse=True)
        factors = np.exp(rng.normal(0.0, 0.1, len(unique)))
        variation = factors[inverse].reshape(activity.shape)
    else:
        noise = torch.from_numpy(rng.normal(size=activity.shape).astype(np.float32))
        field = gaussian_blur(noise, 15.0 / pixel_mm).numpy()
        field /= max(float(field.std()), 1e-12)
        variation = np.exp(0.1 * field)
    activity = activity * variation
    rows, cols = np.mgrid[: activity.shape[1], : activity.shape[2]] * pixel_mm
    for index in range(activity.shape[0]):
        inside = np.flatnonzero(brain[index] & (grey[index] + white[index] > 0.5))
        for _ in range(lesions if inside.size else 0):
            row, col = np.unravel_index(rng.choice(inside), brain[index].shape)
            radius = rng.uniform(2.5, 6.0)
            distance = np.hypot(rows - row * pixel_mm, cols - col * pixel_mm)
            profile = 1.0 / (1.0 + np.exp((distance - radius) / (0.3 * pixel_mm)))  # soft-edged disc
            activity[index] += rng.uniform(4.0, 10.0) * profile * brain[index]
    return activity.reshape(np.shape(gm)).astype(np.float32)


def attenuation_from_tissues(mask: np.ndarray, spacing_mm: radon.Spacing, skull_mm: float = 6.0,
                             scalp_mm: float = 4.0) -> np.ndarray:
    """511 keV attenuation map (1/mm, float32): tissue 0.0096 inside the brain ``mask`` and a scalp
    of ``scalp_mm``; a skull rim of ``skull_mm`` (0.0151) between brain and scalp (0 disables)."""
    if skull_mm < 0 or scalp_mm < 0:
        raise ValueError(f"skull_mm and scalp_mm must be >= 0, got {skull_mm}, {scalp_mm}")
    pixel_mm = radon.pixel_size(spacing_mm)
    brain = torch.from_numpy(_stack(mask, "mask") > 0.5)
    skull = _dilate(brain, skull_mm / pixel_mm)
    head = _dilate(skull, scalp_mm / pixel_mm)
    mu = torch.where(head, MU_TISSUE_PER_MM, 0.0)
    mu = torch.where(skull & ~brain, MU_BONE_PER_MM, mu)
    return mu.numpy().reshape(np.shape(mask)).astype(np.float32)


def mlem(counts: torch.Tensor, attenuation: torch.Tensor, angles: torch.Tensor, size: int, pixel_mm: float,
         iterations: int) -> torch.Tensor:
    """MLEM for y ~ Poisson(a * P x) with attenuation factors a (N, views, bins) and projector P."""
    sensitivity = radon.backproject(attenuation, angles, size, pixel_mm).clamp_min(1e-12)
    total = counts.sum(dim=(1, 2)) / sensitivity.sum(dim=(1, 2)).clamp_min(1e-12)
    estimate = torch.ones_like(sensitivity) * total[:, None, None]
    for _ in range(iterations):
        expected = attenuation * radon.forward(estimate, angles, pixel_mm)
        ratio = torch.where(expected > 0, counts / expected.clamp_min(1e-12), torch.zeros_like(expected))
        estimate = estimate * radon.backproject(attenuation * ratio, angles, size, pixel_mm) / sensitivity
    return estimate


def simulate_pair(activity: np.ndarray, mu: np.ndarray, spacing_mm: radon.Spacing, full_counts: float,
                  dose_fraction: float, seed: Optional[int], iterations: int = 20, psf_fwhm_mm: float = 4.5,
                  postfilter_sigma_px: float = 1.0, n_views: Optional[int] = None,
                  noise_free: bool = False) -> Tuple[np.ndarray, ...]:
    """(HQ, LQ) reconstructions (float32, same shape and units as ``activity``); with ``noise_free``
    also the same reconstruction of the expected (noiseless) full-dose counts, third: what HQ would be
    without counting noise, the ceiling of any restoration scored against HQ.

    activity: SUV-like (H, W) or (N, H, W); mu: 1/mm, same shape; spacing_mm: square pixels.
    full_counts: true counts per slice at full dose (headline 3e6 for a 2 mm brain slice).
    dose_fraction: in (0, 1], share of the counts kept for LQ (headline 1/12).
    iterations: MLEM iterations for both; psf_fwhm_mm: scanner resolution; postfilter_sigma_px:
    Gaussian post-filter; n_views: views over 180 degrees (default: the padded square size rounded up to a multiple of 4,
    which lets one rotation serve four views).
    Empty slices give zeros.
    """
    if not (math.isfinite(full_counts) and full_counts > 0):
        raise ValueError(f"full_counts must be a positive number of counts per slice, got {full_counts}")
    if not (math.isfinite(dose_fraction) and 0 < dose_fraction <= 1):
        raise ValueError(f"dose_fraction must be in (0, 1] (e.g. 1/12), got {dose_fraction}")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations}")
    if psf_fwhm_mm < 0 or postfilter_sigma_px < 0:
        raise ValueError(f"psf_fwhm_mm and postfilter_sigma_px must be >= 0, got {psf_fwhm_mm}, {postfilter_sigma_px}")
    pixel_mm = radon.pixel_size(spacing_mm)
    source, attenuating = _stack(activity, "activity"), _stack(mu, "mu")
    if source.shape != attenuating.shape:
        raise ValueError(f"activity and mu must have one shape, got {np.shape(activity)} and {np.shape(mu)}")
    if np.any(source < 0) or np.any(attenuating < 0):
        raise ValueError("activity and mu must be non-negative")
    padded, window = radon.pad_square(source, 0.0)
    padded_mu, _ = radon.pad_square(attenuating, 0.0)
    size = padded.shape[-1]
    angles = radon.parallel_angles(4 * math.ceil(size / 4) if n_views is None else int(n_views))
    rng = np.random.default_rng(seed)

    blurred = gaussian_blur(torch.from_numpy(padded), psf_fwhm_mm / FWHM_PER_SIGMA / pixel_mm)
    attenuation = torch.exp(-radon.forward(torch.from_numpy(padded_mu), angles, pixel_mm))
    ideal = (attenuation * radon.forward(blurred, angles, pixel_mm)).clamp_min(0).double().numpy()
    totals = ideal.sum(axis=(1, 2))
    scale = np.where(totals > 0, full_counts / np.where(totals > 0, totals, 1.0), 0.0)
    full = rng.poisson(ideal * scale[:, None, None])
    low = rng.binomial(full, dose_fraction)

    images = []
    reconstructions = [(full, 1.0), (low, dose_fraction)]
    if noise_free:
        reconstructions.append((ideal * scale[:, None, None], 1.0))
    for counts, fraction in reconstructions:
        estimate = mlem(torch.from_numpy(counts).float(), attenuation, angles, size, pixel_mm, int(iterations))
        filtered = gaussian_blur(estimate, postfilter_sigma_px).double().numpy()
        calibration = np.where(scale > 0, 1.0 / (np.where(scale > 0, scale, 1.0) * fraction), 0.0)
        image = (filtered * calibration[:, None, None])[(Ellipsis,) + window]
        images.append(image.reshape(np.shape(activity)).astype(np.float32))
    return tuple(images)
