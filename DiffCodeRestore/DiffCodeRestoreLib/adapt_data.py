"""The data side of adaptation: the user's high-quality volumes in, checked slice pairs out.

Why each rule:

- **Inputs are checked like restore's** (``volume_io.read_volume``, ``input_rules``): label maps,
  CT stored as HU+1024 and PET in Bq/mL are refused with the same one-line advice, because a model
  adapted on wrong units learns a wrong mapping that looks plausible. A volume whose DICOM modality
  or intensities clearly belong to another task is refused too (all volumes are for one task).
- **Slices are taken like restore takes them** (along the thickest spacing, ``pipeline.slice_axis``)
  and only where there is anatomy, so the model adapts to the planes it will later restore.
- **The low-quality side is the task's own simulator at one level** (``simulate``): MRI k-space
  truncation by ``scale``, CT projection-domain noise insertion at ``i0`` photons per ray, PET
  emission noise at ``dose_fraction`` of the counts (below). The user's high-quality images stay the
  targets as they are, with their real noise and texture (lessons.md: targets without texture teach
  a model to smooth it away).
- **Held-out data are whole volumes** (the last ``max(1, n/5)`` given), or with one volume a block
  of slices at one end, separated from the training slices by a gap, so that neighbouring, nearly
  identical slices cannot make the validation figures look better than they are.
- **PET**: the user's full-dose image is taken as the activity; its counts are set so that the
  simulated full-dose reconstruction has the noise measured in the image itself, and the LQ is the
  image plus the difference between the reconstructions at ``dose_fraction`` and at full counts
  (noise insertion, as for CT): the extra noise a shorter or lower-dose scan of this scanner adds.
- **Level from a real low-quality scan** (``estimate_level``): the same noise (or bandwidth) measure
  is taken on the user's LQ scan, on the HQ slices and on the HQ slices degraded at a reference
  level; noise variance added scales as 1/I0 (CT) and 1/f - 1 (PET), so the level that adds the
  measured noise follows. For MRI the k-space band is read from the spectrum (or the grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .input_rules import input_conversion, suggest_task
from .tasks import get_task
from .volume_io import DICOM_MODALITY_TAG, READER_PREFIX, VolumeError, dicom_series_ids, is_image_file, read_volume

LEVELS = {"mri-sr": "scale", "ct-denoise": "i0", "pet-synthesis": "dose_fraction"}
LEVEL_OPTIONS = {"mri-sr": "--scale", "ct-denoise": "--i0", "pet-synthesis": "--dose-fraction"}
HEADLINE = {"mri-sr": 4.0, "ct-denoise": 5e4, "pet-synthesis": 1 / 12}  # evaluation.md's headline levels
LIMITS = {"mri-sr": (1.0, 16.0), "ct-denoise": (1e2, 1e8), "pet-synthesis": (1e-3, 1.0)}
MIN_SIDE = 32  # pixels: smaller slices give the network too little context
MIN_SLICES_ONE_VOLUME = 8  # with one volume: training + gap + held-out block
TRAIN_PIXELS = 48 * 256 * 256  # how many slices are simulated: about a minute of CT simulation on 2 cores
VAL_PIXELS = 12 * 256 * 256
MAX_VAL_SLICES = 12
PET_REFERENCE_COUNTS = 3e6  # evaluation.md: a 2 mm brain slice at full dose
PET_ITERATIONS = 20

Log = Callable[[str], None]


class AdaptCancelled(RuntimeError):
    """Stopped by a cancel request; what was saved (checkpoint, best model so far) is kept for resuming."""


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel.cancelled:
        raise AdaptCancelled("cancelled before training started; nothing was written.")


@dataclass
class HQVolume:
    """One high-quality volume as slices in task units. ``label`` is "volume K": no file name, no tag,
    since file names often carry patient names and the label goes into the model card."""

    label: str
    path: Path
    slices: np.ndarray  # (N, rows, cols) float32, task units, only slices with anatomy
    index: np.ndarray  # their positions along the slice axis
    spacing: Tuple[float, float]  # (row, col) mm
    thickness: float  # spacing along the slice axis, mm
    size: Tuple[int, ...]  # the volume's voxel grid


@dataclass
class PairSet:
    """Slice pairs (HQ target, simulated LQ input) in task units, grouped by volume (``cases``)."""

    cases: List["PairCase"] = field(default_factory=list)

    @property
    def slices(self) -> int:
        return sum(len(c.hq) for c in self.cases)


@dataclass
class PairCase:
    name: str
    hq: np.ndarray
    lq: np.ndarray
    spacing: Tuple[float, float]
    level: np.ndarray


@dataclass
class Split:
    train: List[Tuple[HQVolume, np.ndarray]]  # (volume, positions in volume.slices)
    held_out: List[Tuple[HQVolume, np.ndarray]]
    description: str


# ----------------------------------------------------------------------------------------------------
# Inputs


def find_inputs(paths: Sequence) -> List[Path]:
    """Files and DICOM series folders named by ``paths``; a folder without its own series is searched
    one level deep (its image files and series sub-folders), in name order."""
    found: List[Path] = []
    for item in (Path(p) for p in paths):
        if not item.exists():
            raise VolumeError(f"{item}: no such file or folder.")
        if item.is_file() or dicom_series_ids(item):
            found.append(item)
            continue
        inside = [p for p in sorted(item.iterdir()) if not p.name.startswith(".")
                  and (is_image_file(p) or (p.is_dir() and dicom_series_ids(p)))]
        if not inside:
            raise VolumeError(f"{item}: no NRRD, NIfTI, MHA files or DICOM series folders in this folder.")
        found.extend(inside)
    if not found:
        raise VolumeError("no high-quality volumes given: name files or folders of NRRD, NIfTI, MHA or DICOM.")
    if len(set(p.resolve() for p in found)) != len(found):
        raise VolumeError("a volume is named twice among the inputs; give each volume once.")
    return found


def foreground(task: str, slices: np.ndarray) -> np.ndarray:
    """Where the anatomy is, per voxel: CT above -500 HU; MRI and PET above 10 % / 5 % of the 99th percentile."""
    if task == "ct-denoise":
        return slices > -500
    top = float(np.percentile(slices, 99)) if slices.size else 0.0
    return slices > (0.1 if task == "mri-sr" else 0.05) * top


def read_hq(path: Path, task: str, label: str, hu_offset: Optional[float] = None,
            suv_factor: Optional[float] = None) -> HQVolume:
    """One HQ volume as slices with anatomy, in task units; ``VolumeError`` (one line) when it does not fit."""
    from .pipeline import slice_axis

    image = read_volume(path)
    array = sitk.GetArrayViewFromImage(image)
    volume = array[None] if array.ndim == 2 else array
    modality = image.GetMetaData(DICOM_MODALITY_TAG).strip() if image.HasMetaDataKey(DICOM_MODALITY_TAG) else None
    where = f"{label} ({path.name})"
    suggestion = suggest_task(volume, modality)
    if suggestion.certain and suggestion.task != task:
        raise VolumeError(f"{where} looks like {get_task(suggestion.task).title} ({suggestion.reason}), not "
                          f"{get_task(task).title}: every high-quality volume must be for --task {task} "
                          "(adapt to one task at a time).")
    facts = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if key.startswith(READER_PREFIX)}
    conversion = input_conversion(volume, task, facts, suv_factor, hu_offset, label=where)
    axis = slice_axis(image)
    slices = np.moveaxis(volume, 2 - axis, 0)
    values = np.asarray(conversion.to_task_units(slices), dtype=np.float32)
    low = float(np.percentile(values, 1))
    if task != "ct-denoise" and low < 0:
        raise VolumeError(f"{where} has many negative values (1st percentile {low:.4g}), as CT in Hounsfield units has "
                          f"and {get_task(task).title} images do not: every high-quality volume must be for "
                          f"--task {task}.")
    spacing3 = image.GetSpacing() if image.GetDimension() == 3 else tuple(image.GetSpacing()) + (1.0,)
    in_plane = [a for a in range(3) if a != axis]
    spacing = (float(spacing3[in_plane[1]]), float(spacing3[in_plane[0]]))  # (row, col)
    if min(values.shape[1:]) < MIN_SIDE:
        raise VolumeError(f"{where}: slices of {values.shape[1]}x{values.shape[2]} pixels are too small to adapt "
                          f"on (at least {MIN_SIDE}x{MIN_SIDE}).")
    mask = foreground(task, values)
    area = mask.reshape(len(values), -1).mean(axis=1)
    keep = np.flatnonzero(area >= max(0.02, 0.3 * float(area.max())))
    if keep.size == 0:
        raise VolumeError(f"{where}: no slice holds anatomy (is it empty or a mask?).")
    return HQVolume(label, path, values[keep], keep, spacing, float(spacing3[axis]), tuple(image.GetSize()))


def read_inputs(paths: Sequence, task: str, hu_offset: Optional[float] = None, suv_factor: Optional[float] = None,
                log: Log = lambda text: None, cancel=None) -> List[HQVolume]:
    volumes = []
    files = find_inputs(paths)
    for number, path in enumerate(files, 1):
        _check_cancel(cancel)
        volumes.append(read_hq(path, task, f"volume {number}", hu_offset, suv_factor))
        v = volumes[-1]
        log(f"volume {number} ({path.name}): {len(v.slices)} slices with anatomy of {v.slices.shape[1]}x"
            f"{v.slices.shape[2]} at {v.spacing[0]:.3g}x{v.spacing[1]:.3g} mm")
    return volumes


# ----------------------------------------------------------------------------------------------------
# Held-out split


def _spread(count: int, wanted: int) -> np.ndarray:
    """``wanted`` positions evenly spread over ``range(count)`` (all when fewer)."""
    if wanted >= count:
        return np.arange(count)
    return ((np.arange(wanted) + 0.5) * count / wanted).astype(int)


def _cap(volumes: List[Tuple[HQVolume, np.ndarray]], pixels: int, minimum: int,
         maximum: Optional[int] = None) -> List[Tuple[HQVolume, np.ndarray]]:
    """Keep at most ``pixels`` worth of slices (at least ``minimum``), spread evenly in each volume."""
    total = sum(len(idx) for _, idx in volumes)
    per_slice = np.mean([v.slices.shape[1] * v.slices.shape[2] for v, _ in volumes])
    wanted = int(np.clip(pixels // per_slice, minimum, maximum or total))
    if wanted >= total:
        return volumes
    out = []
    for volume, idx in volumes:
        share = max(1, int(round(wanted * len(idx) / total)))
        out.append((volume, idx[_spread(len(idx), share)]))
    return out


def split(volumes: List[HQVolume], max_train_pixels: int = TRAIN_PIXELS, max_val_pixels: int = VAL_PIXELS) -> Split:
    """Whole volumes held out (the last ``max(1, round(n / 5))``); with one volume, the last block of slices.

    Raises ``VolumeError`` when there is too little to hold anything out.
    """
    if len(volumes) >= 2:
        held = max(1, int(round(len(volumes) / 5)))
        train = [(v, np.arange(len(v.slices))) for v in volumes[:-held]]
        held_out = [(v, np.arange(len(v.slices))) for v in volumes[-held:]]
        names = ", ".join(v.label for v in volumes[-held:])
        description = f"held out: {names} (whole volumes, never trained on)"
    else:
        volume = volumes[0]
        n = len(volume.slices)
        if n < MIN_SLICES_ONE_VOLUME:
            raise VolumeError(
                f"too few slices: {volume.label} has {n} slice(s) with anatomy; adapting on one volume needs at "
                f"least {MIN_SLICES_ONE_VOLUME} (training, a gap, held-out slices): give more volumes or a longer "
                "stack.")
        val = max(2, int(round(0.15 * n)))
        gap = max(1, int(round(0.1 * n)))
        train = [(volume, np.arange(n - val - gap))]
        held_out = [(volume, np.arange(n - val, n))]
        first, last = volume.index[n - val], volume.index[n - 1]
        description = (f"held out: slices {first + 1}-{last + 1} of {volume.label} (one volume: the last {val} slices "
                       f"with anatomy, {gap} slice(s) away from the training slices)")
    train = _cap(train, max_train_pixels, 4)
    held_out = _cap(held_out, max_val_pixels, 2, MAX_VAL_SLICES)
    return Split(train, held_out, description)


# ----------------------------------------------------------------------------------------------------
# Degradations


def check_level(task: str, level: float) -> float:
    low, high = LIMITS[task]
    if not (isinstance(level, (int, float)) and math.isfinite(level) and low <= level <= high):
        raise ValueError(f"{LEVEL_OPTIONS[task]} {level}: use a value between {low:g} and {high:g} for {task}.")
    return float(level)


def _pet_noise_insertion(hq: np.ndarray, spacing: Tuple[float, float], counts: float, fraction: float,
                         seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(simulated full-count reconstruction, LQ = HQ + extra noise at ``fraction`` of the counts)."""
    from .simulate import pet

    activity = np.clip(hq, 0, None).astype(np.float32)
    body = np.stack([_fill(s) for s in foreground("pet-synthesis", activity)])
    mu = pet.attenuation_from_tissues(body.astype(np.float32), spacing, skull_mm=0.0, scalp_mm=0.0)
    full, low = pet.simulate_pair(activity, mu, spacing, counts, fraction, seed, iterations=PET_ITERATIONS,
                                  psf_fwhm_mm=0.0)  # the image is a reconstruction already: no second PSF
    return full, np.clip(hq + (low - full), 0, None).astype(np.float32)


