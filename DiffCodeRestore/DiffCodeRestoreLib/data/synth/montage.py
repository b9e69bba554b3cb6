"""A montage of training samples, synthetic and real, HQ | LQ, one row per task; and timings.

``python -m DiffCodeRestoreLib.data.synth montage --out docs/figures/training-samples.png``

Rows: MRI x2-4, CT low dose, PET low dose. Columns: synthetic pairs from several label sources,
their degradation level pinned at four points spread over its range (mildest first), then one real
training pair made the way ``recipes.py`` makes them (MRI: the ITK T1 head, k-space
x4; CT: lung1 at I0 5e4 with 2N views; PET: the MNI152 anatomy through ``simulate.pet``, which has no
real PET images at all). One display window per task: CT the scoring window -160..240 HU, PET
0..10 SUV, MRI 0 to the HQ's 99.5th percentile (MR units are arbitrary). Tiles are the central
square of each image, resized; the caption gives source, pixel size, matrix and level.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bank import SHAPES, pair_from_source
from .labels import training_label_maps
from .params import SynthParams, default_params
from .shapes import random_shapes_labels
from .pairs import synth_pair

TASK_ROWS = ("mri-sr", "ct-denoise", "pet-synthesis")
MONTAGE_SOURCES: Dict[str, Tuple[str, ...]] = {
    "mri-sr": (SHAPES, "mni_tissue", "lung1_hu", "itk_classes"),
    "ct-denoise": (SHAPES, "lung1_hu", "mni_tissue", "totalsegmentator"),
    "pet-synthesis": (SHAPES, "aal", "lung1_hu", "totalsegmentator"),
}


def _pinned_level(task: str, column: int) -> SynthParams:
    """Default ranges, but the degradation level pinned to the ``column``-th of four points spread
    over its range (lowest to highest quality loss last), so the figure shows the whole range."""
    params = default_params(task)
    fraction = 1.0 - column / 3.0  # column 0: the mildest degradation
    if task == "mri-sr":
        low, high = params.mri.factor
        factor = low + (high - low) * (1.0 - fraction)
        return params.replace(mri=dataclasses.replace(params.mri, factor=(factor, factor)))
    if task == "ct-denoise":
        low, high = np.log(params.ct.i0)
        i0 = float(np.exp(low + (high - low) * fraction))
        return params.replace(ct=dataclasses.replace(params.ct, i0=(i0, i0)))
    low, high = np.log(params.pet.dose_fraction)
    dose = float(np.exp(low + (high - low) * fraction))
    return params.replace(pet=dataclasses.replace(params.pet, dose_fraction=(dose, dose)))


def _window(task: str, hq: np.ndarray) -> Tuple[float, float]:
    if task == "ct-denoise":
        return -160.0, 240.0
    if task == "pet-synthesis":
        return 0.0, 10.0
    return 0.0, max(float(np.percentile(hq, 99.5)), 1e-6)


def _tile(image: np.ndarray, window: Tuple[float, float], size: int) -> np.ndarray:
    from skimage.transform import resize

    rows, cols = image.shape
    side = min(rows, cols)
    top, left = (rows - side) // 2, (cols - side) // 2
    square = image[top:top + side, left:left + side].astype(np.float64)
    if side != size:
        square = resize(square, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    lo, hi = window
    return np.clip((square - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def _level_text(task: str, info: dict) -> str:
    if task == "mri-sr":
        fr, fc = info.get("factor_rows"), info.get("factor_cols")
        return f"x{fr:.1f}" if fr == fc else f"x{fr:.1f}/{fc:.1f}"
    if task == "ct-denoise":
        return f"I0 {info['level']:.0e}"
    return f"dose 1/{1 / info['level']:.0f}"


def real_pair(task: str, cache: Optional[Path] = None) -> Tuple[np.ndarray, np.ndarray, dict]:
    """One real training pair, made as ``recipes.py`` makes training pairs (see the module docstring)."""
    from ...simulate import ct, mri, pet
    from ..planes import plane_stack, resample, window
    from ..volumes import load_volume

    if task == "mri-sr":
        stack, spacing = plane_stack(load_volume("itk_t1", cache), "coronal")
        hq = stack[len(stack) // 2].astype(np.float32)
        return hq, mri.kspace_truncate(hq, 4), {"source": "real itk_t1", "spacing": list(spacing),
                                                "factor_rows": 4.0, "factor_cols": 4.0, "level": 4.0}
    if task == "ct-denoise":
        stack, spacing = plane_stack(load_volume("lung1", cache))
        hq = stack[len(stack) // 2].astype(np.float32)
        lq = ct.low_dose(hq, spacing, 5e4, 0, n_views=2 * max(hq.shape))
        return hq, lq, {"source": "real lung1", "spacing": list(spacing), "level": 5e4}
    stacks = {name: plane_stack(load_volume(f"mni152_{name}", cache))[0] for name in ("gm", "wm", "mask")}
    spacing = plane_stack(load_volume("mni152_mask", cache))[1]
    index = int(np.argmax(stacks["mask"].reshape(len(stacks["mask"]), -1).sum(axis=1)))
    grid = {}
    for name, stack in stacks.items():
        image, exact = resample(stack[index:index + 1].astype(np.float32), spacing, 2.0)
        grid[name] = window(image, (128, 128), ((image.shape[1] - 1) / 2, (image.shape[2] - 1) / 2), 0.0)[0]
    activity = pet.activity_from_tissues(grid["gm"], grid["wm"], grid["mask"], exact, 0)
    mu = pet.attenuation_from_tissues(grid["mask"], exact)
    hq, lq = pet.simulate_pair(activity, mu, exact, 3e6, 1 / 12, 0)
    return hq, lq, {"source": "recipe MNI152", "spacing": list(exact), "level": 1 / 12}


def montage(out: Path, seed: int = 2025, tile: int = 120, cache: Optional[Path] = None,
            tasks: Sequence[str] = TASK_ROWS, log=print) -> Path:
    """Write the montage PNG (8-bit grey) and return its path."""
    from PIL import Image, ImageDraw, ImageFont

    gap, caption = 3, 28
    rows: List[List[Tuple[np.ndarray, np.ndarray, str]]] = []
    for row, task in enumerate(tasks):
        maps = training_label_maps(task, cache)
        sources = [s for s in MONTAGE_SOURCES[task] if s == SHAPES or s in maps]
        if len(sources) < 4:  # a missing optional source: another random-shapes sample instead
            sources += [SHAPES] * (4 - len(sources))
        cells = []
        for column, source in enumerate(sources[:4]):
            start = time.monotonic()
            params = _pinned_level(task, column)
            hq, lq, info = pair_from_source(task, source, seed + 100 * row + column, maps, params)
            spacing = info["spacing"][0]
            text = f"{source}\n{spacing:.2f}mm {hq.shape[0]}x{hq.shape[1]} {_level_text(task, info)}"
            log(f"{task}: {source} {hq.shape} in {time.monotonic() - start:.1f} s")
            cells.append((hq, lq, text))
        hq, lq, info = real_pair(task, cache)
        cells.append((hq, lq, f"{info['source']}\n{info['spacing'][0]:.2f}mm {hq.shape[0]}x{hq.shape[1]} "
                              f"{_level_text(task, info)}"))
        rows.append(cells)

    columns = max(len(r) for r in rows)
    cell_w = 2 * tile + 1
    width = columns * (cell_w + gap) - gap + 70
    height = len(rows) * (tile + caption + gap) + 16
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=10) if hasattr(ImageFont, "FreeTypeFont") else ImageFont.load_default()
    draw.text((72, 2), "each cell: HQ | LQ. Columns 1-4 synthetic (label source), last: real training pair", fill=255,
              font=font)
    for r, (task, cells) in enumerate(zip(tasks, rows)):
        y = 16 + r * (tile + caption + gap)
        draw.text((2, y + caption + tile // 2 - 12), {"mri-sr": "MRI SR", "ct-denoise": "CT LDCT",
                                                        "pet-synthesis": "PET LD"}[task], fill=255, font=font)
        for c, (hq, lq, text) in enumerate(cells):
            x = 70 + c * (cell_w + gap)
            window = _window(task, hq)
            canvas.paste(Image.fromarray(_tile(hq, window, tile)), (x, y + caption))
            canvas.paste(Image.fromarray(_tile(lq, window, tile)), (x + tile + 1, y + caption))
            draw.multiline_text((x + 2, y + 1), text, fill=255, font=font, spacing=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG", optimize=True)
    return out


def timing(shape: Tuple[int, int] = (256, 256), repeats: int = 2, seed: int = 0) -> Dict[str, float]:
    """Seconds per synthetic pair of ``shape`` for each task (random shapes at 1 mm, no geometry
    draw; the median of ``repeats``), and for the random label map alone."""
    out = {}
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        random_shapes_labels(shape, seed + r)
        times.append(time.perf_counter() - start)
    out["labels"] = float(np.median(times))
    labels = random_shapes_labels(shape, seed)
    for task in TASK_ROWS:
        params = default_params(task).replace(geometry=None)
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            synth_pair(task, labels, (1.0, 1.0), params, seed + r)
            times.append(time.perf_counter() - start)
        out[task] = float(np.median(times))
    return out
