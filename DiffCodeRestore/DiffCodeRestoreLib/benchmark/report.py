"""Markdown tables, JSON and PNG montages from benchmark results.

Per task: ``<task>.md`` (main table, the slow-method subset table, PSNR per case), ``<task>.json``
(every slice's numbers, tuning grids, chosen parameters) and ``<task>.png`` (input | each method |
reference in one display window, with a zoom of the centre below). ``results.md``: the three-task
summary followed by the task tables.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..tasks import get_task
from .baselines import BASELINES
from .harness import MethodResult, SliceKey, TaskResult

PROTOCOL = ("AMIR protocol, per 2D slice with scikit-image: CT clipped to [-160, 240] HU (PSNR range 400), other "
            "tasks PSNR range = max - min of the reference slice; SSIM Gaussian window sigma 1.5, no sample-covariance "
            "correction; RMSE in original units; means over slices.")
TUNING = ("Baseline parameters: best mean PSNR over each filter's grid, chosen per task on the test slices themselves "
          "(oracle tuning, favourable to the baselines); a grid grows past its end while the best setting lies there "
          "('grid edge' marks a setting still at a bound); NLM and BM3D strengths are multiples of the noise level "
          "estimated on each slice.")
SLOW_MARK = "†"


def _fmt(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _finite(value: float) -> Optional[float]:
    """JSON has no infinity: identical images (PSNR inf) are written as null."""
    return value if math.isfinite(value) else None


def display_window(task: str, reference: np.ndarray) -> Tuple[float, float]:
    """CT: the soft-tissue window (-160..240 HU); MRI/PET: 1st to 99.5th percentile of the reference."""
    window = get_task(task).eval_window
    if window is not None:
        return window
    lo, hi = np.percentile(reference, [1.0, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _label(method: MethodResult) -> str:
    return method.name + (f" {SLOW_MARK}" if method.slow else "")


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(table_lines(header, rows))


def task_markdown(result: TaskResult) -> str:
    spec = get_task(result.task)
    cases = list(dict.fromkeys(s.case for m in result.methods for s in m.slices))
    lines = [f"### {spec.title} (`{result.task}`)", "",
             f"{result.n_slices} test slices from {len(cases)} case(s): {', '.join(cases)}.", ""]
    full = [m for m in result.methods if not m.slow]
    best_psnr = max((m.mean()["psnr"] for m in full if m.name != "input"), default=None)
    best_ssim = max((m.mean()["ssim"] for m in full if m.name != "input"), default=None)
    rows = []
    for m in result.methods:
        mean = m.mean()
        psnr, ssim = _fmt(mean["psnr"], 2), _fmt(mean["ssim"], 4)
        if not m.slow and m.name != "input":
            psnr = f"**{psnr}**" if mean["psnr"] == best_psnr else psnr
            ssim = f"**{ssim}**" if mean["ssim"] == best_ssim else ssim
        rows.append([_label(m), m.parameter, psnr, ssim, _fmt(mean["rmse"], 3), f"{mean['seconds']:.3f}", str(mean["n"])])
    lines += table_lines(["Method", "Parameter", "PSNR (dB)", "SSIM", f"RMSE ({spec.units})", "s/slice", "Slices"], rows)
    if any(m.slow for m in result.methods):
        lines += ["", f"{SLOW_MARK} Slow method, run on {len(result.subset)} evenly spread slices only. "
                  "Every method on that same subset:", ""]
        sub_rows = [[_label(m), _fmt(mean["psnr"], 2), _fmt(mean["ssim"], 4), _fmt(mean["rmse"], 3)]
                    for m in result.methods for mean in [m.mean(result.subset)]]
        lines += table_lines(["Method", "PSNR (dB)", "SSIM", f"RMSE ({spec.units})"], sub_rows)
    if len(cases) > 1:
        lines += ["", "PSNR (dB) per case:", ""]
        per_case = [[_label(m)] + [_fmt(m.mean([(s.case, s.slice) for s in m.slices if s.case == c])["psnr"], 2)
                                   if any(s.case == c for s in m.slices) else "" for c in cases]
                    for m in result.methods]
        lines += table_lines(["Method"] + cases, per_case)
    lines += _margins(result)
    lo, hi = display_window(result.task, result.montage["reference"])
    digits = max(0, 3 - math.floor(math.log10(hi - lo)))
    lines += ["", f"Montage `{result.task}.png` (case {result.montage_key[0]}, slice {result.montage_key[1]}; "
              f"window {lo:.{digits}f} to {hi:.{digits}f} {spec.units}; bottom row: zoom of the centre): "
              + " | ".join(result.montage), ""]
    return "\n".join(lines)


def _best_baseline(result: TaskResult, keys: Optional[Sequence[SliceKey]]) -> Optional[Tuple[str, dict]]:
    """Best classical baseline (input excluded) by mean PSNR over ``keys`` (all its slices when None)."""
    candidates = [(m.name, m.mean(keys)) for m in result.methods if m.name in BASELINES and m.name != "input"
                  and (keys is not None or not m.slow)]
    return max(candidates, key=lambda item: item[1]["psnr"], default=None)


def _margins(result: TaskResult) -> List[str]:
    """The quality bar: each non-baseline method minus the best baseline, on all slices and on the subset."""
    lines = []
    for m in (m for m in result.methods if m.name not in BASELINES):
        for keys, where in ((None, "all slices"), (result.subset, "the slow-method subset")):
            if keys is not None and not any(b.slow for b in result.methods):
                continue
            best = _best_baseline(result, keys)
            if best is None:
                continue
            mine = m.mean(keys)
            lines.append(f"- {m.name} vs best baseline on {where} ({best[0]}): "
                         f"{mine['psnr'] - best[1]['psnr']:+.2f} dB PSNR, {mine['ssim'] - best[1]['ssim']:+.4f} SSIM")
    return [""] + lines if lines else []


def task_json(result: TaskResult) -> dict:
    def method_entry(m: MethodResult) -> dict:
        cases = list(dict.fromkeys(s.case for s in m.slices))
        clean = lambda d: {k: (_finite(v) if isinstance(v, float) else v) for k, v in d.items()}  # noqa: E731
        return {
            "name": m.name, "parameter": m.parameter, "slow": m.slow,
            "mean": clean(m.mean()), "mean_on_subset": clean(m.mean(result.subset)),
            "per_case": {c: clean(m.mean([(s.case, s.slice) for s in m.slices if s.case == c])) for c in cases},
            "tuning_mean_psnr": {k: _finite(v) for k, v in m.tuning.items()},
            "slices": [clean(asdict(s)) for s in m.slices],
        }

    return {
        "task": result.task, "title": get_task(result.task).title, "units": get_task(result.task).units,
        "protocol": PROTOCOL, "tuning": TUNING, "n_slices": result.n_slices, "tune_slices": result.tune_slices,
        "slow_subset": [list(k) for k in result.subset],
        "montage": {"case": result.montage_key[0], "slice": result.montage_key[1], "panels": list(result.montage),
                    "window": list(display_window(result.task, result.montage["reference"]))},
        "methods": [method_entry(m) for m in result.methods],
        "note": "psnr null means identical images (infinite PSNR).",
    }


def write_montage(result: TaskResult, path: Path, tile: int = 256, max_columns: int = 6, gap: int = 2) -> None:
    """PNG grid: one cell per panel (input, methods, reference), full slice above a zoom of its centre."""
    from PIL import Image, ImageDraw, ImageFont

    lo, hi = display_window(result.task, result.montage["reference"])
    height, width = result.montage["reference"].shape
    scale = tile / max(height, width)
    full_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    side = max(8, min(height, width) // 4)
    top, left = (height - side) // 2, (width - side) // 2
    label_h, cell_w = 18, full_size[0]
    cell_h = label_h + full_size[1] + cell_w
    panels = list(result.montage.items())
    n_rows = math.ceil(len(panels) / max_columns)
    n_cols = math.ceil(len(panels) / n_rows)
    canvas = Image.new("L", (n_cols * (cell_w + gap) - gap, n_rows * (cell_h + gap) - gap), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (name, image) in enumerate(panels):
        x, y = (i % n_cols) * (cell_w + gap), (i // n_cols) * (cell_h + gap)
        grey = np.clip((np.asarray(image, dtype=np.float64) - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        canvas.paste(Image.fromarray(grey).resize(full_size, Image.BILINEAR), (x, y + label_h))
        zoom = Image.fromarray(grey[top:top + side, left:left + side]).resize((cell_w, cell_w), Image.NEAREST)
        canvas.paste(zoom, (x, y + label_h + full_size[1]))
        draw.text((x + 3, y + 2), name, fill=255, font=font)
    tmp = path.with_name(path.name + ".tmp")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file so an interrupted run never leaves a half-written result."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _summary_table(results: Sequence[TaskResult], on_subset: bool) -> List[str]:
    """Method x task PSNR/SSIM (and the task average) on all slices, or on each task's slow-method subset."""
    names = list(dict.fromkeys(m.name for r in results for m in r.methods))
    slow = {m.name for r in results for m in r.methods if m.slow}
    header = ["Method"]
    for r in results:
        header += [f"{r.task} PSNR", f"{r.task} SSIM"]
    if len(results) > 1:
        header += ["Mean PSNR", "Mean SSIM"]
    rows = []
    for name in names:
        row, psnrs, ssims = [name + (f" {SLOW_MARK}" if name in slow else "")], [], []
        for r in results:
            found = next((m for m in r.methods if m.name == name), None)
            if found is None:
                row += ["", ""]
                continue
            mean = found.mean(r.subset if on_subset else None)
            psnrs.append(mean["psnr"])
            ssims.append(mean["ssim"])
            row += [_fmt(mean["psnr"], 2), _fmt(mean["ssim"], 4)]
        if len(results) > 1:
            complete = len(psnrs) == len(results)
            row += [_fmt(float(np.mean(psnrs)), 2) if complete else "", _fmt(float(np.mean(ssims)), 4) if complete else ""]
        rows.append(row)
    return table_lines(header, rows)


