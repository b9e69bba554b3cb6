"""AMIR-protocol metrics: hand-checkable cases and agreement with direct scikit-image calls."""

import sys

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from DiffCodeRestoreLib.metrics import slice_scores, volume_scores


def _mr_slice(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:48, :48]
    return (100 + 50 * np.sin(x / 5.0) * np.cos(y / 7.0) + rng.normal(0, 3, (48, 48))).astype(np.float32)


def _ct_slice(seed: int = 0) -> np.ndarray:
    """Soft tissue (40 HU) around bone (1000 HU) in air (-1000 HU)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:48, :48]
    r = np.hypot(y - 24, x - 24)
    hu = np.where(r < 20, 40.0, -1000.0) + np.where(r < 6, 960.0, 0.0)
    return (hu + rng.normal(0, 5, hu.shape)).astype(np.float32)


@pytest.mark.parametrize("task, make", [("mri-sr", _mr_slice), ("ct-denoise", _ct_slice), ("pet-synthesis", _mr_slice)])
def test_identical_images_score_perfectly(task, make):
    image = make()
    scores = slice_scores(image, image.copy(), task)
    assert scores.psnr == float("inf")
    assert scores.ssim == pytest.approx(1.0)
    assert scores.rmse == 0.0


def test_non_ct_matches_direct_skimage_with_reference_range():
    reference = _mr_slice(0)
    restored = reference + np.random.default_rng(1).normal(0, 5, reference.shape).astype(np.float32)
    ref64, res64 = reference.astype(np.float64), restored.astype(np.float64)
    data_range = float(ref64.max() - ref64.min())
    scores = slice_scores(restored, reference, "mri-sr")
    assert scores.psnr == pytest.approx(peak_signal_noise_ratio(ref64, res64, data_range=data_range))
    assert scores.ssim == pytest.approx(structural_similarity(
        ref64, res64, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range))
    assert scores.rmse == pytest.approx(np.sqrt(np.mean((res64 - ref64) ** 2)))
    # PET follows the same rule (no window; the reference slice's own range).
    assert slice_scores(restored, reference, "pet-synthesis") == scores


def test_ct_is_scored_inside_the_soft_tissue_window():
    reference = _ct_slice(0)
    # Errors only where both images lie outside [-160, 240] HU are invisible to the CT protocol.
    outside = reference.copy()
    outside[reference > 500] -= 300  # bone 1000 -> 700 HU: still above the window
    outside[reference < -500] += 200  # air -1000 -> -800 HU: still below
    assert slice_scores(outside, reference, "ct-denoise").psnr == float("inf")
    assert slice_scores(outside, reference, "mri-sr").psnr < 30  # the unwindowed protocol sees them

    noisy = reference + np.random.default_rng(2).normal(0, 20, reference.shape).astype(np.float32)
    ref_w = np.clip(reference.astype(np.float64), -160, 240)
    res_w = np.clip(noisy.astype(np.float64), -160, 240)
    scores = slice_scores(noisy, reference, "ct-denoise")
    assert scores.psnr == pytest.approx(peak_signal_noise_ratio(ref_w, res_w, data_range=400))
    assert scores.ssim == pytest.approx(structural_similarity(
        ref_w, res_w, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=400))
    assert scores.rmse == pytest.approx(np.sqrt(np.mean((res_w - ref_w) ** 2)))
    assert scores.rmse < 20  # clipping air and bone removes part of the added noise


def test_volume_scores_average_slices_and_skip_constant_references():
    reference = np.stack([_mr_slice(0), _mr_slice(1), np.zeros((48, 48), np.float32)])
    restored = reference + 2.0
    per_slice = [slice_scores(restored[i], reference[i], "mri-sr") for i in range(2)]
    scores = volume_scores(restored, reference, "mri-sr")
    assert scores.psnr == pytest.approx(np.mean([s.psnr for s in per_slice]))
    assert scores.ssim == pytest.approx(np.mean([s.ssim for s in per_slice]))
    assert scores.rmse == pytest.approx(2.0)
    # CT has a fixed range, so a constant (all-air) slice is scored too.
    ct = np.stack([_ct_slice(0), np.full((48, 48), -1000.0, np.float32)])
    assert volume_scores(ct, ct, "ct-denoise").psnr == float("inf")


def test_bad_input_raises_clear_errors():
    image = _mr_slice()
    with pytest.raises(ValueError, match="differ in shape"):
        slice_scores(image, image[:40], "mri-sr")
    with pytest.raises(ValueError, match="constant"):
        slice_scores(image, np.ones_like(image), "mri-sr")
    with pytest.raises(ValueError, match="Unknown task"):
        slice_scores(image, image, "xray")
    with pytest.raises(ValueError, match="volume_scores"):
        slice_scores(image[None], image[None], "mri-sr")
    with pytest.raises(ValueError, match="nothing to score"):
        volume_scores(np.zeros((2, 16, 16)), np.zeros((2, 16, 16)), "mri-sr")


def test_missing_scikit_image_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        slice_scores(_mr_slice(), _mr_slice(), "mri-sr")
