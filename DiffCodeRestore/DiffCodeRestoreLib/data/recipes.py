"""What the slice pairs of each task and split are made of: volumes, geometry, degradation, as data.

Test split: the public test volumes at the headline level (MRI colin27 s = 4; CT lung2 I0 = 5e4 with
2N views and sigma_e = 10 on its native 512 x 512 grid; PET from the ITK head's tissue classes at
2 mm, 3e6 full counts, 1/12 dose, 20 MLEM iterations), slices spread through the anatomy.

Training split (lessons.md: diversity beats volume): slices resampled over 0.4-1.5 mm pixels and
128-512 pixel fields of view; MRI references get Rician noise before degradation, SNR log-uniform
from clinical 20 to averaged-scan 400 (so a model learns to keep real texture, while the detail it
must recover is not buried under noise it cannot predict: at SNR 15-80 the model only learnt 2 % of
the MRI error) and varied contrast; CT dose aimed at 10-150 HU of added
soft-tissue noise (the public test slices measure 55-150 HU at the headline dose); PET full counts
over an order of magnitude around 3e6 and dose 1/20-1/4. A case is a batch of slices that share one
grid (and, for PET, one dose: the simulator takes one count level per call); each slice carries its
own degradation level and measured noise.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..simulate import ct, mri, pet
from .fetch import is_fetched
from .planes import PLANES, Spacing2D, centroid, occupied, plane_stack, resample, spread, window
from .sources import SOURCES
from .volumes import ITK_CSF, ITK_GM, ITK_WM, load_volume, split_volumes, volume_source

AIR_HU = -1024.0
SOFT_TISSUE_HU = (-50.0, 100.0)  # where CT noise is measured: fat excluded, muscle/organs/brain in

PARAMETERS: Dict[Tuple[str, str], dict] = {
    ("mri-sr", "test"): {"volume": "colin27", "factor": 4, "slices": 14, "seed": 100},
    ("mri-sr", "train"): {
        "cases": {"mni152_t1": 16, "itk_t1": 8, "brainweb_t1_slice": 3, "brainweb_pd_slice": 3, "brainweb_pd3": 3},
        "slices_per_case": 8, "factors": [2, 4], "pixel_mm": [0.4, 1.5], "size_px": [128, 512],
        "snr": [20.0, 400.0], "gamma": [0.7, 1.4], "background_noise_probability": 0.5, "seed": 101,
    },
    ("ct-denoise", "test"): {"volume": "lung2", "i0": 5e4, "views_per_pixel": 2, "sigma_e": 10.0,
                             "slices": 12, "seed": 200},
    ("ct-denoise", "train"): {
        "cases": {"lung1": 8, "cranium": 8}, "slices_per_case": 6, "pixel_mm": [0.4, 1.5], "size_px": [128, 512],
        "noise_hu": [10.0, 150.0], "i0_reference": 1e5, "i0_limits": [5e3, 3e6], "sigma_e": 10.0, "seed": 201,
    },
    ("pet-synthesis", "test"): {"volume": "itk_t1_classes", "pixel_mm": 2.0, "size_px": 128, "full_counts": 3e6,
                                "dose_fraction": 1 / 12, "iterations": 20, "slices": 14, "seed": 300},
    ("pet-synthesis", "train"): {
        "cases": 6, "slices_per_case": 10, "pixel_mm": 2.0, "size_px": 128, "full_counts": [1e6, 1e7],
        "dose_fraction": [1 / 20, 1 / 4], "iterations": 20, "seed": 301,
    },
}


# The mixed split: the real training recipe plus as many synthetic slices (docs/training-data.md): cases x
# slices per case of domain-randomised pairs drawn from the task's label maps by these shares (renormalised
# over the sources present). TotalSegmentator is left out: its CTs are the adaptation benchmark's held-out
# site, which the shipped model must not have seen.
SYNTHETIC: Dict[str, dict] = {
    "mri-sr": {"cases": 33, "slices_per_case": 8, "seed": 111,
               "shares": {"shapes": 0.40, "mni_tissue": 0.20, "itk_classes": 0.10, "lung1_hu": 0.15}},
    "ct-denoise": {"cases": 16, "slices_per_case": 6, "seed": 211,
                   "shares": {"shapes": 0.35, "lung1_hu": 0.25, "mni_tissue": 0.10, "itk_classes": 0.10}},
    "pet-synthesis": {"cases": 6, "slices_per_case": 10, "seed": 311,
                      "shares": {"shapes": 0.25, "mni_tissue": 0.15, "aal": 0.25, "lung1_hu": 0.15}},
}
PARAMETERS.update({(task, "train-mixed"): {**copy.deepcopy(PARAMETERS[(task, "train")]), "synthetic": synthetic}
                   for task, synthetic in SYNTHETIC.items()})

# The wide split (#12, docs/robustness.md): the real training recipe over the ranges where the robustness suite
# found the model losing to the filters. CT: pixels 0.3-3 mm and matrices from 96 (the 128 x 128 cases at 2.5 mm),
# added noise 5-400 HU (the photon-starved 512 x 512 case measures 352 HU, the nearly clean ones 15-30 HU), twice
# the cases so that the wider ranges keep the old density. PET: four times the dose/count levels (6 levels left the
# edges of the range, dose 1/4 and 1e7 counts, to one case each) over a wider range, 5 slices each. MRI keeps its
# recipe: synthetic MRI pairs cost MRI at every step (results.md), so "train-wide-mixed" adds CT and PET ones only.
WIDE_SYNTHETIC = ("ct-denoise", "pet-synthesis")
WIDE: Dict[str, dict] = {
    "mri-sr": {},
    "ct-denoise": {"cases": {"lung1": 16, "cranium": 16}, "pixel_mm": [0.3, 3.0], "size_px": [96, 512],
                   "noise_hu": [5.0, 400.0], "i0_limits": [1e3, 1e7], "seed": 221},
    "pet-synthesis": {"cases": 24, "slices_per_case": 5, "full_counts": [5e5, 2e7], "dose_fraction": [1 / 25, 1 / 3],
                      "seed": 321},
}
PARAMETERS.update({(task, "train-wide"): {**copy.deepcopy(PARAMETERS[(task, "train")]), **copy.deepcopy(wide)}
                   for task, wide in WIDE.items()})
PARAMETERS.update({(task, "train-wide-mixed"): {**copy.deepcopy(PARAMETERS[(task, "train-wide")]),
                                                **({"synthetic": SYNTHETIC[task]} if task in WIDE_SYNTHETIC else {})}
                   for task in WIDE})


def parameters(task: str, split: str, limit: Optional[int] = None) -> dict:
    """The recipe of one task and split; ``limit`` caps slices (test) or cases and slices per case
    (train) for quick previews and tests."""
    split_volumes(task, split)  # validates both names
    params = copy.deepcopy(PARAMETERS[(task, split)])
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of slices, got {limit}")
        params["limit"] = int(limit)
        for key in ("slices", "slices_per_case"):
            if key in params:
                params[key] = min(params[key], limit)
        if isinstance(params.get("cases"), dict):
            params["cases"] = {name: min(count, limit) for name, count in params["cases"].items()}
        elif "cases" in params:
            params["cases"] = min(params["cases"], limit)
        if "synthetic" in params:
            params["synthetic"] = {key: min(value, limit) if key in ("cases", "slices_per_case") else value
                                   for key, value in params["synthetic"].items()}
    return params


@dataclass
class Case:
    """One batch of slice pairs on one grid, plus per-slice facts for the manifest."""

    name: str
    hq: np.ndarray
    lq: np.ndarray
    spacing: Spacing2D
    level: np.ndarray
    info: Dict[str, object] = field(default_factory=dict)


def used_volumes(task: str, split: str, cache: Optional[Path] = None) -> List[str]:
    """The split's volumes present in the cache (the Debian ones are optional for training)."""
    return [name for name in split_volumes(task, split) if is_fetched(SOURCES[volume_source(name)], cache)]


