"""The two training stages, resumable from checkpoints, with JSON-lines logs.

Stage 1 learns the HQ prior (autoencoder + codebook bank). Stage 2 freezes it and trains the
restorer end to end: the whole few-step reverse chain is run and supervised with the frozen HQ
encoder's latent of the target (DiffIR), plus the image loss.

Adaptation to a user's scanner (``adapt.py``) is stage 2 again, started from a trained model
(``base``) on another data source, with hooks for validation, progress and cancel: one loop, so a
fix or an improvement here reaches both. Under ``torchrun`` both stages run data-parallel
(``distributed.py``): each step's loss is computed by a small module wrapped in
DistributedDataParallel, so gradients are averaged whatever path the forward takes.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path
from ..models import DiffCodeModel, HQAutoencoder
from . import distributed
from .config import TrainConfig
from .distributed import SINGLE, DistContext
from .losses import image_loss
from .patches import PatchSampler


class RunLog:
    """JSON lines, one record per logged step; only the main process of a distributed run writes."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _save_checkpoint(path: Path, payload: Dict) -> None:
    with atomic_path(path) as temporary:  # a checkpoint is never half written
        torch.save(payload, temporary)


def _load_checkpoint(path: Path) -> Optional[Dict]:
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _cosine_lr(base: float, step: int, total: int, warmup: Optional[int] = None,
               progress: Optional[float] = None) -> float:
    """Linear warm-up, then cosine decay to 0 over ``progress`` (default: ``step / total``)."""
    warmup = min(100, total // 10) if warmup is None else warmup
    if step < warmup:
        return base * (step + 1) / warmup
    if progress is None:
        progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


class StageHooks:
    """What a caller adds to a stage's loop (adaptation: validation, progress, cancel).

    ``after_step`` runs on every process after each optimiser step (its time counts against the
    stage's budget); ``stop_requested`` is asked before each step and, when any process says yes,
    every process stops after saving the checkpoint (resumable, not ``finished``).
    """

    def after_step(self, stage: "_Stage", metrics: Dict[str, float]) -> None:
        pass

    def stop_requested(self) -> bool:
        return False


class _Stage:
    """Shared loop mechanics: budget, LR schedule, checkpoint/resume, logging, progress, agreement."""

    def __init__(self, name: str, tc: TrainConfig, iters: int, minutes: float, run_dir: Path,
                 modules: Dict[str, torch.nn.Module], params, log: RunLog, progress: bool,
                 dist: DistContext = SINGLE):
        self.name, self.tc, self.iters, self.minutes = name, tc, iters, minutes
        self.modules, self.log, self.progress, self.dist = modules, log, progress, dist
        self.opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=1e-4)
        self.path = run_dir / f"{name}.ckpt"
        self.step, self.elapsed = 0, 0.0
        self.stopped = False  # left the loop on a stop request, not because the budget was spent
        state = _load_checkpoint(self.path)
        if state is not None:
            for key, module in modules.items():
                module.load_state_dict(state["modules"][key])
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            torch.set_rng_state(state["torch_rng"])
        if dist.enabled:  # the replicas draw different noise and fidelities (their patches differ already)
            torch.manual_seed(tc.seed + 100003 * dist.rank + self.step)

    @property
    def resumed(self) -> bool:
        return self.step > 0

    @property
    def budget_s(self) -> float:
        return self.minutes * 60

    @property
    def done(self) -> bool:
        return self.step >= self.iters or self.elapsed >= self.budget_s

    @property
    def fraction(self) -> float:
        """Share of the budget spent: iterations or minutes, whichever binds first."""
        by_time = self.elapsed / self.budget_s if math.isfinite(self.budget_s) and self.budget_s > 0 else 0.0
        return min(1.0, max(self.step / max(1, self.iters), by_time))

    def learning_rate(self) -> float:
        tc = self.tc
        warmup = min(100, self.iters // 10) if tc.warmup_iters is None else tc.warmup_iters
        progress = None
        if tc.schedule_by_time:  # the same on every process: elapsed is agreed each step
            start = warmup / max(1, self.iters)
            progress = (self.fraction - start) / max(1e-9, 1 - start)
        return _cosine_lr(tc.lr, self.step, self.iters, warmup, progress)

    def save(self, extra: Optional[Dict] = None) -> None:
        if not self.dist.is_main:
            return
        _save_checkpoint(self.path, {"modules": {k: m.state_dict() for k, m in self.modules.items()},
                                     "opt": self.opt.state_dict(), "step": self.step, "elapsed": self.elapsed,
                                     "torch_rng": torch.get_rng_state(), "finished": self.done, **(extra or {})})

    def run(self, train_step: Callable[[int], Dict[str, float]], hooks: Optional[StageHooks] = None) -> None:
        from tqdm import tqdm

        hooks = hooks or StageHooks()
        bar = tqdm(total=self.iters if self.iters < 10 ** 9 else None, initial=self.step, desc=self.name,
                   disable=not (self.progress and self.dist.is_main), mininterval=5)
        last_save = time.monotonic()
        while True:
            done, stop, self.elapsed = distributed.agree(self.dist, self.done, hooks.stop_requested(), self.elapsed)
            if done or stop:
                self.stopped = stop and not done
                break
            start = time.monotonic()
            for group in self.opt.param_groups:
                group["lr"] = self.learning_rate()
            metrics = train_step(self.step)
            self.step += 1
            hooks.after_step(self, metrics)
            self.elapsed += time.monotonic() - start
            bar.update(1)
            if self.dist.is_main and (self.step % self.tc.log_every == 0 or self.done):
                self.log.write({"stage": self.name, "step": self.step, "elapsed_s": round(self.elapsed, 1), **metrics})
                bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items() if isinstance(v, float)})
            if time.monotonic() - last_save >= self.tc.checkpoint_minutes * 60 and not self.done:
                self.save()
                last_save = time.monotonic()
        self.save()  # finished, or stopped: either way the run can be resumed or read back
        bar.close()


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


