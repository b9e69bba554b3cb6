"""Geometric augmentation of label maps: any plane, pixel size, matrix, orientation and deformation.

Why one composed mapping: resampling, rotation, stretch, flip and elastic deformation are applied as
one coordinate map and one nearest-neighbour lookup, so label values are never mixed (no new labels
appear at boundaries) and the slice is interpolated once, not five times. For a 3D label volume the
plane itself is drawn (near an axis or fully oblique), so one atlas gives slices of every
orientation; the 2D grid then gets its pixel size and matrix from ``GeometryParams``.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .fields import coarse_field
from .params import GeometryParams, SeedLike, generator, log_uniform, uniform

Grid = Tuple[float, Tuple[int, int]]  # (pixel mm, (rows, cols))
MAX_TRIES = 6


def draw_grid(rng: np.random.Generator, params: GeometryParams) -> Grid:
    """A pixel size (log-uniform) and a matrix (log-uniform within the FOV limits at that pixel)."""
    pixel = float(log_uniform(rng, params.pixel_mm))
    low_m, high_m = params.matrix
    low = min(max(low_m, params.fov_mm[0] / pixel), high_m)
    high = max(min(high_m, params.fov_mm[1] / pixel), low_m)
    low, high = min(low, high), max(low, high)
    rows = int(np.clip(round(float(log_uniform(rng, (low, high)))), low_m, high_m))
    cols = rows
    if rng.random() < params.rectangular_probability:
        cols = int(np.clip(round(rows * float(uniform(rng, params.aspect))), low_m, high_m))
        if rng.random() < 0.5:
            rows, cols = cols, rows
    return pixel, (rows, cols)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _plane_normal(spacing: np.ndarray, rng: np.random.Generator, params: GeometryParams) -> Tuple[np.ndarray, str]:
    """A plane normal in (axis0, axis1, axis2) mm space and a description of it."""
    thick = spacing.max() > params.thick_ratio * spacing.min()
    if thick:
        axis = int(np.argmax(spacing))
        normal = np.zeros(3)
        normal[axis] = 1.0
        return normal, f"across axis {axis} (thick slices)"
    if rng.random() < params.oblique_probability:
        return _unit(rng.standard_normal(3)), "oblique"
    axis = int(rng.integers(3))
    normal = np.zeros(3)
    normal[axis] = 1.0
    tilt = math.radians(float(uniform(rng, (0.0, params.tilt_deg))))
    other = _unit(np.cross(normal, _unit(rng.standard_normal(3))))
    return _unit(math.cos(tilt) * normal + math.sin(tilt) * other), f"axis {axis} tilted {math.degrees(tilt):.1f} deg"


def _in_plane_basis(normal: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    reference = np.eye(3)[int(np.argmin(np.abs(normal)))]
    u = _unit(reference - normal * float(reference @ normal))
    return u, np.cross(normal, u)


def _centroid(labels: np.ndarray) -> np.ndarray:
    """Index-space centroid of the labelled voxels, from a strided view of at most ~10^5 voxels
    (a full centre of mass over an 8-million-voxel atlas costs 0.3 s per slice; this, milliseconds)."""
    stride = max(1, int(round((labels.size / 1e5) ** (1.0 / labels.ndim))))
    view = labels[(slice(None, None, stride),) * labels.ndim]
    points = np.argwhere(view)
    if points.size == 0:
        return (np.asarray(labels.shape, dtype=np.float64) - 1) / 2
    return points.mean(axis=0) * stride


def _random_voxel(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index of a labelled voxel drawn uniformly: rejection sampling (labelled voxels are a good
    share of every map), an exhaustive list only if that fails."""
    flat = labels.reshape(-1)
    for index in rng.integers(0, flat.size, 256).tolist():
        if flat[index]:
            break
    else:
        found = np.flatnonzero(flat)
        if found.size == 0:
            return (np.asarray(labels.shape, dtype=np.float64) - 1) / 2
        index = int(found[int(rng.integers(found.size))])
    return np.array(np.unravel_index(index, labels.shape), dtype=np.float64)


