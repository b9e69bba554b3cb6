"""High-quality images from 2D label maps: MR contrast, CT attenuation (HU), PET activity and mu.

These are the HQ side of a synthetic pair; the LQ side is always made by the project's simulators
(``simulate.mri``, ``simulate.ct``, ``simulate.pet``), never here, so synthetic and real pairs share
one degradation. Each function is a pure function of (labels, spacing, parameters, seed); per-label
draws are made in increasing label order, so the same map and seed give the same image bit for bit.

Labels are non-negative integers. ``classes`` maps labels to tissue classes (:mod:`.tissues`);
labels without one draw a class (CT, PET) or an independent contrast (MRI). Label 0 is air unless
``classes`` says otherwise.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ...simulate import mri
from ...simulate.radon import pixel_size
from .fields import coarse_field, correlated_field, gaussian_blur
from .params import CtParams, MriParams, PetParams, Range, SeedLike, generator, integer, log_uniform, uniform
from .tissues import TISSUES, check_classes

HU_MIN, HU_MAX = -1024.0, 3071.0  # the peers' CT normalisation range (tasks.py)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or min(labels.shape) < 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected a 2D integer label map, got a {labels.ndim}D {labels.dtype} array")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative integers")
    return labels


def present_labels(labels: np.ndarray) -> np.ndarray:
    """The label values that occur, in increasing order."""
    return np.flatnonzero(np.bincount(labels.ravel()))


def _lookup(labels: np.ndarray, present: np.ndarray, values: Sequence[float]) -> np.ndarray:
    table = np.zeros(int(present.max()) + 1, dtype=np.float32)
    table[present] = values
    return table[labels]


DENSE = ("bone", "marrow", "calcification")


def resolve_tissues(labels: np.ndarray, classes: Optional[Mapping[int, str]], weights: Mapping[str, float],
                    seed: SeedLike, max_dense_fraction: float = 1.0) -> Dict[int, str]:
    """A tissue class for every label present: ``classes`` where given, air for label 0, else drawn
    from ``weights`` (in increasing label order). A drawn label covering more than
    ``max_dense_fraction`` of the slice is never bone, marrow or calcification: bones are small
    structures in a slice, and a random label map with bone over a third of a 40 cm body would be
    photon-starved at any dose."""
    rng = generator(seed)
    labels = _check_labels(labels)
    classes = dict(classes or {})
    check_classes(classes)
    check_classes({index: name for index, name in enumerate(weights)})
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    p = p / p.sum()
    light = np.array([0.0 if n in DENSE else w for n, w in zip(names, p)])
    light = light / light.sum() if light.sum() > 0 else p
    counts = np.bincount(labels.ravel())
    out = {}
    for label in np.flatnonzero(counts).tolist():
        if label in classes:
            out[label] = classes[label]
        elif label == 0:
            out[label] = "air"
        else:
            large = counts[label] > max_dense_fraction * labels.size
            out[label] = names[int(rng.choice(len(names), p=light if large else p))]
    return out


def _texture(shape: Tuple[int, int], pixel: float, fine_mm: Range, coarse_mm: Range,
             rng: np.random.Generator) -> np.ndarray:
    """Unit-variance within-label texture: a random mix of a fine and a coarse correlated field."""
    fine = correlated_field(shape, float(uniform(rng, fine_mm)) / pixel, rng)
    coarse = correlated_field(shape, float(uniform(rng, coarse_mm)) / pixel, rng)
    weight = float(rng.random())
    return math.sqrt(weight) * fine + math.sqrt(1.0 - weight) * coarse


def mri_from_labels(labels: np.ndarray, spacing, params: Optional[MriParams] = None, seed: SeedLike = None,
                    classes: Optional[Mapping[int, str]] = None, info: Optional[dict] = None) -> np.ndarray:
    """A high-quality MR image (float32, >= 0, a.u.) of random contrast from a 2D label map.

    Steps (SynthSR): a random mean per label (labels of one tissue class share one up to
    ``class_jitter``), within-label texture, partial-volume blur, a smooth multiplicative bias field,
    a gamma change of contrast, scaling to a random a.u. range, and Rician noise at a random SNR
    (the reference keeps realistic noise, lessons.md). ``info``, if given, receives the draws.
    """
    params = params or MriParams()
    labels = _check_labels(labels)
    pixel = float(np.mean(np.atleast_1d(np.asarray(spacing, dtype=np.float64))))
    rng = generator(seed)
    classes = dict(classes or {})
    present = present_labels(labels)
    class_means: Dict[str, Tuple[float, float]] = {}  # tissue class -> (mean, relative jitter)
    means = []
    for label in present.tolist():
        tissue = classes.get(label)
        if tissue is None:
            means.append(float(rng.random()))
            continue
        if tissue not in class_means:
            class_means[tissue] = (float(rng.random()), float(uniform(rng, params.class_jitter)))
        mean, jitter = class_means[tissue]
        means.append(max(0.0, mean * (1.0 + jitter * float(rng.standard_normal()))))
    # Air (label 0 without a class, and labels of class "air") gives no MR signal: dark in most images.
    air = np.array([(label == 0 and 0 not in classes) or classes.get(label) == "air" for label in present.tolist()])
    dark_background = bool(air.any() and rng.random() < params.background_dark_probability)
    texture = uniform(rng, params.texture, len(present))
    if dark_background:
        for index in np.flatnonzero(air):
            means[index] = float(uniform(rng, (0.0, 0.03)))
            texture[index] = 0.0
    image = _lookup(labels, present, means) + _lookup(labels, present, texture) * _texture(
        labels.shape, pixel, params.texture_fine_mm, params.texture_coarse_mm, rng)
    blur = float(uniform(rng, params.partial_volume_px))
    image = np.clip(gaussian_blur(image, blur), 0.0, None)
    bias = float(uniform(rng, params.bias))
    bias_scale = float(uniform(rng, params.bias_scale))
    image = image * np.exp(bias * coarse_field(labels.shape, 1.0 / bias_scale, rng))
    gamma = float(log_uniform(rng, params.gamma))
    scale = float(log_uniform(rng, params.scale))
    top = float(np.percentile(image, 99.5))
    top = top if top > 0 else 1.0
    image = (image / top) ** gamma * scale
    snr = float(log_uniform(rng, params.snr))
    try:
        sigma = mri.rician_sigma_for_snr(image, snr)
    except ValueError:  # an (almost) empty slice: noise relative to the scale
        sigma = scale / snr
    keep_background_noise = not dark_background or rng.random() < params.background_noise_probability
    noisy = mri.add_rician_noise(image, sigma, rng)
    if not keep_background_noise:  # processed scans and templates have a zeroed background
        obj = ndimage.binary_dilation(~air[np.searchsorted(present, labels)], iterations=2)
        noisy = np.where(obj, noisy, 0.0)
    if info is not None:
        info.update(mri_blur_px=blur, mri_bias=bias, mri_gamma=gamma, mri_scale=scale, mri_snr=snr,
                    mri_sigma=float(sigma), mri_dark_background=dark_background,
                    mri_background_noise=bool(keep_background_noise), labels=int(len(present)))
    return noisy.astype(np.float32)


def _ct_like_noise(shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with CT's ramp-shaped spectrum (|f| with a Gaussian roll-off): the
    texture of a full-dose reconstruction, far cheaper than a second projection-domain simulation."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    radius = np.hypot(fy, fx)
    cutoff = float(uniform(rng, (0.2, 0.45)))
    field = np.fft.irfft2(np.fft.rfft2(noise) * radius * np.exp(-(radius / cutoff) ** 2), s=shape)
    field -= field.mean()
    return (field / max(float(field.std()), 1e-12)).astype(np.float32)


def ct_from_labels(labels: np.ndarray, spacing, params: Optional[CtParams] = None, seed: SeedLike = None,
                   classes: Optional[Mapping[int, str]] = None, info: Optional[dict] = None) -> np.ndarray:
    """A full-dose CT slice (float32 HU in [-1024, 3071]) from a 2D label map.

    Each label's tissue class (given, air for 0, or drawn from ``tissue_weights``) sets its mean HU
    and texture std (:data:`.tissues.TISSUES`); then partial-volume blur and, in the reference
    itself, correlated noise of a few HU as real full-dose scans have.
    """
    params = params or CtParams()
    labels = _check_labels(labels)
    pixel = float(np.mean(np.atleast_1d(np.asarray(spacing, dtype=np.float64))))
    rng = generator(seed)
    tissues = resolve_tissues(labels, classes, params.tissue_weights, rng, params.max_dense_fraction)
    present = present_labels(labels)
    means = [float(uniform(rng, TISSUES[tissues[label]].hu)) for label in present.tolist()]
    texture = [float(uniform(rng, TISSUES[tissues[label]].texture_hu)) for label in present.tolist()]
    image = _lookup(labels, present, means) + _lookup(labels, present, texture) * _texture(
        labels.shape, pixel, params.texture_fine_mm, params.texture_coarse_mm, rng)
    blur = float(uniform(rng, params.partial_volume_px))
    image = gaussian_blur(image, blur)
    noise_hu = float(uniform(rng, params.reference_noise_hu))
    image = image + noise_hu * _ct_like_noise(labels.shape, rng)
    if info is not None:
        info.update(ct_blur_px=blur, ct_reference_noise_hu=noise_hu, labels=int(len(present)),
                    tissues={str(k): v for k, v in tissues.items()})
    return np.clip(image, HU_MIN, HU_MAX).astype(np.float32)


def pet_activity_from_labels(labels: np.ndarray, spacing, params: Optional[PetParams] = None,
                             seed: SeedLike = None, classes: Optional[Mapping[int, str]] = None,
                             info: Optional[dict] = None) -> np.ndarray:
    """FDG-like activity (float32, SUV-like, >= 0) from a 2D label map: an uptake per organ or label
    (brain, heart, liver, kidneys, bladder, ... from :data:`.tissues.TISSUES`), a smooth regional
    variation within labels (as ``simulate.pet`` does for the brain), and hot lesions in the body.
    Pass ``classes`` fully resolved (``resolve_tissues``) to get the matching attenuation map from
    ``pet_attenuation_from_labels``.
    """
    params = params or PetParams()
    labels = _check_labels(labels)
    pixel = pixel_size(spacing)
    rng = generator(seed)
    tissues = resolve_tissues(labels, classes, params.tissue_weights, rng, params.max_dense_fraction)
    present = present_labels(labels)
    uptake = [float(uniform(rng, TISSUES[tissues[label]].suv)) for label in present.tolist()]
    activity = _lookup(labels, present, uptake)
    variation = correlated_field(labels.shape, 15.0 / pixel, rng)
    activity = activity * np.exp(params.regional_variation * variation)
    body = _lookup(labels, present, [TISSUES[tissues[label]].mu_511 > 0 for label in present.tolist()]) > 0
    inside = np.flatnonzero(body)
    rows, cols = np.ogrid[:labels.shape[0], :labels.shape[1]]
    lesions = []
    for _ in range(integer(rng, params.lesions) if inside.size else 0):
        row, col = np.unravel_index(inside[int(rng.integers(inside.size))], labels.shape)
        radius = float(uniform(rng, params.lesion_radius_mm))
        extra = float(uniform(rng, params.lesion_suv))
        distance = np.hypot((rows - row) * pixel, (cols - col) * pixel)
        profile = 1.0 / (1.0 + np.exp(np.clip((distance - radius) / (0.3 * pixel), -50, 50)))
        activity = activity + extra * profile * body
        lesions.append({"row": int(row), "col": int(col), "radius_mm": radius, "suv": extra})
    if info is not None:
        info.update(pet_lesions=lesions, labels=int(len(present)), tissues={str(k): v for k, v in tissues.items()})
    return np.clip(activity, 0.0, None).astype(np.float32)


def pet_attenuation_from_labels(labels: np.ndarray, tissues: Mapping[int, str]) -> np.ndarray:
    """511 keV attenuation (1/mm, float32) of each label's tissue class (every label must have one)."""
    labels = _check_labels(labels)
    present = present_labels(labels)
    missing = [label for label in present.tolist() if label not in tissues]
    if missing:
        raise ValueError(f"labels {missing[:5]} have no tissue class; resolve them with resolve_tissues first")
    check_classes(tissues)
    return _lookup(labels, present, [TISSUES[tissues[label]].mu_511 for label in present.tolist()])