class _Stage1Loss(nn.Module):
    """One stage-1 step's loss; a module so that DDP sees the forward (and averages the gradients)."""

    def __init__(self, ae: HQAutoencoder, ssim_weight: float):
        super().__init__()
        self.ae, self.ssim_weight = ae, ssim_weight

    def forward(self, hq: torch.Tensor, task: torch.Tensor, warmup: bool):
        ae = self.ae
        if warmup:  # plain autoencoder until the latents are worth clustering
            cond = ae.task_embed(task)
            z, _ = ae.encoder(ae.to_network_units(hq, task), cond)
            recon, target = ae.decoder(z, cond), ae.to_network_units(hq, task)
            commit = torch.zeros((), device=hq.device)
        else:
            out = ae(hq, task)
            recon, target, commit = out["recon"], out["target"], out["commitment"]
        loss = image_loss(recon, target, self.ssim_weight) + ae.config.commitment_weight * commit
        return loss, F.l1_loss(recon, target).detach(), commit.detach()


def train_stage1(tc: TrainConfig, sampler: PatchSampler, run_dir: Path, log: RunLog, device: torch.device,
                 progress: bool = True, dist: DistContext = SINGLE) -> HQAutoencoder:
    ae = HQAutoencoder(tc.model_config()).to(device)
    stage = _Stage("stage1", tc, tc.stage1_iters, tc.stage1_minutes, run_dir, {"ae": ae}, ae.parameters(), log,
                   progress, dist)
    net = distributed.wrap(_Stage1Loss(ae, tc.ssim_weight), dist, device)

    def step(i: int) -> Dict[str, float]:
        lq, hq, task = sampler.batch(tc.batch_per_task)
        hq, task = hq.to(device), task.to(device)
        ae.train()
        loss, l1, commit = net(hq, task, i < tc.codebook_warmup)
        if i == tc.codebook_warmup - 1:
            _kmeans_init(ae, sampler, tc, device)  # per process; DDP broadcasts rank 0's codes at the next step
        stage.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        stage.opt.step()
        usage = (ae.codebook.usage > 1e-3).float().mean(-1).tolist()
        return {"loss": loss.item(), "l1": l1.item(), "commit": commit.item(),
                "code_usage": [round(u, 3) for u in usage]}

    stage.run(step)
    distributed.broadcast_state(ae, dist)  # the last step's codebook update was each process's own
    return ae.eval()


@torch.no_grad()
def _kmeans_init(ae: HQAutoencoder, sampler: PatchSampler, tc: TrainConfig, device: torch.device) -> None:
    zs, tasks = [], []
    for _ in range(8):
        _, hq, task = sampler.batch(tc.batch_per_task)
        zs.append(ae.encode(hq.to(device), task.to(device)))
        tasks.append(task.to(device))
    ae.codebook.init_from_latents(torch.cat(zs), torch.cat(tasks))