def _fill(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))


# Immerkaer's noise operator (difference of two Laplacians): blind to linear ramps and smooth texture;
# scaled so that white noise of std 1 gives 1.
_NOISE_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0


def relative_noise(images: np.ndarray, task: str) -> float:
    """Noise of images without a reference: robust std (MAD) of Immerkaer's noise operator where the
    tissue is (CT: soft tissue -50..100 HU, in HU; PET: active tissue, MRI: foreground, relative to the
    median intensity there); the median over slices. Comparable between images, not absolute."""
    from scipy.ndimage import binary_erosion, convolve, gaussian_filter

    values = []
    for image in np.asarray(images, dtype=np.float64).reshape((-1,) + np.shape(images)[-2:]):
        smooth = gaussian_filter(image, 1.5)
        residual = convolve(image, _NOISE_KERNEL, mode="reflect")
        if task == "ct-denoise":
            mask = (smooth > -50) & (smooth < 100)
        else:
            mask = smooth > (0.2 if task == "pet-synthesis" else 0.1) * np.percentile(smooth, 99)
        mask = binary_erosion(mask, iterations=2)
        if mask.sum() < 50:
            continue
        noise = 1.4826 * float(np.median(np.abs(residual[mask] - np.median(residual[mask]))))
        values.append(noise if task == "ct-denoise" else noise / max(float(np.median(smooth[mask])), 1e-12))
    if not values:
        raise VolumeError("no flat tissue to measure the noise in (CT: soft tissue -50..100 HU).")
    return float(np.median(values))


