"""PSNR, SSIM and RMSE under the AMIR protocol, the one DiffCode and its peers report.

Per 2D slice: CT is clipped to the task's scoring window (-160..240 HU, data range 400) before
scoring; the other tasks use the data range (max - min) of the reference slice. SSIM uses a
Gaussian window (sigma 1.5) without the sample-covariance correction. RMSE stays in the task's
units (HU inside the window for CT). scikit-image does the arithmetic, never hand-written formulas;
it is imported lazily so the Slicer module can load this file without it.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

from .tasks import get_task


class Scores(NamedTuple):
    psnr: float  # dB; inf when the images are identical
    ssim: float
    rmse: float  # task units


def _skimage_metrics():
    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    except ImportError:
        raise ImportError("PSNR/SSIM need scikit-image: install it with `pip install scikit-image`.") from None
    return peak_signal_noise_ratio, structural_similarity


def scoring_pair(restored: np.ndarray, reference: np.ndarray, task: str) -> Tuple[np.ndarray, np.ndarray, float]:
    """(restored, reference, data_range) as scored: float64, CT clipped to its window."""
    restored = np.asarray(restored, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if restored.shape != reference.shape:
        raise ValueError(f"Restored image {restored.shape} and reference {reference.shape} differ in shape.")
    window = get_task(task).eval_window
    if window is not None:
        lo, hi = window
        return np.clip(restored, lo, hi), np.clip(reference, lo, hi), float(hi - lo)
    return restored, reference, float(reference.max() - reference.min())


def slice_scores(restored: np.ndarray, reference: np.ndarray, task: str) -> Scores:
    """Scores of one (H, W) slice against its reference."""
    if np.ndim(reference) != 2:
        raise ValueError(f"slice_scores takes one 2D slice, got shape {np.shape(reference)}; use volume_scores.")
    psnr_fn, ssim_fn = _skimage_metrics()
    restored, reference, data_range = scoring_pair(restored, reference, task)
    if data_range <= 0:
        raise ValueError("The reference slice is constant: PSNR/SSIM need a reference with a data range.")
    mse = float(np.mean((restored - reference) ** 2))
    psnr = float("inf") if mse == 0 else float(psnr_fn(reference, restored, data_range=data_range))
    ssim = float(
        ssim_fn(reference, restored, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range)
    )
    return Scores(psnr, ssim, float(np.sqrt(mse)))


def volume_scores(restored: np.ndarray, reference: np.ndarray, task: str) -> Scores:
    """Mean of the per-slice scores over axis 0 of an (N, H, W) pair (the protocol averages slices).

    For tasks scored on the reference's own data range, constant reference slices (empty slices at
    the edge of a volume) have no range and are left out; an error if nothing is left.
    """
    restored = np.asarray(restored)
    reference = np.asarray(reference)
    if reference.ndim != 3 or restored.shape != reference.shape:
        raise ValueError(f"volume_scores takes two (N, H, W) arrays of one shape, got {restored.shape} and {reference.shape}.")
    fixed_range = get_task(task).eval_window is not None
    kept = [i for i in range(len(reference)) if fixed_range or np.ptp(reference[i]) > 0]
    if not kept:
        raise ValueError("Every reference slice is constant: nothing to score.")
    per_slice = np.array([slice_scores(restored[i], reference[i], task) for i in kept], dtype=np.float64)
    return Scores(*(float(v) for v in per_slice.mean(axis=0)))
