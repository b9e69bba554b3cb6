"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DDP.

Why no launcher of our own: ``torchrun`` (and SLURM's ``srun`` calling it) already starts one process
per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
The training and adaptation code read them here and run unchanged: without them (a plain ``python``
or ``diffcode-restore`` call) everything below is a no-op and training is single-process.

What changes with several processes, and why:

- **Devices and backend.** Each process takes ``cuda:LOCAL_RANK`` with NCCL when CUDA is there (and
  the device asked for is ``auto`` or ``cuda``), else the CPU with gloo.
- **Batches.** Every process draws its own patches (the sampler is seeded with the rank), so the
  effective batch is ``world_size`` times the per-process batch; DDP averages the gradients, so
  every process applies the same update and the replicas stay identical.
- **Stopping.** A wall-clock budget or a cancel request is seen at slightly different times by the
  processes; one process leaving the loop early would leave the others blocked in the gradient
  all-reduce. So each step the processes agree (:func:`agree`): all stop when any must, and the
  elapsed time used for the learning-rate schedule is the largest, so the schedules are identical.
- **Writing.** Only rank 0 writes checkpoints, logs and the model (a run folder must be on a file
  system every node sees, so that a resumed run finds the checkpoint).

One node, four GPUs::

    torchrun --standalone --nproc-per-node 4 -m DiffCodeRestoreLib adapt --task ct-denoise \
        --out my-ct-model --minutes 10 /data/full-dose-ct/

SLURM, two nodes with four GPUs each (``sbatch adapt.sbatch``; the same lines train with
``-m DiffCodeRestoreLib.training train --config large``)::

    #!/bin/bash
    #SBATCH --nodes=2 --ntasks-per-node=1 --gpus-per-node=4 --cpus-per-task=16 --time=01:00:00
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node 4 --rdzv-id "$SLURM_JOB_ID" \
        --rdzv-backend c10d --rdzv-endpoint "$head:29500" \
        -m DiffCodeRestoreLib adapt --task ct-denoise --out /shared/my-ct-model --minutes 30 /shared/full-dose-ct/

A CPU-only cluster runs the same with ``--device cpu`` (gloo). At the time limit SLURM sends SIGTERM:
``adapt`` stops after the current step and keeps its checkpoint, and resubmitting the job resumes it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Tuple

import torch

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    """True when the environment describes a run of several processes (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if name == "cuda":
        raise ValueError("--device cuda: no CUDA GPU is visible to this process; use --device cpu (gloo) instead.")
    if name not in ("auto", "cpu"):
        raise ValueError(f"--device {name}: under torchrun use auto, cuda or cpu (one process per device).")
    return torch.device("cpu")


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> Tuple[DistContext, torch.device]:
    """Join the process group that ``torchrun`` describes, or return ``SINGLE`` and ``device`` as asked.

    Idempotent: a second call in the same process returns the same context.
    """
    import torch.distributed as dist

    if not launched_by_torchrun():
        from ..device import resolve_device  # the one rule (CUDA, then MPS, then the CPU) restoring uses too

        return SINGLE, resolve_device(device)
    missing = [key for key in ENV_KEYS if key not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start the processes with torchrun "
                         "(or set all of RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).")
    ctx = DistContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    target = _pick_device(device, ctx.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group(backend, init_method="env://", rank=ctx.rank, world_size=ctx.world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return ctx, target


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after a last barrier, so rank 0 has finished writing)."""
    import torch.distributed as dist

    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when distributed (it then averages gradients), else itself."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_state(module: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's parameters and buffers into every replica of ``module``.

    Why: DDP keeps parameters identical and copies buffers from rank 0 at the start of each forward,
    but a buffer updated during the last forward (the stage-1 codebook's EMA statistics) differs
    between processes when the stage ends, and a module outside DDP (the EMA copy) never gets synced.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def agree(ctx: DistContext, done: bool, stop: bool, elapsed: float) -> Tuple[bool, bool, float]:
    """(done, stop, elapsed) agreed by every process: any process's done or stop, the largest elapsed."""
    if not ctx.enabled:
        return done, stop, elapsed
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flags = torch.tensor([float(done), float(stop), float(elapsed)], dtype=torch.float64, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0].item()), bool(flags[1].item()), float(flags[2].item())


def broadcast_value(ctx: DistContext, value: float) -> float:
    """Rank 0's ``value`` on every process (a budget, a decision), so that all processes act alike."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    held = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(held, src=0)
    return float(held.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()
