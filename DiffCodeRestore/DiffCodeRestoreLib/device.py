"""Where inference runs and how much it does at once: device choice, precision, batch/tile planning.

Why: users' most common failures are "CUDA not found" and "out of GPU memory on a large CT". The
device is chosen automatically (CUDA, then Apple MPS, then CPU) or checked when named, and the amount
of work per model call is planned from free memory; ``is_out_of_memory`` recognises the errors the
pipeline recovers from (smaller tiles, then the CPU).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch

from .options import MIN_TILE  # the tile rules live with the other option checks (no torch needed there)

DEVICES = ("auto", "cuda", "mps", "cpu")
CPU_PIXELS_PER_CALL = 1 << 19  # input pixels per model call on the CPU: 2 slices of 512 x 512 (cache-friendly)
DEFAULT_TILE = {"cpu": 1024, "cuda": 1024, "mps": 512}
GPU_MEMORY_SHARE = 0.6  # of free GPU memory one model call may plan to use (the rest: fragmentation, other work)


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: Union[str, torch.device] = "auto") -> torch.device:
    """``auto`` -> CUDA, else MPS, else CPU; a named device that is missing raises one clear line."""
    name = str(name).lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}.")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but this torch has no usable CUDA GPU (CPU-only build or no driver); "
            "install a CUDA build of torch (in Slicer: the PyTorch extension) or use --device cpu."
        )
    if kind == "mps" and not mps_available():
        raise ValueError("device 'mps' requested but Apple Metal is not available here; use --device cpu.")
    return torch.device(name)


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def native_bfloat16_cpu() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere it is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older or different torch build: stay in float32
        return False


def resolve_precision(device: torch.device, name: str = "auto") -> Optional[torch.dtype]:
    """Compute precision for ``device``; None means plain float32.

    ``auto``: float16 on GPUs; bfloat16 on CPUs that have it in hardware (measured on the test split:
    within 0.01 dB of float32, about 1.7x faster); float32 elsewhere.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        if device.type in ("cuda", "mps"):
            return torch.float16
        return torch.bfloat16 if native_bfloat16_cpu() else None
    return None if name == "float32" else getattr(torch, name)


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast context for ``dtype`` (None: float32, no autocast).

    Autocast keeps the weights in float32 and casts per operation, so a model need not be written
    for a reduced-precision state.
    """
    if dtype is None:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=dtype)
    except (RuntimeError, ValueError):  # an older torch without autocast for this device
        return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def cpu_thread_count(threads: Optional[int] = None) -> int:
    """Every core the process may run on (intra-op threads), unless ``threads`` says otherwise."""
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS / Windows
            threads = os.cpu_count() or 1
    return max(1, int(threads))


@contextlib.contextmanager
def cpu_threads(threads: Optional[int]):
    """Run the block with ``threads`` torch threads, then give the host its own setting back.

    torch's thread count is global to the process: set for good, it would change Slicer's (or a
    notebook's) torch for everything else it runs. ``None`` leaves it as it is.
    """
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, getattr(torch, "OutOfMemoryError", ())) or isinstance(
        error, getattr(torch.cuda, "OutOfMemoryError", ())
    ):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_memory(device: torch.device) -> Optional[int]:
    """Free bytes on a CUDA device (None elsewhere: MPS and CPU do not say)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


@dataclass
class WorkPlan:
    """How many slices go through the model at once, and the largest tile edge (pixels)."""

    device: torch.device
    batch: int
    tile: int
    shrunk: bool = False  # out of memory once: never plan bigger again in this run

    def smaller(self) -> bool:
        """Halve the batch, else the tile; False when already minimal (time to leave the GPU)."""
        self.shrunk = True
        if self.batch > 1:
            self.batch //= 2
            return True
        if self.tile > MIN_TILE:
            self.tile = max(MIN_TILE, self.tile // 2)
            return True
        return False


def plan_work(device: torch.device, slice_shape, batch: Optional[int] = None, tile: Optional[int] = None,
              bytes_per_pixel: Optional[float] = None) -> WorkPlan:
    """Batch and tile for slices of ``slice_shape`` (rows, cols).

    On CUDA the batch comes from free memory and the model's measured bytes per input pixel
    (``bytes_per_pixel``, from a calibration call), and so does the tile when one whole slice would
    not fit; elsewhere from a fixed pixel budget.
    """
    free = free_memory(device) if bytes_per_pixel else None
    if tile is None:
        tile = DEFAULT_TILE.get(device.type, 512)
        if free is not None:
            fitting = int(math.sqrt(GPU_MEMORY_SHARE * free / bytes_per_pixel)) // 32 * 32
            tile = max(MIN_TILE, min(tile, fitting))
    tile = int(tile)
    rows, cols = min(slice_shape[0], tile), min(slice_shape[1], tile)
    pixels = max(1, rows * cols)
    if batch is None:
        if free is not None:
            batch = int(GPU_MEMORY_SHARE * free / (bytes_per_pixel * pixels))
        else:
            batch = CPU_PIXELS_PER_CALL // pixels
        batch = max(1, min(64, batch))
    return WorkPlan(device, int(batch), tile)
