"""Drawing synthetic pairs from the label sources by share, and batching them into dataset cases.

``draw_synthetic`` is the on-the-fly entry point (one pair per seed); ``synthetic_cases`` yields
``recipes.Case`` objects that ``data.slices.build`` can write into the cached bank beside the real
cases (the hook is described in ``docs/training-data.md``). The shares below split the *synthetic*
part of a task's training data between label sources; sources not in the cache are left out and
the others renormalised. They are a proposal until a training run measures them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .geometry import draw_grid
from .labels import LabelMap, training_label_maps
from .pairs import synth_pair
from .params import SeedLike, SynthParams, default_params, streams
from .shapes import random_shapes_labels

SHAPES = "shapes"

# Share of each label source within the synthetic part of a task (proposal, see training-data.md).
SOURCE_SHARES: Dict[str, Dict[str, float]] = {
    "mri-sr": {SHAPES: 0.40, "mni_tissue": 0.20, "itk_classes": 0.10, "lung1_hu": 0.15, "totalsegmentator": 0.15},
    "ct-denoise": {SHAPES: 0.35, "lung1_hu": 0.25, "totalsegmentator": 0.20, "mni_tissue": 0.10, "itk_classes": 0.10},
    "pet-synthesis": {SHAPES: 0.25, "mni_tissue": 0.15, "aal": 0.25, "lung1_hu": 0.15, "totalsegmentator": 0.20},
}


def available_shares(task: str, maps: Mapping[str, LabelMap], shares: Optional[Mapping[str, float]] = None
                     ) -> Dict[str, float]:
    """The shares of the sources present (random shapes always are), renormalised to sum to 1."""
    wanted = dict(shares if shares is not None else SOURCE_SHARES[task])
    kept = {name: share for name, share in wanted.items() if share > 0 and (name == SHAPES or name in maps)}
    if not kept:
        raise ValueError(f"no label source of {sorted(wanted)} is available for {task}")
    total = sum(kept.values())
    return {name: share / total for name, share in kept.items()}


def _pick(rng: np.random.Generator, shares: Mapping[str, float]) -> str:
    names = list(shares)
    return names[int(rng.choice(len(names), p=np.array([shares[n] for n in names])))]


def pair_from_source(task: str, source: str, seed: SeedLike, maps: Mapping[str, LabelMap],
                     params: Optional[SynthParams] = None, grid=None
                     ) -> Tuple[np.ndarray, np.ndarray, Dict[str, object]]:
    """One pair from a named source: random shapes drawn on the grid, or a label map through the geometry."""
    params = params or default_params(task)
    shape_rng, pair_seed = streams(seed, 2)
    if source == SHAPES:
        geometry = params.geometry or default_params(task).geometry
        pixel, shape = grid if grid is not None else draw_grid(shape_rng, geometry)
        labels = random_shapes_labels(shape, shape_rng, params.shapes, pixel)
        hq, lq, info = synth_pair(task, labels, (pixel, pixel), params.replace(geometry=None), pair_seed)
        info["geometry"] = {"pixel_mm": pixel, "shape": list(shape), "plane": "random shapes"}
    else:
        hq, lq, info = maps[source].pair(task, pair_seed, params, grid)
    info["source"] = source
    return hq, lq, info


def draw_synthetic(task: str, seed: SeedLike, params: Optional[SynthParams] = None, cache: Optional[Path] = None,
                   shares: Optional[Mapping[str, float]] = None, maps: Optional[Mapping[str, LabelMap]] = None
                   ) -> Tuple[np.ndarray, np.ndarray, Dict[str, object]]:
    """One synthetic pair of ``task``: a label source drawn by share, then ``synth_pair``."""
    maps = training_label_maps(task, cache) if maps is None else maps
    pick_rng, pair_seed = streams(seed, 2)
    source = _pick(pick_rng, available_shares(task, maps, shares))
    return pair_from_source(task, source, pair_seed, maps, params)


def _noise_measure(task: str, hq: np.ndarray, lq: np.ndarray) -> Tuple[str, float]:
    """The manifest's noise field of the task (as ``data.slices`` summarises it)."""
    if task == "ct-denoise":
        tissue = (hq > -50) & (hq < 100)
        return "noise_hu", float((lq - hq)[tissue].std()) if tissue.sum() > 100 else float("nan")
    mask = hq > 0.1 * float(np.percentile(hq, 99)) if task == "mri-sr" else hq > 0.05 * float(hq.max())
    if not mask.any():
        return ("lq_error_rel" if task == "mri-sr" else "lq_noise_rel"), float("nan")
    error = float(np.sqrt(np.mean((lq[mask] - hq[mask]) ** 2)) / max(float(hq[mask].mean()), 1e-12))
    return ("lq_error_rel" if task == "mri-sr" else "lq_noise_rel"), error