def summary_markdown(results: Sequence[TaskResult], command: str = "") -> str:
    lines = ["## Benchmark results", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    slices = ", ".join(f"{r.task} {r.n_slices}" for r in results)
    lines += [f"Mean over all test slices ({slices}):", ""] + _summary_table(results, on_subset=False)
    if any(m.slow for r in results for m in r.methods):
        subsets = ", ".join(f"{r.task} {len(r.subset)}" for r in results)
        lines += ["", f"{SLOW_MARK} Slow methods ran only on a small evenly spread subset of slices ({subsets}), so "
                  "their row above is not comparable with the others. Every method on those same subsets:", ""]
        lines += _summary_table(results, on_subset=True)
    lines += ["", PROTOCOL, "", TUNING, "",
              f"Seconds per slice (task sections) measured in this run on {platform.machine()} with "
              f"{os.cpu_count()} CPU core(s), shared with other work: indicative.", ""]
    return "\n".join(lines)


@dataclass
class ModelFacts:
    """What the quality table does not show about a model: size, speed, and how much of its prior it uses."""

    name: str
    parameters: int
    seconds_256: float
    seconds_512: float
    code_usage: Dict[str, Optional[float]]  # task -> share of the task's codebook retrieved on the test split


def models_markdown(models: Sequence[ModelFacts]) -> List[str]:
    if not models:
        return []
    tasks = list(dict.fromkeys(t for m in models for t in m.code_usage))
    rows = [[m.name, f"{m.parameters / 1e6:.2f} M", f"{m.seconds_256:.3f}", f"{m.seconds_512:.3f}"]
            + ["no prior" if m.code_usage[t] is None else f"{m.code_usage[t]:.1%}" for t in tasks] for m in models]
    header = ["Model", "Parameters", "s per 256x256 slice", "s per 512x512 slice"] + [f"codes used, {t}" for t in tasks]
    return ["", "Models: size, speed in this run (best of 3, one slice per call, after a warm-up) and the share of the "
            "task's codebook retrieved over its test slices (a shared codebook counts each task's share of the one "
            "book):", ""] + table_lines(header, rows)


def write_reports(results: Sequence[TaskResult], out_dir: Path, command: str = "",
                  models: Sequence[ModelFacts] = ()) -> str:
    """Write every file; returns the text of ``results.md`` (summary, then each task's section)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for result in results:
        markdown = task_markdown(result)
        sections.append(markdown)
        _write_text(out_dir / f"{result.task}.md", markdown)
        _write_text(out_dir / f"{result.task}.json", json.dumps(task_json(result), indent=1, allow_nan=False) + "\n")
        write_montage(result, out_dir / f"{result.task}.png")
    summary = summary_markdown(results, command)
    if models:
        summary += "\n".join(models_markdown(models)) + "\n"
        _write_text(out_dir / "models.json", json.dumps([asdict(m) for m in models], indent=1) + "\n")
    text = summary + "\n" + "\n".join(sections)
    _write_text(out_dir / "results.md", text)
    return text