def _require(name: str, cache: Optional[Path]) -> None:
    source = SOURCES[volume_source(name)]
    if not is_fetched(source, cache):
        raise FileNotFoundError(
            f"Volume {name!r} needs the {'required' if source.required else 'optional Debian'} source "
            f"{source.name!r}: run `python -m DiffCodeRestoreLib.data.fetch --only {source.name}`"
            + ("" if source.required else " on a Debian/Ubuntu machine") + "."
        )


def _log_uniform(rng: np.random.Generator, bounds, size=None):
    low, high = bounds
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def _stratified_log(rng: np.random.Generator, bounds, count: int) -> np.ndarray:
    """``count`` values log-uniform over ``bounds``, one in each of ``count`` equal log-strata, in
    random order: a few cases still cover the whole range (plain draws may bunch up)."""
    low, high = (math.log(b) for b in bounds)
    strata = (np.arange(count) + rng.uniform(size=count)) / count
    return np.exp(low + (high - low) * rng.permutation(strata))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2 ** 31 - 1))


def _foreground_mri(images: np.ndarray) -> np.ndarray:
    return images > 0.1 * np.percentile(images, 99)


def _relative_error(hq: np.ndarray, lq: np.ndarray, mask: np.ndarray) -> List[float]:
    """Per slice: RMS of lq - hq inside ``mask`` over the mean of hq there."""
    return [float(np.sqrt(np.mean((l[m] - h[m]) ** 2)) / max(float(h[m].mean()), 1e-12))
            for h, l, m in zip(hq, lq, mask)]


