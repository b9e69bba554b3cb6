"""Physics of the PET activity model and of the matched full-/low-count MLEM reconstructions."""

import functools
import math

import numpy as np
import pytest

from DiffCodeRestoreLib.simulate import pet

PIXEL_MM = 2.0


def _tissues(count: int = 2, size: int = 64):
    """Brain-like slices: white-matter core, a grey-matter ribbon, CSF in the middle."""
    rows, cols = (np.mgrid[:size, :size] - (size - 1) / 2) * PIXEL_MM
    radius = np.hypot(cols / 1.0, rows / 1.2)
    mask = (radius < 50).astype(np.float32)
    gm = ((radius >= 40) & (radius < 50)).astype(np.float32)
    wm = ((radius >= 8) & (radius < 40)).astype(np.float32)
    stack = lambda image: np.repeat(image[None], count, axis=0)  # noqa: E731
    return stack(gm), stack(wm), stack(mask)


@functools.lru_cache(maxsize=None)  # reconstructions are shared by tests (read-only)
def _pair(seed: int, dose: float = 1 / 12, counts: float = 3e5, lesions: int = 0):
    gm, wm, mask = _tissues()
    activity = pet.activity_from_tissues(gm, wm, mask, PIXEL_MM, 0, lesions=lesions)
    mu = pet.attenuation_from_tissues(mask, PIXEL_MM)
    return activity, pet.simulate_pair(activity, mu, PIXEL_MM, counts, dose, seed)


def test_activity_is_fdg_like():
    gm, wm, mask = _tissues()
    activity = pet.activity_from_tissues(gm, wm, mask, PIXEL_MM, 1, lesions=0)
    grey, white, csf = activity[gm > 0].mean(), activity[wm > 0].mean(), activity[(mask > 0) & (gm + wm == 0)].mean()
    assert 3.0 < grey / white < 5.0
    assert csf < 0.1 * white
    assert activity[mask == 0].max() == 0
    assert 0.02 < activity[gm > 0].std() / grey < 0.3  # regional variation, not a flat map
    with_lesions = pet.activity_from_tissues(gm, wm, mask, PIXEL_MM, 1, lesions=3)
    assert (with_lesions - activity).max() > 3.0  # hot spots
    regions = (np.indices(gm.shape)[2] > 32).astype(np.int32)
    by_region = pet.activity_from_tissues(gm, wm, mask, PIXEL_MM, 1, regions=regions, lesions=0)
    left, right = by_region[gm * (regions == 0) > 0], by_region[gm * (regions == 1) > 0]
    assert left.std() < 1e-5 and right.std() < 1e-5 and left.mean() != right.mean()
    np.testing.assert_array_equal(with_lesions, pet.activity_from_tissues(gm, wm, mask, PIXEL_MM, 1, lesions=3))


def test_attenuation_map():
    _, _, mask = _tissues(count=1)
    mu = pet.attenuation_from_tissues(mask[0], PIXEL_MM)
    assert mu.shape == mask[0].shape
    assert np.allclose(mu[mask[0] > 0], pet.MU_TISSUE_PER_MM)
    assert (mu == pet.MU_BONE_PER_MM).sum() > 0 and (mu == 0).sum() > 0
    assert (pet.attenuation_from_tissues(mask[0], PIXEL_MM, skull_mm=0) == pet.MU_BONE_PER_MM).sum() == 0


def test_low_count_reconstruction_is_noisier_and_mean_is_preserved():
    activity, (hq, lq) = _pair(seed=0)
    _, (hq_again, lq_again) = _pair(seed=1)
    brain = activity > 0
    hq_noise, lq_noise = (hq - hq_again)[brain].std(), (lq - lq_again)[brain].std()
    assert lq_noise > 2.0 * hq_noise  # 1/12 of the counts: about sqrt(12) more noise
    for image in (hq, lq):
        assert image.shape == activity.shape and image.dtype == np.float32
        assert image.min() >= 0  # MLEM keeps positivity
        assert abs(image.mean() / activity.mean() - 1) < 0.03
    # Resolution: grey matter ribbon recovered with contrast (> 2x white matter), blurred by the PSF.
    gm, wm, _ = _tissues()
    assert hq[gm > 0].mean() > 2.0 * hq[(wm > 0)].mean()


def test_more_counts_less_noise():
    _, (hq_low, _) = _pair(seed=0, counts=1e5)
    _, (hq_low2, _) = _pair(seed=1, counts=1e5)
    activity, (hq_high, _) = _pair(seed=0, counts=1e6)
    _, (hq_high2, _) = _pair(seed=1, counts=1e6)
    brain = activity > 0
    assert (hq_low - hq_low2)[brain].std() > 1.5 * (hq_high - hq_high2)[brain].std()


def test_noise_free_reconstruction_is_the_same_draw_free_ceiling():
    """The noiseless reconstruction leaves HQ and LQ as they were, and HQ lies much nearer to it than LQ."""
    gm, wm, mask = _tissues()
    activity = pet.activity_from_tissues(gm, wm, mask, PIXEL_MM, 0, lesions=0)
    mu = pet.attenuation_from_tissues(mask, PIXEL_MM)
    (hq, lq), (hq1, lq1, clean1), (_, _, clean2) = (
        pet.simulate_pair(activity, mu, PIXEL_MM, 3e5, 1 / 12, seed, noise_free=flag)
        for seed, flag in ((1, False), (1, True), (2, True)))
    assert np.array_equal(hq, hq1) and np.array_equal(lq, lq1)  # the same draws with or without it
    assert np.array_equal(clean1, clean2)  # no counting noise: the seed does not matter
    inside = mask > 0
    assert np.mean((hq - clean1)[inside] ** 2) < 0.2 * np.mean((lq - clean1)[inside] ** 2)


def test_deterministic_under_seed_and_single_slice():
    activity, (hq, lq) = _pair(seed=5)
    _, (hq2, lq2) = _pair(seed=5)
    np.testing.assert_array_equal(hq, hq2)
    np.testing.assert_array_equal(lq, lq2)
    _, (hq3, _) = _pair(seed=6)
    assert not np.array_equal(hq, hq3)
    mu = pet.attenuation_from_tissues((activity[0] > 0).astype(np.float32), PIXEL_MM)
    single_hq, single_lq = pet.simulate_pair(activity[0], mu, PIXEL_MM, 3e5, 0.25, 0, iterations=5)
    assert single_hq.shape == single_lq.shape == activity[0].shape


@pytest.mark.parametrize("dose", [0.0, -0.1, 1.5, math.nan])
def test_invalid_dose_fraction_raises(dose):
    activity = np.ones((16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="dose_fraction"):
        pet.simulate_pair(activity, activity * 0.0096, PIXEL_MM, 1e5, dose, 0)


def test_invalid_parameters_raise():
    activity = np.ones((16, 16), dtype=np.float32)
    mu = activity * 0.0096
    with pytest.raises(ValueError, match="full_counts"):
        pet.simulate_pair(activity, mu, PIXEL_MM, 0, 0.5, 0)
    with pytest.raises(ValueError, match="iterations"):
        pet.simulate_pair(activity, mu, PIXEL_MM, 1e5, 0.5, 0, iterations=0)
    with pytest.raises(ValueError, match="shape"):
        pet.simulate_pair(activity, mu[:8], PIXEL_MM, 1e5, 0.5, 0)
    with pytest.raises(ValueError, match="non-negative"):
        pet.simulate_pair(-activity, mu, PIXEL_MM, 1e5, 0.5, 0)
    with pytest.raises(ValueError, match="spacing"):
        pet.simulate_pair(activity, mu, 0.0, 1e5, 0.5, 0)
