"""Random training patches from the cached slice pairs, all three tasks in every batch.

Patches are drawn where there is anatomy (not air), with flips, 90-degree rotations and, for MRI and
PET, a global intensity scaling (MRI has no absolute units; PET uptake varies between patients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..tasks import get_task, intensity_scale, normalize

INTENSITY_JITTER = {"mri-sr": (0.8, 1.25), "ct-denoise": (1.0, 1.0), "pet-synthesis": (0.7, 1.4)}


@dataclass
class NormalisedCase:
    task: str
    hq: np.ndarray  # (N, H, W) in [0, 1]-ish network input units
    lq: np.ndarray


def normalise_cases(task: str, cases: Sequence) -> List[NormalisedCase]:
    out = []
    for case in cases:
        offset, scale = intensity_scale(task, case.lq)  # as the pipeline does: from the LQ volume
        out.append(NormalisedCase(task, normalize(task, case.hq, offset, scale), normalize(task, case.lq, offset, scale)))
    return out


class PatchSampler:
    def __init__(self, cases: Dict[str, List[NormalisedCase]], patch: int, seed: int):
        self.cases, self.patch = cases, patch
        self.rng = np.random.default_rng(seed)
        self.tasks = list(cases)
        self.weights = {t: np.array([c.hq.shape[0] for c in cs], float) for t, cs in cases.items()}

    def _crop(self, case: NormalisedCase) -> Tuple[np.ndarray, np.ndarray]:
        p = self.patch
        i = self.rng.integers(case.hq.shape[0])
        hq, lq = case.hq[i], case.lq[i]
        pad = [(0, max(0, p - hq.shape[0])), (0, max(0, p - hq.shape[1]))]
        if any(a[1] for a in pad):
            hq, lq = np.pad(hq, pad, mode="reflect"), np.pad(lq, pad, mode="reflect")
        threshold = 0.05 if get_task(case.task).norm_range is None else (0.02 if case.task == "pet-synthesis" else 0.17)
        for _ in range(6):
            y = self.rng.integers(hq.shape[0] - p + 1)
            x = self.rng.integers(hq.shape[1] - p + 1)
            h, l = hq[y:y + p, x:x + p], lq[y:y + p, x:x + p]
            if (h > threshold).mean() > 0.3:
                break
        return h, l

    def _augment(self, task: str, hq: np.ndarray, lq: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        k = self.rng.integers(4)
        hq, lq = np.rot90(hq, k), np.rot90(lq, k)
        if self.rng.random() < 0.5:
            hq, lq = hq[:, ::-1], lq[:, ::-1]
        lo, hi = INTENSITY_JITTER[task]
        s = float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
        return hq * s, lq * s

    def batch(self, per_task: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hqs, lqs, ids = [], [], []
        for task in self.tasks:
            w = self.weights[task]
            for _ in range(per_task):
                case = self.cases[task][self.rng.choice(len(w), p=w / w.sum())]
                hq, lq = self._augment(task, *self._crop(case))
                hqs.append(np.ascontiguousarray(hq))
                lqs.append(np.ascontiguousarray(lq))
                ids.append(get_task(task).index)
        to = lambda a: torch.from_numpy(np.stack(a)[:, None].astype(np.float32))  # noqa: E731
        return to(lqs), to(hqs), torch.tensor(ids, dtype=torch.long)
