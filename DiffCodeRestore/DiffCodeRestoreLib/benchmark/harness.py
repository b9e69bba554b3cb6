"""Run methods on the test slices of each task and score every slice with the AMIR protocol.

Methods are tuned first (if they can be), then timed slice by slice on the same slices, so the
seconds-per-slice column is measured in the run that produced the scores. Slow methods (BM3D) run
on a small evenly spread subset; the report scores every method on that subset too, for a fair
comparison.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..metrics import slice_scores
from .methods import Method, method_parameter

SliceKey = Tuple[str, int]  # (case name, slice index in the case)


@dataclass
class BenchCase:
    """Slices of one test case (a subject/volume), with their indices in the original case."""

    name: str
    hq: np.ndarray  # (N, H, W) float32, original units
    lq: np.ndarray
    spacing: Tuple[float, float]
    level: np.ndarray  # (N,) degradation parameter
    slice_ids: np.ndarray  # (N,)

    @classmethod
    def from_case(cls, case) -> "BenchCase":
        """From any SliceCase-like object (name, hq, lq, spacing, level)."""
        hq, lq = np.asarray(case.hq, dtype=np.float32), np.asarray(case.lq, dtype=np.float32)
        if hq.ndim != 3 or hq.shape != lq.shape:
            raise ValueError(f"Case {case.name}: hq and lq must be (N, H, W) of one shape, got {hq.shape} and {lq.shape}.")
        level = np.broadcast_to(np.asarray(case.level, dtype=np.float64), (len(hq),))
        return cls(case.name, hq, lq, tuple(case.spacing), level, np.arange(len(hq)))

    def take(self, positions: np.ndarray) -> "BenchCase":
        return BenchCase(self.name, self.hq[positions], self.lq[positions], self.spacing, self.level[positions],
                         self.slice_ids[positions])

    def keys(self) -> List[SliceKey]:
        return [(self.name, int(i)) for i in self.slice_ids]


def spread(cases: Sequence[BenchCase], count: Optional[int]) -> List[BenchCase]:
    """At most ``count`` slices evenly spread over all cases (all when count is None or 0)."""
    total = sum(len(c.hq) for c in cases)
    if not count or count >= total:
        return list(cases)
    chosen = set(np.unique(np.linspace(0, total - 1, count).round().astype(int)).tolist())
    out, start = [], 0
    for case in cases:
        positions = np.array([i for i in range(len(case.hq)) if start + i in chosen], dtype=int)
        if positions.size:
            out.append(case.take(positions))
        start += len(case.hq)
    return out


@dataclass
class SliceResult:
    case: str
    slice: int
    psnr: float
    ssim: float
    rmse: float
    seconds: float


@dataclass
class MethodResult:
    name: str
    parameter: str
    slow: bool
    slices: List[SliceResult]
    tuning: Dict[str, float] = field(default_factory=dict)  # setting -> mean PSNR on the tuning slices

    def mean(self, keys: Optional[Sequence[SliceKey]] = None) -> Dict[str, float]:
        """Mean PSNR/SSIM/RMSE/seconds over all slices, or over the slices named by ``keys``."""
        wanted = None if keys is None else set(keys)
        rows = [s for s in self.slices if wanted is None or (s.case, s.slice) in wanted]
        means = {k: float(np.mean([getattr(s, k) for s in rows])) for k in ("psnr", "ssim", "rmse", "seconds")}
        means["n"] = len(rows)
        return means


@dataclass
class TaskResult:
    task: str
    n_slices: int
    subset: List[SliceKey]  # slices the slow methods ran on
    tune_slices: int
    methods: List[MethodResult]
    montage_key: SliceKey
    montage: Dict[str, np.ndarray]  # "input", each method's name, "reference" -> (H, W)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_method(method: Method, task: str, cases: Sequence[BenchCase], tune_cases: Sequence[BenchCase],
               montage_key: SliceKey, log: Callable[[str], None] = _log) -> Tuple[MethodResult, Optional[np.ndarray]]:
    """Tune (if the method can), then restore and score every slice; also returns the montage slice's output."""
    tune = getattr(method, "tune", None)
    if tune is not None:
        started = time.perf_counter()
        tune(tune_cases, task)
        n_tune = sum(len(c.hq) for c in tune_cases)
        log(f"[{task}] {method.name}: tuned on {n_tune} slices in {time.perf_counter() - started:.1f} s "
            f"-> {method_parameter(method, task)}")
    if not getattr(method, "slow", False):  # untimed warm-up: lazy imports and first-call set-up
        method.restore(cases[0].lq[0].copy(), task, cases[0].spacing)
    slices, montage_out = [], None
    for case in cases:
        for position, (lq, hq) in enumerate(zip(case.lq, case.hq)):
            started = time.perf_counter()
            out = method.restore(lq.copy(), task, case.spacing)
            seconds = time.perf_counter() - started
            if out.shape != hq.shape:
                raise ValueError(f"{method.name} returned shape {out.shape} for a {hq.shape} slice.")
            scores = slice_scores(out, hq, task)
            key = (case.name, int(case.slice_ids[position]))
            slices.append(SliceResult(key[0], key[1], scores.psnr, scores.ssim, scores.rmse, seconds))
            if key == montage_key:
                montage_out = np.asarray(out, dtype=np.float32)
    result = MethodResult(method.name, method_parameter(method, task), bool(getattr(method, "slow", False)), slices,
                          dict(getattr(method, "tuning", {}).get(task, {})))
    log(f"[{task}] {method.name}: {result.mean()['psnr']:.2f} dB on {len(slices)} slices")
    return result, montage_out


def run_task(task: str, cases: Sequence, methods: Sequence[Method], slow_slices: int = 3, tune_slices: int = 0,
             log: Callable[[str], None] = _log) -> TaskResult:
    """All methods that support ``task`` on its cases (SliceCase-like objects)."""
    cases = [c if isinstance(c, BenchCase) else BenchCase.from_case(c) for c in cases]
    if not cases:
        raise ValueError(f"No test cases for task {task}.")
    subset = spread(cases, slow_slices)
    subset_keys = [k for c in subset for k in c.keys()]
    montage_key = subset_keys[len(subset_keys) // 2]
    tune_cases = spread(cases, tune_slices)
    results, outputs = [], {}
    for method in methods:
        if task not in method.tasks:
            continue
        slow = bool(getattr(method, "slow", False))
        run_cases = subset if slow else cases
        result, out = run_method(method, task, run_cases, subset if slow else tune_cases, montage_key, log)
        results.append(result)
        outputs[method.name] = out
    case = next(c for c in cases if c.name == montage_key[0])
    position = int(np.flatnonzero(case.slice_ids == montage_key[1])[0])
    montage = {"input": case.lq[position], **{k: v for k, v in outputs.items() if k != "input"},
               "reference": case.hq[position]}
    return TaskResult(task, sum(len(c.hq) for c in cases), subset_keys, sum(len(c.hq) for c in tune_cases), results,
                      montage_key, montage)
