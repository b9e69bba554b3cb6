"""``python -m DiffCodeRestoreLib.training train --config small [--variant full] ...``

Resumable: re-running the same command continues from the last checkpoint in the run folder.
Data-parallel on several GPUs or nodes, unchanged, under ``torchrun`` (see ``distributed.py``), e.g.
``torchrun --nproc-per-node 4 -m DiffCodeRestoreLib.training train --config large``: each process
draws ``--batch-per-task`` patches per task, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch

from . import distributed
from ..device import resolve_device
from ..tasks import TASKS
from .config import VARIANTS, TrainConfig
from .distributed import SINGLE, DistContext
from .loop import RunLog, StageHooks, train_stage1, train_stage2
from .patches import PatchSampler, normalise_cases


def save_weights_folder(model, folder: Path, fp16: bool, card: Optional[Callable[[Path], object]] = None) -> Path:
    """Save ``model`` (config.json + model.safetensors), its model card if ``card`` writes one, then
    ``checksums.sha256`` over all of them.

    Why one helper: every weights folder the project writes carries the checksum manifest that
    loading verifies (``hub.verify_folder``), so a damaged copy is refused instead of silently changing
    restored images. A stale manifest is removed first, so an interrupted save is not mistaken for a
    good one by an old manifest listing other bytes: it reads as damaged.
    """
    from ..hub import MANIFEST_NAME, write_manifest

    stale = Path(folder) / MANIFEST_NAME
    if stale.is_file():
        stale.unlink()
    folder = model.save_pretrained(folder, fp16=fp16)
    if card is not None:
        card(folder)
    write_manifest(folder)
    return folder


def _base_model(name: str, run_dir: Optional[Path]):
    """The trained model a continued run starts from (checksum-verified like any load); its catalog
    name, revision and SHA-256 go into ``run_dir/base.json`` so the model card can name them."""
    from .. import hub
    from ..models import DiffCodeModel

    weights = hub.resolve(name)
    if run_dir is not None:
        (run_dir / "base.json").write_text(json.dumps(
            {"name": weights.name, "revision": weights.revision, "sha256": weights.sha256},
            indent=2))
    return DiffCodeModel.from_pretrained(weights.folder, device="cpu", dtype=torch.float32)


class SnapshotHooks(StageHooks):
    """Saves the EMA weights every ``every`` stage-2 steps (``snapshots/step-NNNNN``): the points of a
    learning curve, scored afterwards by the benchmark like any model folder."""

    def __init__(self, folder: Path, every: int):
        self.folder, self.every = folder, every

    def after_step(self, stage, metrics) -> None:
        if stage.name == "stage2" and stage.step % self.every == 0:
            target = self.folder / f"step-{stage.step:05d}"
            if not target.exists():
                save_weights_folder(stage.ema, target, fp16=False)


def train(tc: TrainConfig, run_dir: Path, device: torch.device, progress: bool = True,
          dist: DistContext = SINGLE) -> Path:
    """Both stages, then ``run_dir/final``. Distributed: every process trains, only rank 0 writes
    (the others wait for it and return the same path)."""
    from ..data.slices import load_cases

    torch.manual_seed(tc.seed)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(tc.to_dict(), indent=2))
        cases = {task: load_cases(task, tc.split_for(task), rebuild_stale=False) for task in tc.tasks}  # builds if missing
    distributed.barrier(dist)
    if not dist.is_main:
        cases = {task: load_cases(task, tc.split_for(task), rebuild_stale=False) for task in tc.tasks}
    log = RunLog(run_dir / "log.jsonl", enabled=dist.is_main)
    sampler = PatchSampler({task: normalise_cases(task, c) for task, c in cases.items()}, tc.patch,
                           tc.seed + 1000 * dist.rank)
    stage1, base = None, None
    if tc.base:
        base = _base_model(tc.base, run_dir if dist.is_main else None)
    elif tc.model_config().prior != "none":
        stage1 = train_stage1(tc, sampler, run_dir, log, device, progress, dist)
    hooks = SnapshotHooks(run_dir / "snapshots", tc.snapshot_every) if tc.snapshot_every and dist.is_main else None
    model = train_stage2(tc, sampler, stage1, run_dir, log, device, progress, base=base, hooks=hooks, dist=dist)
    if dist.is_main:
        save_weights_folder(model, run_dir / "final", fp16=False)
    distributed.barrier(dist)
    return run_dir / "final"


def export(run_dir: Path, out: Path, results: Optional[Path]) -> int:
    from ..hub import verify_folder
    from ..models import DiffCodeModel
    from .model_card import write_model_card

    verify_folder(run_dir / "final")  # a damaged run must not be exported under a fresh, matching manifest
    model = DiffCodeModel.from_pretrained(run_dir / "final")
    save_weights_folder(model, out, fp16=True, card=lambda folder: write_model_card(folder, model, run_dir, results))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"exported {out} ({size / 1e6:.1f} MB)")
    return 0


def _model_options(parser: argparse.ArgumentParser, items: List[str]) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            options[key] = json.loads(value if sep else "")  # no "=": an empty value, refused like bad JSON
        except ValueError:
            parser.error(f"--model-option {item!r}: use KEY=VALUE with a JSON value, e.g. codebook_size=1024")
    return options


def _data_split(parser: argparse.ArgumentParser, spec: Optional[str]):
    """``--data-split``: one split for every task, or TASK=SPLIT pairs."""
    if spec is None:
        return None
    from ..data.volumes import TRAINING_SPLITS  # dev-only: an installed extension ships no data recipes

    splits = TRAINING_SPLITS
    if "=" not in spec:
        if spec not in splits:
            parser.error(f"--data-split {spec!r}: choose one of {', '.join(splits)}, or TASK=SPLIT pairs")
        return spec
    pairs = dict(item.partition("=")[::2] for item in spec.split(","))
    bad = [f"{t}={s}" for t, s in pairs.items() if t not in TASKS or s not in splits]
    if bad:
        parser.error(f"--data-split: {', '.join(bad)} is not TASK=SPLIT with a task of {', '.join(TASKS)} and a "
                     f"split of {', '.join(splits)}")
    return pairs


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.training")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train (or resume) a model")
    p.add_argument("--config", default="small", help="training preset: tiny, small, large")
    p.add_argument("--variant", default="full", choices=sorted(VARIANTS))
    p.add_argument("--run-dir", type=Path, help="checkpoints, log and final weights (default: cache/runs/CONFIG-VARIANT)")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu; under torchrun: auto, cuda or cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    p.add_argument("--stage1-minutes", type=float)
    p.add_argument("--stage2-minutes", type=float)
    p.add_argument("--stage1-iters", type=int)
    p.add_argument("--stage2-iters", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--tasks", help="comma list of tasks to train on (default: all three)")
    p.add_argument("--batch-per-task", type=int, help="patches per task in each batch (default 4)")
    p.add_argument("--data-split", metavar="SPLIT|TASK=SPLIT,...",
                   help="training slices: train (real only), train-mixed (real + domain-randomised synthetic "
                   "pairs), train-wide (real over wider geometry and dose ranges) or train-wide-mixed (both), for "
                   "every task or per task, e.g. ct-denoise=train-mixed,pet-synthesis=train-mixed")
    p.add_argument("--base", help="continue from this trained model (catalog name or weights folder): no stage 1")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--snapshot-every", type=int, help="save the EMA weights every N stage-2 steps (learning curve)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON",
                   help="set a model config field over the preset, e.g. codebook_size=1024 (repeatable)")
    e = sub.add_parser("export", help="write shippable fp16 weights + model card from a finished run")
    e.add_argument("run_dir", type=Path)
    e.add_argument("out", type=Path)
    e.add_argument("--results", type=Path, help="benchmark results.md to put in the model card")
    args = parser.parse_args(argv)
    if args.command == "export":
        return export(args.run_dir, args.out, args.results)
    if args.threads:
        torch.set_num_threads(args.threads)
    tc = TrainConfig.preset(args.config, variant=args.variant, stage1_minutes=args.stage1_minutes,
                            stage2_minutes=args.stage2_minutes, stage1_iters=args.stage1_iters,
                            stage2_iters=args.stage2_iters, seed=args.seed, batch_per_task=args.batch_per_task,
                            tasks=args.tasks.split(",") if args.tasks else None,
                            data_split=_data_split(parser, args.data_split),
                            base=args.base, lr=args.lr, snapshot_every=args.snapshot_every,
                            model_overrides=_model_options(parser, args.model_option) or None)
    from ..data import cache_dir

    run_dir = args.run_dir or cache_dir() / "runs" / f"{args.config}-{args.variant}"
    start = time.time()
    if distributed.launched_by_torchrun():
        dist, device = distributed.setup(args.device)
    else:
        dist, device = SINGLE, resolve_device(args.device)
    try:
        out = train(tc, run_dir, device, dist=dist)
    finally:
        distributed.shutdown(dist)
    if dist.is_main:
        print(f"weights: {out} ({(time.time() - start) / 60:.1f} min this session"
              + (f", {dist.world_size} processes" if dist.enabled else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