def soft_tissue_noise(hq: np.ndarray, lq: np.ndarray) -> List[float]:
    """Per slice: std (HU) of the added noise lq - hq where the reference is soft tissue."""
    out = []
    for h, l in zip(hq, lq):
        tissue = (h > SOFT_TISSUE_HU[0]) & (h < SOFT_TISSUE_HU[1])
        out.append(float((l - h)[tissue].std()) if tissue.sum() > 100 else float("nan"))
    return out


def _window_size(rng: np.random.Generator, params: dict) -> Tuple[int, int]:
    """A field of view (rows, cols) in pixels, each log-uniform over the training range."""
    rows, cols = (int(round(v)) for v in _log_uniform(rng, params["size_px"], 2))
    return rows, cols


def _jittered_centre(rng: np.random.Generator, mask: np.ndarray, shape: Tuple[int, int]) -> Tuple[float, float]:
    """The object's centroid, moved at random by up to the slack between object extent and window."""
    centre = centroid(mask)
    points = np.argwhere(mask)
    extent = points.max(axis=0) - points.min(axis=0) + 1 if points.size else np.array(mask.shape)
    slack = np.maximum(extent - np.asarray(shape), 0) / 2
    return centre[0] + rng.uniform(-slack[0], slack[0] + 1e-9), centre[1] + rng.uniform(-slack[1], slack[1] + 1e-9)


# ---- MRI super-resolution -------------------------------------------------------------------------

def _mri_test(params: dict, cache: Optional[Path]) -> Iterator[Case]:
    _require(params["volume"], cache)
    stack, spacing = plane_stack(load_volume(params["volume"], cache))
    stack = stack.astype(np.float32)
    chosen = spread(occupied(_foreground_mri(stack)), params["slices"])
    hq = stack[chosen]
    lq = mri.kspace_truncate(hq, params["factor"])
    yield Case(params["volume"], hq, lq, spacing, np.full(len(hq), float(params["factor"]), np.float32),
               {"slice_index": chosen.tolist(), "lq_error_rel": _relative_error(hq, lq, _foreground_mri(hq))})


def _mri_train(params: dict, cache: Optional[Path]) -> Iterator[Case]:
    rng = np.random.default_rng(params["seed"])
    for name in used_volumes("mri-sr", "train", cache):
        volume = load_volume(name, cache)
        for number in range(params["cases"][name]):
            plane = str(rng.choice(PLANES)) if volume.GetDimension() == 3 and volume.GetSize()[2] > 3 else "axial"
            stack, spacing = plane_stack(volume, plane)
            stack = np.clip(stack.astype(np.float32), 0, None)
            candidates = occupied(_foreground_mri(stack))
            picks = rng.choice(candidates, params["slices_per_case"], replace=len(candidates) < params["slices_per_case"])
            rows, cols = _window_size(rng, params)
            clean, exact = resample(stack[picks], spacing, float(_log_uniform(rng, params["pixel_mm"])), order=3)
            clean = np.clip(clean, 0, None)
            gamma = float(_log_uniform(rng, params["gamma"]))
            top = float(np.percentile(clean, 99.5)) or 1.0
            clean = (clean / top) ** gamma * top  # a monotonic change of contrast
            shape = (max(128, min(rows, clean.shape[1])), max(128, min(cols, clean.shape[2])))
            clean = window(clean, shape, _jittered_centre(rng, _foreground_mri(clean).any(axis=0), shape), 0.0)
            background_noise = bool(rng.random() < params["background_noise_probability"])
            snr = _log_uniform(rng, params["snr"], len(clean))
            factors = rng.choice(params["factors"], len(clean)).astype(np.float32)
            hq = np.empty_like(clean)
            sigmas = []
            for index, image in enumerate(clean):
                sigma = mri.rician_sigma_for_snr(image, float(snr[index]))
                noisy = mri.add_rician_noise(image, sigma, rng)
                if not background_noise:  # processed scans (templates, colin27) have a zeroed background
                    head = ndimage.binary_dilation(image > 0.05 * image.max(), iterations=3)
                    noisy = np.where(head, noisy, 0.0)
                hq[index] = noisy
                sigmas.append(sigma)
            lq = np.stack([mri.kspace_truncate(image, factor) for image, factor in zip(hq, factors)])
            yield Case(f"{name}-{number:02d}", hq, lq, exact, factors, {
                "plane": plane, "slice_index": picks.tolist(), "gamma": gamma, "background_noise": background_noise,
                "snr": snr.tolist(), "rician_sigma": sigmas, "lq_error_rel": _relative_error(hq, lq, clean > 0.1 * top),
            })


