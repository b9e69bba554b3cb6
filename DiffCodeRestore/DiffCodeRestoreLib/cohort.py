"""A cohort: hundreds of volumes restored by one command, resumable and split across machines.

Why these rules: a study runs for hours, on a workstation or as a SLURM job array. A second run must
take up where the first stopped (outputs appear complete or not at all, so an existing output is a
finished one and is skipped); N machines must split the cohort without talking to each other, so
the split is a pure function of the sorted input list (``--shard K/N`` takes every N-th input from
the K-th, as nnU-Net's ``-part_id/-num_parts`` does); and what happened to each input is written,
row by row as it happens, to a manifest that survives a killed run.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

MANIFEST_COLUMNS = ("input", "output", "status", "seconds", "model", "revision", "message")
LIST_SUFFIX = ".csv"


class CohortError(ValueError):
    """A cohort list or shard that cannot be used; one line saying what to do."""


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"K/N"`` (1 <= K <= N) as (K, N); None for no sharding."""
    if text is None:
        return None
    try:
        part, parts = (int(value) for value in text.split("/"))
    except ValueError:
        raise CohortError(f"--shard {text!r}: give K/N, e.g. 2/8 for the second of eight parts.") from None
    if not 1 <= part <= parts:
        raise CohortError(f"--shard {text}: K must be between 1 and N.")
    return part, parts


def select_shard(jobs: Sequence[Tuple[Path, Path]], shard: Optional[Tuple[int, int]]) -> List[Tuple[Path, Path]]:
    """Every N-th job from the K-th, in the jobs' (sorted) order: the same split on every machine."""
    if shard is None:
        return list(jobs)
    part, parts = shard
    return list(jobs[part - 1::parts])


def read_cohort_list(path: Path) -> List[Tuple[Path, Optional[Path]]]:
    """(input, output or None) from a CSV with an ``input`` column and an optional ``output`` column.

    Relative paths are relative to the CSV's folder, so a list travels with its study folder.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise CohortError(f"{path}: cannot read this CSV list ({error}).") from None
    if not rows or "input" not in rows[0]:
        raise CohortError(f"{path}: a cohort list needs an 'input' column (and optionally 'output').")
    found = []
    for number, row in enumerate(rows, start=2):
        text = (row.get("input") or "").strip()
        if not text:
            raise CohortError(f"{path}: line {number} has no input.")
        source = Path(text) if os.path.isabs(text) else path.parent / text
        output = (row.get("output") or "").strip()
        found.append((source, (Path(output) if os.path.isabs(output) else path.parent / output) if output else None))
    return found


def manifest_path(output_folder: Path, shard: Optional[Tuple[int, int]]) -> Path:
    """One manifest per shard, so machines sharing an output folder never write the same file."""
    if shard is None:
        return output_folder / "diffcode-manifest.csv"
    return output_folder / f"diffcode-manifest-shard-{shard[0]}-of-{shard[1]}.csv"


class Manifest:
    """Rows appended and flushed as inputs finish; a second run appends to the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._handle = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        if new:
            self._writer.writerow(MANIFEST_COLUMNS)
            self._handle.flush()

    def add(self, source: Path, target: Path, status: str, seconds: float, model: str = "", revision: str = "",
            message: str = "") -> None:
        self._writer.writerow([str(source), str(target), status, f"{seconds:.1f}", model, revision or "", message])
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_manifest(path: Path) -> List[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
