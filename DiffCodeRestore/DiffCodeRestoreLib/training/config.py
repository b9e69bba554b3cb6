"""Training recipes as data: model preset, variant (ablation), and the two stages' budgets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from ..models import DiffCodeConfig
from ..tasks import TASKS

# The four ablations of the paper's ideas, as switches of the same model config.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "full": dict(prior="bank", diffusion=True),           # (d) DiffCode
    "no-diffusion": dict(prior="bank", diffusion=False),  # (c) codebook bank, nearest code of c
    "shared": dict(prior="shared", diffusion=True),       # (b) one codebook for all tasks
    "no-prior": dict(prior="none", diffusion=False),      # (a) same backbone, no prior
}


def split_for(data_split: Union[str, Dict[str, str]], task: str) -> str:
    """The split of ``task`` under a ``data_split`` setting (one split, or {task: split}, others "train"),
    also as read back from a run's ``train_config.json``."""
    return data_split if isinstance(data_split, str) else data_split.get(task, "train")


@dataclass
class TrainConfig:
    preset_name: str = ""  # the preset this config came from, recorded so a model card can say how to reproduce it
    model: str = "small"
    variant: str = "full"
    # Model config fields set over the preset (e.g. {"codebook_size": 1024}), recorded with the run.
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    # The model always has all tasks' embeddings and codebooks; a subset trains (or diagnoses) only those.
    tasks: List[str] = field(default_factory=lambda: list(TASKS))
    patch: int = 96
    batch_per_task: int = 4
    lr: float = 4e-4
    # The shipped diffcode-small recipe; the wall-clock caps are a safety net that should not bind (a stage
    # cut by time is not reproducible), so on a slower machine raise them or expect a shorter run.
    stage1_iters: int = 1100
    stage2_iters: int = 6500
    stage1_minutes: float = 600.0  # whichever comes first ends the stage
    stage2_minutes: float = 600.0
    codebook_warmup: int = 150  # stage-1 iterations before k-means initialisation of the codebooks
    latent_weight: float = 1.0
    # Without the stage-1 HQ encoder (continued training, adaptation: published weights do not hold it),
    # nothing supervises the refined latent z0, and it drifts off the frozen codebook: measured, the mean
    # distance of z0 to its nearest code grew from 0.06 to 0.38 in 2,500 continued steps and the 4-step
    # training chain then diverged (image L1 x10). This commitment term, L1(z0, its nearest code), keeps z0
    # where the prior can be retrieved (VQ-VAE's commitment loss; 0.25 as there).
    commitment_weight: float = 0.25
    ssim_weight: float = 0.2
    ema_decay: float = 0.998
    ema_start: int = 200  # the EMA copies the model until stage 2 is past this step, then averages
    warmup_iters: Optional[int] = None  # learning-rate warm-up steps (None: min(100, a tenth of the stage))
    # Anneal the learning rate over whichever budget binds first, iterations or minutes (adaptation runs
    # by the clock); False anneals over iterations only (the shipped recipe, whose clock caps never bind).
    schedule_by_time: bool = False
    # The training split (data.volumes.TRAINING_SPLITS: "train" real slices, "train-mixed" plus domain-randomised
    # synthetic pairs, "train-wide" wider ranges, "train-wide-mixed" both), for
    # every task, or {task: split} (tasks not named: "train"), so the data lever can be measured per task.
    data_split: Union[str, Dict[str, str]] = "train"
    # Continue from this trained model (a catalog name or weights folder) instead of training from scratch:
    # stage 1 is skipped and stage 2 starts from its weights, codebooks frozen, as adaptation does.
    base: Optional[str] = None
    # Every this many stage-2 steps, the EMA weights are saved under run_dir/snapshots/ (a learning curve).
    snapshot_every: int = 0
    checkpoint_minutes: float = 3.0
    log_every: int = 25
    seed: int = 0

    def model_config(self) -> DiffCodeConfig:
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown variant {self.variant!r}: choose one of {', '.join(VARIANTS)}.")
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {', '.join(TASKS)}; got {unknown or 'none'}.")
        return DiffCodeConfig.preset(self.model, **{**self.model_overrides, **VARIANTS[self.variant]})

    def split_for(self, task: str) -> str:
        """The training split ``task`` draws its slices from."""
        return split_for(self.data_split, task)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "TrainConfig":
        presets: Dict[str, Dict[str, Any]] = {
            "tiny": dict(model="tiny", patch=32, batch_per_task=2, stage1_iters=6, stage2_iters=6,
                         codebook_warmup=2, checkpoint_minutes=0.0, log_every=1),
            "small": {},
            # diffcode-small continued on the mixed split (real + synthetic pairs): measured in
            # docs/results.md (continued training), not shipped.
            "small-mixed": dict(base="diffcode-small", data_split="train-mixed", lr=2e-4, stage1_iters=0,
                                stage2_iters=3000, snapshot_every=500),
            # diffcode-small continued on the wide recipe (wider CT geometry and dose, more PET levels; CT and PET
            # synthetic pairs): the robustness suite's losing cases (docs/results.md).
            "small-wide": dict(base="diffcode-small", data_split="train-wide-mixed", lr=2e-4, stage1_iters=0,
                               stage2_iters=3000, snapshot_every=1000),
            "large": dict(model="large", patch=128, batch_per_task=8, lr=2e-4, stage1_iters=20000,
                          stage2_iters=100000, stage1_minutes=120.0, stage2_minutes=600.0),
        }
        if name not in presets:
            raise ValueError(f"Unknown training preset {name!r}: choose one of {', '.join(presets)}.")
        return cls(**{"preset_name": name, **presets[name], **{k: v for k, v in overrides.items() if v is not None}})
