"""Classical baselines: what a 3D Slicer user would reach for today, and the strong classical denoisers.

Every filter works in original units (HU, SUV, MRI a.u.). Its main parameters are tuned generously:
``tune`` scores each setting of a small grid on the slices it is given and keeps the best mean PSNR,
extending the grid while the best setting lies on its edge.
The harness hands it the test slices themselves (oracle tuning, favourable to the baselines).
Strength parameters of NLM and BM3D are multiples of the noise level estimated on each slice, so
one grid fits every task's intensity scale; filters run in pixel units (spacing 1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..metrics import slice_scores
from ..tasks import TASKS
from .methods import Method, Spacing

Param = Tuple[float, ...]


def estimated_sigma(image: np.ndarray) -> float:
    """Gaussian noise level of one slice (wavelet MAD), floored so a noise-free slice still gets a filter."""
    from skimage.restoration import estimate_sigma

    floor = 1e-3 * float(np.ptp(image)) or 1e-6
    return max(float(estimate_sigma(image)), floor)


def _gaussian(lq: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(lq, sigma, mode="reflect")


def _anisotropic_diffusion(kind: str) -> Callable[..., np.ndarray]:
    """SimpleITK's (Slicer's) curvature or gradient anisotropic diffusion, time step 0.125 (2D stability limit)."""

    def run(lq: np.ndarray, iterations: float, conductance: float) -> np.ndarray:
        import SimpleITK as sitk

        filter_fn = sitk.CurvatureAnisotropicDiffusion if kind == "curvature" else sitk.GradientAnisotropicDiffusion
        image = sitk.GetImageFromArray(np.ascontiguousarray(lq, dtype=np.float32))
        out = filter_fn(image, timeStep=0.125, conductanceParameter=conductance,
                        conductanceScalingUpdateInterval=1, numberOfIterations=int(iterations))
        return sitk.GetArrayFromImage(out)

    return run


def _nlm(lq: np.ndarray, h_factor: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    sigma = estimated_sigma(lq)
    return denoise_nl_means(lq, h=h_factor * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6)


def _bm3d(lq: np.ndarray, sigma_factor: float) -> np.ndarray:
    import bm3d

    return bm3d.bm3d(lq.astype(np.float64), sigma_psd=sigma_factor * estimated_sigma(lq))


class InputMethod:
    """The low-quality input itself: the floor every method must clear."""

    name = "input"
    tasks = tuple(TASKS)

    def restore(self, lq: np.ndarray, task: str, spacing: Spacing) -> np.ndarray:
        return np.array(lq, dtype=np.float32)


def _mean_psnr(method_apply: Callable[[np.ndarray], np.ndarray], cases: Sequence, task: str) -> float:
    psnrs = [slice_scores(method_apply(lq), hq, task).psnr for case in cases for lq, hq in zip(case.lq, case.hq)]
    if not psnrs:
        raise ValueError("Tuning needs at least one slice.")
    return float(np.mean(psnrs))


@dataclass(frozen=True)
class Axis:
    """One parameter's starting grid (ascending) and the bounds within which tuning may extend it."""

    values: Tuple[float, ...]
    low: float
    high: float
    integer: bool = False

    def beyond(self, grid: List[float], upper: bool) -> Optional[float]:
        """The next value past one end of ``grid`` (at least a factor 2 out), or None at a bound."""
        end, inner = (grid[-1], grid[-2]) if upper else (grid[0], grid[1])
        ratio = max(end / inner if upper else inner / end, 2.0)
        value = end * ratio if upper else end / ratio
        if self.integer:
            value = float(round(value))
        return value if self.low <= value <= self.high and value not in grid else None


def _on_edge(grids: Sequence[List[float]], param: Param) -> List[Tuple[int, bool]]:
    """(axis, upper) for every axis of more than one value where ``param`` sits at an end of its grid."""
    return [(i, upper) for i, (grid, value) in enumerate(zip(grids, param)) if len(grid) > 1
            for upper in (True, False) if value == (grid[-1] if upper else grid[0])]


