"""How much of each test task's error any restoration could remove (a command, not a test).

    python -m DiffCodeRestoreLib.benchmark.ceiling [--model NAME=FOLDER ...] [--out FILE.md]

Why: when a model gains little over the input, the question is whether the reference itself is
noisy (then nothing can gain much) or the method falls short. PET: the simulator reconstructs the
test slices' expected, noiseless counts with the same MLEM; its score against HQ is the ceiling.
The noiseless image blurred by a small Gaussian shows how much structure lies at the noise's scale
(what any smoothing denoiser gives up); an oracle Wiener filter (built from the true signal and noise
spectra) is about the best a shift-invariant linear filter can do; and fresh draws on the training anatomy at the same dose
show how much of a model's shortfall is the test anatomy being unlike its training images.
MRI: the HQ noise level by Immerkaer's estimator (edges inflate it, so the noise share is an upper
bound); noise beyond the kept k-space band cannot be predicted, so 15/16 of its variance stays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from ..data.recipes import PetDraws, parameters, pet_test_draws, pet_training_anatomy_draws
from ..data.slices import load_cases
from ..metrics import slice_scores
from .baselines import parse_models
from .methods import DiffCodeMethod
from .report import markdown_table as table

PET = "pet-synthesis"
TRAINING_DRAWS = 12  # fresh PET slices on the training anatomy

IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def immerkaer_sigma(image: np.ndarray) -> float:
    """Gaussian noise standard deviation of a slice (Immerkaer 1996)."""
    response = np.abs(ndimage.convolve(np.asarray(image, np.float64), IMMERKAER))[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * response.mean() / 6)


def _mean_scores(restored: np.ndarray, reference: np.ndarray, task: str) -> List[str]:
    scores = [slice_scores(r, h, task) for r, h in zip(restored, reference)]
    return [f"{np.mean([s.psnr for s in scores]):.2f}", f"{np.mean([s.ssim for s in scores]):.4f}"]


def _blurred(images: np.ndarray, sigma_px: float) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(image, sigma_px) for image in images])


def _radial_mean(power: np.ndarray) -> np.ndarray:
    """A 2D power spectrum averaged over rings of equal spatial frequency."""
    fy, fx = np.meshgrid(np.fft.fftfreq(power.shape[0]), np.fft.fftfreq(power.shape[1]), indexing="ij")
    ring = np.round(np.hypot(fy, fx) * max(power.shape)).astype(int)
    return (np.bincount(ring.ravel(), power.ravel()) / np.bincount(ring.ravel()))[ring]


def oracle_wiener(lq: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per slice, the Wiener filter built from the radial power spectra of the noiseless image and of
    the actual noise: about the best a shift-invariant linear filter can do, with knowledge no filter has."""
    out = []
    for noisy, truth in zip(lq.astype(np.float64), clean.astype(np.float64)):
        signal = _radial_mean(np.abs(np.fft.fft2(truth)) ** 2)
        noise = _radial_mean(np.abs(np.fft.fft2(noisy - truth)) ** 2)
        out.append(np.real(np.fft.ifft2(np.fft.fft2(noisy) * signal / np.maximum(signal + noise, 1e-30))))
    return np.stack(out).astype(np.float32)


def _restorer(method: DiffCodeMethod) -> Callable[[PetDraws], np.ndarray]:
    return lambda draws: np.stack([method.restore(lq, PET, draws.spacing) for lq in draws.lq])


def pet_rows(models: Dict[str, Path]) -> List[List[str]]:
    """Scores against HQ on the test split and on fresh draws of the training anatomy (same dose)."""
    test = pet_test_draws()
    if not np.array_equal(test.hq, load_cases(PET, "test")[0].hq):
        raise RuntimeError("the PET test split on disk differs from its recipe: run `make dataset` first")
    anatomies = (test, pet_training_anatomy_draws(TRAINING_DRAWS))
    estimates: Dict[str, Callable[[PetDraws], np.ndarray]] = {
        "input (1/12 dose)": lambda d: d.lq,
        "noiseless reconstruction (ceiling)": lambda d: d.clean,
        "oracle Wiener filter of the input (radial spectra)": lambda d: oracle_wiener(d.lq, d.clean),
        **{f"noiseless reconstruction, Gaussian sigma {sigma:g} px": (lambda d, sigma=sigma: _blurred(d.clean, sigma))
           for sigma in (0.5, 1.0)},
        **{name: _restorer(DiffCodeMethod(folder, name=name)) for name, folder in models.items()},
    }
    return [[name, *(score for d in anatomies for score in _mean_scores(estimate(d), d.hq, PET))]
            for name, estimate in estimates.items()]


def mri_rows() -> List[List[str]]:
    case = load_cases("mri-sr", "test")[0]
    rows = []
    for index, (hq, lq) in enumerate(zip(case.hq.astype(np.float64), case.lq.astype(np.float64))):
        sigma = immerkaer_sigma(hq)
        error = float(np.mean((lq - hq) ** 2))
        unpredictable = 15 / 16 * sigma ** 2
        span = float(hq.max() - hq.min())  # the protocol's data range, as slice_scores uses it
        rows.append([str(index), f"{sigma:.2f}", f"{error:.1f}", f"{100 * unpredictable / error:.1f} %",
                     f"{slice_scores(lq, hq, 'mri-sr').psnr:.2f}", f"{10 * np.log10(span ** 2 / unpredictable):.2f}"])
    return rows


def run(models: Optional[Dict[str, Path]] = None) -> str:
    test_level = parameters(PET, "test")
    return "\n\n".join([
        "# Restoration ceilings on the test split",
        "## PET: scores against the full-dose reference (mean over slices)\n\n"
        f"Test split (the ITK head's tissue classes) beside {TRAINING_DRAWS} fresh draws on the training anatomy (the "
        f"template's tissue maps) at the same {test_level['full_counts']:g} counts and "
        f"1/{1 / test_level['dose_fraction']:.0f} dose.\n\n"
        + table(["image", "test PSNR (dB)", "test SSIM", "training anatomy PSNR (dB)", "training anatomy SSIM"],
                pet_rows(models or {})),
        "## MRI x4: how much of the input's error is reference noise\n\n"
        + table(["slice", "HQ noise sigma (Immerkaer)", "input MSE", "noise share of the error (upper bound)",
                 "input PSNR (dB)", "noise-limited PSNR (dB)"], mri_rows()),
    ]) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark.ceiling",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help="also score these weights on both PET anatomies (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    try:
        models = parse_models(args.model)
    except ValueError as error:
        parser.error(str(error))
    report = run(models)
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
