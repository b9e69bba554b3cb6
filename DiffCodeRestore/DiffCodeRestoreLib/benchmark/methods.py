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

from ..tasks import TASKS, denormalize, get_task, intensity_scale, normalize

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
    """A trained DiffCode model restoring slice by slice, with the pipeline's intensity handling.

    The input is normalised with ``tasks.normalize``, padded by reflection to the model's size
    multiple, restored under ``torch.inference_mode()`` with a fixed seed, in the pipeline's precision
    and memory layout (with ``self_ensemble``, averaged over flips and rotations: ``self_ensemble.py``),
    cropped and mapped back to original units. The codes it retrieves (in the unturned view) are counted
    per task (codebook usage on the test split).
    """

    tasks = tuple(TASKS)

    def __init__(self, weights_folder: Union[str, Path], device: str = "cpu", steps: Optional[int] = None,
                 fidelity: Optional[float] = None, name: str = "diffcode", seed: int = 0, precision: str = "auto",
                 self_ensemble: bool = False):
        import torch

        from .. import device as devices
        from ..models import DiffCodeModel

        self.name = name
        self.device = torch.device(device)
        self.precision = devices.resolve_precision(self.device, precision)
        model = DiffCodeModel.from_pretrained(weights_folder, device=device, dtype=torch.float32)
        self.model = model.to(memory_format=torch.channels_last).eval()
        self.steps = self.model.config.default_steps if steps is None else steps
        self.fidelity = self.model.config.default_fidelity if fidelity is None else fidelity
        self.seed = seed
        self.self_ensemble = self_ensemble
        self.codes_used: Dict[str, Set[int]] = {}

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

    def restore(self, lq: np.ndarray, task: str, spacing: Spacing) -> np.ndarray:
        restored, indices = self._run(lq, task)
        if indices is not None:
            self.codes_used.setdefault(task, set()).update(indices.unique().tolist())
        return restored

    def seconds_per_slice(self, image: np.ndarray, task: str, repeat: int = 3) -> float:
        """Best of ``repeat`` timed restorations of one slice (after a warm-up); not counted as code usage."""
        import time

        self._run(image, task)
        best = math.inf
        for _ in range(repeat):
            started = time.perf_counter()
            self._run(image, task)
            best = min(best, time.perf_counter() - started)
        return best

    def _run(self, lq: np.ndarray, task: str):
        """(restored slice in original units, retrieved code indices or None)."""
        import torch

        from .. import device as devices
        from ..self_ensemble import VIEWS, ensemble_mean

        spec = get_task(task)
        offset, scale = intensity_scale(task, lq)
        x = normalize(task, lq, offset, scale)
        height, width = x.shape
        m = self.model.size_multiple
        padded = np.pad(x, ((0, -height % m), (0, -width % m)), mode="reflect")
        tensor = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        codes = []  # the plain view's code indices first

        def restore(view, _noise):
            image, indices = self.model.restore_with_codes(
                view.contiguous(memory_format=torch.channels_last), spec.index, steps=self.steps,
                fidelity=self.fidelity, generator=generator)
            codes.append(indices)
            return image

        with torch.inference_mode(), devices.autocast(self.device, self.precision):
            image = ensemble_mean(restore, tensor, views=VIEWS if self.self_ensemble else 1)
        restored = image[0, 0, :height, :width].cpu().numpy()
        return denormalize(task, restored, offset, scale), codes[0]