class GridBaseline:
    """A filter ``apply(lq, *param)`` tuned on the product of its axes' grids for the best mean PSNR.

    Generous by construction: while the best setting sits at the end of an axis, that axis grows past
    it (within its bounds, for at most MAX_ROUNDS rounds), so the starting grid does not cut the
    optimum off; a setting still at an edge afterwards is flagged in its parameter text.
    """

    tasks = tuple(TASKS)
    MAX_ROUNDS = 8

    def __init__(self, name: str, apply: Callable[..., np.ndarray], axes: Sequence[Axis], label: str,
                 slow: bool = False):
        self.name, self.apply, self.axes, self.label, self.slow = name, apply, list(axes), label, slow
        self.default: Param = tuple(a.values[len(a.values) // 2] for a in self.axes)
        self.chosen: Dict[str, Param] = {}
        self.at_edge: Dict[str, bool] = {}
        self.tuning: Dict[str, Dict[str, float]] = {}  # task -> {setting: mean PSNR}, for the report

    def tune(self, cases: Sequence, task: str) -> None:
        grids = [list(a.values) for a in self.axes]
        scores: Dict[Param, float] = {}
        for round_index in range(self.MAX_ROUNDS + 1):
            for param in itertools.product(*grids):
                if param not in scores:
                    scores[param] = _mean_psnr(lambda lq, p=param: self.apply(lq, *p), cases, task)
            best = max(scores, key=scores.get)
            if round_index == self.MAX_ROUNDS or not self._grow(grids, best):
                break
        self.chosen[task] = best
        self.at_edge[task] = bool(_on_edge(grids, best))
        self.tuning[task] = {self.label.format(*p): scores[p] for p in sorted(scores)}

    def _grow(self, grids: List[List[float]], best: Param) -> bool:
        """Extend every axis whose end ``best`` sits on; False when none can grow."""
        grown = False
        for axis_index, upper in _on_edge(grids, best):
            step = self.axes[axis_index].beyond(grids[axis_index], upper)
            if step is not None:
                grids[axis_index].insert(len(grids[axis_index]) if upper else 0, step)
                grown = True
        return grown

    def parameter(self, task: str) -> str:
        text = self.label.format(*self.chosen.get(task, self.default))
        return text + " (grid edge)" if self.at_edge.get(task) else text

    def restore(self, lq: np.ndarray, task: str, spacing: Spacing) -> np.ndarray:
        return np.asarray(self.apply(lq, *self.chosen.get(task, self.default)), dtype=np.float32)


class DecimatedInterpolation:
    """MRI super-resolution baseline: keep every s-th pixel of the LQ, interpolate back to its grid.

    The k-space-truncated LQ is band-limited to 1/s, so its every s-th sample is what a low-resolution
    acquisition would give (nothing is lost); ``kind`` is "bicubic" (cubic convolution, PyTorch's
    a = -0.75) or
    "bspline" (cubic B-spline interpolation). The factor s is the known degradation level of the
    slices passed to ``tune`` (the test split's level), 4 by default.
    """

    tasks = ("mri-sr",)

    def __init__(self, kind: str, factor: int = 4):
        if kind not in ("bicubic", "bspline"):
            raise ValueError(f"kind must be 'bicubic' or 'bspline', got {kind!r}")
        self.name, self.kind, self.factor = kind, kind, factor

    def tune(self, cases: Sequence, task: str) -> None:
        levels = {float(v) for case in cases for v in np.atleast_1d(case.level)}
        if len(levels) != 1 or not float(next(iter(levels))).is_integer():
            raise ValueError(f"{self.name} needs one integer super-resolution factor in the slices, got {sorted(levels)}.")
        self.factor = int(levels.pop())

    def parameter(self, task: str) -> str:
        return f"s={self.factor} (known)"

    def restore(self, lq: np.ndarray, task: str, spacing: Spacing) -> np.ndarray:
        s = self.factor
        coarse = np.ascontiguousarray(lq[::s, ::s], dtype=np.float64)
        # Fine pixel i sits at coarse coordinate i / s. The k-space degradation makes the LQ periodic,
        # so the border between the last and the first sample is interpolated across the wrap.
        rows = np.arange(lq.shape[0]) / s
        cols = np.arange(lq.shape[1]) / s
        if self.kind == "bspline":
            from scipy.ndimage import map_coordinates

            return map_coordinates(coarse, np.meshgrid(rows, cols, indexing="ij"), order=3,
                                   mode="grid-wrap").astype(np.float32)
        import torch
        import torch.nn.functional as F

        pad = 2  # cubic convolution reads two samples on each side
        padded = torch.from_numpy(np.pad(coarse, pad, mode="wrap"))[None, None]
        # grid_sample, align_corners=True: -1 and 1 are the centres of the first and last padded samples.
        gy = torch.from_numpy(2 * (rows + pad) / (padded.shape[2] - 1) - 1)
        gx = torch.from_numpy(2 * (cols + pad) / (padded.shape[3] - 1) - 1)
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        out = F.grid_sample(padded, grid, mode="bicubic", padding_mode="border", align_corners=True)
        return out[0, 0].numpy().astype(np.float32)


ITERATIONS = Axis((5, 10, 20, 40), 1, 320, integer=True)
CONDUCTANCE = Axis((0.5, 1.0, 2.0, 4.0), 0.125, 64.0)

BASELINES: Dict[str, Callable[[], Method]] = {
    "input": InputMethod,
    "gaussian": lambda: GridBaseline(
        "gaussian", _gaussian, [Axis((0.5, 0.75, 1.0, 1.5, 2.0, 3.0), 0.25, 16.0)], "sigma={:.3g} px"),
    "curvature-ad": lambda: GridBaseline(
        "curvature-ad", _anisotropic_diffusion("curvature"), [ITERATIONS, CONDUCTANCE], "{:g} it, K={:.3g}"),
    "gradient-ad": lambda: GridBaseline(
        "gradient-ad", _anisotropic_diffusion("gradient"), [ITERATIONS, CONDUCTANCE], "{:g} it, K={:.3g}"),
    "nlm": lambda: GridBaseline(
        "nlm", _nlm, [Axis((0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2), 0.05, 500.0)], "h={:.3g} sigma_est"),
    "bm3d": lambda: GridBaseline(
        "bm3d", _bm3d, [Axis((0.75, 1.0, 1.5, 2.0, 3.0), 0.1, 500.0)], "sigma={:.3g} sigma_est", slow=True),
    "bicubic": lambda: DecimatedInterpolation("bicubic"),
    "bspline": lambda: DecimatedInterpolation("bspline"),
}


def make_baselines(names: Optional[Sequence[str]] = None) -> List[Method]:
    """Fresh baseline methods by name (all when ``names`` is None)."""
    names = list(BASELINES) if names is None else list(names)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"Unknown baseline(s) {', '.join(unknown)}: choose from {', '.join(BASELINES)}.")
    return [BASELINES[n]() for n in names]


def parse_models(specs: Sequence[str]) -> Dict[str, Path]:
    """``NAME=FOLDER`` specs of ``--model`` as {name: weights folder}; names must not shadow a baseline."""
    models: Dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--model takes NAME=FOLDER, got {spec!r}.")
        if name in BASELINES or name in models:
            raise ValueError(f"--model name {name!r} is already taken: pick another.")
        models[name] = Path(folder)
    return models
