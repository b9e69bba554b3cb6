"""Synthetic (HQ, LQ) training pairs: label map -> geometry -> HQ physics -> the project's degradation.

The LQ side always goes through the existing simulators (``simulate.mri`` k-space truncation,
``simulate.ct.low_dose`` projection-domain noise, ``simulate.pet.simulate_pair`` emission and MLEM),
so a synthetic pair is degraded exactly as the real training and test pairs are; only the HQ
anatomy and contrast are synthetic. Three independent random streams (geometry, HQ, degradation)
come from one seed: the same seed gives the same pair bit for bit, and changing a degradation range
leaves the HQ image of a seed unchanged.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...simulate import ct, mri, pet
from .geometry import Grid, random_geometry
from .intensity import (HU_MIN, HU_MAX, add_head_layers, ct_from_labels, mri_from_labels, pet_activity_from_labels,
                        pet_attenuation_from_labels, resolve_tissues)
from .params import SeedLike, SynthParams, default_params, log_uniform, streams, uniform


def kspace_truncate_axes(image: np.ndarray, factor_rows: float, factor_cols: float) -> np.ndarray:
    """k-space truncation with its own factor per in-plane axis (magnitude, float32, same grid).

    ``simulate.mri`` takes one factor for both axes; truncation is separable, so each axis is cut
    by ``simulate.mri.kspace_lowpass`` applied to the image viewed as a stack of one-pixel-wide
    columns (an axis of length 1 keeps its single sample at any factor). Equal factors give
    ``simulate.mri.kspace_truncate`` to rounding; the band edges follow its Nyquist rule exactly.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"expected an image shaped (..., H, W), got shape {image.shape}")
    if factor_rows == factor_cols:
        return mri.kspace_truncate(image, factor_rows)
    # (..., W, H, 1): the row axis H is cut, the length-1 axis is kept; the result is (..., W, H).
    along_rows = mri.kspace_lowpass(np.swapaxes(image, -1, -2)[..., None], factor_rows)[..., 0]
    # back to (..., H, W, 1): now the column axis W is cut; the result is (..., H, W).
    both = mri.kspace_lowpass(np.swapaxes(along_rows, -1, -2)[..., None], factor_cols)[..., 0]
    return np.abs(both).astype(np.float32)


def _seed_int(rng: np.random.Generator) -> int:
    return int(rng.integers(2 ** 31 - 1))


