"""Physics of the MRI k-space degradation and its zero-filled interpolation."""

import numpy as np
import pytest

from DiffCodeRestoreLib.simulate import mri


def _outside_band_energy(image: np.ndarray, factor: float) -> float:
    """Share of spectral energy at |k| > m/2 on either in-plane axis."""
    spectrum = np.abs(np.fft.fft2(image, axes=(-2, -1))) ** 2
    outside = np.zeros(image.shape[-2:], dtype=bool)
    for axis, n in enumerate(image.shape[-2:]):
        k = np.abs(np.round(np.fft.fftfreq(n) * n))
        beyond = k > mri.band_size(n, factor) / 2
        outside |= beyond[:, None] if axis == 0 else beyond[None, :]
    return float(spectrum[..., outside].sum() / spectrum.sum())


@pytest.mark.parametrize("shape", [(64, 64), (63, 65), (2, 50, 41)])
@pytest.mark.parametrize("factor", [2, 3, 4, 1.5])
def test_no_energy_outside_kept_band(shape, factor):
    image = np.random.default_rng(0).random(shape)
    lowpass = mri.kspace_lowpass(image, factor)
    assert _outside_band_energy(lowpass, factor) < 1e-24
    assert np.abs(lowpass.imag).max() < 1e-12 * np.abs(lowpass.real).max()  # Nyquist handled: stays real
    # A positive image has no zero crossings to rectify: the magnitude image is band-limited too.
    truncated = mri.kspace_truncate(image + 10.0, factor)
    assert _outside_band_energy(truncated.astype(np.float64), factor) < 1e-12


def test_kept_band_is_untouched_and_rest_removed():
    image = np.random.default_rng(1).random((64, 64))
    spectrum, kept = np.fft.fft2(image), np.fft.fft2(mri.kspace_lowpass(image, 4))
    k = np.abs(np.round(np.fft.fftfreq(64) * 64))
    inside = (k[:, None] < 8) & (k[None, :] < 8)
    np.testing.assert_allclose(kept[inside], spectrum[inside], atol=1e-9)
    assert np.abs(kept[~((k[:, None] <= 8) & (k[None, :] <= 8))]).max() < 1e-9
    assert np.abs(kept).sum() < np.abs(spectrum).sum()


def test_factor_one_is_identity_and_shapes_are_kept():
    image = np.random.default_rng(2).random((3, 40, 30)).astype(np.float32)
    np.testing.assert_allclose(mri.kspace_truncate(image, 1), image, atol=1e-6)
    assert mri.kspace_truncate(image, 4).shape == image.shape
    assert mri.kspace_truncate(image, 4).dtype == np.float32


def test_truncation_blurs_a_sharp_edge():
    image = np.zeros((64, 64))
    image[:, 32:] = 100.0
    profile = mri.kspace_truncate(image, 4)[32]
    assert np.abs(np.diff(profile)).max() < 0.5 * 100.0  # the step is spread over several pixels


def test_upsample_shape_and_mean():
    low = np.random.default_rng(3).random((2, 16, 15)) + 1.0
    up = mri.kspace_upsample(low, 4)
    assert up.shape == (2, 64, 60)
    np.testing.assert_allclose(up.mean(axis=(-2, -1)), low.mean(axis=(-2, -1)), rtol=1e-6)
    # A head-like blob on a zero background: only the rectified ringing adds a little.
    rows, cols = np.mgrid[:32, :32] - 15.5
    head = 50.0 * np.exp(-((rows / 9) ** 2 + (cols / 7) ** 2) ** 2)
    assert abs(mri.kspace_upsample(head, 2).mean() / head.mean() - 1) < 0.01


def test_upsample_matches_truncation_of_the_same_band():
    """A zero-filled low-resolution image is left unchanged by truncation to the same band."""
    low = np.random.default_rng(4).random((16, 16)) + 2.0
    up = mri.kspace_upsample(low, 4)
    np.testing.assert_allclose(mri.kspace_truncate(up, 4), up, rtol=1e-5)
    # and the band is the low-resolution grid's: its samples come back unchanged at factor 1
    np.testing.assert_allclose(mri.kspace_upsample(low, 1), low, rtol=1e-6)


@pytest.mark.parametrize("factor", [0.5, 0, -2, float("nan")])
def test_invalid_truncation_factor_raises(factor):
    with pytest.raises(ValueError, match="factor"):
        mri.kspace_truncate(np.ones((8, 8)), factor)


@pytest.mark.parametrize("factor", [1.5, 0, True])
def test_invalid_upsample_factor_raises(factor):
    with pytest.raises(ValueError, match="factor"):
        mri.kspace_upsample(np.ones((8, 8)), factor)


def test_bad_images_raise():
    with pytest.raises(ValueError, match="H, W"):
        mri.kspace_truncate(np.ones(8), 2)
    with pytest.raises(ValueError, match="NaN"):
        mri.kspace_truncate(np.full((8, 8), np.nan), 2)


def test_rician_noise_physics_and_determinism():
    zeros = np.zeros((200, 200))
    noisy = mri.add_rician_noise(zeros, 3.0, 7)
    assert noisy.min() >= 0
    assert abs(noisy.mean() - 3.0 * np.sqrt(np.pi / 2)) < 0.05  # Rayleigh background
    bright = mri.add_rician_noise(np.full((200, 200), 100.0), 3.0, 7)
    assert abs(bright.std() - 3.0) < 0.1  # Gaussian at high SNR
    np.testing.assert_array_equal(noisy, mri.add_rician_noise(zeros, 3.0, 7))
    assert not np.array_equal(noisy, mri.add_rician_noise(zeros, 3.0, 8))
    np.testing.assert_array_equal(mri.add_rician_noise(np.full((4, 4), 5.0), 0.0, 0), np.full((4, 4), 5.0))
    with pytest.raises(ValueError, match="sigma"):
        mri.add_rician_noise(zeros, -1.0, 0)


def test_rician_sigma_for_snr():
    image = np.zeros((50, 50))
    image[10:40, 10:40] = 200.0
    assert mri.rician_sigma_for_snr(image, 20) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="SNR"):
        mri.rician_sigma_for_snr(image, 0)
