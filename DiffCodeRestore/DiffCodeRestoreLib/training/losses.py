"""Training losses computed in the network's per-task units (so CT noise weighs like MRI detail)."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean SSIM with the evaluation protocol's Gaussian window (sigma 1.5), differentiable."""
    g = _gaussian_window(device=x.device).to(x.dtype)
    c = x.shape[1]

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean()


def image_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    loss = F.l1_loss(pred, target)
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1 - ssim(pred, target))
    return loss


class TaskBalancedLoss:
    """Each task's image loss divided by its input's error (a running mean of L1(LQ, HQ) per task), the
    weights scaled to mean 1: a task whose degradation is small in network units (PET noise) then pulls
    on the shared network as hard as one whose degradation is large (CT noise)."""

    def __init__(self, ssim_weight: float, momentum: float = 0.99):
        self.ssim_weight, self.momentum = ssim_weight, momentum
        self.input_error: Dict[int, float] = {}

    def weights(self, source: torch.Tensor, target: torch.Tensor, task: torch.Tensor) -> Dict[int, float]:
        for index in task.unique().tolist():
            rows = task == index
            error = F.l1_loss(source[rows], target[rows]).item()
            previous = self.input_error.get(index)
            self.input_error[index] = error if previous is None else self.momentum * previous + (1 - self.momentum) * error
        present = {index: 1.0 / max(self.input_error[index], 1e-6) for index in task.unique().tolist()}
        scale = len(present) / sum(present.values())
        return {index: weight * scale for index, weight in present.items()}

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, source: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return sum(weight * image_loss(pred[task == index], target[task == index], self.ssim_weight)
                   for index, weight in self.weights(source, target, task).items())
