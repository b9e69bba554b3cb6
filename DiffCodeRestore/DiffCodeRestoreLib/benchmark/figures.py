"""Before/after montages of the demo's real volumes: input, restored and reference, whole and zoomed.

``python -m DiffCodeRestoreLib.benchmark.figures [--demo demo-output] [--out docs/figures]``

Why from the demo's files: they are what the command line wrote (the product's own output, start-up
and all), so the pictures in the README show what a user gets. One figure per task, every panel in
the same window (CT: the scoring window -160..240 HU; MRI and PET: 0 to the reference's 99.5th
percentile), the zoom on the reference's most detailed square, PSNR/SSIM of the slice shown in each
title (the benchmark's metrics). Needs matplotlib (a development dependency).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..metrics import slice_scores
from ..tasks import TASKS, get_task

PANELS = ("input", "restored", "reference")


def display_window(task: str, reference: np.ndarray) -> Tuple[float, float]:
    spec = get_task(task)
    if spec.eval_window is not None:
        return spec.eval_window
    return 0.0, float(np.percentile(reference, 99.5))


def detail_square(reference: np.ndarray, size: int) -> Tuple[int, int]:
    """Top-left corner of the ``size`` square with the most gradient energy (edges to look at)."""
    gy, gx = np.gradient(reference.astype(np.float64))
    energy = np.hypot(gx, gy)
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size])
    row, col = np.unravel_index(np.argmax(sums), sums.shape)
    return int(row), int(col)


def montage(task: str, slices: dict, path: Path) -> Path:
    """input | restored | reference, whole slice above and the zoom below, one window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    reference = slices["reference"]
    low, high = display_window(task, reference)
    size = max(24, min(reference.shape) // 4)
    row, col = detail_square(reference, size)
    figure, axes = plt.subplots(2, 3, figsize=(9, 6.4), dpi=80)
    for index, name in enumerate(PANELS):
        image = slices[name]
        title = name
        if name != "reference":
            scores = slice_scores(image, reference, task)
            title = f"{name}: {scores.psnr:.2f} dB, SSIM {scores.ssim:.3f}"
        for axis, view in ((axes[0, index], image), (axes[1, index], image[row:row + size, col:col + size])):
            axis.imshow(view, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0, index].set_title(title, fontsize=9)
        axes[0, index].add_patch(Rectangle((col, row), size, size, fill=False, edgecolor="yellow", linewidth=1))
    unit = get_task(task).units
    figure.suptitle(f"{get_task(task).title} (window {low:g} to {high:.4g} {unit}; zoom below)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def middle_slices(demo: Path, task: str) -> dict:
    found = {}
    for name in PANELS:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(demo / f"{task}-{name}.nrrd"))).astype(np.float32)
        found[name] = array[array.shape[0] // 2]
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark.figures",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo-output"), help="the folder `make demo` wrote")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    for task in TASKS:
        if not (args.demo / f"{task}-restored.nrrd").is_file():
            print(f"{args.demo}: no {task} files; run `make demo` first.", file=sys.stderr)
            return 1
        print(montage(task, middle_slices(args.demo, task), args.out / f"{task}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
