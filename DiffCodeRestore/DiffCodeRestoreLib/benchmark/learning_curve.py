"""A training run's learning curve: each EMA snapshot scored on the public test split and, optionally, the
robustness suite, beside the tuned filters, against iterations and CPU hours.

    python -m DiffCodeRestoreLib.benchmark.learning_curve RUN_DIR [RUN_DIR ...] --out DIR [--base diffcode]
        [--robustness]

Why: the compute a task still needs for the quality bar should be measured, not guessed. Training with
``snapshot_every`` leaves ``RUN_DIR/snapshots/step-NNNNN``; this command scores them (and the model the runs
started from, if any) with the product's own benchmark (``benchmark`` and ``benchmark.robustness``, each
run once so that the filters are tuned once for every point of every run: runs that differ in one lever are
compared on the same footing) and writes ``curve.md`` / ``curve.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..tasks import TASKS
from .baselines import BASELINES
from .report import table_lines


def snapshots(run_dir: Path) -> List[Tuple[int, Path]]:
    """(step, folder) of every snapshot of the run, then its final weights, by step."""
    found = sorted((int(p.name.split("-")[1]), p) for p in (run_dir / "snapshots").glob("step-*") if p.is_dir())
    final = run_dir / "final"
    steps = {step for step, _ in found}
    last = _log_steps(run_dir)
    if final.is_dir() and last and last[-1][0] not in steps:
        found.append((last[-1][0], final))
    return found


def _log_steps(run_dir: Path) -> List[Tuple[int, float]]:
    """(stage-2 step, elapsed seconds) from the run's log."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(r["step"], r["elapsed_s"]) for r in records if r.get("stage") == "stage2"]


def cpu_hours(run_dir: Path, step: int, threads: int) -> float:
    """Stage-2 compute up to ``step`` (the nearest logged step at or before it), in CPU-thread hours."""
    seconds = max((s for st, s in _log_steps(run_dir) if st <= step), default=0.0)
    return seconds * threads / 3600


def public_gains(task_json: dict, model: str) -> Dict[str, float]:
    """A model's mean PSNR/SSIM on the public test beside the input and the best filter run on every slice,
    and its gain over the best of all filters (BM3D included) on the slow subset."""
    methods = {m["name"]: m for m in task_json["methods"]}
    filters = [m for name, m in methods.items() if name in BASELINES and name != "input"]
    full = [m for m in filters if not m["slow"]]
    best = max(full, key=lambda m: m["mean"]["psnr"])
    best_subset = max(filters, key=lambda m: m["mean_on_subset"]["psnr"])
    mine = methods[model]
    return {"psnr": mine["mean"]["psnr"], "ssim": mine["mean"]["ssim"],
            "gain_over_input": mine["mean"]["psnr"] - methods["input"]["mean"]["psnr"],
            "gain_over_filter": mine["mean"]["psnr"] - best["mean"]["psnr"], "best_filter": best["name"],
            "ssim_over_filter": mine["mean"]["ssim"] - best["mean"]["ssim"],
            "gain_on_subset": mine["mean_on_subset"]["psnr"] - best_subset["mean_on_subset"]["psnr"],
            "best_on_subset": best_subset["name"]}


def point_names(run_dirs: Sequence[Path], every: int = 1) -> List[Tuple[str, Path, Path, int]]:
    """(model name, weights folder, run folder, step) of every scored point: each run's snapshots (every k-th,
    the last always), named ``step-NNNNN``, prefixed by the run folder's name when there are several runs."""
    out = []
    for run_dir in run_dirs:
        points = snapshots(run_dir)
        points = [p for i, p in enumerate(points) if i % every == 0 or i == len(points) - 1]
        prefix = f"{run_dir.name}-" if len(run_dirs) > 1 else ""
        out += [(f"{prefix}step-{step:05d}", folder, run_dir, step) for step, folder in points]
    return out


def curve_markdown(points: Sequence[dict], robust: bool) -> str:
    header = ["model", "step", "CPU h"] + [f"{t} {what}" for t in TASKS for what in ("PSNR", "vs input", "vs filter")]
    if robust:
        header += [f"{t} worst case" for t in TASKS]
    rows = []
    for p in points:
        row = [p["name"], str(p["step"]), f"{p['cpu_hours']:.2f}"]
        for task in TASKS:
            g = p["public"].get(task)
            row += ["", "", ""] if g is None else [f"{g['psnr']:.2f}", f"{g['gain_over_input']:+.2f}",
                                                   f"{g['gain_over_filter']:+.2f}"]
        if robust:
            row += [("" if task not in p["robustness"] else f"{p['robustness'][task]:+.2f}") for task in TASKS]
        rows.append(row)
    return "\n".join(table_lines(header, rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark.learning_curve",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="", help="also score this model (catalog name or folder) as step 0")
    parser.add_argument("--threads", type=int, default=2, help="threads the run trained with (for CPU hours)")
    parser.add_argument("--every", type=int, default=1, help="score every k-th snapshot (the last always)")
    parser.add_argument("--robustness", action="store_true", help="also run the robustness suite on every point")
    parser.add_argument("--bm3d-slices", type=int, default=1, help="BM3D slices (public test and robustness)")
    parser.add_argument("--tables-only", action="store_true",
                        help="re-read the benchmark results already in --out instead of running them again")
    args = parser.parse_args(argv)
    from . import robustness
    from .__main__ import main as benchmark_main

    points = point_names(args.run_dirs, args.every)
    empty = [str(run_dir) for run_dir in args.run_dirs if all(run != run_dir for _, _, run, _ in points)]
    if empty:
        print(f"error: {', '.join(empty)} has no snapshots/step-* and no final weights", file=sys.stderr)
        return 2
    if args.base:
        from ..hub import resolve

        points.insert(0, ("base", resolve(args.base).folder, None, 0))
    models = [(name, folder) for name, folder, _, _ in points]
    specs = [f"{name}={folder}" for name, folder in models]
    public_dir = args.out / "public"
    methods = ",".join(["baselines"] + [name for name, _ in models])
    code = 0 if args.tables_only else benchmark_main(
        ["--tasks", "all", "--methods", methods, "--bm3d-slices", str(max(1, args.bm3d_slices)),
         *[a for s in specs for a in ("--model", s)], "--out", str(public_dir)])
    if code:
        return code
    robust: Dict[str, Dict[str, float]] = {}
    if args.robustness:
        code = 0 if args.tables_only else robustness.main(
            ["--out", str(args.out / "robustness"), "--bm3d-slices", str(args.bm3d_slices),
             *[a for s in specs for a in ("--model", s)]])
        if code:
            return code
        payload = json.loads((args.out / "robustness" / "results.json").read_text(encoding="utf-8"))
        for task in payload["tasks"]:
            robust.setdefault(task["method"], {})[task["task"]] = min(
                [task["worst_case_gain_db"]] + ([task["worst_case_slow_gain_db"]]
                                                if task["worst_case_slow_gain_db"] is not None else []))
    out = []
    for name, folder, run_dir, step in points:
        public = {}
        for task in TASKS:
            task_json = json.loads((public_dir / f"{task}.json").read_text(encoding="utf-8"))
            public[task] = public_gains(task_json, name)
        out.append({"name": name, "folder": str(folder), "step": step,
                    "cpu_hours": 0.0 if run_dir is None else cpu_hours(run_dir, step, args.threads),
                    "public": public, "robustness": robust.get(name, {})})
    text = curve_markdown(out, args.robustness)
    (args.out / "curve.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "curve.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