def _same_mri_scale(hq: np.ndarray, lq: np.ndarray, reference_lq: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rescale an MRI pair so its LQ has the reference LQ's robust maximum. Training normalises MRI
    once per case from the LQ stack (``tasks.intensity_scale``, as the pipeline does per volume);
    the slices of a synthetic case draw their a.u. scale independently, so without this one slice
    of a case could reach ten times the network's range."""
    from ...tasks import intensity_scale

    _, target = intensity_scale("mri-sr", reference_lq)
    _, current = intensity_scale("mri-sr", lq)
    factor = np.float32(target / current) if current > 0 else np.float32(1.0)
    return hq * factor, lq * factor


def synthetic_cases(task: str, recipe: Mapping[str, object], cache: Optional[Path] = None,
                    params: Optional[SynthParams] = None, maps: Optional[Mapping[str, LabelMap]] = None
                    ) -> Iterator["object"]:
    """``recipes.Case`` objects of synthetic pairs for the cached bank.

    recipe: {"cases": n, "slices_per_case": k, "seed": s, optional "shares": {source: share}};
    maps: the label maps to use (default: ``training_label_maps(task, cache)``).
    Each case draws a source by share and one grid; its k slices are independent draws (plane,
    contrast, dose) on that grid, so they stack like a real case. Case names start with ``synth-``.
    """
    from ..recipes import Case

    maps = training_label_maps(task, cache) if maps is None else maps
    shares = available_shares(task, maps, recipe.get("shares"))  # type: ignore[arg-type]
    params = params or default_params(task)
    root = np.random.SeedSequence(int(recipe["seed"]))  # type: ignore[arg-type]
    for number, case_seed in enumerate(root.spawn(int(recipe["cases"]))):  # type: ignore[arg-type]
        pick_seed, grid_seed, slices_seed = case_seed.spawn(3)
        source = _pick(np.random.default_rng(pick_seed), shares)
        grid = draw_grid(np.random.default_rng(grid_seed), params.geometry or default_params(task).geometry)
        hqs, lqs, levels, facts = [], [], [], []
        for slice_seed in slices_seed.spawn(int(recipe["slices_per_case"])):  # type: ignore[arg-type]
            hq, lq, info = pair_from_source(task, source, slice_seed, maps, params, grid)
            if task == "mri-sr" and hqs:
                hq, lq = _same_mri_scale(hq, lq, lqs[0])
            hqs.append(hq)
            lqs.append(lq)
            levels.append(float(info["level"]))
            facts.append(info)
        key = _noise_measure(task, hqs[0], lqs[0])[0]
        summary = {"source": source, "synthetic": True,
                   key: [_noise_measure(task, h, l)[1] for h, l in zip(hqs, lqs)],
                   "planes": [str(f.get("geometry", {}).get("plane", "")) for f in facts]}
        yield Case(f"synth-{source}-{number:03d}", np.stack(hqs), np.stack(lqs), (grid[0], grid[0]),
                   np.asarray(levels, np.float32), summary)


def share_table(task: str, real_slices: int, synthetic_fraction: float = 0.5,
                cache: Optional[Path] = None) -> List[Tuple[str, float]]:
    """(source, share of all training slices) for a task whose real part has ``real_slices``
    slices and whose synthetic part is ``synthetic_fraction`` of the total (the proposed recipe)."""
    maps = training_label_maps(task, cache)
    shares = available_shares(task, maps)
    rows = [("real (recipes.py)", 1.0 - synthetic_fraction)]
    rows += [(f"synthetic: {name}", synthetic_fraction * share) for name, share in shares.items()]
    return rows


def synthetic_slices_for(real_slices: int, synthetic_fraction: float) -> int:
    """Synthetic slices that make ``synthetic_fraction`` of a task whose real part has ``real_slices``."""
    if not 0 <= synthetic_fraction < 1:
        raise ValueError(f"synthetic_fraction must be in [0, 1), got {synthetic_fraction}")
    return int(math.ceil(real_slices * synthetic_fraction / (1 - synthetic_fraction)))
