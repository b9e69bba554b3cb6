"""Task-adaptive bank of vector-quantised codebooks: the high-quality prior.

One codebook per task (or a single shared one for the ablation). Codes are learned by EMA of the
latents assigned to them (VQ-VAE-2 style), and codes unused for a while are restarted from current
latents, so no codebook collapses.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class CodebookBank(nn.Module):
    TRAINING_BUFFERS = ("cluster_size", "code_sum", "usage")

    def __init__(self, num_books: int, size: int, dim: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        if num_books < 1:
            raise ValueError("a codebook bank needs at least one codebook")
        self.num_books, self.size, self.dim, self.decay, self.eps = num_books, size, dim, decay, eps
        self.register_buffer("codes", torch.randn(num_books, size, dim) * 0.1)
        # EMA statistics: saved in training checkpoints, left out of published weights.
        self.register_buffer("cluster_size", torch.zeros(num_books, size))
        self.register_buffer("code_sum", self.codes.clone())
        self.register_buffer("usage", torch.zeros(num_books, size))

    def book_index(self, task_index: torch.Tensor) -> torch.Tensor:
        return task_index if self.num_books > 1 else torch.zeros_like(task_index)

    def lookup(self, z: torch.Tensor, task_index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Nearest code of each latent vector in its sample's codebook: (quantised, indices).

        Distances are computed in float32 even under autocast: in bfloat16 near-ties pick other codes.
        """
        b, d, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            books = self.codes[self.book_index(task_index)].float()  # (B, K, D)
            flat = z.permute(0, 2, 3, 1).reshape(b, h * w, d).float()
            # |z|^2 is the same for every code, so it does not change the nearest one
            dist = torch.baddbmm(books.pow(2).sum(-1).unsqueeze(1), flat, books.transpose(1, 2), alpha=-2)
            idx = dist.argmin(-1)  # (B, HW)
            quant = torch.gather(books, 1, idx.unsqueeze(-1).expand(-1, -1, d)).to(z.dtype)
        return quant.reshape(b, h, w, d).permute(0, 3, 1, 2).contiguous(), idx.reshape(b, h, w)

    def forward(self, z: torch.Tensor, task_index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantisation: (quantised, commitment loss, indices); EMA update when training."""
        quant, idx = self.lookup(z, task_index)
        if self.training:
            self._ema_update(z.detach(), idx, self.book_index(task_index))
        commitment = F.mse_loss(z, quant.detach())
        return z + (quant - z).detach(), commitment, idx

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, idx: torch.Tensor, books: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        book_of = books.view(-1, 1).expand(-1, idx[0].numel()).reshape(-1)
        slot = book_of * self.size + idx.reshape(-1)  # global code slot
        total = self.num_books * self.size
        counts = torch.bincount(slot, minlength=total).float().view(self.num_books, self.size)
        sums = torch.zeros(total, self.dim, device=z.device).index_add_(0, slot, flat).view(self.num_books, self.size, self.dim)
        seen = torch.unique(books)
        d = self.decay
        self.cluster_size[seen] = self.cluster_size[seen] * d + counts[seen] * (1 - d)
        self.code_sum[seen] = self.code_sum[seen] * d + sums[seen] * (1 - d)
        n = self.cluster_size[seen].sum(-1, keepdim=True)
        size = (self.cluster_size[seen] + self.eps) / (n + self.size * self.eps) * n
        self.codes[seen] = self.code_sum[seen] / size.unsqueeze(-1)
        self.usage[seen] = self.usage[seen] * d + (counts[seen] > 0).float() * (1 - d)
        self._restart_dead_codes(flat, book_of, seen)

    def _restart_dead_codes(self, flat: torch.Tensor, book_of: torch.Tensor, seen: torch.Tensor) -> None:
        for b in seen.tolist():
            dead = (self.usage[b] < 1e-3).nonzero().flatten()
            candidates = flat[book_of == b]
            if dead.numel() == 0 or candidates.shape[0] == 0:
                continue
            pick = torch.randint(0, candidates.shape[0], (dead.numel(),), device=flat.device)
            self.codes[b, dead] = candidates[pick]
            self.code_sum[b, dead] = candidates[pick]
            self.cluster_size[b, dead] = 1.0
            self.usage[b, dead] = 0.05

    @torch.no_grad()
    def init_from_latents(self, z: torch.Tensor, task_index: torch.Tensor, iters: int = 10) -> None:
        """k-means initialisation of each codebook from latents of its task (keeps codes alive)."""
        flat = z.permute(0, 2, 3, 1).reshape(z.shape[0], -1, self.dim).float()
        books = self.book_index(task_index)
        for b in torch.unique(books).tolist():
            x = flat[books == b].reshape(-1, self.dim)
            centres = x[torch.randperm(x.shape[0], device=x.device)[: self.size]]
            if centres.shape[0] < self.size:
                centres = centres[torch.randint(0, centres.shape[0], (self.size,), device=x.device)]
            for _ in range(iters):
                assign = torch.cdist(x, centres).argmin(-1)
                sums = torch.zeros_like(centres).index_add_(0, assign, x)
                counts = torch.bincount(assign, minlength=self.size).float().unsqueeze(-1)
                centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
            self.codes[b] = centres
            self.code_sum[b] = centres
            self.cluster_size[b] = 1.0
            self.usage[b] = 0.05