class _Stage2Loss(nn.Module):
    """One stage-2 step's loss: image L1 (+ SSIM), plus the latent loss when the stage-1 encoder is there,
    else (continued training, adaptation) the commitment of the refined latent to its nearest code."""

    def __init__(self, model: DiffCodeModel, stage1: Optional[HQAutoencoder], tc: TrainConfig):
        super().__init__()
        self.model, self.stage1, self.tc = model, stage1, tc

    def forward(self, lq: torch.Tensor, hq: torch.Tensor, task: torch.Tensor, fidelity: torch.Tensor,
                generator: torch.Generator):
        model = self.model
        out = model(lq, task, steps=model.config.diffusion_timesteps, fidelity=fidelity, generator=generator)
        pred, target = model.to_network_units(out["image"], task), model.to_network_units(hq, task)
        loss = image_loss(pred, target, self.tc.ssim_weight)
        metrics = {"l1": F.l1_loss(pred, target).detach(),
                   "input_l1": F.l1_loss(model.to_network_units(lq, task), target).detach()}
        if self.stage1 is not None:
            with torch.no_grad():
                z_hq = self.stage1.encode(hq, task)
            latent = F.l1_loss(out["z0"], z_hq)
            loss = loss + self.tc.latent_weight * latent
            metrics["latent_l1"] = latent.detach()
        elif model.codebook is not None and self.tc.commitment_weight > 0:
            quant, _ = model.codebook.lookup(out["z0"], task)
            commitment = F.l1_loss(out["z0"], quant.detach())
            loss = loss + self.tc.commitment_weight * commitment
            metrics["commitment_l1"] = commitment.detach()
        return loss, metrics


def train_stage2(tc: TrainConfig, sampler: PatchSampler, stage1: Optional[HQAutoencoder], run_dir: Path,
                 log: RunLog, device: torch.device, progress: bool = True, base: Optional[DiffCodeModel] = None,
                 hooks: Optional[StageHooks] = None, dist: DistContext = SINGLE) -> DiffCodeModel:
    """Train the restorer; returns its EMA.

    ``base``: start from this trained model instead of a fresh one with the prior of ``stage1``
    (adaptation). Its codebook bank stays frozen, as in any stage 2; with ``stage1`` None (the
    shipped weights hold no stage-1 HQ encoder) only the image loss supervises the step.
    """
    if base is not None:
        model = copy.deepcopy(base).to(device=device, dtype=torch.float32)
        if model.codebook is not None:
            model.codebook.requires_grad_(False)
    else:
        model = DiffCodeModel(tc.model_config()).to(device)
        if stage1 is not None:
            model.load_prior(stage1)
    if stage1 is not None:
        stage1.requires_grad_(False)
    distributed.broadcast_state(model, dist)  # every replica and its EMA start from rank 0's weights
    ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    stage = _Stage("stage2", tc, tc.stage2_iters, tc.stage2_minutes, run_dir, {"model": model, "ema": ema}, params,
                   log, progress, dist)
    net = distributed.wrap(_Stage2Loss(model, stage1, tc), dist, device)
    gen = torch.Generator(device=device).manual_seed(tc.seed + stage.step + 7919 * dist.rank)
    stage.ema = ema  # for the hooks (validation scores the EMA, which is what is returned)

    def step(i: int) -> Dict[str, float]:
        lq, hq, task = sampler.batch(tc.batch_per_task)
        lq, hq, task = lq.to(device), hq.to(device), task.to(device)
        model.train()
        n = task.shape[0]
        fidelity = torch.where(torch.rand(n, device=device) < 0.5, torch.ones(n, device=device),
                               torch.rand(n, device=device))
        loss, metrics = net(lq, hq, task, fidelity, gen)
        stage.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        stage.opt.step()
        _ema_update(ema, model, tc.ema_decay if stage.step > tc.ema_start else 0.0)
        return {**{k: v.item() for k, v in metrics.items()}, "loss": loss.item()}

    stage.run(step, hooks)
    stage2_state = {"stopped": stage.stopped, "step": stage.step, "elapsed": stage.elapsed}
    ema.stage2_state = stage2_state  # how the stage ended: adaptation reports it
    return ema.eval()