def pet_counts(volumes: List[HQVolume], seed: int = 0) -> float:
    """Counts per slice at which the simulated full-dose reconstruction has the noise of the user's images.

    The noise measure also sees texture, which does not depend on the counts: reconstructing at two
    count levels separates the two (noise variance ~ 1/counts), and the image's own measure minus
    the texture leaves its noise variance, hence its counts.
    """
    low_counts, high_counts = PET_REFERENCE_COUNTS / 3, PET_REFERENCE_COUNTS * 3
    measured, at_low, at_high = [], [], []
    for volume in volumes[:3]:
        picks = volume.slices[_spread(len(volume.slices), 2)]
        measured.append(relative_noise(picks, "pet-synthesis") ** 2)
        at_low.append(relative_noise(_pet_noise_insertion(picks, volume.spacing, low_counts, 1.0, seed)[0],
                                     "pet-synthesis") ** 2)
        at_high.append(relative_noise(_pet_noise_insertion(picks, volume.spacing, high_counts, 1.0, seed + 1)[0],
                                      "pet-synthesis") ** 2)
    measured_v, low_v, high_v = (float(np.median(v)) for v in (measured, at_low, at_high))
    per_count = max((low_v - high_v) / (1 / low_counts - 1 / high_counts), 1e-12)  # noise variance x counts
    texture = high_v - per_count / high_counts
    noise = measured_v - texture
    if noise <= 0:  # no noise above the texture: as many counts as the range allows
        return 1e9
    return float(np.clip(per_count / noise, 1e4, 1e9))


