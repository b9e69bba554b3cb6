"""Physics of the parallel-beam projector and of low-dose CT noise insertion."""

import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon as skimage_radon, resize

from DiffCodeRestoreLib.simulate import ct, radon

PIXEL_MM = 1.5


def _phantom(size: int) -> np.ndarray:
    image = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True).astype(np.float32)
    rows, cols = np.mgrid[:size, :size] - (size - 1) / 2
    image[rows ** 2 + cols ** 2 > ((size - 1) / 2) ** 2] = 0  # skimage's circle=True support
    return image


def _water_cylinder(size: int = 128, count: int = 6) -> np.ndarray:
    rows, cols = (np.mgrid[:size, :size] - (size - 1) / 2) * PIXEL_MM
    image = np.full((size, size), -1000.0, dtype=np.float32)
    image[(cols / 80) ** 2 + (rows / 70) ** 2 <= 1] = 40.0
    return np.repeat(image[None], count, axis=0)


@pytest.mark.parametrize("degrees", [np.arange(0, 180, 2.0), np.array([10.0, 100.0, 170.0, 190.0, 280.0, -30.0, 37.3])])
def test_forward_matches_skimage_radon(degrees):
    """Scan angles (grouped internally so one rotation serves several views) match view by view."""
    size = 65  # odd: both put the rotation centre on the middle pixel
    image = _phantom(size)
    reference = skimage_radon(image, theta=degrees, circle=True).T
    offset = (radon.detector_size(size) - size) // 2
    ours = radon.forward(torch.from_numpy(image)[None], torch.tensor(np.radians(degrees)), 1.0)[0]
    ours = ours[:, offset:offset + size].numpy()
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-3


def test_line_integrals_scale_with_pixel_size():
    image = torch.from_numpy(_phantom(33))[None]
    angles = radon.parallel_angles(8)
    np.testing.assert_allclose(radon.forward(image, angles, 2.0), 2.0 * radon.forward(image, angles, 1.0), rtol=1e-5)
    disc = torch.zeros(1, 65, 65)
    rows, cols = torch.meshgrid(torch.arange(65.0) - 32, torch.arange(65.0) - 32, indexing="ij")
    disc[0][rows ** 2 + cols ** 2 <= 20 ** 2] = 0.02  # 1/mm, radius 20 px of 0.5 mm
    centre = radon.forward(disc, radon.parallel_angles(4), 0.5)[0, :, radon.detector_size(65) // 2]
    np.testing.assert_allclose(centre.numpy(), 0.02 * 41 * 0.5, rtol=0.03)  # chord of 41 pixels


def test_fbp_inverts_forward_and_agrees_with_skimage():
    size = 97
    rows, cols = np.mgrid[:size, :size] - (size - 1) / 2
    smooth = (np.exp(-(rows ** 2 + cols ** 2) / 300) + 0.5 * np.exp(-((rows - 15) ** 2 + (cols + 10) ** 2) / 60))
    smooth = smooth.astype(np.float32) * 0.02
    angles = radon.parallel_angles(2 * size)
    sinos = radon.forward(torch.from_numpy(smooth)[None], angles, PIXEL_MM)
    recon = radon.fbp(sinos, angles, size, PIXEL_MM)[0].numpy()
    assert np.linalg.norm(recon - smooth) / np.linalg.norm(smooth) < 0.01
    reference = iradon(sinos[0].numpy().T / PIXEL_MM, theta=np.degrees(angles.numpy()), circle=False,
                       output_size=size)  # skimage works in pixel units
    assert np.linalg.norm(recon - reference) / np.linalg.norm(reference) < 0.01
    hann = radon.fbp(sinos, angles, size, PIXEL_MM, window="hann")[0].numpy()
    assert np.linalg.norm(hann - smooth) / np.linalg.norm(smooth) < 0.05


def test_backprojection_is_nearly_the_adjoint_and_batches():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 40, 40, generator=generator)
    angles = radon.parallel_angles(36)
    sinos = torch.rand(3, 36, radon.detector_size(40), generator=generator)
    left = (radon.forward(images, angles, 1.0) * sinos).sum()
    right = (images * radon.backproject(sinos, angles, 40, 1.0)).sum()
    assert abs(left / right - 1) < 0.01
    single = radon.forward(images[1:2], angles, 1.0)
    np.testing.assert_allclose(radon.forward(images, angles, 1.0)[1:2], single, rtol=1e-5, atol=1e-5)


