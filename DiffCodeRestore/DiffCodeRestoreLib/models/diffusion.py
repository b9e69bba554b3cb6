"""Few-step latent diffusion: noise schedule and sampler, independent of any network.

DiffIR-style: a handful of steps with a linear beta schedule from 0.1 to 0.99, so the whole reverse
chain can be run (and back-propagated) during training. The denoiser predicts the clean latent z0
directly; the sampler is DDIM with eta = 1 (stochastic, reproducible under a torch.Generator).
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch


class FewStepSchedule:
    def __init__(self, timesteps: int = 4, beta_start: float = 0.1, beta_end: float = 0.99):
        if timesteps < 1 or not 0 < beta_start <= beta_end < 1:
            raise ValueError("need timesteps >= 1 and 0 < beta_start <= beta_end < 1")
        self.timesteps = timesteps
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - betas, 0)

    def step_indices(self, steps: int) -> List[int]:
        """Timesteps visited by a ``steps``-step sampler, from the noisiest down to 0."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be between 1 and {self.timesteps}, got {steps}")
        grid = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        return list(dict.fromkeys(grid))

    def noise_like(self, z: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        return torch.randn(z.shape, generator=generator, device=z.device if generator is None else generator.device,
                           dtype=z.dtype).to(z.device)

    def sample(self, predict_z0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], c: torch.Tensor,
               steps: int, generator: Optional[torch.Generator] = None,
               noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the reverse chain; ``predict_z0(z_t, t)`` is the conditional denoiser.

        The chain starts from c pushed to the last noise level (not from pure noise). ``noise``, if given,
        holds every draw the chain uses, shape ``(len(step_indices(steps)),) + c.shape``: callers that
        seed per slice pass it so that batching and tiling do not change the result.
        """
        indices = self.step_indices(steps)
        if noise is not None and tuple(noise.shape) != (len(indices),) + tuple(c.shape):
            raise ValueError(f"noise must have shape {(len(indices),) + tuple(c.shape)}, got {tuple(noise.shape)}")
        draws = iter(noise.to(device=c.device, dtype=c.dtype)) if noise is not None else None

        def draw(z: torch.Tensor) -> torch.Tensor:
            return next(draws) if draws is not None else self.noise_like(z, generator)

        a = float(self.alpha_bar[-1])
        z = a ** 0.5 * c + (1 - a) ** 0.5 * draw(c)
        z0 = z
        for i, t in enumerate(indices):
            t_batch = torch.full((c.shape[0],), t, device=c.device, dtype=torch.long)
            z0 = predict_z0(z, t_batch)
            if i == len(indices) - 1:
                break
            z = self._ddim_step(z, z0, t, indices[i + 1], draw(z))
        return z0

    def _ddim_step(self, z: torch.Tensor, z0: torch.Tensor, t: int, t_next: int, noise: torch.Tensor) -> torch.Tensor:
        a, a_next = float(self.alpha_bar[t]), float(self.alpha_bar[t_next])
        eps = (z - a ** 0.5 * z0) / (1 - a) ** 0.5
        sigma = ((1 - a_next) / (1 - a) * (1 - a / a_next)) ** 0.5  # eta = 1
        direction = max(1 - a_next - sigma ** 2, 0.0) ** 0.5
        return a_next ** 0.5 * z0 + direction * eps + sigma * noise