def degrade(task: str, hq: np.ndarray, spacing: Tuple[float, float], level: float, seed: int,
            pet_full_counts: Optional[float] = None) -> np.ndarray:
    """The simulated LQ of HQ slices (N, H, W) in task units, at ``level`` (see the module doc)."""
    from .simulate import mri

    if task == "mri-sr":
        return mri.kspace_truncate(hq, level)
    if task == "ct-denoise":
        from .simulate import ct

        return ct.low_dose(hq, spacing, level, seed)
    return _pet_noise_insertion(hq, spacing, pet_full_counts or PET_REFERENCE_COUNTS, level, seed)[1]


def make_pairs(task: str, chosen: List[Tuple[HQVolume, np.ndarray]], level: float, seed: int,
               pet_full_counts: Optional[float] = None, cancel=None) -> PairSet:
    pairs = PairSet()
    for number, (volume, idx) in enumerate(chosen):
        _check_cancel(cancel)
        hq = volume.slices[idx]
        lq = degrade(task, hq, volume.spacing, level, seed + 7 * number, pet_full_counts)
        pairs.cases.append(PairCase(volume.label, hq, lq, volume.spacing, np.full(len(hq), level, np.float32)))
    return pairs


# ----------------------------------------------------------------------------------------------------
# The level of a real low-quality scan


