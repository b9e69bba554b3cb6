"""The two training stages, resumable from checkpoints, with JSON-lines logs.

Stage 1 learns the HQ prior (autoencoder + codebook bank). Stage 2 freezes it and trains the
restorer end to end: the whole few-step reverse chain is run and supervised with the frozen HQ
encoder's latent of the target (DiffIR), plus the image loss.
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

from ..models import DiffCodeModel, HQAutoencoder
from .config import TrainConfig
from .losses import image_loss
from .patches import PatchSampler


class RunLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _save_checkpoint(path: Path, payload: Dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path) -> Optional[Dict]:
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _cosine_lr(base: float, step: int, total: int) -> float:
    warmup = min(100, total // 10)
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class _Stage:
    """Shared loop mechanics: budget, LR schedule, checkpoint/resume, logging, progress."""

    def __init__(self, name: str, tc: TrainConfig, iters: int, minutes: float, run_dir: Path,
                 modules: Dict[str, torch.nn.Module], params, log: RunLog, progress: bool):
        self.name, self.tc, self.iters, self.minutes = name, tc, iters, minutes
        self.modules, self.log, self.progress = modules, log, progress
        self.opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=1e-4)
        self.path = run_dir / f"{name}.ckpt"
        self.step, self.elapsed = 0, 0.0
        state = _load_checkpoint(self.path)
        if state is not None:
            for key, module in modules.items():
                module.load_state_dict(state["modules"][key])
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            torch.set_rng_state(state["torch_rng"])

    @property
    def done(self) -> bool:
        return self.step >= self.iters or self.elapsed >= self.minutes * 60

    def save(self, extra: Optional[Dict] = None) -> None:
        _save_checkpoint(self.path, {"modules": {k: m.state_dict() for k, m in self.modules.items()},
                                     "opt": self.opt.state_dict(), "step": self.step, "elapsed": self.elapsed,
                                     "torch_rng": torch.get_rng_state(), "finished": self.done, **(extra or {})})

    def run(self, train_step: Callable[[int], Dict[str, float]]) -> None:
        from tqdm import tqdm

        bar = tqdm(total=self.iters, initial=self.step, desc=self.name, disable=not self.progress, mininterval=5)
        last_save = time.monotonic()
        while not self.done:
            start = time.monotonic()
            for group in self.opt.param_groups:
                group["lr"] = _cosine_lr(self.tc.lr, self.step, self.iters)
            metrics = train_step(self.step)
            self.step += 1
            self.elapsed += time.monotonic() - start
            bar.update(1)
            if self.step % self.tc.log_every == 0 or self.done:
                self.log.write({"stage": self.name, "step": self.step, "elapsed_s": round(self.elapsed, 1), **metrics})
                bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items() if isinstance(v, float)})
            if self.done or time.monotonic() - last_save >= self.tc.checkpoint_minutes * 60:
                self.save()
                last_save = time.monotonic()
        bar.close()


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_stage1(tc: TrainConfig, sampler: PatchSampler, run_dir: Path, log: RunLog, device: torch.device,
                 progress: bool = True) -> HQAutoencoder:
    ae = HQAutoencoder(tc.model_config()).to(device)
    stage = _Stage("stage1", tc, tc.stage1_iters, tc.stage1_minutes, run_dir, {"ae": ae}, ae.parameters(), log, progress)

    def step(i: int) -> Dict[str, float]:
        lq, hq, task = sampler.batch(tc.batch_per_task)
        hq, task = hq.to(device), task.to(device)
        ae.train()
        if i < tc.codebook_warmup:  # plain autoencoder until the latents are worth clustering
            cond = ae.task_embed(task)
            z, _ = ae.encoder(ae.to_network_units(hq, task), cond)
            recon, target, commit = ae.decoder(z, cond), ae.to_network_units(hq, task), torch.zeros((), device=device)
            if i == tc.codebook_warmup - 1:
                _kmeans_init(ae, sampler, tc, device)
        else:
            out = ae(hq, task)
            recon, target, commit = out["recon"], out["target"], out["commitment"]
        loss = image_loss(recon, target, tc.ssim_weight) + ae.config.commitment_weight * commit
        stage.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        stage.opt.step()
        usage = (ae.codebook.usage > 1e-3).float().mean(-1).tolist()
        return {"loss": loss.item(), "l1": F.l1_loss(recon, target).item(), "commit": commit.item(),
                "code_usage": [round(u, 3) for u in usage]}

    stage.run(step)
    return ae.eval()


@torch.no_grad()
def _kmeans_init(ae: HQAutoencoder, sampler: PatchSampler, tc: TrainConfig, device: torch.device) -> None:
    zs, tasks = [], []
    for _ in range(8):
        _, hq, task = sampler.batch(tc.batch_per_task)
        zs.append(ae.encode(hq.to(device), task.to(device)))
        tasks.append(task.to(device))
    ae.codebook.init_from_latents(torch.cat(zs), torch.cat(tasks))


def train_stage2(tc: TrainConfig, sampler: PatchSampler, stage1: Optional[HQAutoencoder], run_dir: Path,
                 log: RunLog, device: torch.device, progress: bool = True) -> DiffCodeModel:
    model = DiffCodeModel(tc.model_config()).to(device)
    if stage1 is not None:
        model.load_prior(stage1)
        stage1.requires_grad_(False)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    stage = _Stage("stage2", tc, tc.stage2_iters, tc.stage2_minutes, run_dir, {"model": model, "ema": ema}, params,
                   log, progress)
    gen = torch.Generator(device=device).manual_seed(tc.seed + stage.step)

    def step(i: int) -> Dict[str, float]:
        lq, hq, task = sampler.batch(tc.batch_per_task)
        lq, hq, task = lq.to(device), hq.to(device), task.to(device)
        model.train()
        fidelity = torch.where(torch.rand(task.shape[0], device=device) < 0.5, torch.ones(task.shape[0], device=device),
                               torch.rand(task.shape[0], device=device))
        out = model(lq, task, steps=model.config.diffusion_timesteps, fidelity=fidelity, generator=gen)
        pred, target = model.to_network_units(out["image"], task), model.to_network_units(hq, task)
        loss = image_loss(pred, target, tc.ssim_weight)
        metrics: Dict[str, float] = {"l1": F.l1_loss(pred, target).item(),
                                     "input_l1": F.l1_loss(model.to_network_units(lq, task), target).item()}
        if stage1 is not None:
            with torch.no_grad():
                z_hq = stage1.encode(hq, task)
            latent = F.l1_loss(out["z0"], z_hq)
            loss = loss + tc.latent_weight * latent
            metrics["latent_l1"] = latent.item()
        stage.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        stage.opt.step()
        _ema_update(ema, model, tc.ema_decay if stage.step > 200 else 0.0)
        metrics["loss"] = loss.item()
        return metrics

    stage.run(step)
    return ema.eval()
