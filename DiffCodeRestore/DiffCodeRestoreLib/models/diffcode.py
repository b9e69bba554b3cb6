"""DiffCode: LQ encoder -> few-step latent diffusion -> task codebook lookup -> fusing decoder.

``DiffCodeModel`` holds only what restoring an image needs; the stage-1 HQ autoencoder that learns
the codebook bank (``HQAutoencoder``) is used by training and its encoder is not shipped.
Weights are stored the Hub's way: ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import WeightsError
from ..files import ordinary_permissions
from .codebook import CodebookBank
from .config import DiffCodeConfig
from .diffusion import FewStepSchedule
from .networks import Decoder, Encoder, LatentDenoiser

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class _TaskConditioned(nn.Module):
    def __init__(self, config: DiffCodeConfig):
        super().__init__()
        self.config = config
        self.task_embed = nn.Embedding(config.num_tasks, config.task_embed_dim)
        self.register_buffer("task_shift", torch.tensor(config.task_shift), persistent=False)
        self.register_buffer("task_scale", torch.tensor(config.task_scale), persistent=False)

    def to_network_units(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return (x - self.task_shift[task][:, None, None, None].to(x.dtype)) / self.task_scale[task][:, None, None, None].to(x.dtype)

    def new_codebook(self) -> Optional[CodebookBank]:
        c = self.config
        if c.num_codebooks == 0:
            return None
        return CodebookBank(c.num_codebooks, c.codebook_size, c.latent_dim, decay=c.codebook_decay)


class HQAutoencoder(_TaskConditioned):
    """Stage 1: learns the high-quality prior (encoder, codebook bank, decoder) from HQ images."""

    def __init__(self, config: DiffCodeConfig):
        super().__init__(config)
        c = config
        self.encoder = Encoder(c.channels, c.encoder_blocks, c.latent_dim, c.task_embed_dim)
        self.codebook = self.new_codebook()
        self.decoder = Decoder(c.channels, c.decoder_blocks, c.latent_dim, c.task_embed_dim, fuse=False)

    def encode(self, hq: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        z, _ = self.encoder(self.to_network_units(hq, task), self.task_embed(task))
        return z

    def forward(self, hq: torch.Tensor, task: torch.Tensor) -> Dict[str, torch.Tensor]:
        cond = self.task_embed(task)
        z, _ = self.encoder(self.to_network_units(hq, task), cond)
        q, commitment, idx = self.codebook(z, task)
        return {"recon": self.decoder(q, cond), "target": self.to_network_units(hq, task),
                "commitment": commitment, "indices": idx, "z": z}


class DiffCodeModel(_TaskConditioned):
    """Stage 2, the restorer: what ships."""

    def __init__(self, config: DiffCodeConfig):
        super().__init__(config)
        c = config
        self.lq_encoder = Encoder(c.channels, c.encoder_blocks, c.latent_dim, c.task_embed_dim)
        self.denoiser = (LatentDenoiser(c.latent_dim, c.denoiser_channels, c.denoiser_blocks, c.task_embed_dim)
                         if c.diffusion else None)
        self.codebook = self.new_codebook()
        if self.codebook is not None:
            self.codebook.requires_grad_(False)  # the prior is frozen after stage 1
        self.decoder = Decoder(c.channels, c.decoder_blocks, c.latent_dim, c.task_embed_dim, fuse=True)
        self.schedule = FewStepSchedule(c.diffusion_timesteps, c.beta_start, c.beta_end)

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    def forward(self, lq: torch.Tensor, task: torch.Tensor, steps: Optional[int] = None,
                fidelity: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                noise: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """lq: (B, 1, H, W) in [0, 1] (tasks.normalize); task: (B,) long. Returns the image and latents.

        ``noise``: optional pre-drawn diffusion noise (see ``FewStepSchedule.sample``), instead of ``generator``.
        """
        if lq.shape[-1] % self.size_multiple or lq.shape[-2] % self.size_multiple:
            raise ValueError(f"height and width must be multiples of {self.size_multiple}; pad the image first")
        cond = self.task_embed(task)
        c, features = self.lq_encoder(self.to_network_units(lq, task), cond)
        if self.denoiser is not None:
            z0 = self.schedule.sample(lambda z, t: self.denoiser(z, c, t, cond), c,
                                      steps or self.config.default_steps, generator, noise)
        else:
            z0 = c
        if self.codebook is not None:
            quant, indices = self.codebook.lookup(z0, task)
            prior = z0 + (quant - z0).detach()
        else:
            prior, indices = z0, None
        if fidelity is None:
            fidelity = torch.full((lq.shape[0],), self.config.default_fidelity, device=lq.device, dtype=lq.dtype)
        residual = self.decoder(prior, cond, features, fidelity.to(lq.dtype))
        image = lq + residual * self.task_scale[task][:, None, None, None].to(lq.dtype)
        out = {"image": image, "z0": z0, "c": c}
        if indices is not None:
            out["indices"] = indices
        return out

    @torch.no_grad()
    def restore(self, x: torch.Tensor, task_index: int, steps: Optional[int] = None,
                fidelity: Optional[float] = None, generator: Optional[torch.Generator] = None,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Restore a batch of normalised slices of one task: (B, 1, H, W) -> (B, 1, H, W), non-negative."""
        return self.restore_with_codes(x, task_index, steps, fidelity, generator, noise)[0]

    @torch.no_grad()
    def restore_with_codes(self, x: torch.Tensor, task_index: int, steps: Optional[int] = None,
                           fidelity: Optional[float] = None, generator: Optional[torch.Generator] = None,
                           noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``restore``, plus the indices of the retrieved codes, (B, H/4, W/4) (None without a codebook)."""
        if not 0 <= task_index < self.config.num_tasks:
            raise ValueError(f"task_index must be in [0, {self.config.num_tasks})")
        if fidelity is not None and not 0.0 <= fidelity <= 1.0:
            raise ValueError("fidelity must be between 0 and 1")
        task = torch.full((x.shape[0],), task_index, device=x.device, dtype=torch.long)
        w = None if fidelity is None else torch.full((x.shape[0],), float(fidelity), device=x.device, dtype=x.dtype)
        out = self(x, task, steps=steps, fidelity=w, generator=generator, noise=noise)
        return out["image"].clamp_(min=0), out.get("indices")

    # ---- Hub-style persistence -------------------------------------------------------------
    def load_prior(self, stage1: HQAutoencoder) -> None:
        """Take the frozen codebook bank from stage 1 and start the decoder from stage 1's decoder."""
        if self.codebook is not None:
            self.codebook.load_state_dict(stage1.codebook.state_dict())
        missing, unexpected = self.decoder.load_state_dict(stage1.decoder.state_dict(), strict=False)
        if unexpected or not all(k.startswith("fuse.") for k in missing):
            raise ValueError("stage-1 decoder does not match this config: train both stages with the same config")
        self.task_embed.load_state_dict(stage1.task_embed.state_dict())

    def save_pretrained(self, folder: Union[str, Path], fp16: bool = True) -> Path:
        from safetensors.torch import save_file

        from .. import __version__

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                 if not _is_training_buffer(k)}
        if fp16:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        config = {"model_type": "diffcode-restore", "package_version": __version__, **self.config.to_dict()}
        tmp = folder / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt"})
        ordinary_permissions(tmp)  # safetensors writes owner-only files
        tmp.replace(folder / WEIGHTS_NAME)
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: Union[str, Path], device: Union[str, torch.device] = "cpu",
                        dtype: torch.dtype = torch.float32) -> "DiffCodeModel":
        folder = Path(folder)
        weights = folder / WEIGHTS_NAME if folder.is_dir() else folder
        config_path = weights.parent / CONFIG_NAME
        if weights.suffix != ".safetensors":
            raise WeightsError(f"{weights.name}: only .safetensors weights are loaded (pickled checkpoints can run code); "
                               "convert the checkpoint to safetensors.")
        if not weights.is_file() or not config_path.is_file():
            raise WeightsError(f"{weights.parent}: needs {CONFIG_NAME} and {WEIGHTS_NAME}; download the weights again.")
        try:
            config = DiffCodeConfig.load(config_path)
        except (ValueError, TypeError) as exc:
            raise WeightsError(f"{config_path}: invalid model config ({exc}).") from None
        state = load_safetensors(weights)
        model = cls(config)
        expected = {k: v.shape for k, v in model.state_dict().items() if not _is_training_buffer(k)}
        found = {k: v.shape for k, v in state.items()}
        if expected != found:
            wrong = sorted(set(expected.items()) ^ set(found.items()))[:3]
            raise WeightsError(f"{weights}: weights do not match their config.json ({wrong}); download the weights again.")
        model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=False)
        return model.to(device=device, dtype=dtype).eval()


def _is_training_buffer(key: str) -> bool:
    return key.startswith("codebook.") and key.rsplit(".", 1)[-1] in CodebookBank.TRAINING_BUFFERS


def load_safetensors(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Load a safetensors file, turning any parse failure into one clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc}); delete it and download the weights again.") from None