def random_geometry(labels: np.ndarray, spacing: Sequence[float], seed: SeedLike,
                    params: Optional[GeometryParams] = None,
                    grid: Optional[Grid] = None) -> Tuple[np.ndarray, Tuple[float, float], Dict[str, object]]:
    """A randomly placed, sized, oriented and deformed 2D slice of a label map.

    labels: integer map, 2D (rows, cols) or 3D (axis0, axis1, axis2); spacing: mm per axis.
    Draws a pixel size and matrix (``draw_grid``; or uses ``grid`` = (pixel_mm, (rows, cols)) so
    that several slices can share one grid), a plane (3D), a centre, an in-plane rotation in
    [0, 360) degrees, a flip, a per-axis stretch and a smooth elastic displacement, and samples the
    labels at the resulting points by nearest neighbour (0 outside the map).
    Returns (labels int32 (rows, cols), (pixel, pixel) spacing in mm, info).
    """
    params = params or GeometryParams()
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2D or 3D integer array, got {labels.ndim}D {labels.dtype}")
    spacing_mm = np.asarray(spacing, dtype=np.float64)
    if spacing_mm.shape != (labels.ndim,) or not np.all(spacing_mm > 0):
        raise ValueError(f"spacing must give one positive size (mm) per axis of the labels, got {tuple(spacing)}")
    rng = generator(seed)
    pixel, (rows, cols) = grid if grid is not None else draw_grid(rng, params)
    if labels.ndim == 3:
        normal, plane = _plane_normal(spacing_mm, rng, params)
        u, v = _in_plane_basis(normal)
    else:
        normal, plane = None, "2D"
        u, v = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    angle = float(uniform(rng, (0.0, 2 * math.pi)))
    u, v = math.cos(angle) * u + math.sin(angle) * v, -math.sin(angle) * u + math.cos(angle) * v
    flip = bool(rng.random() < params.flip_probability)
    stretch = log_uniform(rng, params.stretch, 2)
    elastic = float(uniform(rng, params.elastic_mm))
    elastic_spacing = float(uniform(rng, params.elastic_spacing_mm))
    a = (np.arange(rows, dtype=np.float64) - (rows - 1) / 2) * pixel / stretch[0]
    b = (np.arange(cols, dtype=np.float64) - (cols - 1) / 2) * pixel / stretch[1] * (-1 if flip else 1)
    a, b = np.broadcast_to(a[:, None], (rows, cols)), np.broadcast_to(b[None, :], (rows, cols))
    if elastic > 0:
        cells = max(rows, cols) * pixel / elastic_spacing
        a = a + elastic * coarse_field((rows, cols), cells, rng)
        b = b + elastic * coarse_field((rows, cols), cells, rng)
    offsets = a[None] * u[:, None, None] + b[None] * v[:, None, None]

    # The centre: up to MAX_TRIES draws until the slice shows enough of the object (a plane through
    # the edge of an atlas, or a small field in the air beside it, teaches nothing).
    on_object = bool(rng.random() < params.centre_on_object_probability)
    for attempt in range(MAX_TRIES):
        centre = (_centroid(labels) if on_object and attempt == 0 else _random_voxel(labels, rng)) * spacing_mm
        coords = (centre[:, None, None] + offsets) / spacing_mm[:, None, None]
        sampled = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0, prefilter=False)
        if np.count_nonzero(sampled) >= params.min_foreground * sampled.size:
            break
    info = {"pixel_mm": pixel, "shape": [rows, cols], "plane": plane,
            "normal": None if normal is None else [float(x) for x in normal],
            "centre_mm": [float(x) for x in centre], "centred_on_object": on_object and attempt == 0,
            "rotation_deg": math.degrees(angle), "flip": flip, "stretch": [float(s) for s in stretch],
            "elastic_mm": elastic, "elastic_spacing_mm": elastic_spacing,
            "foreground": float(np.count_nonzero(sampled) / sampled.size)}
    return sampled.astype(np.int32), (pixel, pixel), info
