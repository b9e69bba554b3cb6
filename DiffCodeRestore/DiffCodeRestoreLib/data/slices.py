"""The 2D slice-pair datasets per task and split, cached on disk and rebuilt only when inputs change.

``python -m DiffCodeRestoreLib.data.slices [--task T ...] [--split S ...] [--force]``

Layout: ``<cache>/datasets/<task>/<split>/<case>.npz`` (arrays ``hq``, ``lq`` (N, H, W) float32 in
original units, ``level`` (N,), ``spacing`` (2,) mm; no pickled objects) and ``manifest.json``
(the recipe, per-case shapes, levels and measured noise, and a key). The key hashes the pinned
source checksums, the volumes used, the recipe parameters, :data:`DATASET_VERSION` and the source
code of the simulators and recipes, so any change to the physics or the recipe rebuilds the data;
nothing else does. A build is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..files import staging_dir
from . import cache_dir, planes, publish, recipes
from .sources import SOURCES
from .volumes import SPLITS, volume_source
from .. import simulate
from ..tasks import TASKS

DATASET_VERSION = 1  # bump when the file layout or the meaning of a field changes
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SliceCase:
    """Slices of one case on one grid: ``hq``/``lq`` (N, H, W) float32 in original units (HU, SUV,
    MRI a.u.), ``spacing`` (row, col) mm, ``level`` (N,) the degradation parameter per slice
    (MRI factor s, CT I0, PET dose fraction)."""

    name: str
    hq: np.ndarray
    lq: np.ndarray
    spacing: Tuple[float, float]
    level: np.ndarray


def dataset_dir(task: str, split: str, cache: Optional[Path] = None) -> Path:
    return (cache or cache_dir()) / "datasets" / task / split


def _code_digest(synthetic: bool = False) -> str:
    """Hash of the code that decides the pixels: the simulators and the recipes (and, for a split with
    synthetic pairs, the synthesis engine)."""
    files = sorted(Path(simulate.__file__).parent.glob("*.py")) + [Path(recipes.__file__), Path(planes.__file__)]
    if synthetic:
        files += sorted((Path(recipes.__file__).parent / "synth").glob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def dataset_key(task: str, split: str, params: dict, cache: Optional[Path] = None) -> str:
    volumes = recipes.used_volumes(task, split, cache)
    label_sources = None
    if params.get("synthetic"):  # a newly fetched label source changes the synthetic part
        from .synth import label_sources_present

        label_sources = label_sources_present(task, cache)
    identity = {
        "version": DATASET_VERSION,
        "task": task,
        "split": split,
        "parameters": params,
        "volumes": volumes,
        "sources": {SOURCES[volume_source(v)].name: SOURCES[volume_source(v)].sha256 for v in volumes},
        "code": _code_digest(bool(params.get("synthetic"))),
    }
    if label_sources is not None:
        identity["label_sources"] = label_sources
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def read_manifest(task: str, split: str, cache: Optional[Path] = None) -> Optional[dict]:
    try:
        return json.loads((dataset_dir(task, split, cache) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def json_safe(value):
    """NaN (a slice without soft tissue) becomes null so the manifest stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _summary(values: list) -> Optional[dict]:
    finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if not finite:
        return None
    return {"min": min(finite), "median": float(np.median(finite)), "max": max(finite)}


def build(task: str, split: str, force: bool = False, cache: Optional[Path] = None,
          limit: Optional[int] = None, log=print) -> Path:
    """Build (or reuse) the dataset of one task and split; returns its folder.

    ``limit`` caps the slices (test) or cases and slices per case (train): a quick preview with its
    own key, for tests.
    """
    params = recipes.parameters(task, split, limit)
    key = dataset_key(task, split, params, cache)
    folder = dataset_dir(task, split, cache)
    manifest = read_manifest(task, split, cache)
    if not force and manifest is not None and manifest.get("key") == key:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(folder.parent, f".{split}.")
    start = time.monotonic()
    try:
        entries = []
        log(f"{task}/{split}: building from {', '.join(recipes.used_volumes(task, split, cache))}")
        for case in recipes.make_cases(task, split, params, cache):
            file = f"{case.name}.npz"
            np.savez(staging / file, hq=case.hq.astype(np.float32), lq=case.lq.astype(np.float32),
                     level=case.level.astype(np.float32), spacing=np.asarray(case.spacing, np.float64))
            entries.append({"name": case.name, "file": file, "slices": int(len(case.hq)),
                            "shape": list(case.hq.shape[1:]), "spacing": [float(s) for s in case.spacing],
                            "level": case.level.tolist(), **case.info})
            log(f"  {case.name}: {len(case.hq)} x {case.hq.shape[1]}x{case.hq.shape[2]} at "
                f"{case.spacing[0]:.3f} mm ({time.monotonic() - start:.0f} s)")
        noise_key = {"mri-sr": "lq_error_rel", "ct-denoise": "noise_hu", "pet-synthesis": "lq_noise_rel"}[task]
        manifest = {
            "key": key, "task": task, "split": split, "version": DATASET_VERSION, "parameters": params,
            "volumes": recipes.used_volumes(task, split, cache), "cases": entries,
            "slices": sum(e["slices"] for e in entries),
            "bytes": sum(p.stat().st_size for p in staging.glob("*.npz")),
            "build_seconds": round(time.monotonic() - start, 1),
            "noise": {"measure": noise_key, **(_summary([v for e in entries for v in e[noise_key]]) or {})},
        }
        (staging / MANIFEST).write_text(json.dumps(json_safe(manifest), indent=1))
        publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{task}/{split}: {manifest['slices']} slices in {len(entries)} cases, {manifest['bytes'] / 1e6:.0f} MB, "
        f"{manifest['build_seconds']:.0f} s")
    return folder


def load_cases(task: str, split: str, cache: Optional[Path] = None, limit: Optional[int] = None,
               rebuild_stale: bool = True) -> List[SliceCase]:
    """The slice cases of one task and split (built first if missing, or stale and ``rebuild_stale``).

    Long training runs pass ``rebuild_stale=False`` so that resuming uses the same pairs it started on.
    """
    manifest = read_manifest(task, split, cache)
    if manifest is None or rebuild_stale:
        build(task, split, cache=cache, limit=limit)
        manifest = read_manifest(task, split, cache)
    folder = dataset_dir(task, split, cache)
    cases = []
    for entry in manifest["cases"]:
        with np.load(folder / entry["file"], allow_pickle=False) as data:
            cases.append(SliceCase(entry["name"], data["hq"], data["lq"],
                                   (float(data["spacing"][0]), float(data["spacing"][1])), data["level"]))
    return cases


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.data.slices", description=__doc__.split("\n")[0])
    parser.add_argument("--task", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--split", nargs="+", choices=list(SPLITS), default=["train", "test"],
                        help="default: train and test (the shipped recipe); train-mixed adds synthetic pairs")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cached dataset is current")
    args = parser.parse_args(argv)
    start = time.monotonic()
    failed = []
    for task in args.task:
        for split in args.split:
            try:
                folder = build(task, split, force=args.force)
            except FileNotFoundError as error:  # an optional source this split needs is missing
                print(f"{task}/{split}: skipped: {error}", file=sys.stderr)
                failed.append(f"{task}/{split}")
                continue
            manifest = read_manifest(task, split)
            print(f"{task}/{split}: {manifest['slices']} slices, {manifest['bytes'] / 1e6:.0f} MB -> {folder}")
    print(f"Datasets ready in {time.monotonic() - start:.0f} s" + (f"; skipped {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
