"""Draw the DiffCode Restore icons (extension and module) from code, so they can be regenerated.

The picture: a stylised axial head slice split by a compare slider; the left half is blocky and
noisy (the degraded scan), the right half clean (the restored one). Rendered at 4x and averaged
down for anti-aliasing; written with a minimal PNG encoder (numpy + zlib, no imaging library).

    python Resources/make_icons.py
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = (ROOT / "Resources" / "DiffCode.png", ROOT / "DiffCodeRestore" / "Resources" / "Icons" / "DiffCodeRestore.png")
SIZE = 128
SUPERSAMPLE = 4


def write_png(path: Path, rgba: np.ndarray) -> None:
    """Write an (H, W, 4) uint8 array as a non-interlaced 8-bit RGBA PNG."""
    height, width, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def head_slice(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Grey values in [0, 1] of a schematic axial head slice in unit coordinates (-1..1)."""
    image = np.zeros_like(x)
    image[_ellipse(x, y, 0, 0, 0.80, 0.92)] = 0.95  # skull
    image[_ellipse(x, y, 0, 0, 0.70, 0.82)] = 0.45  # grey matter
    image[_ellipse(x, y, 0, 0.02, 0.56, 0.68)] = 0.62  # white matter
    for side in (-1, 1):
        image[_ellipse(x, y, side * 0.16, -0.05, 0.09, 0.30)] = 0.12  # lateral ventricles
    image[_ellipse(x, y, 0, 0.48, 0.08, 0.08)] = 0.30  # fourth ventricle region
    return image


def draw_icon(size: int = SIZE) -> np.ndarray:
    n = size * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")

    # Rounded-square background with a vertical teal-to-navy gradient.
    corner = 0.28
    qx, qy = np.maximum(np.abs(x) - (1 - corner), 0), np.maximum(np.abs(y) - (1 - corner), 0)
    inside = (qx**2 + qy**2 <= corner**2) & (np.abs(x) <= 1) & (np.abs(y) <= 1)
    t = (y + 1) / 2
    top, bottom = np.array([0.10, 0.45, 0.55]), np.array([0.05, 0.12, 0.25])
    rgb = (1 - t)[..., None] * top + t[..., None] * bottom

    # Scan: smooth on the right; on the left, 8x8-block averaged (low resolution) plus fixed noise.
    scan = head_slice(x / 0.86, y / 0.86)
    block = 8 * SUPERSAMPLE
    coarse = scan.reshape(n // block, block, n // block, block).mean(axis=(1, 3))
    coarse = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)
    rng = np.random.default_rng(7)
    noise = np.repeat(np.repeat(rng.normal(0, 0.08, (n // block, n // block)), block, 0), block, 1)
    degraded = np.clip(coarse + noise * (coarse > 0.05), 0, 1)
    grey = np.where(x < 0, degraded, scan)
    in_head = _ellipse(x / 0.86, y / 0.86, 0, 0, 0.80, 0.92) | (np.where(x < 0, coarse, 0) > 0.05)
    rgb = np.where(in_head[..., None], grey[..., None] * np.array([1.0, 1.0, 1.0]), rgb)

    # Compare slider: a bright vertical line with a round handle.
    line = np.abs(x) <= 0.025
    handle = (x**2 + y**2) <= 0.16**2
    handle_ring = handle & ((x**2 + y**2) >= 0.11**2)
    accent = np.array([1.0, 0.72, 0.20])
    rgb = np.where((line & ~handle)[..., None], accent, rgb)
    rgb = np.where(handle[..., None], np.array([0.05, 0.12, 0.25]), rgb)
    rgb = np.where(handle_ring[..., None], accent, rgb)
    ax = np.abs(x)  # two outward-pointing triangles: drag left / right
    arrows = handle & (ax >= 0.015) & (ax <= 0.085) & (np.abs(y) <= 0.8 * (0.085 - ax))
    rgb = np.where(arrows[..., None], accent, rgb)

    rgba = np.concatenate([rgb, inside[..., None].astype(float)], axis=-1)
    # Premultiply, average the supersamples, un-premultiply.
    rgba[..., :3] *= rgba[..., 3:4]
    small = rgba.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 4).mean(axis=(1, 3))
    alpha = small[..., 3:4]
    small[..., :3] = np.divide(small[..., :3], alpha, out=np.zeros_like(small[..., :3]), where=alpha > 0)
    return np.clip(np.round(small * 255), 0, 255).astype(np.uint8)


def main() -> None:
    icon = draw_icon()
    for path in OUTPUTS:
        write_png(path, icon)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
