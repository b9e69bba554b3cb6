"""Convolutional building blocks: encoders, the fusing decoder and the latent denoiser.

CPU cost is dominated by full-resolution convolutions, so every network starts with a
pixel-unshuffle stem and works at 1/2 and 1/4 resolution (lessons.md). Conditioning (task, and the
diffusion timestep) enters through FiLM (per-channel scale and shift).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """conv-SiLU-conv with FiLM conditioning and an identity skip."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.conv1(x))
        h = h * (1 + scale) + shift
        return x + self.conv2(h)


class ResStack(nn.Module):
    def __init__(self, channels: int, count: int, cond_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, cond_dim) for _ in range(count))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


class Encoder(nn.Module):
    """Image -> latent at 1/4 resolution, plus the features at 1/2 and 1/4 (for fusion)."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[int], latent_dim: int, cond_dim: int):
        super().__init__()
        c1, c2 = channels
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4, c1, 3, padding=1))
        self.level1 = ResStack(c1, blocks[0], cond_dim)
        self.down = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.level2 = ResStack(c2, blocks[1], cond_dim)
        self.to_latent = nn.Conv2d(c2, latent_dim, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        f1 = self.level1(self.stem(x), cond)
        f2 = self.level2(self.down(F.silu(f1)), cond)
        return self.to_latent(f2), [f1, f2]


class Fusion(nn.Module):
    """Controllable feature fusion (CodeFormer's CFT): h + w * (h * alpha + beta) from [h, lq features]."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(channels, 2 * channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: torch.Tensor, lq: torch.Tensor, fidelity: torch.Tensor) -> torch.Tensor:
        alpha, beta = self.net(torch.cat([h, lq], 1)).chunk(2, dim=1)
        return h + fidelity[:, None, None, None] * (h * alpha + beta)


class Decoder(nn.Module):
    """Latent (1/4) -> image; with ``fuse`` it blends in LQ encoder features through the fidelity weight."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[int], latent_dim: int, cond_dim: int, fuse: bool):
        super().__init__()
        c1, c2 = channels
        self.from_latent = nn.Conv2d(latent_dim, c2, 3, padding=1)
        self.level2 = ResStack(c2, blocks[0], cond_dim)
        self.up = nn.Sequential(nn.Conv2d(c2, 4 * c1, 3, padding=1), nn.PixelShuffle(2))
        self.level1 = ResStack(c1, blocks[1], cond_dim)
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(c1, 4, 3, padding=1), nn.PixelShuffle(2))
        self.fuse = nn.ModuleList([Fusion(c2), Fusion(c1)]) if fuse else None

    def forward(self, z: torch.Tensor, cond: torch.Tensor, lq_features: Optional[List[torch.Tensor]] = None,
                fidelity: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.from_latent(z)
        if self.fuse is not None and lq_features is not None:
            h = self.fuse[0](h, lq_features[1], fidelity)
        h = self.up(self.level2(h, cond))
        if self.fuse is not None and lq_features is not None:
            h = self.fuse[1](h, lq_features[0], fidelity)
        return self.head(self.level1(h, cond))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class LatentDenoiser(nn.Module):
    """Predicts the clean HQ latent z0 from a noisy latent z_t, the LQ latent c, the task and t."""

    def __init__(self, latent_dim: int, channels: int, blocks: int, cond_dim: int):
        super().__init__()
        self.cond_dim = cond_dim
        self.time_mlp = nn.Sequential(nn.Linear(cond_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.inp = nn.Conv2d(2 * latent_dim, channels, 3, padding=1)
        self.body = ResStack(channels, blocks, cond_dim)
        self.out = nn.Conv2d(channels, latent_dim, 3, padding=1)

    def forward(self, z_t: torch.Tensor, c: torch.Tensor, t: torch.Tensor, task_cond: torch.Tensor) -> torch.Tensor:
        cond = task_cond + self.time_mlp(timestep_embedding(t, self.cond_dim).to(task_cond.dtype))
        h = self.body(self.inp(torch.cat([z_t, c], 1)), cond)
        return c + self.out(F.silu(h))
