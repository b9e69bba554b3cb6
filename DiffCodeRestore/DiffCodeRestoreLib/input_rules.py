"""What a volume must be before a task may restore it: the rules, in one place, without torch.

Why: the model only knows intensities in its task's units (CT in Hounsfield units, PET in SUV,
MRI in any units). A volume in other units is not "a bit worse": it is restored into a wrong
result that looks plausible. So the command line, the worker behind the Slicer panel and the
Slicer logic all call ``input_conversion`` and get either the conversion to apply (and undo on the
output) or a one-line refusal that says what to do:

- **Label maps** (integer voxels, few distinct values, flat regions) are segmentations, not images.
- **CT stored as HU+1024** without a rescale intercept (no voxel below 0, air near 0, soft tissue
  near 1024) is refused unless the user says how it is stored (``hu_offset=-1024``, or ``0`` to
  restore the values as they are); the output keeps the input's convention.
- **PET in Bq/mL** (values far above the SUV range) is converted to SUV body-weight with a factor
  from the DICOM tags (patient weight, injected dose, decay correction) or given by the user
  (``suv_factor``), and the output converted back to Bq/mL; without a factor it is refused.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from .tasks import TASKS, get_task
from .volume_io import VolumeError

SAMPLE_VOXELS = 1 << 20  # a regular subsample is enough for percentiles and label statistics
LABEL_MAX_VALUES = 1024  # more distinct values than this: an image, whatever its type
LABEL_FLAT_SHARE = 0.5  # label maps: most neighbouring foreground voxels share their value (measured
# on real volumes: AAL 0.89, ITK k-means classes 0.89; 8-bit and int16 MRI/CT 0.03-0.10)
PET_SUV_CEILING = 200.0  # a 99th percentile above this is not SUV (tissue in Bq/mL is ~1e3-1e5)
SUV_FACTOR_KEY = "DiffCode:SUVbwFactor"  # set by the DICOM reader on PET series in Bq/mL
SUV_REASON_KEY = "DiffCode:SUVbwReason"  # why no factor could be computed from the tags


@dataclass(frozen=True)
class IntensityConversion:
    """network units = (stored + offset) * factor; the output goes back the other way."""

    offset: float = 0.0
    factor: float = 1.0
    note: str = ""

    @property
    def identity(self) -> bool:
        return self.offset == 0.0 and self.factor == 1.0

    def to_task_units(self, values: np.ndarray) -> np.ndarray:
        if self.identity:
            return values
        return (np.asarray(values, dtype=np.float64) + self.offset) * self.factor

    def to_stored_units(self, values: np.ndarray) -> np.ndarray:
        if self.identity:
            return values
        return np.asarray(values, dtype=np.float64) / self.factor - self.offset


def _sample(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    return flat[:: max(1, flat.size // SAMPLE_VOXELS)]


def label_map_reason(array: np.ndarray) -> Optional[str]:
    """Why ``array`` (indexed [k, j, i] or [j, i]) looks like a label map, or None if it looks like an image."""
    if array.dtype.kind not in "iub":
        return None
    values = np.unique(_sample(array))
    if values.size > LABEL_MAX_VALUES or values.size < 2:  # constant volumes have their own message
        return None
    planes = array.reshape((-1,) + array.shape[-2:])
    step = max(1, planes.shape[0] // 16)  # a few planes are enough
    shares = []
    for axis in (1, 2):
        sample = planes[::step]
        a = np.take(sample, range(1, sample.shape[axis]), axis=axis)
        b = np.take(sample, range(sample.shape[axis] - 1), axis=axis)
        foreground = (a != 0) | (b != 0)
        if foreground.sum() == 0:
            return None
        shares.append(float(((a == b) & foreground).sum()) / float(foreground.sum()))
    if min(shares) < LABEL_FLAT_SHARE:
        return None
    return (f"integer voxels with {values.size} distinct values in flat regions ({100 * min(shares):.0f} % of "
            "neighbours equal)")


def check_not_label_map(array: np.ndarray, label: str = "input") -> None:
    reason = label_map_reason(array)
    if reason:
        raise VolumeError(f"{label} looks like a label map or mask ({reason}), not an image: give the scalar "
                          "image it was drawn on.")


def unsigned_ct_reason(array: np.ndarray) -> Optional[str]:
    """Why a CT looks stored as HU+1024 without an intercept (air near 0, water near 1024), else None."""
    sample = _sample(array).astype(np.float64)
    if sample.min() < 0:
        return None
    air = np.mean(sample < 200)
    water = np.mean((sample > 824) & (sample < 1224))
    if air >= 0.01 and water >= 0.05:
        return (f"no voxel below 0, {100 * air:.0f} % near 0 (air) and {100 * water:.0f} % near 1024 "
                "(water, soft tissue)")
    return None


def pet_bqml_reason(array: np.ndarray) -> Optional[str]:
    high = float(np.percentile(_sample(array).astype(np.float64), 99))
    if high > PET_SUV_CEILING:
        return f"its 99th percentile is {high:.4g}, far above the SUV range (below ~50)"
    return None


def input_conversion(array: np.ndarray, task: str, metadata: Optional[dict] = None,
                     suv_factor: Optional[float] = None, hu_offset: Optional[float] = None,
                     label: str = "input") -> IntensityConversion:
    """The conversion of ``array`` into ``task``'s units, or ``VolumeError`` saying what to do.

    ``metadata``: the image's metadata (the DICOM reader puts a computed SUV factor there);
    ``suv_factor``/``hu_offset``: what the user said about the units (they win over detection).
    """
    spec = get_task(task)
    check_not_label_map(array, label)
    metadata = metadata or {}
    if spec.name == "ct-denoise":
        if hu_offset is not None:
            return IntensityConversion(offset=float(hu_offset), note=f"HU = stored value {float(hu_offset):+g}")
        reason = unsigned_ct_reason(array)
        if reason:
            raise VolumeError(
                f"{label} looks like CT stored as HU+1024 without a rescale intercept ({reason}): pass --hu-offset "
                "-1024 (Python: hu_offset=-1024) to restore it, or --hu-offset 0 if it really is in HU.")
    if spec.name == "pet-synthesis":
        factor = suv_factor if suv_factor is not None else metadata.get(SUV_FACTOR_KEY)
        if factor is not None:
            return IntensityConversion(factor=float(factor), note=f"SUVbw = stored value x {float(factor):.6g}")
        reason = pet_bqml_reason(array)
        if reason:
            why = metadata.get(SUV_REASON_KEY)
            tags = f" (the DICOM tags do not give it: {why})" if why else ""
            raise VolumeError(
                f"{label} does not look like PET in SUV ({reason}; Bq/mL?): pass --suv-factor F (Python: "
                f"suv_factor=F, F = body weight in g / decay-corrected injected dose in Bq){tags}, or convert it "
                "to SUV first.")
    return IntensityConversion()


# ----------------------------------------------------------------------------------------------------
# Which task: the Slicer panel's suggestion and the command line's ``--task auto``


class TaskSuggestion(NamedTuple):
    task: str
    reason: str
    certain: bool = True  # False: a guess from intensities alone (``--task auto`` refuses it)


# Words in a volume or file name; "_" and "-" separate words too (subject01_T1w.nii.gz).
_WORD = r"(?<![A-Za-z0-9])({})(?![A-Za-z0-9])"
NAME_PATTERNS = (("pet-synthesis", _WORD.format(r"PET|PT|SUV[A-Za-z]*|FDG")),
                 ("ct-denoise", _WORD.format(r"CT|CTA|LDCT")),
                 ("mri-sr", _WORD.format(r"MRI?|T1[A-Za-z0-9]*|T2[A-Za-z0-9]*|FLAIR|PD|DWI|MPRAGE")))


def suggest_task(voxels: np.ndarray, modality: Optional[str] = None, units: str = "", name: str = "") -> TaskSuggestion:
    """The task a volume most likely needs, and why: DICOM modality, voxel units, name, then intensities.

    The intensity rule: air near -1000 means CT in Hounsfield units (certain); non-negative
    floating-point values below ~50 look like SUV (PET) and anything else like MRI, but both are
    guesses (``certain`` False): normalised MRI and PET in Bq/mL look alike to intensities.
    """
    modality = (modality or "").strip().upper()
    for spec in TASKS.values():
        if modality == spec.modality:
            return TaskSuggestion(spec.name, f"DICOM modality {modality}")
    units = (units or "").lower()
    if "hnsf" in units or "hounsfield" in units:
        return TaskSuggestion("ct-denoise", "voxel units are Hounsfield units")
    if "suv" in units or "bq" in units:
        return TaskSuggestion("pet-synthesis", "voxel units are SUV / Bq/ml")
    for task, pattern in NAME_PATTERNS:
        if re.search(pattern, name or "", flags=re.IGNORECASE):
            return TaskSuggestion(task, f"volume name {name!r}")
    sample = _sample(voxels).astype(np.float64)
    low, high = np.percentile(sample, [0.5, 99.9])
    if low <= -500:
        return TaskSuggestion("ct-denoise", f"intensities reach {low:.0f} (air in Hounsfield units)")
    if voxels.dtype.kind == "f" and low >= 0 and high <= 50:
        return TaskSuggestion("pet-synthesis", f"non-negative values up to {high:.3g}, like SUV", certain=False)
    return TaskSuggestion("mri-sr", "non-negative intensities without Hounsfield air: assumed MRI", certain=False)


def choose_task(task: Optional[str], voxels: np.ndarray, modality: Optional[str] = None, name: str = "",
                label: str = "input") -> TaskSuggestion:
    """``task`` itself, or for None/"auto" the suggestion when it is certain; else ``VolumeError`` asking for a task."""
    if task not in (None, "auto"):
        return TaskSuggestion(get_task(task).name, "chosen by the user")
    suggestion = suggest_task(voxels, modality, "", name)
    if not suggestion.certain:
        raise VolumeError(f"{label}: cannot tell the task for sure ({suggestion.reason}); give it with --task "
                          f"(Python: task=...), e.g. --task {suggestion.task}.")
    return suggestion


# ----------------------------------------------------------------------------------------------------
# SUV body-weight factor from DICOM PET tags


def _seconds(time_text: str) -> float:
    """DICOM TM (HHMMSS.FFFFFF) as seconds since midnight."""
    text = time_text.strip()
    hours, minutes = int(text[0:2]), int(text[2:4] or 0)
    seconds = float(text[4:] or 0)
    return hours * 3600 + minutes * 60 + seconds


def _datetime(date_text: str, time_text: str) -> datetime.datetime:
    day = datetime.datetime.strptime(date_text.strip()[:8], "%Y%m%d")
    return day + datetime.timedelta(seconds=_seconds(time_text))


def suv_bw_factor(dataset) -> float:
    """The SUVbw factor (g/Bq) of a PET DICOM header read with pydicom; ``ValueError`` says which tag fails.

    SUVbw = activity concentration (Bq/mL) x body weight (g) / injected dose (Bq), the dose decayed
    from the injection to the series start when the images are decay-corrected to START (ADMIN:
    already corrected to the injection time). Units GML (already SUV) gives 1.
    """
    units = str(getattr(dataset, "Units", "")).upper()
    if units == "GML":
        return 1.0
    if units != "BQML":
        raise ValueError(f"Units (0054,1001) is {units or 'missing'}, not BQML")
    weight = float(getattr(dataset, "PatientWeight", 0) or 0)
    if not weight > 0:
        raise ValueError("PatientWeight (0010,1030) is missing")
    info = getattr(dataset, "RadiopharmaceuticalInformationSequence", None)
    if not info:
        raise ValueError("RadiopharmaceuticalInformationSequence (0054,0016) is missing")
    drug = info[0]
    dose = float(getattr(drug, "RadionuclideTotalDose", 0) or 0)
    half_life = float(getattr(drug, "RadionuclideHalfLife", 0) or 0)
    if not dose > 0 or not half_life > 0:
        raise ValueError("RadionuclideTotalDose (0018,1074) or RadionuclideHalfLife (0018,1075) is missing")
    correction = str(getattr(dataset, "DecayCorrection", "")).upper()
    if correction == "START":
        start = getattr(drug, "RadiopharmaceuticalStartDateTime", None)
        series_date = getattr(dataset, "SeriesDate", None) or getattr(dataset, "AcquisitionDate", None)
        series_time = getattr(dataset, "SeriesTime", None) or getattr(dataset, "AcquisitionTime", None)
        if not series_time:
            raise ValueError("SeriesTime (0008,0031) is missing")
        if start:
            injected = _datetime(str(start)[:8], str(start)[8:] or "000000")
            scan = _datetime(str(series_date or str(start)[:8]), str(series_time))
            elapsed = (scan - injected).total_seconds()
        else:
            injection_time = getattr(drug, "RadiopharmaceuticalStartTime", None)
            if not injection_time:
                raise ValueError("RadiopharmaceuticalStartTime (0018,1072) is missing")
            elapsed = (_seconds(str(series_time)) - _seconds(str(injection_time))) % 86400
        dose *= math.pow(2.0, -elapsed / half_life)
    elif correction != "ADMIN":
        raise ValueError(f"DecayCorrection (0054,1102) is {correction or 'missing'}, not START or ADMIN")
    return weight * 1000.0 / dose
