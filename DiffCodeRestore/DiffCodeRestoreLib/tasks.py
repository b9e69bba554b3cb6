"""The three restoration tasks and their intensity conventions, in one place.

Every part of the project (simulators, training, benchmark, pipeline, Slicer module) takes the
task names and intensity ranges from here, so they cannot drift apart.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class TaskSpec:
    name: str
    index: int  # selects the codebook and conditions the networks
    modality: str  # DICOM Modality (0008|0060) this task expects
    title: str
    units: str
    # Network range: clip then scale to [0, 1] (the peers' convention). None: robust per-image scale.
    norm_range: Optional[Tuple[float, float]]
    # Scoring window for PSNR/SSIM/RMSE (CT only); None: data range of the reference slice.
    eval_window: Optional[Tuple[float, float]] = None


TASKS: Dict[str, TaskSpec] = {
    "mri-sr": TaskSpec("mri-sr", 0, "MR", "MRI super-resolution", "a.u.", None),
    "ct-denoise": TaskSpec("ct-denoise", 1, "CT", "CT low-dose denoising", "HU", (-1024.0, 3071.0), (-160.0, 240.0)),
    "pet-synthesis": TaskSpec("pet-synthesis", 2, "PT", "PET low-dose to full-dose synthesis", "SUV", (0.0, 20.0)),
}

# MRI has no absolute units: the 99.5th percentile of the positive voxels maps to this value.
MRI_PERCENTILE = 99.5
MRI_PERCENTILE_TARGET = 0.8
# Normalised MRI above this (2.5x the 99.5th percentile) is an outlier no training image had (a
# spike, a corrupt voxel); the pipeline keeps such voxels as they are instead of restoring them.
MRI_CEILING = 2.0


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}: choose one of {', '.join(TASKS)}.") from None


def intensity_scale(task: str, image: np.ndarray) -> Tuple[float, float]:
    """(offset, scale) such that network input = (image - offset) / scale, clipped to [0, 1] for CT/PET.

    For MRI the scale comes from a robust percentile of ``image`` (a slice or a whole volume), so
    callers restoring a volume should compute it once over the volume.
    """
    spec = get_task(task)
    if spec.norm_range is not None:
        lo, hi = spec.norm_range
        return lo, hi - lo
    positive = image[image > 0]
    if positive.size == 0:
        return 0.0, 1.0
    return 0.0, float(np.percentile(positive, MRI_PERCENTILE)) / MRI_PERCENTILE_TARGET


def network_range(task: str, offset: float, scale: float) -> Tuple[float, float]:
    """The intensities (in the task's units) that the network represents, for ``intensity_scale``'s
    (offset, scale): CT and PET their fixed range, MRI zero to ``MRI_CEILING``."""
    spec = get_task(task)
    if spec.norm_range is not None:
        return spec.norm_range
    return offset, offset + MRI_CEILING * scale


def normalize(task: str, image: np.ndarray, offset: float, scale: float) -> np.ndarray:
    x = (np.asarray(image, dtype=np.float32) - offset) / scale
    if get_task(task).norm_range is not None:
        x = np.clip(x, 0.0, 1.0)
    else:
        x = np.maximum(x, 0.0)
    return x.astype(np.float32, copy=False)


def denormalize(task: str, x: np.ndarray, offset: float, scale: float) -> np.ndarray:
    return (np.asarray(x, dtype=np.float32) * scale + offset).astype(np.float32, copy=False)
