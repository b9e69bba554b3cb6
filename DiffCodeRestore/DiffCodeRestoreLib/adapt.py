"""Adapt a model to the user's scanner: fine-tune it on their own high-quality scans.

    from DiffCodeRestoreLib.adapt import adapt
    result = adapt(["scans/"], task="ct-denoise", out="my-ct-model", minutes=10)
    print(result.table())

No training set matches every scanner, protocol and body region; a user's own high-quality scans,
degraded by the task's physics simulator (``adapt_data``), close that gap. Why it works this way:

- **It is stage 2 again, not a second training loop**: ``training.loop.train_stage2`` started from the
  base model, with hooks for validation, progress and cancel. The codebook bank (the HQ prior) stays
  frozen; the rest is fine-tuned at a lower learning rate (1e-4 against 4e-4) with a short warm-up,
  annealed over the budget, and scored through its EMA (decay 0.99, from the first step), as the loop
  does. The published weights hold no stage-1 HQ encoder, so the latent loss cannot be computed: only
  the image loss (L1 + 0.2 SSIM) supervises adaptation.
- **Honest figures**: whole volumes are held out (with one volume, a block of slices far from the
  training ones); the base model, the adapted model, the input and the best of the fast classical
  filters tuned on those very slices (generous to the filters) are scored there with the AMIR protocol.
  The best checkpoint by held-out PSNR is kept. A model that does not beat its base there is not
  written unless ``force``: a worse model must not replace a better one silently.
- **Budget**: ``minutes`` bounds the whole run, reading and simulating included (training gets what
  preparation leaves, minus a reserve for the last scoring); ``iterations`` bounds the training steps.
- **Interruptible and resumable**: a cancel (``cancel.cancelled``, Ctrl-C or SIGTERM on the command
  line) stops after the current step; the checkpoint and the best model so far stay in the run
  folder, and the same call continues from them (the settings must match; a larger budget continues).
- **Anywhere**: one CPU, a GPU, or several processes under ``torchrun`` (``training.distributed``);
  only rank 0 scores and writes.
- **The output** is a weights folder in the Hub layout (``config.json``, ``model.safetensors``, a
  model card ``README.md`` with the base model and its revision, the degradation, a data summary
  without file names or patient data, the held-out figures, and ``adaptation.json``), with a
  ``checksums.sha256`` manifest, so ``restore --model FOLDER`` verifies it before use.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import adapt_data
from .adapt_data import HEADLINE, LEVEL_OPTIONS, LEVELS, AdaptCancelled, HQVolume, PairSet
from .files import staging_dir

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_MINUTES = 10.0
ADAPT_TRAINING = dict(patch=96, batch_per_task=8, lr=1e-4, ema_decay=0.99, ema_start=0, warmup_iters=20,
                      ssim_weight=0.2, schedule_by_time=True, checkpoint_minutes=1.0, log_every=10)
VALIDATIONS = 8  # held-out scorings over the budget (plus the base's and the final one)
FAST_FILTERS = ("gaussian", "nlm")  # tuned on the held-out slices; MRI with an integer factor adds bicubic, bspline
SETTINGS_FILE = "settings.json"
SCORES_FILE = "scores.json"
BEST = "best"


class AdaptError(ValueError):
    """The adaptation cannot run as asked; one line saying what to do."""


class AdaptRefused(RuntimeError):
    """The adapted model is not better than its base on the held-out data; nothing was written."""


@dataclass
class AdaptProgress:
    """What a progress callback receives: ``fraction`` of the whole run in [0, 1], a one-line ``message``."""

    phase: str  # reading, simulating, scoring, training, writing
    fraction: float
    message: str
    step: int = 0
    total_steps: Optional[int] = None
    eta_s: Optional[float] = None
    held_out_psnr: Optional[float] = None


@dataclass
class Score:
    psnr: float
    ssim: float


@dataclass
class AdaptResult:
    """What an adaptation did. ``folder`` is None when nothing was written (refused, or not rank 0)."""

    task: str
    level_name: str
    level: float
    level_source: str  # "given", "headline default", or what --like measured
    base: Dict[str, Any]  # name, revision, sha256 of the base weights
    held_out: str  # which data were held out
    scores: Dict[str, Score]  # "input", "best filter", "base model", "adapted model"
    best_filter: str
    best_step: int
    steps: int
    train_seconds: float
    total_seconds: float
    run_dir: Path
    folder: Optional[Path] = None
    losses: List[float] = field(default_factory=list)
    data: List[Dict[str, Any]] = field(default_factory=list)
    model: Any = None  # the written model (the best checkpoint; rank 0 only), for notebooks
    final_model: Any = None  # the EMA at the end of training, the same on every process of a torchrun job

    @property
    def gain_db(self) -> float:
        return self.scores["adapted model"].psnr - self.scores["base model"].psnr

    def rows(self) -> List[Tuple[str, Score]]:
        """(label, score) per method, the labels saying which filter and which base model."""
        labels = {"input": "input (low quality)", "best filter": f"best filter: {self.best_filter}",
                  "base model": f"base model ({self.base.get('name')})",
                  "adapted model": f"adapted model (step {self.best_step} of {self.steps})"}
        return [(labels.get(name, name), score) for name, score in self.scores.items()]

    def table(self) -> str:
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        lines = [f"{'held-out slices':<{width}}  {'PSNR dB':>8}  {'SSIM':>6}"]
        lines += [f"{label:<{width}}  {score.psnr:>8.2f}  {score.ssim:>6.4f}" for label, score in rows]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Scoring


def restore_slices(model, task: str, lq: np.ndarray, device=None, seed: int = 0, batch: int = 4) -> np.ndarray:
    """Restore (N, H, W) LQ slices of one volume in task units, as the pipeline does: intensity scale
    from the volume, symmetric padding to the model stride, voxels outside the network's range kept."""
    import torch

    from .tasks import denormalize, get_task, intensity_scale, network_range, normalize

    spec = get_task(task)
    device = device or next(model.parameters()).device
    offset, scale = intensity_scale(task, lq)
    low, high = network_range(task, offset, scale)
    m = model.size_multiple
    rows, cols = lq.shape[1:]
    out = np.empty_like(lq, dtype=np.float32)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(lq), batch):
            x = normalize(task, lq[start:start + batch], offset, scale)
            x = np.pad(x, ((0, 0), (0, -rows % m), (0, -cols % m)), mode="symmetric")
            tensor = torch.from_numpy(np.ascontiguousarray(x))[:, None].to(device)
            y = model.restore(tensor, spec.index, generator=generator)[:, 0, :rows, :cols].float().cpu().numpy()
            restored = denormalize(task, y, offset, scale)
            source = lq[start:start + batch]
            out[start:start + batch] = np.where((source < low) | (source > high), source, restored)
    model.train(was_training)
    return out


