"""The parameter ranges of the synthetic-image engine, as data.

Every random quantity the engine draws has its range here, in physical units, with the reason for
the range beside it, so a training run can record exactly what it trained on (``asdict``) and a
later session can widen or narrow one range without reading the code. Ranges are ``(low, high)``;
the docstring of each field says whether it is drawn uniformly or log-uniformly (scale-like
quantities: pixel size, SNR, dose, counts), and the tests check that draws stay inside.

The defaults follow ``evaluation.md`` (the degradations the benchmark scores) widened as
``lessons.md`` asks: a network trained on one grid, one contrast or one dose over-smooths on another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy as np

Range = Tuple[float, float]
SeedLike = Union[int, np.integer, np.random.Generator, np.random.SeedSequence, None]

TASK_NAMES = ("mri-sr", "ct-denoise", "pet-synthesis")


@dataclass(frozen=True)
class GeometryParams:
    """Where the 2D slice comes from and on which grid it lands (``random_geometry``).

    pixel_mm: square pixel size, log-uniform (0.3 mm: high-resolution MRI and CT of small parts;
        3 mm: thick-pixel body MRI, low-resolution CT reformats).
    matrix: rows of the slice, log-uniform within what ``fov_mm`` allows at the drawn pixel size.
    fov_mm: the field of view (pixel x matrix) stays inside this range, as on real scanners (a 3 mm
        pixel never comes with a 512 matrix: 1.5 m). The matrix range wins where the two conflict.
    rectangular_probability / aspect: share of non-square slices and their cols/rows (or rows/cols) ratio.
    oblique_probability: for 3D label volumes, the share of planes with a uniformly random normal;
        the others lie near one of the three axes, tilted by up to ``tilt_deg``.
    thick_ratio: a volume whose coarsest spacing exceeds this times its finest is sliced only
        across its thick axis, untilted (lung1's 5 mm slices would show as staircases otherwise).
    stretch: per-axis scaling of the anatomy, log-uniform (body habitus, head shape).
    elastic_mm: standard deviation of the smooth in-plane displacement (uniform); 0 disables.
    elastic_spacing_mm: control-point spacing of the displacement field (uniform): its smoothness.
    centre_on_object_probability: share of slices centred on the object's centre (else on a random
        labelled voxel, so small fields of view visit every part of the anatomy).
    min_foreground: a slice with less labelled area than this is redrawn (another centre).
    """

    pixel_mm: Range = (0.3, 3.0)
    matrix: Tuple[int, int] = (96, 512)
    fov_mm: Range = (48.0, 500.0)
    rectangular_probability: float = 0.3
    aspect: Range = (0.75, 1.0)
    oblique_probability: float = 0.3
    tilt_deg: float = 15.0
    thick_ratio: float = 2.0
    stretch: Range = (0.9, 1.1)
    flip_probability: float = 0.5
    elastic_mm: Range = (0.0, 4.0)
    elastic_spacing_mm: Range = (20.0, 80.0)
    centre_on_object_probability: float = 0.5
    min_foreground: float = 0.05


@dataclass(frozen=True)
class ShapeParams:
    """Random label maps without anatomy (``random_shapes_labels``): sharp edges of every kind.

    body_probability: share of maps with a body outline (label 0 outside, air for CT and PET);
        the rest fill the whole field (a field of view inside the body).
    body_fill: body half-axes as a fraction of the half field (uniform; > 1 crops the body).
    body_max_mm / full_field_max_mm: when the pixel size is known, the body is at most this wide,
        and maps without a body outline only occur on fields up to ``full_field_max_mm``.
    fat_rim_probability / fat_rim_fraction: a subcutaneous-fat-like rim inside the body outline.
    cells: Voronoi cells (uniform integer), with boundaries warped by ``cell_warp`` of the size.
    blob_fields: thresholded smooth random fields, one label each (irregular organs, lesions).
    blob_scale: their correlation length as a fraction of the size (uniform).
    dots: small discs (calcifications, small lesions) of ``dot_radius_px``.
    vessels: branching random-walk curves of radius ``vessel_radius_px`` (0.5: one-pixel lines).
    sheets: thin curved bands (fascia, cortex, membranes) of width ``sheet_width_px``.
    """

    body_probability: float = 0.75
    body_fill: Range = (0.55, 1.1)
    body_max_mm: float = 450.0
    full_field_max_mm: float = 250.0
    fat_rim_probability: float = 0.5
    fat_rim_fraction: Range = (0.02, 0.08)
    cells: Tuple[int, int] = (3, 40)
    cell_warp: Range = (0.0, 0.08)
    blob_fields: Tuple[int, int] = (1, 4)
    blob_scale: Range = (0.02, 0.12)
    dots: Tuple[int, int] = (0, 8)
    dot_radius_px: Range = (1.0, 6.0)
    vessels: Tuple[int, int] = (0, 8)
    vessel_radius_px: Range = (0.5, 3.0)
    sheets: Tuple[int, int] = (0, 4)
    sheet_width_px: Range = (1.0, 4.0)


@dataclass(frozen=True)
class MriParams:
    """MR contrast from labels (``mri_from_labels``) and the k-space degradation.

    Contrast is random per label (SynthSR: the network must not learn one contrast); labels of one
    tissue class share a mean up to ``class_jitter`` (relative, uniform), so the 116 AAL grey-matter
    regions do not all become separate edges. background_dark_probability: label 0 nearly black
    (air), else a random intensity like any label.
    texture: within-label texture std as a fraction of full scale (uniform per label), a mix of a
        fine (``texture_fine_mm``) and a coarse (``texture_coarse_mm``) correlated field: real
        references carry texture the model must keep (lessons.md).
    partial_volume_px: Gaussian blur sigma of the label image (uniform): soft, sub-pixel edges.
    bias: std of the log bias field (uniform), correlation ``bias_scale`` of the field of view.
    gamma: a monotone change of contrast, log-uniform.
    scale: the HQ's 99.5th percentile in a.u. (log-uniform; the network normalises per image).
    snr: Rician noise, mean foreground / sigma, log-uniform (20 clinical .. 400 averaged).
    background_noise_probability: share of images keeping noise in the background (raw magnitude
        images); the others zero it outside the object, as processed scans and templates do.
    factor: k-space truncation factor, uniform and continuous (not only 2 and 4).
    anisotropic_probability: share with an independent factor per axis (both from ``factor``):
        real acquisitions often sample fewer phase-encoding lines than readout samples.
    """

    background_dark_probability: float = 0.7
    class_jitter: Range = (0.0, 0.15)
    texture: Range = (0.0, 0.12)
    texture_fine_mm: Range = (0.3, 1.5)
    texture_coarse_mm: Range = (2.0, 10.0)
    partial_volume_px: Range = (0.3, 0.8)
    bias: Range = (0.0, 0.3)
    bias_scale: Range = (0.25, 0.6)
    gamma: Range = (0.7, 1.4)
    scale: Range = (300.0, 3000.0)
    snr: Range = (20.0, 400.0)
    background_noise_probability: float = 0.5
    factor: Range = (2.0, 4.0)
    anisotropic_probability: float = 0.3


@dataclass(frozen=True)
class CtParams:
    """CT attenuation from labels (``ct_from_labels``) and the projection-domain dose.

    Labels without a tissue class draw one from ``tissue_weights``; each label then draws its HU
    from its class's range in ``TISSUES`` and a texture std from the class's texture range.
    max_dense_fraction: drawn labels larger than this share of the slice are never bone, marrow or
        calcification (bones are small in a slice; big random bone would starve every ray).
    partial_volume_px: Gaussian blur sigma (uniform): partial volume and the reconstruction kernel.
    texture_fine_mm / texture_coarse_mm: correlation lengths of the texture fields (uniform).
    reference_noise_hu: std of correlated noise in the HQ image itself (uniform): real full-dose
        references are not noise-free, and a model trained on clean targets smears real texture.
    i0: incident photons per ray, log-uniform. The low end is photon-starved (input PSNR below
        20 dB in the -160..240 HU window on body-sized slices), the high end nearly clean (above
        40 dB); ``docs/training-data.md`` has the measured distribution.
    sigma_e: electronic noise (counts), the benchmark's 10. views_per_pixel: 2N views for N x N.
    """

    tissue_weights: Dict[str, float] = field(default_factory=lambda: {
        "soft_tissue": 0.22, "muscle": 0.10, "fat": 0.13, "fluid": 0.07, "lung": 0.07, "blood": 0.07,
        "liver": 0.04, "kidney": 0.03, "marrow": 0.07, "bone": 0.09, "calcification": 0.03,
        "air": 0.03, "brain_gm": 0.03, "brain_wm": 0.03})
    max_dense_fraction: float = 0.04
    partial_volume_px: Range = (0.4, 0.9)
    texture_fine_mm: Range = (0.3, 1.2)
    texture_coarse_mm: Range = (2.0, 8.0)
    reference_noise_hu: Range = (0.0, 12.0)
    i0: Range = (3e3, 1e7)
    sigma_e: float = 10.0
    views_per_pixel: int = 2


@dataclass(frozen=True)
class PetParams:
    """PET activity and attenuation from labels, and the emission simulation's count levels.

    Labels without a tissue class draw one from ``tissue_weights``; each label draws its SUV from
    its class's range (brain grey matter 6-12, heart 2-15, kidneys 3-10, bladder 5-25, ...);
    ``max_dense_fraction`` as for CT (bone attenuates 511 keV photons too).
    regional_variation: std of a smooth log-normal uptake field within labels.
    lesions / lesion_radius_mm / lesion_suv: hot spots added inside the body (uniform).
    full_counts: true counts per slice at full dose, log-uniform (an order of magnitude around the
        3e6 headline). dose_fraction: log-uniform over 1/20 .. 1/4 (headline 1/12).
    iterations, postfilter_sigma_px: the benchmark's MLEM protocol (fixed, as for the test split).
    psf_fwhm_mm: scanner resolution (uniform): scanners differ.
    """

    tissue_weights: Dict[str, float] = field(default_factory=lambda: {
        "soft_tissue": 0.22, "muscle": 0.09, "fat": 0.09, "fluid": 0.05, "lung": 0.05, "blood": 0.05,
        "liver": 0.06, "kidney": 0.04, "heart": 0.04, "bladder": 0.02, "brain_gm": 0.06, "brain_wm": 0.05,
        "marrow": 0.05, "bone": 0.06, "lesion": 0.03, "air": 0.04})
    max_dense_fraction: float = 0.04
    regional_variation: float = 0.1
    lesions: Tuple[int, int] = (0, 4)
    lesion_radius_mm: Range = (2.0, 12.0)
    lesion_suv: Range = (3.0, 15.0)
    full_counts: Range = (1e6, 1e7)
    dose_fraction: Range = (1 / 20, 1 / 4)
    iterations: int = 20
    postfilter_sigma_px: float = 1.0
    psf_fwhm_mm: Range = (4.0, 5.5)


@dataclass(frozen=True)
class SynthParams:
    """Everything one task's synthetic pair draws: geometry, random shapes and the task's physics.

    ``geometry`` None: the label map is already the 2D slice to use (no resampling or deformation).
    ``head_layers`` (mm, uniform): the CSF, skull and scalp rims added around brain-only label maps
    (MNI, AAL), so that CT sees a skull and PET an attenuating head.
    """

    task: str
    geometry: Optional[GeometryParams] = field(default_factory=GeometryParams)
    shapes: ShapeParams = field(default_factory=ShapeParams)
    mri: MriParams = field(default_factory=MriParams)
    ct: CtParams = field(default_factory=CtParams)
    pet: PetParams = field(default_factory=PetParams)
    head_csf_mm: Range = (0.5, 3.0)
    head_skull_mm: Range = (4.0, 9.0)
    head_scalp_mm: Range = (3.0, 9.0)

    def replace(self, **changes) -> "SynthParams":
        """A copy with some fields changed (``params.replace(geometry=None)``)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """JSON-able record of every range (for a dataset manifest)."""
        return dataclasses.asdict(self)


