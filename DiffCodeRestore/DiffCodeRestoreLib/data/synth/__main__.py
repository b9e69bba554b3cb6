"""Command line of the synthetic-image engine.

    python -m DiffCodeRestoreLib.data.synth montage --out docs/figures/training-samples.png
    python -m DiffCodeRestoreLib.data.synth timing [--size 256]
    python -m DiffCodeRestoreLib.data.synth ct-dose [--draws 40] [--size 192]
    python -m DiffCodeRestoreLib.data.synth shares

Torch runs on ``--threads`` threads (default 1): the machines are shared and the simulators are
called one slice at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _ct_dose(draws: int, size: int, seed: int) -> dict:
    """Input PSNR (AMIR protocol, -160..240 HU) of synthetic CT pairs: random-shape bodies on a
    size x size grid with pixels of 0.6-2.6 mm (fields of 115-500 mm at 192), I0 over the full range."""
    from ...metrics import slice_scores
    from .pairs import synth_pair
    from .params import default_params, streams
    from .shapes import random_shapes_labels

    params = default_params("ct-denoise")
    rows = []
    for number in range(draws):
        labels_rng, pixel_rng = streams(seed + number, 2)
        pixel = float(np.exp(pixel_rng.uniform(np.log(0.6), np.log(2.6))))  # 115-500 mm fields at 192
        labels = random_shapes_labels((size, size), labels_rng, params.shapes, pixel)
        hq, lq, info = synth_pair("ct-denoise", labels, (pixel, pixel), params.replace(geometry=None), seed + number)
        rows.append({"i0": info["i0"], "pixel_mm": pixel, "psnr": slice_scores(lq, hq, "ct-denoise").psnr})
    psnr = np.array([r["psnr"] for r in rows])
    return {"draws": rows, "below_20_db": int((psnr < 20).sum()), "above_40_db": int((psnr > 40).sum()),
            "psnr_min": float(psnr.min()), "psnr_median": float(np.median(psnr)), "psnr_max": float(psnr.max())}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.data.synth",
                                     description="Synthetic training pairs from label maps (SynthSR-style).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("montage", help="write a PNG montage of synthetic and real training pairs")
    show.add_argument("--out", type=Path, required=True)
    show.add_argument("--seed", type=int, default=2025)
    show.add_argument("--tile", type=int, default=120, help="tile size in pixels")
    speed = commands.add_parser("timing", help="seconds per synthetic pair per task")
    speed.add_argument("--size", type=int, default=256)
    speed.add_argument("--repeats", type=int, default=2)
    dose = commands.add_parser("ct-dose", help="input PSNR distribution of synthetic CT pairs over the dose range")
    dose.add_argument("--draws", type=int, default=40)
    dose.add_argument("--size", type=int, default=192)
    dose.add_argument("--seed", type=int, default=0)
    commands.add_parser("shares", help="print the proposed share of each source per task")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    if args.command == "montage":
        from .montage import montage

        path = montage(args.out, seed=args.seed, tile=args.tile)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    elif args.command == "timing":
        from .montage import timing

        result = timing((args.size, args.size), args.repeats)
        for name, seconds in result.items():
            print(f"{name}: {seconds:.3f} s per {args.size}x{args.size} {'map' if name == 'labels' else 'pair'}")
    elif args.command == "ct-dose":
        result = _ct_dose(args.draws, args.size, args.seed)
        print(json.dumps({k: v for k, v in result.items() if k != "draws"}, indent=1))
        for row in sorted(result["draws"], key=lambda r: r["i0"]):
            print(f"I0 {row['i0']:9.3g}  pixel {row['pixel_mm']:.2f} mm  input PSNR {row['psnr']:6.2f} dB")
    elif args.command == "shares":
        from .bank import SOURCE_SHARES, available_shares
        from .labels import label_sources_present

        for task, shares in SOURCE_SHARES.items():
            present = available_shares(task, dict.fromkeys(label_sources_present(task)))
            print(task + ": " + ", ".join(f"{name} {share:.0%}" + ("" if name in present else " (missing)")
                                          for name, share in shares.items())
                  + " | renormalised now: " + ", ".join(f"{n} {s:.0%}" for n, s in present.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