def score_pairs(pairs: PairSet, task: str, restore: Callable[[np.ndarray, Any], np.ndarray]) -> Score:
    """Mean PSNR/SSIM over every held-out slice (AMIR protocol, ``metrics.slice_scores``)."""
    from .metrics import slice_scores

    values = []
    for case in pairs.cases:
        restored = restore(case.lq, case)
        values += [slice_scores(r, h, task) for r, h in zip(restored, case.hq)]
    return Score(float(np.mean([v.psnr for v in values])), float(np.mean([v.ssim for v in values])))


def best_filter(pairs: PairSet, task: str) -> Tuple[str, Score]:
    """The best of the fast classical filters, each tuned on the held-out slices themselves (oracle)."""
    from .benchmark.baselines import make_baselines

    names = list(FAST_FILTERS)
    levels = {float(v) for case in pairs.cases for v in case.level}
    if task == "mri-sr" and len(levels) == 1 and float(next(iter(levels))).is_integer():
        names += ["bicubic", "bspline"]
    best: Optional[Tuple[str, Score]] = None
    for method in make_baselines(names):
        method.tune(pairs.cases, task)
        score = score_pairs(pairs, task, lambda lq, case, m=method: np.stack(
            [m.restore(s.copy(), task, case.spacing) for s in lq]))
        label = f"{method.name} ({method.parameter(task)})"
        if best is None or score.psnr > best[1].psnr:
            best = (label, score)
    return best


# ----------------------------------------------------------------------------------------------------
# The run folder


def _fingerprint(paths: List[Path]) -> List[Dict[str, Any]]:
    out = []
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        out.append({"path": str(path.resolve()), "bytes": sum(f.stat().st_size for f in files),
                    "mtime": max(int(f.stat().st_mtime) for f in files) if files else 0})
    return out


