"""The method protocol of the benchmark, and the DiffCode model as one method.

A method is any object with ``name``, ``tasks`` and ``restore(lq, task, spacing)``. Optional:
``tune(cases, task)`` picks its parameter on a small grid before scoring; ``parameter(task)`` says
what was used (shown in the table); ``slow = True`` runs it on the small slice subset only (BM3D).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Protocol, Sequence, Set, Tuple, Union, runtime_checkable

import numpy as np

from ..tasks import TASKS

Spacing = Tuple[float, float]


@runtime_checkable
class Method(Protocol):
    name: str
    tasks: Sequence[str]

    def restore(self, lq: np.ndarray, task: str, spacing: Spacing) -> np.ndarray:
        """Restore one (H, W) float32 slice in original units; returns the same shape and units."""
        ...


def method_parameter(method: Method, task: str) -> str:
    """The parameter text of a method for the table ('' when it has none)."""
    describe = getattr(method, "parameter", None)
    return describe(task) if describe is not None else ""


class DiffCodeMethod:
    """A trained DiffCode model restoring slice by slice through ``DiffCodePipeline``, the path users run.

    Every slice goes through the pipeline's own intensity scaling, padding, diffusion noise (seeded),
    range rules, precision and memory layout (with ``self_ensemble``, averaged over flips and rotations),
    so each figure in the README is the product's. The codes the model retrieves (in the unturned
    view) are counted per task through the pipeline's ``on_codes`` hook (codebook usage on the test split).
    """

    tasks = tuple(TASKS)

    def __init__(self, weights_folder: Union[str, Path], device: str = "cpu", steps: Optional[int] = None,
                 fidelity: Optional[float] = None, name: str = "diffcode", seed: int = 0, precision: str = "auto",
                 self_ensemble: bool = False):
        from ..pipeline import DiffCodePipeline

        self.name = name
        self.pipeline = DiffCodePipeline.from_pretrained(str(weights_folder), device=device, precision=precision)
        self.pipeline.on_codes = self._count_codes
        self.model = self.pipeline.model
        self.precision = self.pipeline.precision
        self.steps = self.model.config.default_steps if steps is None else steps
        self.fidelity = self.model.config.default_fidelity if fidelity is None else fidelity
        self.seed = seed
        self.self_ensemble = self_ensemble
        self.codes_used: Dict[str, Set[int]] = {}
        self._counting = True

    def parameter(self, task: str) -> str:
        precision = str(self.precision or "float32").replace("torch.", "")
        ensemble = ", flip/rotation self-ensemble" if self.self_ensemble else ""
        return f"steps={self.steps}, w={self.fidelity:g}, {precision}{ensemble}"

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def code_usage(self, task: str) -> Optional[float]:
        """Share of the task's codebook retrieved on the slices restored so far (None without a prior)."""
        if self.model.codebook is None or task not in self.codes_used:
            return None
        return len(self.codes_used[task]) / self.model.config.codebook_size

    def _count_codes(self, task: str, indices) -> None:
        if self._counting and indices is not None:
            self.codes_used.setdefault(task, set()).update(indices.unique().tolist())

    def restore(self, lq: np.ndarray, task: str, spacing: Spacing) -> np.ndarray:
        """One (H, W) slice in original units through the pipeline; the same shape and units back."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.asarray(lq, dtype=np.float32))
        image.SetSpacing((float(spacing[1]), float(spacing[0])))
        result = self.pipeline(image, task, steps=self.steps, fidelity=self.fidelity, seed=self.seed,
                               self_ensemble=self.self_ensemble)
        return sitk.GetArrayFromImage(result.image).astype(np.float32, copy=False)

    def seconds_per_slice(self, image: np.ndarray, task: str, repeat: int = 3) -> float:
        """Best of ``repeat`` timed restorations of one slice (after a warm-up); not counted as code usage."""
        import time

        self._counting = False
        try:
            self.restore(image, task, (1.0, 1.0))
            best = math.inf
            for _ in range(repeat):
                started = time.perf_counter()
                self.restore(image, task, (1.0, 1.0))
                best = min(best, time.perf_counter() - started)
        finally:
            self._counting = True
        return best