def _band_fraction(lq: np.ndarray, hq: np.ndarray) -> float:
    """Share of k-space (per axis, averaged) where the LQ keeps at least half the HQ's spectral amplitude."""
    fractions = []
    for axis in (-2, -1):
        def profile(images: np.ndarray) -> np.ndarray:
            spectrum = np.abs(np.fft.fft(images - images.mean(axis=(-2, -1), keepdims=True), axis=axis))
            other = -1 if axis == -2 else -2
            p = spectrum.mean(axis=other).mean(axis=0)
            n = p.shape[0]
            folded = np.array([(p[k] + p[-k]) / 2 if k else p[0] for k in range(n // 2 + 1)])
            return folded / max(folded[1:4].mean(), 1e-12)

        p_lq, p_hq = profile(lq), profile(hq)
        n = len(p_lq)
        ratio = p_lq / np.maximum(p_hq, 1e-12)
        smooth = np.convolve(ratio, np.ones(3) / 3, mode="same")
        below = np.flatnonzero(smooth[2:] < 0.5)
        edge = (below[0] + 2) if below.size else n
        fractions.append(edge / n)
    return float(np.mean(fractions))


def _ct_dose_for_noise(slices: np.ndarray, spacing: Tuple[float, float], measured: float, target: float,
                       seed: int) -> float:
    """The I0 whose noise, inserted into these slices, adds ``target`` HU (by the noise measure).

    Why on the low-quality scan itself: at a given I0 the noise depends on the anatomy (body size,
    bone), and far from linearly on I0 once electronic noise matters (thick bodies, low doses). So the
    noise that I0 adds is measured by adding it to these very slices (difference of variances), and
    I0 is found by a secant on log-log axes (3 to 4 simulations of 6 slices).
    """
    low, high = LIMITS["ct-denoise"]

    def added(i0: float) -> float:
        noisier = relative_noise(degrade("ct-denoise", slices, spacing, i0, seed), "ct-denoise")
        return math.sqrt(max(noisier ** 2 - measured ** 2, 1e-12))

    i0_a = HEADLINE["ct-denoise"]
    a = added(i0_a)
    i0_b = float(np.clip(i0_a * (a / target) ** 2, low, high))  # noise ~ 1/sqrt(I0) to start with
    for _ in range(3):
        b = added(i0_b)
        if abs(math.log(b / target)) < 0.03 or i0_b in (low, high):
            break
        slope = math.log(b / a) / math.log(i0_b / i0_a) if i0_b != i0_a and b != a else -0.5
        slope = min(slope, -0.1)  # more photons, less noise
        i0_a, a = i0_b, b
        i0_b = float(np.clip(i0_b * (target / b) ** (1 / slope), low, high))
    return i0_b


def estimate_level(task: str, like: Path, volumes: List[HQVolume], hu_offset: Optional[float] = None,
                   suv_factor: Optional[float] = None, seed: int = 0) -> Tuple[float, str]:
    """(level, what was measured) for the user's real low-quality scan ``like`` (see the module doc)."""
    lq = read_hq(Path(like), task, "the --like scan", hu_offset, suv_factor)
    probe = np.concatenate([v.slices[_spread(len(v.slices), 3)] for v in volumes[:3]])[:6]
    reference = volumes[0]
    low, high = LIMITS[task]
    if task == "mri-sr":
        ratio = (lq.spacing[0] * lq.spacing[1] / (reference.spacing[0] * reference.spacing[1])) ** 0.5
        if ratio > 1.2:
            level = float(np.clip(ratio, low, high))
            return round(level, 2), (f"its pixels are {lq.spacing[0]:.3g}x{lq.spacing[1]:.3g} mm against "
                                     f"{reference.spacing[0]:.3g}x{reference.spacing[1]:.3g} mm in the HQ volumes")
        fraction = _band_fraction(lq.slices[_spread(len(lq.slices), 6)], probe)
        level = float(np.clip(1.0 / max(fraction, 1e-3), low, high))
        return round(level, 2), f"its spectrum keeps {100 * fraction:.0f} % of the HQ band per axis"
    like_slices = lq.slices[_spread(len(lq.slices), 6)]
    measured = relative_noise(like_slices, task)
    own = relative_noise(probe, task)
    unit = "HU" if task == "ct-denoise" else "(relative)"
    if measured <= own * 1.05:
        raise VolumeError(f"the --like scan is not noisier than the high-quality volumes ({measured:.3g} vs "
                          f"{own:.3g} {unit} of noise): give a low-dose scan, or the level with "
                          f"{LEVEL_OPTIONS[task]}.")
    reference_level = HEADLINE[task]
    counts = pet_counts(volumes, seed) if task == "pet-synthesis" else None
    added_target = measured ** 2 - own ** 2
    if task == "ct-denoise":
        level = _ct_dose_for_noise(like_slices, lq.spacing, measured, math.sqrt(added_target), seed)
        what = (f"soft-tissue noise {measured:.1f} HU (the HQ volumes {own:.1f} HU); I0 {level:.3g} adds the "
                f"difference on its anatomy")
    else:
        simulated = relative_noise(degrade(task, probe, reference.spacing, reference_level, seed, counts), task)
        added_reference = max(simulated ** 2 - own ** 2, 1e-12)
        factor = (1 / reference_level - 1) * added_target / added_reference
        level = 1 / (1 + factor)
        what = f"relative noise {measured:.3f} (the HQ volumes {own:.3f})"
    level = float(np.clip(level, low, high))
    return float(f"{level:.3g}"), what