def synth_pair(task: str, labels: np.ndarray, spacing: Sequence[float], params: Optional[SynthParams] = None,
               seed: SeedLike = None, classes: Optional[Mapping[int, str]] = None,
               brain_only: bool = False, grid: Optional[Grid] = None) -> Tuple[np.ndarray, np.ndarray, Dict[str, object]]:
    """One synthetic training pair (hq, lq, info) of ``task`` from an integer label map.

    labels: 2D (rows, cols) or 3D (axis0, axis1, axis2) label map; spacing: mm per axis.
    params: ranges (``default_params(task)`` if None); ``params.geometry`` None uses ``labels``
    as the slice (2D, square pixels for CT and PET). classes: {label: tissue class} for labels with
    a meaning (:mod:`.tissues`). brain_only: wrap the slice in CSF/skull/scalp (skull-stripped atlases).
    grid: (pixel_mm, (rows, cols)) to use instead of drawing one (slices of one case share a grid).

    - MRI: random contrast, texture, bias, Rician noise; LQ = k-space truncation with a factor
      uniform in ``mri.factor`` ([2, 4]), independent per axis with ``anisotropic_probability``.
      ``info["level"]`` = sqrt(factor_rows x factor_cols).
    - CT: HU per tissue class with texture; LQ = ``ct.low_dose`` at I0 log-uniform in ``ct.i0``
      with 2N views for an N-pixel slice (the padded square) and sigma_e 10, clipped to
      [-1024, 3071] HU as scanners store it (the network's normalisation clips there anyway). ``level`` = I0.
    - PET: activity and mu per tissue class; (HQ, LQ) = ``pet.simulate_pair`` at full counts and
      dose fraction drawn from their ranges, the benchmark's 20 MLEM iterations. ``level`` = dose.
    Returns float32 images in the task's units (MRI a.u., HU, SUV) and a JSON-able ``info``.
    """
    params = params or default_params(task)
    geometry_rng, image_rng, degrade_rng = streams(seed, 3)
    labels = np.asarray(labels)
    classes = dict(classes or {})
    info: Dict[str, object] = {"task": task}
    if params.geometry is not None:
        labels, spacing2d, info["geometry"] = random_geometry(labels, spacing, geometry_rng, params.geometry, grid)
    else:
        if labels.ndim != 2:
            raise ValueError("without geometry parameters the label map must already be a 2D slice")
        values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
        spacing2d = (float(values[0]), float(values[-1]))
    if brain_only:
        labels, extra = add_head_layers(labels, spacing2d, image_rng, params.head_csf_mm, params.head_skull_mm,
                                        params.head_scalp_mm)
        classes.update(extra)
    info["spacing"] = [float(s) for s in spacing2d]
    info["shape"] = [int(s) for s in labels.shape]

    if task == "mri-sr":
        hq = mri_from_labels(labels, spacing2d, params.mri, image_rng, classes, info)
        factor_rows = float(uniform(degrade_rng, params.mri.factor))
        anisotropic = bool(degrade_rng.random() < params.mri.anisotropic_probability)
        factor_cols = float(uniform(degrade_rng, params.mri.factor)) if anisotropic else factor_rows
        lq = kspace_truncate_axes(hq, factor_rows, factor_cols)
        kept = [mri.band_size(n, f) for n, f in zip(hq.shape, (factor_rows, factor_cols))]
        info.update(factor_rows=factor_rows, factor_cols=factor_cols, anisotropic=anisotropic,
                    kspace_kept=kept, level=math.sqrt(factor_rows * factor_cols))
    elif task == "ct-denoise":
        hq = ct_from_labels(labels, spacing2d, params.ct, image_rng, classes, info)
        i0 = float(log_uniform(degrade_rng, params.ct.i0))
        views = params.ct.views_per_pixel * max(hq.shape)
        lq = ct.low_dose(hq, spacing2d, i0, _seed_int(degrade_rng), n_views=views, sigma_e=params.ct.sigma_e)
        lq = np.clip(lq, HU_MIN, HU_MAX)  # as a scanner stores it (12 bits above -1024 HU)
        info.update(i0=i0, views=views, sigma_e=params.ct.sigma_e, level=i0)
    elif task == "pet-synthesis":
        tissues = resolve_tissues(labels, classes, params.pet.tissue_weights, image_rng,
                                  params.pet.max_dense_fraction)
        activity = pet_activity_from_labels(labels, spacing2d, params.pet, image_rng, tissues, info)
        mu = pet_attenuation_from_labels(labels, tissues)
        full_counts = float(log_uniform(degrade_rng, params.pet.full_counts))
        dose = float(log_uniform(degrade_rng, params.pet.dose_fraction))
        psf = float(uniform(degrade_rng, params.pet.psf_fwhm_mm))
        hq, lq = pet.simulate_pair(activity, mu, spacing2d, full_counts, dose, _seed_int(degrade_rng),
                                   iterations=params.pet.iterations, psf_fwhm_mm=psf,
                                   postfilter_sigma_px=params.pet.postfilter_sigma_px)
        info.update(full_counts=full_counts, dose_fraction=dose, psf_fwhm_mm=psf,
                    activity_max=float(activity.max()), level=dose)
    else:
        raise ValueError(f"Unknown task {task!r}: choose mri-sr, ct-denoise or pet-synthesis.")
    return hq.astype(np.float32), lq.astype(np.float32), info
