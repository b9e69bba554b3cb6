"""The method protocol of the benchmark, and the DiffCode model as one method.

A method is any object with ``name``, ``tasks`` and ``restore(lq, task, spacing)``. Optional:
``tune(cases, task)`` picks its parameter on a small grid before scoring; ``parameter(task)`` says
what was used (shown in the table); ``slow = True`` runs it on the small slice subset only (BM3D).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

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
    multiple, restored under ``torch.inference_mode()`` with a fixed seed, cropped and mapped back
    to original units.
    """

    tasks = tuple(TASKS)

    def __init__(self, weights_folder: Union[str, Path], device: str = "cpu", steps: Optional[int] = None,
                 fidelity: Optional[float] = None, name: str = "diffcode", seed: int = 0):
        import torch

        from ..models import DiffCodeModel

        self.name = name
        self.device = torch.device(device)
        self.model = DiffCodeModel.from_pretrained(weights_folder, device=device, dtype=torch.float32)
        self.model.eval()
        self.steps = self.model.config.default_steps if steps is None else steps
        self.fidelity = self.model.config.default_fidelity if fidelity is None else fidelity
        self.seed = seed

    def parameter(self, task: str) -> str:
        return f"steps={self.steps}, w={self.fidelity:g}"

    def restore(self, lq: np.ndarray, task: str, spacing: Spacing) -> np.ndarray:
        import torch

        spec = get_task(task)
        offset, scale = intensity_scale(task, lq)
        x = normalize(task, lq, offset, scale)
        height, width = x.shape
        m = self.model.size_multiple
        pad_h, pad_w = -height % m, -width % m
        padded = np.pad(x, ((0, pad_h), (0, pad_w)), mode="reflect")
        tensor = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        with torch.inference_mode():
            y = self.model.restore(tensor, spec.index, steps=self.steps, fidelity=self.fidelity, generator=generator)
        out = y[0, 0, :height, :width].float().cpu().numpy()
        return denormalize(task, out, offset, scale)