def _check_settings(run_dir: Path, settings: Dict[str, Any]) -> bool:
    """True when ``run_dir`` holds a run with these settings (resume); an error when it holds another."""
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        raise AdaptError(f"{run_dir} holds an adaptation with other settings ({', '.join(changed)} changed): give the "
                         "same inputs and options to resume it, or delete that folder to start again.")
    return True


class _Hooks:
    """Validation of the EMA on the held-out slices (rank 0), best checkpoint, progress, cancel."""

    def __init__(self, task: str, held: Optional[PairSet], run_dir: Path, base_psnr: float, every_steps: Optional[int],
                 every_s: Optional[float], progress: Callable[[AdaptProgress], None], cancel, is_main: bool,
                 start_fraction: float, log):
        self.task, self.held, self.run_dir, self.log = task, held, run_dir, log
        self.every_steps, self.every_s = every_steps, every_s
        self.progress, self.cancel, self.is_main = progress, cancel, is_main
        self.start_fraction = start_fraction
        self.losses: List[float] = []
        self.last_validated_step, self.last_validated_at = -1, 0.0
        best = _read_json(run_dir / f"{BEST}.json")
        self.best_psnr = best["psnr"] if best else base_psnr
        self.best_ssim = best["ssim"] if best else None
        self.best_step = best["step"] if best else 0
        self.last_psnr: Optional[float] = None
        self.last_score: Optional[Score] = None

    def stop_requested(self) -> bool:
        return bool(self.cancel is not None and self.cancel.cancelled)

    def validate(self, stage) -> None:
        score = score_pairs(self.held, self.task, lambda lq, case: restore_slices(stage.ema, self.task, lq))
        self.last_validated_step, self.last_validated_at, self.last_psnr = stage.step, stage.elapsed, score.psnr
        self.last_score = score
        self.log.write({"stage": "validation", "step": stage.step, "psnr": round(score.psnr, 4),
                        "ssim": round(score.ssim, 5)})
        if score.psnr > self.best_psnr:
            from .training.__main__ import save_weights_folder

            self.best_psnr, self.best_ssim, self.best_step = score.psnr, score.ssim, stage.step
            save_weights_folder(stage.ema, self.run_dir / BEST, fp16=False)
            _write_json(self.run_dir / f"{BEST}.json", {"step": stage.step, "psnr": score.psnr, "ssim": score.ssim})

    def due(self, stage) -> bool:
        if self.every_steps:
            return stage.step % self.every_steps == 0
        return stage.elapsed - self.last_validated_at >= self.every_s

    def after_step(self, stage, metrics: Dict[str, float]) -> None:
        self.losses.append(float(metrics["loss"]))
        if not self.is_main:
            return
        if self.held is not None and self.due(stage) and not stage.done:
            self.validate(stage)
        fraction = stage.fraction
        eta = (stage.iters - stage.step) * stage.elapsed / max(1, stage.step)
        if math.isfinite(stage.budget_s):
            eta = min(eta, max(0.0, stage.budget_s - stage.elapsed))
        total = stage.iters if stage.iters < 10 ** 9 else None
        message = f"step {stage.step}" + (f" of {total}" if total else "") + f", loss {metrics['loss']:.4f}"
        if self.last_psnr is not None:
            message += f", held-out {self.last_psnr:.2f} dB (best {self.best_psnr:.2f})"
        self.progress(AdaptProgress("training", self.start_fraction + (0.97 - self.start_fraction) * fraction, message,
                                    stage.step, total, eta, self.last_psnr))


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------------
# The public function