# ---- CT low-dose denoising ------------------------------------------------------------------------

def _ct_test(params: dict, cache: Optional[Path]) -> Iterator[Case]:
    _require(params["volume"], cache)
    stack, spacing = plane_stack(load_volume(params["volume"], cache))
    chosen = spread(occupied(stack > -500), params["slices"])
    hq = stack[chosen].astype(np.float32)
    views = params["views_per_pixel"] * max(hq.shape[1:])
    lq = ct.low_dose(hq, spacing, params["i0"], params["seed"], n_views=views, sigma_e=params["sigma_e"])
    yield Case(params["volume"], hq, lq, spacing, np.full(len(hq), params["i0"], np.float32),
               {"slice_index": chosen.tolist(), "views": views, "noise_hu": soft_tissue_noise(hq, lq)})


def _ct_train(params: dict, cache: Optional[Path]) -> Iterator[Case]:
    """One I0 per case (the simulator takes one dose per call; batching the slices of a case is
    what makes the bank affordable), aimed at a noise stratified log-uniform over ``noise_hu``: each
    volume's soft-tissue noise at ``i0_reference`` is measured once on its middle slice at 1 mm
    pixels (at a fixed I0 per ray it hardly changes with the pixel size: 19-33 HU over 0.44-1.45 mm
    on lung1 and cranium), and noise ~ I0^-1/2 gives the I0 for the target. ``level`` records the
    I0, ``noise_hu`` what each slice measured (more than aimed at where photon starvation behind
    dense anatomy sets in)."""
    rng = np.random.default_rng(params["seed"])
    for name in used_volumes("ct-denoise", "train", cache):
        stack, spacing = plane_stack(load_volume(name, cache))
        candidates = occupied(stack > -500)
        probe, probe_spacing = resample(stack[spread(candidates, 1)].astype(np.float32), spacing, 1.0)
        probed = ct.low_dose(probe, probe_spacing, params["i0_reference"], _seed(rng), sigma_e=params["sigma_e"])
        reference = soft_tissue_noise(probe, probed)[0]
        targets = _stratified_log(rng, params["noise_hu"], params["cases"][name])  # with pixels: a Latin
        pixels = _stratified_log(rng, params["pixel_mm"], params["cases"][name])  # hypercube per volume
        for number, (target, pixel) in enumerate(zip(targets, pixels)):
            picks = rng.choice(candidates, params["slices_per_case"], replace=False)
            rows, _ = _window_size(rng, params)
            hq, exact = resample(stack[picks].astype(np.float32), spacing, float(pixel), order=1)
            side = max(int(params["size_px"][0]), min(rows, max(hq.shape[1:])))
            hq = window(hq, (side, side), _jittered_centre(rng, (hq > -500).any(axis=0), (side, side)), AIR_HU)
            i0 = float(np.clip(params["i0_reference"] * (reference / target) ** 2, *params["i0_limits"]))
            lq = ct.low_dose(hq, exact, i0, _seed(rng), sigma_e=params["sigma_e"])
            yield Case(f"{name}-{number:02d}", hq, lq, exact, np.full(len(hq), i0, np.float32), {
                "slice_index": picks.tolist(), "reference_noise_hu": reference, "target_noise_hu": float(target),
                "noise_hu": soft_tissue_noise(hq, lq),
            })


