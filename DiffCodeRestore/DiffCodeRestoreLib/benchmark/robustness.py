"""The public robustness suite: the test split's volumes off its headline setting, and real registry slices.

``python -m DiffCodeRestoreLib.benchmark.robustness --out benchmark-results/robustness``

Why: the test split scores one grid and one level per task (lung2 512 x 512 at I0 = 5e4, colin27 at
k-space x4, PET at 1/12 dose). A model can win that mean and still lose to a plain filter on a
coarser matrix, a higher dose or a real scan. The suite scores every case on its own, with the
classical filters tuned on that case alone (oracle tuning, as in the main benchmark), and reports
the case's mean gain over its best filter beside the worst slice's. The bar (the issue's): no case
more than 0.5 dB below its own best tuned filter (``BAR_DB``).

Cases, fixed before any result was seen, built deterministically (fixed seeds; ``--slices`` evenly
spread slices per volume case, 4 by default) from the **public test volumes only** and from real
slices that ship inside the pydicom wheel (never a training volume, never TotalSegmentator's reserved
``example_ct_dicom``/``example_seg_dicom``):

- CT ``lung2``: its own 512 matrix and resampled to 256 and 128 (same field of view, 2x and 4x the
  pixel; the full-dose HU image is resampled first, then the low dose is simulated), each at
  I0 = 1e4, 5e4 (the headline) and 2e5, 2N views for N x N, sigma_e 10, as the test recipe does.
- MRI ``colin27``: k-space factors 2, 3, 4 on its native 1 mm grid, and 2, 4 resampled to a 128
  matrix (longest side; 1.7 mm pixels).
- PET on the ITK test anatomy (``itk_t1_classes``): dose 1/4, 1/12, 1/20 at the headline 3e6 full
  counts, and 1/12 at 1e6 and 1e7 full counts (the count scale). The same seed across a sweep, so
  only the level changes between its cases.
- Real slices (pydicom's bundled test files, read offline): ``CT_small.dcm`` (GE, 128 x 128,
  0.66 mm, neck) and ``J2K_pixelrep_mismatch.dcm`` (head, 512 x 512, 0.43 mm, lossless JPEG 2000;
  skipped with the reason if no JPEG 2000 decoder is installed) as full-dose references, degraded
  by the CT simulator at the same three doses; ``MR_small.dcm`` (Toshiba, 64 x 64, 0.31 mm: small,
  a 16 x 16 k-space band at x4) and ``examples_overlay.dcm`` (Siemens abdomen, 300 x 484, 0.72 mm)
  degraded by k-space x2 and x4. Not used: ``693_J2KI.dcm`` (a head CT stored with lossy JPEG 2000,
  visibly blocky: not a high-quality reference) and every non-CT/MR or broken sample.
  A real scan is not noise-free: these references carry their own noise, which no method can
  predict, so their absolute PSNR is capped; the comparison with the filters on the same pair holds.

The degradations are the test recipes' own functions (``simulate.ct.low_dose``,
``simulate.mri.kspace_truncate``, ``data.recipes`` PET pairs), so the physics is the test split's.
Scoring is the AMIR protocol per slice (``metrics.slice_scores``) through ``harness.run_task``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..data.slices import json_safe
from ..tasks import TASKS, get_task
from .harness import BenchCase, MethodResult, TaskResult, run_task

BAR_DB = 0.5
SEED = 900
DEFAULT_SLICES = 4
DEFAULT_MODEL = "diffcode"
FILTERS: Dict[str, Tuple[str, ...]] = {  # the main benchmark's classical baselines, per task
    "ct-denoise": ("gaussian", "curvature-ad", "gradient-ad", "nlm"),
    "mri-sr": ("gaussian", "curvature-ad", "gradient-ad", "nlm", "bicubic", "bspline"),
    "pet-synthesis": ("gaussian", "curvature-ad", "gradient-ad", "nlm"),
}
SLOW_FILTER = "bm3d"
PYDICOM_PREFIX = "pydicom:"
# Bundled pydicom samples that are real CT/MR slices good enough to be references (see the module doc).
REAL_FILES: Dict[str, Tuple[str, str]] = {  # file -> (task, short name in the case names)
    "CT_small.dcm": ("ct-denoise", "ct-neck128"), "J2K_pixelrep_mismatch.dcm": ("ct-denoise", "ct-head512"),
    "MR_small.dcm": ("mri-sr", "mr-small64"), "examples_overlay.dcm": ("mri-sr", "mr-abdomen")}

CT_DOSES = (1e4, 5e4, 2e5)
CT_MATRICES = (512, 256, 128)
MRI_FACTORS = (2, 3, 4)
MRI_SMALL_MATRIX, MRI_SMALL_FACTORS = 128, (2, 4)
PET_DOSES = (1 / 4, 1 / 12, 1 / 20)
PET_COUNTS = (1e6, 1e7)
REAL_MRI_FACTORS = (2, 4)


@dataclass(frozen=True)
class CaseSpec:
    """One robustness case as data: what it is made of, before anything is loaded.

    ``group``: cases of one group share their reference slices and their seed (a sweep over the
    level), so the level is the only thing that differs between them.
    """

    name: str
    task: str
    source: str  # a volume name of data.volumes, or "pydicom:<file>"
    matrix: Optional[int]  # longest side in pixels after resampling; None: the source's own grid
    level: float  # CT I0, MRI k-space factor, PET dose fraction
    group: str
    counts: Optional[float] = None  # PET full counts (None: the test recipe's)

    @property
    def real(self) -> bool:
        return self.source.startswith(PYDICOM_PREFIX)


def _level_text(task: str, level: float) -> str:
    if task == "ct-denoise":
        return f"i0-{level:.0e}".replace("+0", "").replace("+", "")
    if task == "mri-sr":
        return f"x{level:g}"
    return f"dose-1-{round(1 / level)}"


def _specs() -> List[CaseSpec]:
    specs: List[CaseSpec] = []
    for matrix in CT_MATRICES:
        group = f"ct-lung2-{matrix}"
        specs += [CaseSpec(f"{group}-{_level_text('ct-denoise', i0)}", "ct-denoise", "lung2",
                           None if matrix == 512 else matrix, i0, group) for i0 in CT_DOSES]
    specs += [CaseSpec(f"mri-colin27-{_level_text('mri-sr', f)}", "mri-sr", "colin27", None, float(f), "mri-colin27")
              for f in MRI_FACTORS]
    specs += [CaseSpec(f"mri-colin27-{MRI_SMALL_MATRIX}-{_level_text('mri-sr', f)}", "mri-sr", "colin27",
                       MRI_SMALL_MATRIX, float(f), f"mri-colin27-{MRI_SMALL_MATRIX}") for f in MRI_SMALL_FACTORS]
    specs += [CaseSpec(f"pet-itk-{_level_text('pet-synthesis', d)}", "pet-synthesis", "itk_t1_classes", None, d,
                       "pet-itk") for d in PET_DOSES]
    specs += [CaseSpec(f"pet-itk-counts-{c:.0e}-{_level_text('pet-synthesis', 1 / 12)}".replace("+0", ""),
                       "pet-synthesis", "itk_t1_classes", None, 1 / 12, f"pet-itk-counts-{c:.0e}", counts=c)
              for c in PET_COUNTS]
    for file, (task, short) in REAL_FILES.items():
        levels = CT_DOSES if task == "ct-denoise" else REAL_MRI_FACTORS
        specs += [CaseSpec(f"real-{short}-{_level_text(task, float(v))}", task, PYDICOM_PREFIX + file, None,
                           float(v), f"real-{short}") for v in levels]
    return specs


CASES: Tuple[CaseSpec, ...] = tuple(_specs())


def group_seed(group: str, base: int = SEED) -> int:
    """A seed per group that stays put when cases are added or removed (crc32, not Python's salted hash)."""
    return base + zlib.crc32(group.encode("ascii")) % 100_000


@dataclass
class RobustCase:
    """A built case: its spec, the slices as the harness takes them, and what describes them."""

    spec: CaseSpec
    bench: BenchCase
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def what(self) -> str:
        rows, cols = self.bench.hq.shape[1:]
        pixel = f"{self.bench.spacing[0]:.2f} mm"
        level = {"ct-denoise": f"I0 {self.spec.level:.0e}", "mri-sr": f"k-space x{self.spec.level:g}",
                 "pet-synthesis": f"dose 1/{round(1 / self.spec.level)}"}[self.spec.task]
        text = f"{rows}x{cols}, {pixel}, {level}"
        if self.spec.counts is not None:
            text += f", {self.spec.counts:.0e} full counts"
        noise = self.info.get("noise_hu")
        if noise is not None:
            text += f", noise {float(np.nanmean(noise)):.0f} HU"
        return text


# ---- building the cases ---------------------------------------------------------------------------

def pydicom_file(file: str) -> Path:
    """The path of one of pydicom's *bundled* test files, never a download (the machines are offline)."""
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        raise FileNotFoundError("pydicom is not installed: the real-slice cases need it (`pip install pydicom`).") \
            from None
    try:
        path = get_testdata_file(file, download=False)
    except TypeError:  # pydicom < 2.3 has no download argument and never downloads these bundled files
        path = get_testdata_file(file)
    if not path:
        raise FileNotFoundError(f"pydicom does not bundle {file}.")
    return Path(path)


def read_real_slice(file: str) -> Tuple[np.ndarray, Tuple[float, float]]:
    """(slice in the task's units, (row, col) spacing in mm) of a bundled pydicom file.

    CT: HU from the rescale tags, the scanner's padding outside the field of view (-2000) set to air
    (-1024), since it is no attenuation a simulator could project. MR: the stored values.
    """
    import pydicom

    dataset = pydicom.dcmread(str(pydicom_file(file)))
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # a compressed file without a decoder installed
        raise FileNotFoundError(f"{file}: pixel data cannot be decoded here ({str(error).splitlines()[0]}).") from None
    image = pixels.astype(np.float32) * float(getattr(dataset, "RescaleSlope", 1) or 1) \
        + float(getattr(dataset, "RescaleIntercept", 0) or 0)
    if pixels.ndim != 2:
        raise ValueError(f"{file}: expected one 2D slice, got shape {pixels.shape}.")
    if dataset.Modality == "CT":
        image = np.maximum(image, -1024.0)
    spacing = tuple(float(v) for v in dataset.PixelSpacing)
    return image.astype(np.float32), (spacing[0], spacing[1])


def _to_matrix(stack: np.ndarray, spacing: Tuple[float, float], matrix: Optional[int], order: int
               ) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Resample so the longest side has ``matrix`` pixels, keeping the field of view (anti-aliased)."""
    from ..data.planes import resample

    if matrix is None:
        return stack.astype(np.float32), spacing
    extent = max(stack.shape[1] * spacing[0], stack.shape[2] * spacing[1])
    return resample(stack, spacing, extent / matrix, order=order)


class _Sources:
    """Loads each source (and each group's reference slices) once while the cases are built."""

    def __init__(self, slices: int, cache: Optional[Path]):
        self.slices, self.cache = slices, cache
        self._memo: Dict[str, object] = {}

    def _once(self, key: str, make: Callable[[], object]):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def ct(self, spec: CaseSpec) -> Tuple[np.ndarray, Tuple[float, float], np.ndarray]:
        """lung2 slices as the CT test recipe picks them (body > -500 HU, spread), then resampled."""
        from ..data.planes import occupied, plane_stack, spread
        from ..data.volumes import load_volume

        def load():
            stack, spacing = plane_stack(load_volume(spec.source, self.cache))
            chosen = spread(occupied(stack > -500), self.slices)
            return stack[chosen].astype(np.float32), spacing, chosen

        hq, spacing, chosen = self._once(spec.source, load)
        hq, spacing = self._once(spec.group, lambda: _to_matrix(hq, spacing, spec.matrix, order=1))
        return hq, spacing, chosen

    def mri(self, spec: CaseSpec) -> Tuple[np.ndarray, Tuple[float, float], np.ndarray]:
        """colin27 slices as the MRI test recipe picks them (foreground, spread), then resampled (cubic)."""
        from ..data.planes import occupied, plane_stack, spread
        from ..data.recipes import _foreground_mri
        from ..data.volumes import load_volume

        def load():
            stack, spacing = plane_stack(load_volume(spec.source, self.cache))
            stack = stack.astype(np.float32)
            chosen = spread(occupied(_foreground_mri(stack)), self.slices)
            return stack[chosen], spacing, chosen

        hq, spacing, chosen = self._once(spec.source, load)

        def resampled():
            out, exact = _to_matrix(hq, spacing, spec.matrix, order=3)
            return np.clip(out, 0, None), exact  # cubic overshoot below 0 is no MR magnitude

        hq, spacing = self._once(spec.group, resampled)
        return hq, spacing, chosen

    def pet_anatomy(self, spec: CaseSpec):
        from ..data.recipes import _itk_anatomy, _require, parameters

        params = parameters("pet-synthesis", "test")
        _require(params["volume"], self.cache)
        return self._once(spec.source, lambda: _itk_anatomy(params, self.cache))

    def real(self, spec: CaseSpec) -> Tuple[np.ndarray, Tuple[float, float]]:
        file = spec.source[len(PYDICOM_PREFIX):]
        image, spacing = self._once(spec.source, lambda: read_real_slice(file))
        return image[None], spacing


def _ct_pair(spec: CaseSpec, hq: np.ndarray, spacing: Tuple[float, float], seed: int) -> Tuple[np.ndarray, dict]:
    """The CT test recipe's degradation at the case's I0: 2N views for N x N, its sigma_e."""
    from ..data.recipes import parameters, soft_tissue_noise
    from ..simulate import ct

    params = parameters("ct-denoise", "test")
    views = params["views_per_pixel"] * max(hq.shape[1:])
    lq = ct.low_dose(hq, spacing, spec.level, seed, n_views=views, sigma_e=params["sigma_e"])
    return lq, {"views": views, "noise_hu": soft_tissue_noise(hq, lq)}


def build_case(spec: CaseSpec, sources: _Sources, seed: int = SEED) -> RobustCase:
    """One case from its spec; the same spec, slice count and seed give the same arrays."""
    from ..simulate import mri

    rng_seed = group_seed(spec.group, seed)
    info: Dict[str, object] = {"source": spec.source, "seed": rng_seed}
    if spec.real:
        hq, spacing = sources.real(spec)
        chosen = np.zeros(1, dtype=int)
    elif spec.task == "ct-denoise":
        hq, spacing, chosen = sources.ct(spec)
    elif spec.task == "mri-sr":
        hq, spacing, chosen = sources.mri(spec)
    else:
        from ..data.recipes import _spread_pairs, parameters

        anatomy, spacing = sources.pet_anatomy(spec)
        params = dict(parameters("pet-synthesis", "test"), dose_fraction=spec.level)
        if spec.counts is not None:
            params["full_counts"] = spec.counts
        hq, lq, pet_info, _ = _spread_pairs(anatomy, spacing, params, sources.slices, rng_seed)
        info.update(slice_index=pet_info["slice_index"], lq_noise_rel=pet_info["lq_noise_rel"],
                    full_counts=params["full_counts"])
        chosen = np.asarray(pet_info["slice_index"])
    if spec.task == "ct-denoise":
        lq, extra = _ct_pair(spec, hq, spacing, rng_seed)
        info.update(extra)
    elif spec.task == "mri-sr":
        lq = mri.kspace_truncate(hq, spec.level)
    info.setdefault("slice_index", np.asarray(chosen).tolist())
    spacing = (float(spacing[0]), float(spacing[1]))
    bench = BenchCase(spec.name, np.asarray(hq, dtype=np.float32), np.asarray(lq, dtype=np.float32), spacing,
                      np.full(len(hq), float(spec.level)), np.asarray(chosen, dtype=int))
    return RobustCase(spec, bench, info)


def select(tasks: Sequence[str] = tuple(TASKS), only: Sequence[str] = ()) -> List[CaseSpec]:
    """The specs of ``tasks`` whose name contains one of ``only`` (all when empty)."""
    return [s for s in CASES if s.task in tasks and (not only or any(o in s.name for o in only))]


def build_cases(specs: Iterable[CaseSpec], slices: int = DEFAULT_SLICES, cache: Optional[Path] = None,
                seed: int = SEED, log: Callable[[str], None] = lambda text: None
                ) -> Tuple[List[RobustCase], Dict[str, str]]:
    """Built cases, and {case name: why skipped} for those whose source is missing here (an optional
    Debian source on another OS, a JPEG 2000 file without a decoder): said, never silently dropped."""
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    sources = _Sources(slices, cache)
    built, skipped = [], {}
    for spec in specs:
        try:
            built.append(build_case(spec, sources, seed))
            log(f"built {spec.name}: {built[-1].what}")
        except FileNotFoundError as error:
            skipped[spec.name] = str(error)
            log(f"skipped {spec.name}: {error}")
    return built, skipped


# ---- the table --------------------------------------------------------------------------------------

@dataclass
class CaseRow:
    """One case's line of the table, for one restoring method (the model)."""

    case: str
    task: str
    what: str
    slices: int
    input_psnr: float
    input_ssim: float
    best_filter: str
    best_filter_parameter: str
    best_filter_psnr: float
    best_filter_ssim: float
    method: str
    method_psnr: float
    method_ssim: float
    gain_db: float  # mean over the case's slices: method - best filter (the filter with the best mean PSNR)
    worst_slice_gain_db: float  # the minimum over slices of the same per-slice difference
    ssim_diff: float
    slow_filter: Optional[str] = None  # BM3D on its subset
    slow_slices: int = 0
    slow_gain_db: Optional[float] = None  # method - best of all filters (BM3D included) on the subset
    slow_best: Optional[str] = None

    @property
    def bar_met(self) -> bool:
        gains = [self.gain_db] + ([self.slow_gain_db] if self.slow_gain_db is not None else [])
        return all(g >= -BAR_DB for g in gains)


def _psnr_by_slice(method: MethodResult) -> Dict[Tuple[str, int], float]:
    return {(s.case, s.slice): s.psnr for s in method.slices}


def case_rows(result: TaskResult, method_names: Sequence[str], what: str = "") -> List[CaseRow]:
    """The table lines of one scored case (``result`` holds one case) for each restoring method named.

    Filters are every other method except ``input``; the best is the one with the highest mean PSNR
    over the case's slices among those run on all of them; the worst-slice gain compares the method
    with that same filter slice by slice. Slow filters (BM3D) ran on a subset: on it the method is
    compared with the best of every filter there, BM3D included.
    """
    by_name = {m.name: m for m in result.methods}
    if "input" not in by_name:
        raise ValueError("case_rows needs the input among the methods.")
    filters = [m for m in result.methods if m.name != "input" and m.name not in method_names]
    full = [m for m in filters if not m.slow]
    if not full:
        raise ValueError("case_rows needs at least one filter run on every slice.")
    best = max(full, key=lambda m: m.mean()["psnr"])
    slow = [m for m in filters if m.slow]
    rows = []
    for name in method_names:
        model = by_name[name]
        mine, theirs = _psnr_by_slice(model), _psnr_by_slice(best)
        per_slice = [mine[k] - theirs[k] for k in mine]
        mean, best_mean, inputs = model.mean(), best.mean(), by_name["input"].mean()
        row = CaseRow(result.montage_key[0], result.task, what, len(per_slice), inputs["psnr"], inputs["ssim"],
                      best.name, best.parameter, best_mean["psnr"], best_mean["ssim"], name, mean["psnr"],
                      mean["ssim"], mean["psnr"] - best_mean["psnr"], float(min(per_slice)),
                      mean["ssim"] - best_mean["ssim"])
        if slow:
            subset = result.subset
            strongest = max(filters, key=lambda m: m.mean(subset)["psnr"])
            row.slow_filter = ", ".join(m.name for m in slow)
            row.slow_slices = len(subset)
            row.slow_best = strongest.name
            row.slow_gain_db = model.mean(subset)["psnr"] - strongest.mean(subset)["psnr"]
        rows.append(row)
    return rows


def _fmt(value: Optional[float], digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def rows_markdown(rows: Sequence[CaseRow]) -> List[str]:
    from .report import table_lines

    header = ["case", "model", "what", "slices", "input PSNR", "best tuned filter", "filter PSNR", "model PSNR",
              "gain (mean)", "worst slice gain", "SSIM diff", "vs BM3D subset", "bar"]
    body = []
    for r in rows:
        slow = "" if r.slow_gain_db is None else \
            f"{_fmt(r.slow_gain_db, sign=True)} ({r.slow_slices} sl., best {r.slow_best})"
        body.append([r.case, r.method, r.what, str(r.slices), _fmt(r.input_psnr), f"{r.best_filter} ({r.best_filter_parameter})",
                     _fmt(r.best_filter_psnr), _fmt(r.method_psnr), _fmt(r.gain_db, sign=True),
                     _fmt(r.worst_slice_gain_db, sign=True), _fmt(r.ssim_diff, 4, sign=True), slow,
                     "met" if r.bar_met else "**not met**"])
    return table_lines(header, body)


def task_summary(rows: Sequence[CaseRow]) -> List[dict]:
    """Per model and task: its worst case (lowest mean gain), the lowest slice gain anywhere, the bar."""
    out = []
    for method, task in dict.fromkeys((r.method, r.task) for r in rows):
        mine = [r for r in rows if r.task == task and r.method == method]
        worst = min(mine, key=lambda r: min([r.gain_db] + ([r.slow_gain_db] if r.slow_gain_db is not None else [])))
        out.append({"method": method, "task": task, "cases": len(mine), "worst_case": worst.case, "worst_case_gain_db": worst.gain_db,
                    "worst_case_slow_gain_db": worst.slow_gain_db,
                    "mean_of_case_gains_db": float(np.mean([r.gain_db for r in mine])),
                    "worst_slice_gain_db": min(r.worst_slice_gain_db for r in mine),
                    "cases_below_bar": [r.case for r in mine if not r.bar_met],
                    "bar_met": all(r.bar_met for r in mine)})
    return out


def summary_markdown(rows: Sequence[CaseRow], skipped: Dict[str, str], command: str, facts: dict) -> str:
    from .report import PROTOCOL, table_lines

    lines = ["# Robustness suite", "", f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU core(s) shared with other work; load average "
             f"(1 min) {facts['load_before']:.1f} before, {facts['load_after']:.1f} after; "
             f"{facts['seconds'] / 60:.1f} min wall. Model{'s' if len(facts['models']) > 1 else ''}: "
             f"{'; '.join(facts['models'])}.", "",
             f"Bar: no case more than {BAR_DB} dB below its own best tuned filter (the mean gain over the case's "
             "slices, and on the BM3D subset the gain over the best filter there). Filters are tuned per case on that "
             "case's own slices (oracle tuning, favourable to them); gain = model PSNR - best filter PSNR, mean over "
             "the case's slices; worst slice gain = the lowest per-slice difference to that same filter; SSIM diff = "
             "model SSIM - that filter's SSIM.", ""]
    summary = task_summary(rows)
    lines += table_lines(
        ["model", "task", "cases", "worst case", "its gain", "mean of case gains", "worst slice gain", "bar"],
        [[s["method"], s["task"], str(s["cases"]), s["worst_case"],
          _fmt(s["worst_case_gain_db"], sign=True) + ("" if s["worst_case_slow_gain_db"] is None else
                                                     f" (BM3D subset {_fmt(s['worst_case_slow_gain_db'], sign=True)})"),
          _fmt(s["mean_of_case_gains_db"], sign=True), _fmt(s["worst_slice_gain_db"], sign=True),
          "met" if s["bar_met"] else f"**not met** ({', '.join(s['cases_below_bar'])})"] for s in summary])
    lines += ["", "PSNR in dB, per case:", ""] + rows_markdown(rows)
    if skipped:
        lines += ["", "Skipped (source missing here):", ""] + [f"- {k}: {v}" for k, v in skipped.items()]
    lines += ["", PROTOCOL, ""]
    return "\n".join(lines)


# ---- running ----------------------------------------------------------------------------------------

def score_case(case: RobustCase, methods: Sequence, model_names: Sequence[str], slow_slices: int = 1,
               log: Callable[[str], None] = lambda text: None) -> Tuple[TaskResult, List[CaseRow]]:
    """Run ``methods`` (input, fresh filters, models) on one case: the filters are tuned on it alone."""
    result = run_task(case.spec.task, [case.bench], methods, slow_slices=slow_slices, tune_slices=0, log=log)
    return result, case_rows(result, model_names, case.what)


def make_methods(task: str, filters: Optional[Sequence[str]], bm3d: bool, models: Sequence) -> List:
    """Input, fresh (untuned) filters for this task (``FILTERS[task]`` when None) and the models, in the
    table's order; a filter that does not do this task (bicubic on CT) is left out."""
    from .baselines import make_baselines

    chosen = FILTERS[task] if filters is None else filters
    names = ["input"] + [f for f in chosen if f not in ("input", SLOW_FILTER)] + ([SLOW_FILTER] if bm3d else [])
    methods = [m for m in make_baselines(list(dict.fromkeys(names))) if task in m.tasks]
    return methods + [m for m in models if task in m.tasks]


def _model(spec: str, device: str, steps: Optional[int]):
    """NAME=FOLDER, or the catalog's default model as the benchmark's ``diffcode`` method resolves it."""
    from .__main__ import default_weights
    from .methods import DiffCodeMethod

    if spec:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--model takes NAME=FOLDER, got {spec!r}.")
        return DiffCodeMethod(Path(folder), device=device, name=name, steps=steps), folder
    folder, why = default_weights()
    if folder is None:
        raise ValueError(f"{why} (or name a folder with --model {DEFAULT_MODEL}=FOLDER)")
    return DiffCodeMethod(folder, device=device, name=DEFAULT_MODEL, steps=steps), str(folder)




def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark.robustness",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (results.md, results.json, details.md)")
    parser.add_argument("--tasks", default="all", help="all, or a comma list of " + ", ".join(TASKS))
    parser.add_argument("--only", default="", help="comma list: keep the cases whose name contains one of these")
    parser.add_argument("--slices", type=int, default=DEFAULT_SLICES,
                        help=f"evenly spread slices per volume case (default {DEFAULT_SLICES}; real slices: 1)")
    parser.add_argument("--filters", default="all",
                        help="all (per task: " + "; ".join(f"{t} {', '.join(v)}" for t, v in FILTERS.items())
                        + "), or a comma list")
    parser.add_argument("--bm3d-slices", type=int, default=1, help="slices per case BM3D runs on (0: no BM3D)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help=f"a model to score, repeatable: the filters are tuned once for all of them "
                        f"(default: the catalog's default, as '{DEFAULT_MODEL}')")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, help="diffusion steps (default: the model's own)")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    args = parser.parse_args(argv)
    from ..errors import WeightsError
    from .report import task_markdown

    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    try:
        tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
        for task in tasks:
            get_task(task)
        specs = select(tasks, [o.strip() for o in args.only.split(",") if o.strip()])
        if args.list:
            print("\n".join(f"{s.name}\t{s.task}\t{s.source}" for s in specs))
            return 0
        if not specs:
            raise ValueError("No case matches --tasks/--only (see --list).")
        if args.bm3d_slices < 0:
            raise ValueError("--bm3d-slices must be >= 0.")
        filters = None if args.filters == "all" else [f.strip() for f in args.filters.split(",") if f.strip()]
        models = [_model(spec, args.device, args.steps) for spec in (args.model or [""])]
        names = [model.name for model, _ in models]
        if len(set(names)) < len(names):
            raise ValueError(f"--model names must differ, got {', '.join(names)}.")
        command = "python -m DiffCodeRestoreLib.benchmark.robustness " + shlex.join(
            sys.argv[1:] if argv is None else list(argv))
        started, load_before = time.perf_counter(), os.getloadavg()[0]
        cases, skipped = build_cases(specs, args.slices, log=log)
        rows, details = [], []
        for case in cases:
            methods = make_methods(case.spec.task, filters, args.bm3d_slices > 0, [model for model, _ in models])
            result, case_table = score_case(case, methods, names, max(args.bm3d_slices, 1),
                                            log=lambda text, n=case.spec.name: log(f"[{n}] {text}"))
            rows += case_table
            details.append(f"## {case.spec.name}: {case.what}\n\n" + task_markdown(result))
            for row in case_table:
                log(f"[{case.spec.name}] {row.method}: gain {row.gain_db:+.2f} dB (worst slice "
                    f"{row.worst_slice_gain_db:+.2f}) over {row.best_filter}")
        if not rows:
            raise FileNotFoundError("Every selected case was skipped: " + "; ".join(skipped.values()))
        infos = {c.spec.name: dict(c.info) for c in cases}
        facts = {"seconds": time.perf_counter() - started, "load_before": load_before,
                 "load_after": os.getloadavg()[0],
                 "models": [f"{model.name} ({folder}; {model.parameter(tasks[0])})" for model, folder in models],
                 "slices": args.slices, "bm3d_slices": args.bm3d_slices}
        text = summary_markdown(rows, skipped, command, facts)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(text, encoding="utf-8")
        (args.out / "details.md").write_text("\n\n".join(details) + "\n", encoding="utf-8")
        payload = {"command": command, "bar_db": BAR_DB, "facts": facts, "skipped": skipped,
                   "tasks": task_summary(rows),
                   "cases": [dict(asdict(r), bar_met=r.bar_met, info=infos[r.case]) for r in rows]}
        (args.out / "results.json").write_text(json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n",
                                               encoding="utf-8")
    except (ValueError, FileNotFoundError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