def adapt(
    hq: Sequence[PathLike],
    task: str,
    out: PathLike,
    base: Optional[str] = None,
    minutes: Optional[float] = None,
    iterations: Optional[int] = None,
    scale: Optional[float] = None,
    i0: Optional[float] = None,
    dose_fraction: Optional[float] = None,
    like: Optional[PathLike] = None,
    device: str = "auto",
    force: bool = False,
    hu_offset: Optional[float] = None,
    suv_factor: Optional[float] = None,
    run_dir: Optional[PathLike] = None,
    seed: int = 0,
    training: Optional[Dict[str, Any]] = None,
    progress: Optional[Callable[[AdaptProgress], None]] = None,
    cancel=None,
    message: Optional[Callable[[str], None]] = None,
    keep_run: bool = False,
    threads: Optional[int] = None,
) -> AdaptResult:
    """Fine-tune ``base`` (a catalog name or weights folder; None: the default model) for ``task`` on
    the high-quality volumes ``hq`` (files, DICOM series folders, or folders of them) and write the
    adapted weights folder ``out``. See the module docstring for why each step is as it is.

    Level: ``scale`` (mri-sr, k-space factor), ``i0`` (ct-denoise, photons per ray) or
    ``dose_fraction`` (pet-synthesis); default the headline level; ``like`` estimates it from one of
    the user's real low-quality scans instead. Budget: ``minutes`` (default 10, the whole run) or
    ``iterations`` (training steps), or both (whichever ends first). ``training``: TrainConfig fields
    over the adaptation recipe (e.g. ``{"patch": 32, "batch_per_task": 2}`` for a quick test).
    ``progress(AdaptProgress)`` is called often (from the calling thread); ``cancel`` is any object
    with a ``cancelled`` attribute, checked before every step. ``run_dir`` (default ``OUT.run``) holds
    the checkpoints; it is removed after a model was written unless ``keep_run``. ``threads``: CPU
    threads for torch during the run (None: torch's setting); on a CPU shared with other work, fewer
    threads than cores can be several times faster (measured: one 0.77 s step on 1 thread against 4.5 to
    9 s on 2, with two other jobs on 2 cores).

    Raises ``AdaptError``/``VolumeError``/``WeightsError`` (one line) for bad input,
    ``AdaptRefused`` when the adapted model is not better than the base on the held-out data (and
    ``force`` is False), ``AdaptCancelled`` after a cancel (resumable).
    """
    from .device import cpu_threads

    if threads is not None and threads < 1:
        raise AdaptError(f"threads must be at least 1, got {threads}.")
    with cpu_threads(threads):
        return _adapt(hq, task, out, base, minutes, iterations, scale, i0, dose_fraction, like, device, force,
                      hu_offset, suv_factor, run_dir, seed, training, progress, cancel, message, keep_run)