def test_projector_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        radon.forward(torch.zeros(1, 10, 12), radon.parallel_angles(4), 1.0)
    with pytest.raises(ValueError, match="pixel_mm"):
        radon.forward(torch.zeros(1, 10, 10), radon.parallel_angles(4), 0.0)
    with pytest.raises(ValueError, match="window"):
        radon.ramp_filter(20, "gaussian")


def _noise(i0: float, seed: int = 0, **options) -> np.ndarray:
    phantom = _water_cylinder()
    return (ct.low_dose(phantom, PIXEL_MM, i0, seed, **options) - phantom)[:, 44:84, 44:84]


def test_noise_std_falls_as_inverse_sqrt_of_dose():
    low, high = _noise(2.5e4), _noise(1e5)
    ratio = low.std() / high.std()
    assert 1.8 < ratio < 2.25  # 1/sqrt(I0): 2 for a 4x dose, a little more with electronic noise
    assert 5.0 < high.std() < 100.0  # HU, a plausible CT noise level
    assert abs(low.mean()) < 0.1 * low.std()  # zero-mean


def test_noise_is_spatially_correlated_not_white():
    noise = _noise(5e4)
    neighbour = np.mean([np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1] for n in noise])
    assert neighbour > 0.1
    power = (np.abs(np.fft.fft2(noise)) ** 2).mean(axis=0)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(40), np.fft.fftfreq(40)))
    low_band, mid_band = power[radius < 0.1].mean(), power[(radius > 0.2) & (radius < 0.4)].mean()
    assert low_band < 0.7 * mid_band  # ramp-filtered texture; white noise would give ~1


def test_noise_is_stronger_behind_dense_material():
    phantom = _water_cylinder(count=4)
    dense = phantom.copy()
    dense[:, 60:68, 20:28] = 1500.0  # bone-like insert beside the measured region
    quiet = ct.low_dose(phantom, PIXEL_MM, 5e4, 3) - phantom
    streaky = ct.low_dose(dense, PIXEL_MM, 5e4, 3) - dense
    assert streaky[:, 60:68, 40:90].std() > quiet[:, 60:68, 40:90].std()


def test_deterministic_under_seed_and_input_untouched():
    phantom = _water_cylinder(count=2)
    before = phantom.copy()
    first = ct.low_dose(phantom, PIXEL_MM, 5e4, 11)
    np.testing.assert_array_equal(first, ct.low_dose(phantom, PIXEL_MM, 5e4, 11))
    assert not np.allclose(first, ct.low_dose(phantom, PIXEL_MM, 5e4, 12))
    np.testing.assert_array_equal(phantom, before)
    assert first.dtype == np.float32 and first.shape == phantom.shape


def test_single_and_non_square_slices():
    phantom = _water_cylinder(count=1)[0]
    assert ct.low_dose(phantom, (PIXEL_MM, PIXEL_MM), 5e4, 0).shape == (128, 128)
    wide = phantom[20:100]
    result = ct.low_dose(wide, PIXEL_MM, 5e4, 0, n_views=64)
    assert result.shape == wide.shape
    assert 1.0 < (result - wide)[30:50, 50:80].std() < 200.0


@pytest.mark.parametrize("i0", [0, -5e4, math.nan, math.inf])
def test_invalid_dose_raises(i0):
    with pytest.raises(ValueError, match="i0"):
        ct.low_dose(_water_cylinder(count=1), PIXEL_MM, i0, 0)


@pytest.mark.parametrize("spacing", [0.0, -1.0, (1.0, 2.0), (1.0, 1.0, 1.0), math.nan])
def test_invalid_spacing_raises(spacing):
    with pytest.raises(ValueError, match="spacing|square"):
        ct.low_dose(_water_cylinder(count=1), spacing, 5e4, 0)


def test_invalid_image_and_electronic_noise_raise():
    with pytest.raises(ValueError, match="sigma_e"):
        ct.low_dose(_water_cylinder(count=1), PIXEL_MM, 5e4, 0, sigma_e=-1)
    with pytest.raises(ValueError, match="shape"):
        ct.low_dose(np.zeros(10), PIXEL_MM, 5e4, 0)
