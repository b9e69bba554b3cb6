"""The options of a restoration, checked in one place and without torch.

Why a module of its own: a wrong option must be refused before anything slow happens (the command
line used to load the model, about 4 s, before saying ``--steps 0`` is wrong), and the command line,
the worker and the pipeline must apply the same rules. Nothing here imports torch, so the checks
run first and also under Slicer's own Python before any package is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .tasks import TaskSpec, get_task

SR_SCALES = (1, 2, 4)
MAX_SAMPLES = 64
MAX_SEED = 2**32 - 1  # seeds are 32-bit: a larger one would wrap silently onto another seed
TILE_CONTEXT = 64  # pixels at a tile's inner edges that are computed but never used (> receptive field)
TILE_BLEND = 32  # width of the cross-fade between neighbouring tiles
MIN_TILE = 256  # must exceed twice the tile context plus the blend band
SIZE_MULTIPLE = 4  # the networks' stride: slices are padded, tiles cut, on this grid


class OptionError(ValueError):
    """An option value that cannot be used; the message is one line naming the allowed values."""


@dataclass(frozen=True)
class RestoreOptions:
    """Checked options of one restoration (``steps``/``fidelity`` already resolved to numbers)."""

    spec: TaskSpec
    scale: int
    steps: int
    fidelity: float
    seed: int
    samples: int
    self_ensemble: bool
    suv_factor: Optional[float] = None
    hu_offset: Optional[float] = None


def smallest_tile(size_multiple: int = SIZE_MULTIPLE) -> int:
    return max(MIN_TILE, 2 * TILE_CONTEXT + TILE_BLEND + size_multiple)


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise OptionError(f"{name} must be a whole number, not {value!r}.")
    return int(value)


def check_restore_options(
    task: str,
    scale=1,
    steps=None,
    fidelity=None,
    seed=0,
    samples=1,
    self_ensemble=False,
    batch_size=None,
    tile_size=None,
    suv_factor=None,
    hu_offset=None,
    *,
    max_steps: Optional[int] = None,
    default_steps: int = 1,
    default_fidelity: float = 1.0,
    size_multiple: int = SIZE_MULTIPLE,
) -> RestoreOptions:
    """Check every option; raise ``OptionError`` (one line) for the first wrong one.

    ``max_steps``/``default_*`` come from the model's config when it is known (``None``: only the
    model-independent limits are checked, as the command line does before it loads anything).
    """
    spec = get_task(task)
    try:
        scale = _integer("scale", scale)
        if scale not in SR_SCALES:
            raise OptionError(f"scale must be one of {', '.join(map(str, SR_SCALES))}, not {scale}.")
        if scale != 1 and spec.name != "mri-sr":
            raise OptionError(f"scale {scale} is for MRI super-resolution only; use scale 1 for {spec.name}.")
        steps = default_steps if steps is None else _integer("steps", steps)
        if steps < 1 or (max_steps is not None and steps > max_steps):
            limit = f"between 1 and {max_steps}" if max_steps is not None else "at least 1"
            raise OptionError(f"steps must be {limit}, not {steps}.")
        fidelity = default_fidelity if fidelity is None else float(fidelity)
        if not 0.0 <= fidelity <= 1.0:
            raise OptionError(f"fidelity must be between 0 and 1, not {fidelity:g}.")
        samples = _integer("samples", samples)
        if not 1 <= samples <= MAX_SAMPLES:
            raise OptionError(f"samples must be between 1 and {MAX_SAMPLES}, not {samples}.")
        seed = _integer("seed", seed)
        if not 0 <= seed <= MAX_SEED:
            raise OptionError(f"seed must be between 0 and {MAX_SEED} (32 bits), not {seed}.")
        if batch_size is not None and _integer("batch size", batch_size) < 1:
            raise OptionError(f"batch size must be at least 1, not {batch_size}.")
        smallest = smallest_tile(size_multiple)
        if tile_size is not None:
            tile = _integer("tile size", tile_size)
            if tile < smallest or tile % size_multiple:
                raise OptionError(f"tile size must be a multiple of {size_multiple} and at least {smallest}, "
                                  f"not {tile}.")
        if not isinstance(self_ensemble, bool):
            raise OptionError(f"self_ensemble must be true or false, not {self_ensemble!r}.")
        if suv_factor is not None:
            suv_factor = float(suv_factor)
            if not suv_factor > 0 or suv_factor == float("inf"):
                raise OptionError(f"the SUV factor must be a positive number, not {suv_factor:g}.")
            if spec.name != "pet-synthesis":
                raise OptionError("an SUV factor is for PET only; leave it out for " + spec.name + ".")
        if hu_offset is not None:
            hu_offset = float(hu_offset)
            if spec.name != "ct-denoise":
                raise OptionError("an HU offset is for CT only; leave it out for " + spec.name + ".")
            if abs(hu_offset) > 32768:
                raise OptionError(f"the HU offset {hu_offset:g} is implausible; stored HU+1024 needs -1024.")
    except (TypeError, ValueError) as error:
        if isinstance(error, OptionError):
            raise
        raise OptionError(f"a restore option is not a number: {error}") from None
    return RestoreOptions(spec, scale, steps, fidelity, seed, samples, self_ensemble, suv_factor, hu_offset)