def _adapt(hq, task, out, base, minutes, iterations, scale, i0, dose_fraction, like, device, force, hu_offset,
           suv_factor, run_dir, seed, training, progress, cancel, message, keep_run) -> AdaptResult:
    import torch

    from . import hub
    from .models import DiffCodeModel
    from .tasks import get_task
    from .training import distributed
    from .training.config import TrainConfig
    from .training.loop import RunLog, train_stage2
    from .training.patches import PatchSampler, normalise_cases

    started = time.monotonic()
    say = message or (lambda text: None)
    report = progress or (lambda update: None)
    spec = get_task(task)
    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    if minutes is None and iterations is None:
        minutes = DEFAULT_MINUTES
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise AdaptError(f"minutes must be a positive number, got {minutes}.")
    if iterations is not None and iterations < 1:
        raise AdaptError(f"iterations must be at least 1, got {iterations}.")
    given = {"mri-sr": scale, "ct-denoise": i0, "pet-synthesis": dose_fraction}
    wrong = [LEVEL_OPTIONS[t] for t, value in given.items() if value is not None and t != task]
    if wrong:
        raise AdaptError(f"{', '.join(wrong)} does not apply to {task}: its level is {LEVEL_OPTIONS[task]}.")
    if like is not None and given[task] is not None:
        raise AdaptError(f"give either --like or {LEVEL_OPTIONS[task]}, not both.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AdaptError(f"{out} already exists: give a new folder for the adapted model (or delete that one).")
    options = {**ADAPT_TRAINING, **(training or {})}
    unknown = sorted(set(options) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise AdaptError(f"unknown training option(s) {', '.join(unknown)}.")

    dist, target = distributed.setup(device) if distributed.launched_by_torchrun() else (distributed.SINGLE, None)
    if target is None:
        from .device import resolve_device

        target = resolve_device(device)
    main = dist.is_main
    if not main:
        say = lambda text: None  # noqa: E731 - one voice: rank 0's
        report = lambda update: None  # noqa: E731

    # --- base model
    weights = hub.resolve(base, message=say)
    model = DiffCodeModel.from_pretrained(weights.folder, device="cpu", dtype=torch.float32)
    base_info = {"name": weights.name, "revision": weights.revision, "sha256": weights.sha256,
                 "source": weights.source, "verified": weights.verified}

    # --- data
    report(AdaptProgress("reading", 0.0, "reading the high-quality volumes"))
    volumes = adapt_data.read_inputs(hq, task, hu_offset, suv_factor, say, cancel)
    if like is not None:
        level, measured = adapt_data.estimate_level(task, Path(like), volumes, hu_offset, suv_factor, seed)
        source = f"estimated from {Path(like).name}: {measured}"
        say(f"--like {Path(like).name}: {measured}; chose {LEVEL_OPTIONS[task]} {level:g}")
    elif given[task] is not None:
        level, source = float(given[task]), "given"
    else:
        level, source = HEADLINE[task], "headline default"
    level = adapt_data.check_level(task, level)
    chosen = adapt_data.split(volumes)
    say(chosen.description)
    pet_counts = adapt_data.pet_counts(volumes, seed) if task == "pet-synthesis" else None

    settings = {"task": task, "base_sha256": weights.sha256, "level": level, "inputs": _fingerprint(
        [v.path for v in volumes]), "seed": seed, "training": {k: v for k, v in options.items()
                                                               if k not in ("checkpoint_minutes", "log_every")},
        "hu_offset": hu_offset, "suv_factor": suv_factor, "world_size": dist.world_size}
    resuming = _check_settings(run_dir, settings)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            _write_json(run_dir / SETTINGS_FILE, settings)
    distributed.barrier(dist)
    if resuming:
        say(f"resuming the adaptation in {run_dir}")

    report(AdaptProgress("simulating", 0.05, f"simulating {spec.title.split(' ', 1)[1]} at "
                                               f"{LEVELS[task]} {level:g}"))
    train_pairs = adapt_data.make_pairs(task, chosen.train, level, seed, pet_counts, cancel)
    held = adapt_data.make_pairs(task, chosen.held_out, level, seed + 1, pet_counts, cancel) if main else None

    # --- the references on the held-out slices (once per run)
    scores_path = run_dir / SCORES_FILE
    reference = _read_json(scores_path) if main else None
    if main and reference is None:
        report(AdaptProgress("scoring", 0.12, "scoring the base model and the classical filters on held-out slices"))
        clock = time.monotonic()
        base_score = score_pairs(held, task, lambda lq, case: restore_slices(model, task, lq))
        base_seconds = time.monotonic() - clock
        input_score = score_pairs(held, task, lambda lq, case: lq)
        filter_name, filter_score = best_filter(held, task)
        reference = {"input": asdict(input_score), "filter": filter_name, "filter_score": asdict(filter_score),
                     "base": asdict(base_score), "base_seconds": base_seconds}
        _write_json(scores_path, reference)
    base_psnr = reference["base"]["psnr"] if main else 0.0

    # --- training: stage 2 from the base model
    prep_s = time.monotonic() - started
    if minutes is not None:
        reserve_s = 2.0 + 1.5 * (reference.get("base_seconds", 5.0) if main else 5.0)  # the last scoring, writing
        stage_minutes = max(0.1, (minutes * 60 - prep_s - reserve_s) / 60)
    else:
        stage_minutes = float("inf")
    stage_minutes = distributed.broadcast_value(dist, stage_minutes)
    iters = iterations if iterations is not None else 10 ** 9
    patch = min(int(options["patch"]), min(min(c.hq.shape[1:]) for c in train_pairs.cases) // 4 * 4)
    tc = TrainConfig(**{**options, "patch": patch, "tasks": [task], "stage2_iters": iters,
                        "stage2_minutes": stage_minutes, "seed": seed})
    sampler = PatchSampler({task: normalise_cases(task, train_pairs.cases)}, tc.patch, seed + 1000 * dist.rank)
    log = RunLog(run_dir / "log.jsonl", enabled=main)
    if main and not resuming:
        log.write({"stage": "start", "base": base_info, "level": level, "train_slices": train_pairs.slices,
                   "held_out_slices": held.slices, **{k: reference[k] for k in ("input", "base", "filter")}})
    every_steps = max(1, iterations // VALIDATIONS) if iterations is not None and minutes is None else None
    every_s = None if every_steps else max(5.0, stage_minutes * 60 / VALIDATIONS if math.isfinite(stage_minutes)
                                           else 60.0)
    hooks = _Hooks(task, held, run_dir, base_psnr, every_steps, every_s, report, cancel, main, 0.15, log)
    say(f"adapting on {train_pairs.slices} slices, {dist.world_size} process(es) on {target.type}, "
        + (f"{iterations} iterations" if iterations is not None else "") + (" or " if iterations and minutes else "")
        + (f"about {stage_minutes:.1f} min of training" if minutes is not None else ""))
    adapted = train_stage2(tc, sampler, None, run_dir, log, target, progress=False, base=model.to(target),
                           hooks=hooks, dist=dist)
    state = adapted.stage2_state
    if state["stopped"]:
        distributed.shutdown(dist)
        best = (f"the best so far ({hooks.best_psnr:.2f} dB at step {hooks.best_step}) is in {run_dir / BEST}"
                if hooks.best_step else f"no checkpoint beat the base model yet ({base_psnr:.2f} dB)")
        raise AdaptCancelled(f"stopped at step {state['step']}; {best}; run it again with the same settings to "
                             "resume.")
    if main and hooks.last_validated_step != state["step"]:
        hooks.validate(_Final(adapted, state))

    # --- decide and write (rank 0)
    result = None
    refused = ""
    if main:
        improved = hooks.best_step > 0
        if improved:
            chosen_model = DiffCodeModel.from_pretrained(run_dir / BEST, device="cpu")
            adapted_score = Score(hooks.best_psnr, hooks.best_ssim)
        else:  # the final EMA, scored by the last validation
            chosen_model = adapted.to("cpu")
            adapted_score = hooks.last_score
        scores = {"input": Score(**reference["input"]), "best filter": Score(**reference["filter_score"]),
                  "base model": Score(**reference["base"]), "adapted model": adapted_score}
        result = AdaptResult(task, LEVELS[task], level, source, base_info, chosen.description, scores,
                             reference["filter"], hooks.best_step if improved else state["step"], state["step"],
                             state["elapsed"], time.monotonic() - started, run_dir, None, hooks.losses,
                             _data_summary(volumes, chosen), chosen_model, adapted)
        if not improved and not force:
            refused = (f"the adapted model is not better than {weights.name} on the held-out data "
                       f"({adapted_score.psnr:.2f} dB after {state['step']} steps against {base_psnr:.2f} dB): nothing "
                       f"was written; adapt longer (--minutes/--iterations), give more high-quality volumes, or pass "
                       f"--force to write it anyway (the run in {run_dir} is kept, so that costs no training).")
        else:
            if not improved:
                say(f"--force: writing a model that is not better than its base ({adapted_score.psnr:.2f} against "
                    f"{base_psnr:.2f} dB on the held-out data)")
            report(AdaptProgress("writing", 0.98, f"writing {out}"))
            result.folder = _write_folder(chosen_model, out, result, tc)
            if not keep_run:
                shutil.rmtree(run_dir, ignore_errors=True)
    refused_flag = distributed.broadcast_value(dist, 1.0 if refused else 0.0)
    distributed.shutdown(dist)
    if refused:
        raise AdaptRefused(refused)
    if not main:
        return AdaptResult(task, LEVELS[task], level, source, base_info, chosen.description, {}, "", 0,
                           state["step"], state["elapsed"], time.monotonic() - started, run_dir,
                           None if refused_flag else out, hooks.losses, [], None, adapted)
    report(AdaptProgress("done", 1.0, f"wrote {out}"))
    return result


class _Final:
    """The finished stage as the validation hook sees it (its EMA and step)."""

    def __init__(self, ema, state):
        self.ema, self.step, self.elapsed = ema, state["step"], state["elapsed"]


def _data_summary(volumes: List[HQVolume], chosen) -> List[Dict[str, Any]]:
    """Per volume: grid, spacing and slices used; no file name, no DICOM tag (they can identify a patient)."""
    trained = {id(v): len(i) for v, i in chosen.train}
    held = {id(v): len(i) for v, i in chosen.held_out}
    return [{"volume": v.label, "grid": "x".join(str(s) for s in v.size),
             "pixel_mm": [round(v.spacing[0], 3), round(v.spacing[1], 3)], "slice_mm": round(v.thickness, 3),
             "slices_with_anatomy": int(len(v.slices)), "training_slices": trained.get(id(v), 0),
             "held_out_slices": held.get(id(v), 0)} for v in volumes]


def _write_folder(model, out: Path, result: AdaptResult, tc) -> Path:
    """Write into a hidden sibling folder, then rename: the output appears complete or not at all."""
    from .training.__main__ import save_weights_folder

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, f".{out.name}.partial-")  # an ordinary folder: others may read it
    try:
        def card(folder: Path) -> None:
            _write_json(folder / "adaptation.json", _card_data(result, tc))
            (folder / "README.md").write_text(model_card(result, model, tc), encoding="utf-8")

        save_weights_folder(model, staging, fp16=False, card=card)
        if out.is_dir():
            out.rmdir()  # empty (checked at the start)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _card_data(result: AdaptResult, tc) -> Dict[str, Any]:
    return {"task": result.task, "degradation": {result.level_name: result.level, "source": result.level_source},
            "base": result.base, "held_out": result.held_out,
            "scores": {k: asdict(v) for k, v in result.scores.items()}, "best_filter": result.best_filter,
            "best_step": result.best_step, "steps": result.steps, "train_seconds": round(result.train_seconds, 1),
            "total_seconds": round(result.total_seconds, 1), "data": result.data,
            "recipe": {k: getattr(tc, k) for k in ("patch", "batch_per_task", "lr", "ema_decay", "ssim_weight",
                                                    "commitment_weight", "warmup_iters", "seed")}}


DEGRADATION_TEXT = {
    "mri-sr": "k-space truncation: the central 1/{level:g} of k-space kept per in-plane axis (magnitude image)",
    "ct-denoise": "projection-domain noise insertion at I0 = {level:.3g} photons per ray (Poisson counts, electronic "
                  "noise sigma 10, filtered back-projection of the noise)",
    "pet-synthesis": "emission noise insertion at {level:.3g} of the counts (the image as activity, Poisson counts, "
                     "20 MLEM iterations; the extra noise of the reduced-count reconstruction added)",
}


def model_card(result: AdaptResult, model, tc) -> str:
    """The Hub model card of an adapted model (README.md): provenance, degradation, data, figures."""
    from .training.model_card import CITATION

    base = result.base
    revision = base.get("revision") or "none (a weights folder)"
    rows = "\n".join(f"| {label} | {s.psnr:.2f} | {s.ssim:.4f} |" for label, s in result.rows())
    data = "\n".join(f"| {d['volume']} | {d['grid']} | {d['pixel_mm'][0]:g} x {d['pixel_mm'][1]:g} | {d['slice_mm']:g} "
                     f"| {d['training_slices']} | {d['held_out_slices']} |" for d in result.data)
    params = sum(p.numel() for p in model.parameters())
    return f"""---
license: apache-2.0
library_name: diffcode-restore
base_model: {base['name']}
tags: [medical-imaging, image-restoration, adapted, {result.task}]
---

# DiffCode Restore — `{base['name']}` adapted for `{result.task}`

Fine-tuned from **{base['name']}** (revision `{revision}`, weights SHA-256 `{base['sha256']}`) on a user's own
high-quality scans with `diffcode-restore adapt`. {params / 1e6:.2f} M parameters; the codebook bank (the prior) is the
base model's, unchanged. Use it with `diffcode-restore restore INPUT OUTPUT --task {result.task} --model THIS_FOLDER`.

**Research only; not for diagnosis.** This model was adapted on a few volumes and checked on held-out slices of the
same data with a *simulated* degradation; check it on real low-quality scans of your own before relying on it.

## Degradation (the low-quality side, simulated)
- {DEGRADATION_TEXT[result.task].format(level=result.level)}
- Level: {result.level_name} = {result.level:g} ({result.level_source})

## Data (no file names or patient data are recorded)
| volume | grid | pixel mm | slice mm | training slices | held-out slices |
|---|---|---|---|---|---|
{data}

{result.held_out}.

## Held-out figures (AMIR protocol: per slice, then averaged)
| method | PSNR dB | SSIM |
|---|---|---|
{rows}

The classical filter was tuned on the held-out slices themselves (generous to it). The adapted model is the checkpoint
with the best held-out PSNR: step {result.best_step} of {result.steps}.

## Recipe
Stage-2 fine-tuning from the base weights (image loss L1 + {tc.ssim_weight:g} SSIM + {tc.commitment_weight:g} x the
L1 commitment of the refined latent to its nearest code; the stage-1 encoder is not part of published weights): {result.steps} steps, {result.train_seconds / 60:.1f} min of training
({result.total_seconds / 60:.1f} min in all), patches {tc.patch}x{tc.patch}, batch {tc.batch_per_task}, AdamW
lr {tc.lr:g} with cosine decay, EMA {tc.ema_decay:g}, seed {tc.seed}.

## Citation
```bibtex
{CITATION}
```
"""