# ---- PET low-dose to full-dose --------------------------------------------------------------------

@dataclass
class _Anatomy:
    """Tissue fractions on a 2 mm axial grid: (n, H, W) each, plus atlas regions or None."""

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    regions: Optional[np.ndarray]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The brain mask with the ventricles in it (per slice): CSF still attenuates."""
    return np.stack([ndimage.binary_fill_holes(m) for m in mask]).astype(np.float32)


def _on_grid(stacks: Dict[str, np.ndarray], spacing: Spacing2D, params: dict, labels: Tuple[str, ...] = ()
             ) -> Tuple[Dict[str, np.ndarray], Spacing2D]:
    """Resample to the PET pixel and a centred square window (labels by nearest neighbour)."""
    out, exact = {}, spacing
    for key, stack in stacks.items():
        out[key], exact = resample(stack.astype(np.float32), spacing, params["pixel_mm"], order=0 if key in labels else 1)
    side = params["size_px"]
    centre = ((out["brain"].shape[1] - 1) / 2, (out["brain"].shape[2] - 1) / 2)
    return {key: window(value, (side, side), centre, 0.0) for key, value in out.items()}, exact


def _itk_anatomy(params: dict, cache: Optional[Path]) -> Tuple[_Anatomy, Spacing2D]:
    classes, spacing = plane_stack(load_volume(params["volume"], cache))
    stacks = {"gm": classes == ITK_GM, "wm": classes == ITK_WM, "brain": np.isin(classes, (ITK_CSF, ITK_GM, ITK_WM))}
    grid, exact = _on_grid(stacks, spacing, params)
    return _Anatomy(grid["gm"], grid["wm"], _fill_holes(grid["brain"] > 0.5), None), exact


def _mni_anatomy(params: dict, cache: Optional[Path]) -> Tuple[_Anatomy, Spacing2D]:
    t1 = load_volume("mni152_t1", cache)
    stacks = {name: plane_stack(load_volume(f"mni152_{name}", cache))[0] for name in ("gm", "wm")}
    stacks["brain"], spacing = plane_stack(load_volume("mni152_mask", cache))
    if "aal" in used_volumes("pet-synthesis", "train", cache):
        aal = sitk.Resample(load_volume("aal", cache), t1, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        stacks["regions"] = plane_stack(aal)[0]
    grid, exact = _on_grid(stacks, spacing, params, labels=("regions",))
    return _Anatomy(grid["gm"], grid["wm"], _fill_holes(grid["brain"] > 0.5), grid.get("regions")), exact


def _pet_pairs(anatomy: _Anatomy, picks: np.ndarray, spacing: Spacing2D, full_counts: float,
               dose_fraction: float, iterations: int, seed: int, noise_free: bool = False
               ) -> Tuple[np.ndarray, np.ndarray, Dict[str, list], Optional[np.ndarray]]:
    """HQ, LQ, their description and, with ``noise_free``, the noiseless reconstruction (else None)."""
    rng = np.random.default_rng(seed)
    brain = anatomy.brain[picks]
    regions = None if anatomy.regions is None else anatomy.regions[picks]
    activity = pet.activity_from_tissues(anatomy.gm[picks], anatomy.wm[picks], brain, spacing, _seed(rng), regions)
    mu = pet.attenuation_from_tissues(brain, spacing)
    hq, lq, *clean = pet.simulate_pair(activity, mu, spacing, full_counts, dose_fraction, _seed(rng),
                                       iterations=iterations, noise_free=noise_free)
    inside = brain > 0.5
    info = {"slice_index": picks.tolist(), "activity_mean": [float(a[m].mean()) for a, m in zip(activity, inside)],
            "hq_mean": [float(h[m].mean()) for h, m in zip(hq, inside)],
            "lq_mean": [float(l[m].mean()) for l, m in zip(lq, inside)],
            "lq_noise_rel": _relative_error(hq, lq, inside)}
    return hq, lq, info, (clean[0] if noise_free else None)


def _spread_pairs(anatomy: _Anatomy, spacing: Spacing2D, params: dict, slices: int, seed: int,
                  noise_free: bool = False) -> Tuple[np.ndarray, np.ndarray, Dict[str, list], Optional[np.ndarray]]:
    """``_pet_pairs`` of ``slices`` slices spread through the anatomy, at the counts, dose and iterations of ``params``."""
    picks = spread(occupied(anatomy.brain > 0.5, keep=0.3), slices)
    return _pet_pairs(anatomy, picks, spacing, params["full_counts"], params["dose_fraction"], params["iterations"],
                      seed, noise_free)


def _pet_test_pairs(params: dict, cache: Optional[Path], noise_free: bool = False):
    """``_spread_pairs`` of the test anatomy, and its spacing: the split and its ceiling draw the same slices."""
    _require(params["volume"], cache)
    anatomy, spacing = _itk_anatomy(params, cache)
    return _spread_pairs(anatomy, spacing, params, params["slices"], params["seed"], noise_free), spacing


def _pet_test(params: dict, cache: Optional[Path]) -> Iterator[Case]:
    (hq, lq, info, _), spacing = _pet_test_pairs(params, cache)
    yield Case(params["volume"], hq, lq, spacing, np.full(len(hq), params["dose_fraction"], np.float32), info)


def _pet_train(params: dict, cache: Optional[Path]) -> Iterator[Case]:
    rng = np.random.default_rng(params["seed"])
    anatomy, spacing = _mni_anatomy(params, cache)
    candidates = occupied(anatomy.brain > 0.5, keep=0.3)
    counts = _stratified_log(rng, params["full_counts"], params["cases"])  # a Latin hypercube
    doses = _stratified_log(rng, params["dose_fraction"], params["cases"])
    for number, (full_counts, dose_fraction) in enumerate(zip(counts.tolist(), doses.tolist())):
        picks = np.sort(rng.choice(candidates, params["slices_per_case"], replace=False))
        hq, lq, info, _ = _pet_pairs(anatomy, picks, spacing, full_counts, dose_fraction, params["iterations"],
                                     _seed(rng))
        info.update(full_counts=full_counts, dose_fraction=dose_fraction)
        yield Case(f"mni152-{number:02d}", hq, lq, spacing, np.full(len(hq), dose_fraction, np.float32), info)


_RECIPES: Dict[Tuple[str, str], Callable[[dict, Optional[Path]], Iterator[Case]]] = {
    ("mri-sr", "test"): _mri_test, ("mri-sr", "train"): _mri_train,
    ("ct-denoise", "test"): _ct_test, ("ct-denoise", "train"): _ct_train,
    ("pet-synthesis", "test"): _pet_test, ("pet-synthesis", "train"): _pet_train,
}


class PetDraws(NamedTuple):
    """PET slices drawn at one level: HQ, LQ, the noiseless reconstruction of the same draws, the pixel spacing."""

    hq: np.ndarray
    lq: np.ndarray
    clean: np.ndarray
    spacing: Spacing2D


def pet_test_draws(cache: Optional[Path] = None) -> PetDraws:
    """The PET test split's slices and, from the same draws, their noiseless reconstruction."""
    (hq, lq, _, clean), spacing = _pet_test_pairs(parameters("pet-synthesis", "test"), cache, noise_free=True)
    return PetDraws(hq, lq, clean, spacing)


def pet_training_anatomy_draws(slices: int = 12, seed: int = 302, cache: Optional[Path] = None) -> PetDraws:
    """Fresh draws on the PET *training* anatomy at the test's headline level: a model's scores there
    beside the test split's tell its anatomy gap from the rest."""
    anatomy, spacing = _mni_anatomy(parameters("pet-synthesis", "train"), cache)
    hq, lq, _, clean = _spread_pairs(anatomy, spacing, parameters("pet-synthesis", "test"), slices, seed, noise_free=True)
    return PetDraws(hq, lq, clean, spacing)


def make_cases(task: str, split: str, params: dict, cache: Optional[Path] = None) -> Iterator[Case]:
    """The cases of one task and split, one at a time (each is written out before the next is made)."""
    split_volumes(task, split)
    real_split = "test" if split == "test" else "train"  # every training split's real part is the training recipe
    cases = _RECIPES[(task, real_split)](params, cache)
    if params.get("synthetic"):
        from .synth import synthetic_cases  # dev-only; imported only when a recipe asks for it
        cases = itertools.chain(cases, synthetic_cases(task, params["synthetic"], cache))
    return cases