def add_head_layers(labels: np.ndarray, spacing, seed: SeedLike, csf_mm: Range = (0.5, 3.0),
                    skull_mm: Range = (4.0, 9.0), scalp_mm: Range = (3.0, 9.0)) -> Tuple[np.ndarray, Dict[int, str]]:
    """Wrap a brain-only 2D label map (skull-stripped atlases) in CSF, skull (with diploe) and scalp
    rims of random thickness, as new labels; returns (labels, {new label: tissue class}).

    Why: without them a CT slice of an atlas is a brain floating in air, and a PET slice lacks the
    skull's attenuation (``simulate.pet.attenuation_from_tissues`` adds the same rims for the same reason).
    """
    labels = _check_labels(labels)
    rng = generator(seed)
    pixel = float(np.mean(np.atleast_1d(np.asarray(spacing, dtype=np.float64))))
    brain = labels != 0
    if not brain.any():
        return labels, {}
    distance = ndimage.distance_transform_edt(~brain) * pixel
    csf = float(uniform(rng, csf_mm))
    skull = csf + float(uniform(rng, skull_mm))
    scalp = skull + float(uniform(rng, scalp_mm))
    diploe = rng.random() < 0.5
    first = int(labels.max()) + 1
    out = labels.astype(np.int32, copy=True)
    out[(distance > 0) & (distance <= csf)] = first
    out[(distance > csf) & (distance <= skull)] = first + 1
    if diploe:
        third = (skull - csf) / 3
        out[(distance > csf + third) & (distance <= skull - third)] = first + 3
    out[(distance > skull) & (distance <= scalp)] = first + 2
    classes = {first: "fluid", first + 1: "bone", first + 2: "soft_tissue"}
    if diploe:
        classes[first + 3] = "marrow"
    return out, classes
