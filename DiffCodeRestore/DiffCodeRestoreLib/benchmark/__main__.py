"""Score restoration methods beside the classical baselines on the public test split (AMIR protocol).

Writes <task>.md, <task>.json and <task>.png per task and results.md into --out, and prints the tables.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import WeightsError
from ..tasks import TASKS
from .baselines import BASELINES, make_baselines, parse_models
from .harness import BenchCase, TaskResult, run_task, spread
from .methods import DiffCodeMethod, Method
from .report import ModelFacts, write_reports

DEFAULT_MODEL = "diffcode"


def default_weights() -> Tuple[Optional[Path], str]:
    """(folder, "") of the catalog's default model, verified like the pipeline does it, or (None, why not)."""
    from ..hub import WeightsError, resolve

    try:
        return resolve(None).folder, ""
    except WeightsError as error:
        return None, str(error)


def resolve_methods(spec: str, models: Dict[str, Path], device: str, steps: Optional[int] = None,
                    self_ensemble: bool = False) -> List[Method]:
    """Baseline names, "baselines", "all" (baselines + every model) and model names given with --model.

    "diffcode" is the catalog's default model unless --model names it.
    """
    items = [s.strip() for s in spec.split(",") if s.strip()]
    missing_default = ""
    if DEFAULT_MODEL not in models and any(i in ("all", DEFAULT_MODEL) for i in items):
        folder, missing_default = default_weights()
        if folder is not None:
            models = {**models, DEFAULT_MODEL: folder}
    names: List[str] = []
    for item in items:
        if item == "baselines":
            names += list(BASELINES)
        elif item == "all":
            names += list(BASELINES) + list(models)
            if DEFAULT_MODEL not in models:
                print(f"note: 'all' runs without the default model: {missing_default}", file=sys.stderr)
        elif item in BASELINES or item in models:
            names.append(item)
        elif item == DEFAULT_MODEL:
            raise ValueError(f"{missing_default} (or name a folder with --model {DEFAULT_MODEL}=FOLDER)")
        else:
            raise ValueError(f"Unknown method {item!r}: choose from baselines, all, {', '.join(list(BASELINES) + list(models))}.")
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("--methods names no method.")
    baselines = make_baselines([n for n in names if n in BASELINES])
    built = {m.name: m for m in baselines}
    for name in names:
        if name in models:
            built[name] = DiffCodeMethod(models[name], device=device, name=name, steps=steps,
                                         self_ensemble=self_ensemble)
    return [built[n] for n in names]


def model_facts(method: DiffCodeMethod, results: Sequence[TaskResult]) -> ModelFacts:
    """Size, seconds per 256 x 256 and 512 x 512 slice (a real test slice, mirrored to size) and code usage."""
    task = results[0].task
    source = results[0].montage["input"]
    big = np.pad(source, [(0, max(0, 512 - n)) for n in source.shape], mode="symmetric")[:512, :512]
    seconds = {size: method.seconds_per_slice(np.ascontiguousarray(big[:size, :size]), task) for size in (256, 512)}
    usage = {r.task: method.code_usage(r.task) for r in results}
    return ModelFacts(method.name, method.parameter_count, seconds[256], seconds[512], usage)


def parse_tasks(spec: str) -> List[str]:
    tasks = list(TASKS) if spec == "all" else [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"Unknown task(s) {', '.join(unknown) or '(none)'}: choose all or from {', '.join(TASKS)}.")
    return tasks


def load_test_cases(task: str):
    from ..data.slices import load_cases

    return load_cases(task, "test")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark", description=__doc__)
    parser.add_argument("--tasks", default="all", help="all, or a comma list of " + ", ".join(TASKS))
    parser.add_argument("--methods", default="baselines",
                        help="baselines, all, or a comma list of " + ", ".join(BASELINES) + " and --model names")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help="weights folder to score as method NAME (repeatable; ablations)")
    parser.add_argument("--device", default="cpu", help="torch device for the models")
    parser.add_argument("--steps", type=int, help="diffusion steps for every model (default: each model's own)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="every model averages the 8 flips and 90-degree rotations of each slice (8x the time)")
    parser.add_argument("--max-slices", type=int, default=0, help="at most N evenly spread test slices per task (0: all)")
    parser.add_argument("--bm3d-slices", type=int, default=3, help="slices per task for slow methods (BM3D)")
    parser.add_argument("--tune-slices", type=int, default=0,
                        help="test slices per task the baselines are tuned on (0: all scored slices)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    args = parser.parse_args(argv)
    try:
        if min(args.max_slices, args.bm3d_slices, args.tune_slices) < 0 or args.bm3d_slices == 0:
            raise ValueError("--max-slices and --tune-slices must be >= 0 and --bm3d-slices >= 1.")
        tasks = parse_tasks(args.tasks)
        methods = resolve_methods(args.methods, parse_models(args.model), args.device, args.steps, args.self_ensemble)
        started = time.perf_counter()
        results = []
        for task in tasks:
            cases = spread([BenchCase.from_case(c) for c in load_test_cases(task)], args.max_slices)
            results.append(run_task(task, cases, methods, args.bm3d_slices, args.tune_slices))
        models = [model_facts(m, results) for m in methods if isinstance(m, DiffCodeMethod)]
        command = "python -m DiffCodeRestoreLib.benchmark " + shlex.join(sys.argv[1:] if argv is None else argv)
        text = write_reports(results, args.out, command, models)
    except (ValueError, FileNotFoundError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    print(f"Wrote {args.out}/ in {time.perf_counter() - started:.0f} s.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
