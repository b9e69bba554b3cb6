"""``make demo``: restore the real public-test volumes of all three tasks with the command line.

For each task the low-quality test volume is written as a real image file, restored by
``diffcode-restore restore`` in a fresh process (start-up included, default model), and the result is
scored slice by slice against the reference with the benchmark's metrics.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..metrics import volume_scores
from ..tasks import TASKS


def _write_volume(slices: np.ndarray, spacing, path: Path, ct: bool) -> None:
    image = sitk.GetImageFromArray(np.round(slices).astype(np.int16) if ct else slices.astype(np.float32))
    image.SetSpacing((float(spacing[1]), float(spacing[0]), 2.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def run(out: Path, model: Optional[str]) -> List[dict]:
    from ..data.slices import load_cases

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in TASKS:
        case = load_cases(task, "test")[0]
        ct = task == "ct-denoise"
        lq_path, ref_path, out_path = (out / f"{task}-{kind}.nrrd" for kind in ("input", "reference", "restored"))
        _write_volume(case.lq, case.spacing, lq_path, ct)
        _write_volume(case.hq, case.spacing, ref_path, ct)
        cmd = [sys.executable, "-m", "DiffCodeRestoreLib", "restore", str(lq_path), str(out_path), "--task", task,
               "--overwrite"] + (["--model", model] if model else [])
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - start
        lq = sitk.GetArrayFromImage(sitk.ReadImage(str(lq_path))).astype(np.float32)
        restored = sitk.GetArrayFromImage(sitk.ReadImage(str(out_path))).astype(np.float32)
        ref = case.hq if not ct else np.round(case.hq)
        before, after = volume_scores(lq, ref, task), volume_scores(restored, ref, task)
        rows.append({"task": task, "case": case.name, "slices": len(ref), "shape": "x".join(map(str, ref.shape[1:])),
                     "input": before, "restored": after, "seconds": seconds})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--model", help="catalog name or weights folder (default: the default model)")
    args = parser.parse_args(argv)
    rows = run(args.out, args.model)
    print("\n| task | test volume | slices | input PSNR / SSIM | restored PSNR / SSIM | CLI wall time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['case']} ({r['shape']}) | {r['slices']} | {r['input'][0]:.2f} / {r['input'][1]:.4f} "
              f"| {r['restored'][0]:.2f} / {r['restored'][1]:.4f} | {r['seconds']:.1f} |")
    print(f"\nFiles (input, restored, reference per task) are in {args.out}/; open them in 3D Slicer to compare.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
