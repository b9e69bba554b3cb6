"""Geometric self-ensemble: restore the 8 flips and 90-degree rotations of a slice and average them.

The network is trained on flipped and rotated patches, so every view is an equally valid estimate
and their errors partly cancel (EDSR's "self-ensemble"). It costs one model call per view. The
diffusion noise is transformed with the image, so view 0 alone reproduces the plain result.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

VIEWS = 8


def view(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral views of the last two axes (k = 0 is the identity)."""
    if not 0 <= k < VIEWS:
        raise ValueError(f"view index must be in [0, {VIEWS}), got {k}")
    x = x.flip(-1) if k >= 4 else x
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x  # rot90 copies even for no turn


def unview(y: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of ``view``: ``unview(view(x, k), k) == x``."""
    y = torch.rot90(y, -(k % 4), dims=(-2, -1)) if k % 4 else y
    return y.flip(-1) if k >= 4 else y


def ensemble_mean(restore: Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor], x: torch.Tensor,
                  noise: Optional[torch.Tensor] = None, views: int = VIEWS) -> torch.Tensor:
    """Mean over the first ``views`` views of ``restore(view of x, view of noise)``, in float32.

    ``x``: (..., H, W); ``noise``: None or any tensor whose last two axes are spatial.
    """
    if not 1 <= views <= VIEWS:
        raise ValueError(f"views must be between 1 and {VIEWS}, got {views}")
    total = None
    for k in range(views):
        y = unview(restore(view(x, k), None if noise is None else view(noise, k)), k).float()
        total = y if total is None else total + y
    return total / views
