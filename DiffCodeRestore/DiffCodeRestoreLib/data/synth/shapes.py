"""Random label maps without anatomy: Voronoi cells, blobs, dots, thin vessels and sheets.

Why: the hard part of every task is the edge (k-space truncation rings on it, CT noise and PET
counts blur it); sharp edges of every orientation, curvature, width and contrast can be drawn
without any anatomy, in unlimited number, so the network learns edges rather than one subject's
brain (SynthSR, SynthSeg). Label 0 is outside the body outline (air for CT and PET).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .fields import coarse_field, correlated_field
from .params import SeedLike, ShapeParams, generator, integer, uniform


def _body(shape: Tuple[int, int], params: ShapeParams, rng: np.random.Generator,
          pixel_mm: Optional[float]) -> np.ndarray:
    """A smooth, irregular superellipse outline (a trunk, a head, a limb): True inside; at most
    ``body_max_mm`` across when the pixel size is known."""
    rows, cols = shape
    y = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2)[:, None] / (rows / 2)
    x = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2)[None, :] / (cols / 2)
    fill = uniform(rng, params.body_fill)
    if pixel_mm is not None:
        fill = min(fill, params.body_max_mm / (max(shape) * pixel_mm))
    half_y, half_x = fill * uniform(rng, (0.6, 1.0)), fill
    if rng.random() < 0.5:
        half_y, half_x = half_x, half_y
    y0, x0 = uniform(rng, (-0.15, 0.15)), uniform(rng, (-0.15, 0.15))
    power = uniform(rng, (2.0, 3.5))
    angle = np.arctan2(y - y0, x - x0)
    wobble = 1.0 + sum(uniform(rng, (0.0, 0.06)) * np.cos(k * angle + uniform(rng, (0, 2 * math.pi)))
                       for k in range(2, 6))
    radius = (np.abs((x - x0) / half_x) ** power + np.abs((y - y0) / half_y) ** power) ** (1.0 / power)
    return radius <= wobble


def _voronoi(shape: Tuple[int, int], cells: int, warp: float, rng: np.random.Generator) -> np.ndarray:
    """Labels 1..cells of Voronoi cells whose boundaries are bent by a smooth displacement."""
    rows, cols = shape
    size = max(shape)
    grid = np.mgrid[0:rows, 0:cols].astype(np.float32)
    if warp > 0:
        grid[0] += warp * size * coarse_field(shape, 4, rng)
        grid[1] += warp * size * coarse_field(shape, 4, rng)
    seeds = rng.uniform((0, 0), (rows, cols), (cells, 2))
    _, nearest = cKDTree(seeds).query(grid.reshape(2, -1).T)
    return (nearest.reshape(shape) + 1).astype(np.int32)


def _curves(shape: Tuple[int, int], count: int, params: ShapeParams, rng: np.random.Generator,
            first_label: int) -> Tuple[np.ndarray, int]:
    """Branching random-walk tubes (vessels, ducts, nerves): labels from ``first_label`` on, 0 elsewhere.

    All curves are rasterised with one Euclidean distance transform: each centreline pixel carries
    its radius and label, and a pixel belongs to the tube whose centreline point is nearest if it
    lies within that point's radius.
    """
    rows, cols = shape
    centre = np.zeros(shape, dtype=bool)
    radius = np.zeros(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.int32)
    labels_used = 0
    size = max(shape)
    for _ in range(count):
        vessel_label = first_label + labels_used
        labels_used += 1
        start = rng.uniform((0, 0), (rows, cols))
        heading = uniform(rng, (0, 2 * math.pi))
        tubes = [(start, heading, uniform(rng, params.vessel_radius_px), int(uniform(rng, (0.2, 1.0)) * size))]
        branches = integer(rng, (0, 2))
        while tubes:
            point, heading, width, length = tubes.pop()
            bend = uniform(rng, (0.005, 0.08))
            headings = heading + np.cumsum(rng.normal(0.0, bend, length))
            path = point + np.cumsum(np.stack([np.sin(headings), np.cos(headings)], axis=1), axis=0)
            taper = np.linspace(1.0, uniform(rng, (0.5, 1.0)), length)
            inside = (path[:, 0] >= 0) & (path[:, 0] < rows - 0.5) & (path[:, 1] >= 0) & (path[:, 1] < cols - 0.5)
            where = np.round(path[inside]).astype(int)
            r = np.maximum(width * taper[inside], 0.5).astype(np.float32)
            centre[where[:, 0], where[:, 1]] = True
            radius[where[:, 0], where[:, 1]] = np.maximum(radius[where[:, 0], where[:, 1]], r)
            label[where[:, 0], where[:, 1]] = vessel_label
            if branches > 0 and length > 20:
                branches -= 1
                at = int(rng.integers(length // 4, length))
                turn = uniform(rng, (0.35, 1.2)) * (1 if rng.random() < 0.5 else -1)
                tubes.append((path[at], headings[at] + turn, max(0.5, width * uniform(rng, (0.5, 0.9))),
                              int(length * uniform(rng, (0.3, 0.7)))))
    if not centre.any():
        return np.zeros(shape, dtype=np.int32), labels_used
    distance, (near_r, near_c) = ndimage.distance_transform_edt(~centre, return_indices=True)
    tube = distance <= radius[near_r, near_c]
    return np.where(tube, label[near_r, near_c], 0).astype(np.int32), labels_used


def random_shapes_labels(shape: Tuple[int, int], seed: SeedLike, params: Optional[ShapeParams] = None,
                         pixel_mm: Optional[float] = None) -> np.ndarray:
    """A random label map (int32, ``shape``) of cells, blobs, dots, vessels and sheets.

    Layers, each painted over the previous: a body outline (label 0 outside, with probability
    ``body_probability``, and always when ``pixel_mm`` is given and the field is wider than
    ``full_field_max_mm``: a 40 cm square of tissue is no patient, and would starve every CT
    ray), warped Voronoi cells filling it, optionally a fat-like rim under its
    outline, thin sheets along level sets of a smooth field, blobs (thresholded smooth fields),
    small dots, and branching vessels. Every layer's labels are new, so every boundary is an edge
    that some contrast will show. Deterministic in ``seed``.
    """
    params = params or ShapeParams()
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"random_shapes_labels makes 2D maps of at least 8 x 8, got shape {shape}")
    shape = (int(shape[0]), int(shape[1]))
    rng = generator(seed)
    size = max(shape)
    wide = pixel_mm is not None and max(shape) * pixel_mm > params.full_field_max_mm
    with_body = rng.random() < params.body_probability or wide
    body = _body(shape, params, rng, pixel_mm) if with_body else np.ones(shape, dtype=bool)
    labels = _voronoi(shape, integer(rng, params.cells), uniform(rng, params.cell_warp), rng)
    next_label = int(labels.max()) + 1

    if rng.random() < params.fat_rim_probability and not body.all():
        depth = ndimage.distance_transform_edt(body)
        labels[depth <= uniform(rng, params.fat_rim_fraction) * size] = next_label
        next_label += 1
    for _ in range(integer(rng, params.sheets)):
        field = correlated_field(shape, uniform(rng, (0.05, 0.2)) * size, rng)
        gy, gx = np.gradient(field)
        slope = np.maximum(np.hypot(gy, gx), 1e-6)
        band = np.abs(field - uniform(rng, (-1.0, 1.0))) / slope <= uniform(rng, params.sheet_width_px) / 2
        labels[band] = next_label
        next_label += 1
    for _ in range(integer(rng, params.blob_fields)):
        field = correlated_field(shape, uniform(rng, params.blob_scale) * size, rng)
        labels[field > uniform(rng, (0.8, 2.2))] = next_label
        next_label += 1
    dots = integer(rng, params.dots)
    if dots:
        rows, cols = np.ogrid[:shape[0], :shape[1]]
        dot_labels = (next_label, next_label + 1)
        for _ in range(dots):
            r0, c0 = rng.uniform((0, 0), shape)
            reach = uniform(rng, params.dot_radius_px)
            labels[(rows - r0) ** 2 + (cols - c0) ** 2 <= reach ** 2] = dot_labels[int(rng.integers(2))]
        next_label += 2
    tubes, used = _curves(shape, integer(rng, params.vessels), params, rng, next_label)
    labels = np.where(tubes > 0, tubes, labels)
    return np.where(body, labels, 0).astype(np.int32)