# PET is never reconstructed on 0.3 mm pixels (its resolution is 4-5 mm FWHM), and MLEM costs grow
# with the cube of the matrix (N^2 pixels x N views): PET slices use whole-body and brain PET grids.
PET_GEOMETRY = GeometryParams(pixel_mm=(1.0, 4.0), matrix=(96, 160), fov_mm=(120.0, 500.0))


def default_params(task: str) -> SynthParams:
    """The default ranges of one task."""
    if task not in TASK_NAMES:
        raise ValueError(f"Unknown task {task!r}: choose one of {', '.join(TASK_NAMES)}.")
    if task == "pet-synthesis":
        return SynthParams(task, geometry=PET_GEOMETRY)
    return SynthParams(task)


# ---- drawing helpers: every draw goes through a numpy Generator -----------------------------------

def generator(seed: SeedLike) -> np.random.Generator:
    """A numpy Generator from an int, SeedSequence or Generator (a Generator is used as it is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def streams(seed: SeedLike, count: int) -> Tuple[np.random.Generator, ...]:
    """``count`` independent Generators from one seed: each stage of a pair (geometry, intensities,
    degradation) gets its own, so changing the dose range leaves the HQ image of a seed unchanged."""
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2 ** 63 - 1))
    if isinstance(seed, np.random.SeedSequence):  # a fresh copy: spawning must not depend on past spawns
        sequence = np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size)
    else:
        sequence = np.random.SeedSequence(None if seed is None else int(seed))
    return tuple(np.random.default_rng(child) for child in sequence.spawn(count))


def uniform(rng: np.random.Generator, bounds: Range, size=None):
    low, high = bounds
    return rng.uniform(low, high, size) if high > low else (np.full(size, float(low)) if size else float(low))


def log_uniform(rng: np.random.Generator, bounds: Range, size=None):
    low, high = bounds
    if not (low > 0 and high >= low):
        raise ValueError(f"log-uniform bounds must satisfy 0 < low <= high, got {bounds}")
    return np.exp(uniform(rng, (np.log(low), np.log(high)), size))


def integer(rng: np.random.Generator, bounds: Tuple[int, int]) -> int:
    """Uniform integer in the closed range."""
    return int(rng.integers(bounds[0], bounds[1] + 1))
