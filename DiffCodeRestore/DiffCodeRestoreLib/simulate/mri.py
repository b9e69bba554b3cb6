"""MRI resolution degradation in k-space, and Rician noise (numpy only: ships with the pipeline).

An MR image is the inverse Fourier transform of the sampled k-space. A lower in-plane resolution
means a smaller central k-space band: ``kspace_truncate`` keeps the central 1/factor of it on the
original grid (the AMIR-benchmark degradation) and ``kspace_upsample`` puts a genuinely low-resolution
image onto the finer grid by zero-filling. Both share one Fourier resizing rule, so that
``kspace_truncate(hq, s)`` is exactly what ``kspace_upsample`` makes of an acquisition with 1/s of the
samples: training degradation and real inputs match.

Band edges: for an even band of m samples the edge frequency +m/2 and -m/2 alias to one sample
(the band's Nyquist). Cropping sums the two; zero-filling splits it evenly onto +-m/2. The result is
Hermitian-symmetric, so a real image stays real before the magnitude, and nothing lies beyond |k| = m/2.
"""

from __future__ import annotations

from typing import Union

import numpy as np

RngLike = Union[np.random.Generator, int, None]


def _resize_spectrum_axis(spectrum: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Crop or zero-pad an unshifted DFT along ``axis`` to ``n_out`` samples (same amplitude scale)."""
    n_in = spectrum.shape[axis]
    if n_out == n_in:
        return spectrum
    n_low = min(n_in, n_out)
    shape = list(spectrum.shape)
    shape[axis] = n_out
    out = np.zeros(shape, dtype=np.complex128)
    half = (n_low - 1) // 2  # frequencies strictly inside the smaller band: |k| <= half

    def at(array: np.ndarray, index) -> tuple:
        return tuple(index if a == axis % array.ndim else slice(None) for a in range(array.ndim))

    out[at(out, slice(0, half + 1))] = spectrum[at(spectrum, slice(0, half + 1))]
    if half > 0:
        out[at(out, slice(n_out - half, n_out))] = spectrum[at(spectrum, slice(n_in - half, n_in))]
    if n_low % 2 == 0:  # the smaller band's Nyquist: +n_low/2 and -n_low/2 are one sample there
        edge = n_low // 2
        if n_out < n_in:  # crop: fold both edges onto the single Nyquist sample
            out[at(out, edge)] = spectrum[at(spectrum, edge)] + spectrum[at(spectrum, n_in - edge)]
        else:  # zero-fill: split the Nyquist sample evenly onto +-edge
            out[at(out, edge)] = spectrum[at(spectrum, edge)] / 2
            out[at(out, n_out - edge)] = spectrum[at(spectrum, edge)] / 2
    return out


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim < 2 or min(image.shape[-2:]) < 1:
        raise ValueError(f"expected an image shaped (..., H, W), got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or infinite values; clean it before k-space processing")
    return image


def band_size(n: int, factor: float) -> int:
    """k-space samples kept along an axis of ``n`` samples for resolution reduction ``factor`` (>= 1)."""
    if not (np.isfinite(factor) and factor >= 1):
        raise ValueError(f"k-space factor must be a number >= 1, got {factor}")
    return max(1, int(round(n / factor)))


def kspace_lowpass(image: np.ndarray, factor: float) -> np.ndarray:
    """Complex image band-limited to the central 1/``factor`` of k-space per in-plane axis (no magnitude).

    Equivalent to acquiring ``band_size(n, factor)`` k-space lines per axis and zero-filling.
    """
    image = _check_image(image)
    spectrum = np.fft.fft2(image, axes=(-2, -1))
    for axis in (-2, -1):
        n = image.shape[axis]
        kept = _resize_spectrum_axis(spectrum, axis, band_size(n, factor))
        spectrum = _resize_spectrum_axis(kept, axis, n)
    return np.fft.ifft2(spectrum, axes=(-2, -1))


def kspace_truncate(image: np.ndarray, factor: float) -> np.ndarray:
    """Low-resolution MR image on the same grid: keep the central 1/``factor`` of k-space in each
    in-plane direction of (..., H, W), zero the rest, inverse FFT, magnitude (float32).

    ``factor`` is the in-plane resolution reduction (2 and 4 in the benchmark); 1 returns ``|image|``.
    """
    return np.abs(kspace_lowpass(image, factor)).astype(np.float32)


def kspace_upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Zero-filled k-space interpolation of a low-resolution (..., h, w) image onto the
    (..., h*factor, w*factor) grid, magnitude (float32).

    The DC term is kept, so the interpolant has the input's mean exactly; the magnitude only adds
    the rectified ringing where the interpolant dips below zero (none for images away from 0).
    """
    image = _check_image(image)
    if isinstance(factor, bool) or not float(factor).is_integer() or factor < 1:
        raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
    factor = int(factor)
    spectrum = np.fft.fft2(image, axes=(-2, -1))
    for axis in (-2, -1):
        spectrum = _resize_spectrum_axis(spectrum, axis, image.shape[axis] * factor)
    return np.abs(np.fft.ifft2(spectrum, axes=(-2, -1)) * factor ** 2).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: RngLike = None) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of std ``sigma`` per channel (image units):
    the noise of a magnitude MR image. ``rng``: numpy Generator or seed."""
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"Rician sigma must be a finite number >= 0, got {sigma}")
    image = np.asarray(image, dtype=np.float64)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    real = image + generator.normal(0.0, sigma, image.shape)
    imaginary = generator.normal(0.0, sigma, image.shape)
    return np.hypot(real, imaginary).astype(np.float32)


def rician_sigma_for_snr(image: np.ndarray, snr: float) -> float:
    """Noise std giving signal-to-noise ratio ``snr`` = mean foreground intensity / sigma.

    Foreground: voxels above 10 % of the 99th percentile (excludes background air).
    """
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"SNR must be a positive number, got {snr}")
    image = np.asarray(image, dtype=np.float64)
    threshold = 0.1 * np.percentile(image, 99)
    foreground = image[image > threshold]
    if foreground.size == 0:
        raise ValueError("image has no foreground above background; cannot set an SNR")
    return float(foreground.mean() / snr)
