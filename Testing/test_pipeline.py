"""The volume pipeline with a real (tiny, random-initialised) model: tiling, batching, intensities,
samples, progress, cancel, out-of-memory recovery, and refusal of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffCodeRestoreLib import __version__
from DiffCodeRestoreLib.hub import sha256_of
from DiffCodeRestoreLib.pipeline import (CancelToken, DiffCodePipeline, RestoreCancelled, tile_starts, tile_weights_1d,
                                         volume_intensity)
from DiffCodeRestoreLib.tasks import get_task, intensity_scale
from DiffCodeRestoreLib.volume_io import VolumeError


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu")


def textured(shape=(3, 320, 320), dtype=np.float32, seed=0, spacing=(0.7, 0.7, 3.0)) -> sitk.Image:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[1], : shape[2]]
    base = 200 * np.sin(cols / 9.0) * np.cos(rows / 13.0)
    array = np.stack([base * (1 + 0.1 * k) for k in range(shape[0])]) + rng.normal(0, 40, shape)
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(spacing)
    return image


def restored(result) -> np.ndarray:
    return sitk.GetArrayFromImage(result.image)


def test_output_does_not_depend_on_batch_or_tile_size(pipe):
    image = textured((3, 64, 72))
    reference = restored(pipe(image, "ct-denoise", batch_size=3))
    np.testing.assert_allclose(restored(pipe(image, "ct-denoise", batch_size=1)), reference, atol=1e-3)
    large = textured((1, 300, 290))
    whole = restored(pipe(large, "ct-denoise"))
    tiled = restored(pipe(large, "ct-denoise", tile_size=256))  # 2 x 2 overlapping tiles
    np.testing.assert_allclose(tiled, whole, atol=2e-3)  # HU, values span about +-400


def test_shipped_model_is_seamless_across_tiles():
    """The bundled model's receptive field must fit in the tile context: tiled = whole on a real CT slice."""
    from pathlib import Path

    from DiffCodeRestoreLib.data.volumes import load_volume

    bundled = Path(__file__).resolve().parents[1] / "DiffCodeRestore" / "Resources" / "Weights" / "diffcode-small"
    shipped = DiffCodePipeline.from_pretrained(str(bundled), device="cpu", precision="float32")
    image = load_volume("lung2")[96:416, 96:416, 30:31]  # 320 x 320: 2 x 2 tiles of 256
    whole = restored(shipped(image, "ct-denoise")).astype(np.float32)
    tiled = restored(shipped(image, "ct-denoise", tile_size=256)).astype(np.float32)
    assert np.abs(whole - sitk.GetArrayFromImage(image)).mean() > 2  # the model does change the (full-dose) slice
    assert np.abs(tiled - whole).max() <= 1  # HU; CT output is rounded to the input's integer type


def test_tile_weights_cross_fade_to_one():
    """Regularly spaced tiles: context pixels weigh nothing and the sin^2 ramps sum to exactly one."""
    length, tile, context, blend = 448, 256, 64, 32
    starts = tile_starts(length, tile, tile - 2 * context - blend)
    assert starts == [0, 96, 192]
    total = np.zeros(length)
    for start in starts:
        total[start:start + tile] += tile_weights_1d(start, tile, length, context, blend)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    middle = tile_weights_1d(96, tile, length, context, blend)
    assert middle[:context].max() == 0 and middle[-context:].max() == 0 and middle[96:160].min() == 1


def test_reduced_precision_autocast_runs_the_model(tiny_weights):
    """GPUs compute in float16 under autocast; the same path on the CPU (bfloat16) must run and agree."""
    pipe = DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", precision="float32")
    image = textured((2, 64, 64))
    full = restored(pipe(image, "ct-denoise"))
    assert pipe(image, "ct-denoise").metadata["precision"] == "float32"
    pipe.precision = torch.bfloat16
    reduced = restored(pipe(image, "ct-denoise"))
    assert np.abs(reduced - full).max() < 0.02 * np.ptp(full)


def test_seed_makes_results_reproducible(pipe):
    image = textured((2, 64, 64))
    first = restored(pipe(image, "ct-denoise", seed=3))
    assert np.array_equal(first, restored(pipe(image, "ct-denoise", seed=3)))
    assert not np.array_equal(first, restored(pipe(image, "ct-denoise", seed=4)))


def test_ct_keeps_integer_type_range_and_out_of_range_voxels(pipe):
    array = sitk.GetArrayFromImage(textured((2, 64, 64))).astype(np.int16)
    array[:, :8, :] = -3024  # outside the scanner's field of view
    array[:, 30:34, 30:34] = 3500  # metal, above the network range
    image = sitk.GetImageFromArray(array)
    before = array.copy()
    result = pipe(image, "ct-denoise")
    out = restored(result)
    assert out.dtype == np.int16 and result.image.GetPixelID() == sitk.sitkInt16
    assert np.all(out[:, :8, :] == -3024) and np.all(out[:, 30:34, 30:34] == 3500)
    inside = (array >= -1024) & (array <= 3071)
    assert out[inside].min() >= -1024 and out[inside].max() <= 3071
    assert np.array_equal(sitk.GetArrayFromImage(image), before)  # input untouched


def test_ct_in_unsigned_type_is_clipped_to_the_type(pipe):
    array = (sitk.GetArrayFromImage(textured((1, 48, 48))) + 1024).clip(0, None).astype(np.uint16)
    out = restored(pipe(sitk.GetImageFromArray(array), "ct-denoise"))
    assert out.dtype == np.uint16


def test_pet_is_float_and_mri_scales_back(pipe):
    pet = sitk.GetImageFromArray(np.abs(sitk.GetArrayFromImage(textured((2, 48, 48)))) / 40)
    out = restored(pipe(pet, "pet-synthesis"))
    assert out.dtype == np.float32 and out.min() >= 0
    mri = np.abs(sitk.GetArrayFromImage(textured((2, 48, 48)))).astype(np.float32)
    one = restored(pipe(sitk.GetImageFromArray(mri), "mri-sr"))
    ten = restored(pipe(sitk.GetImageFromArray(mri * 10), "mri-sr"))
    np.testing.assert_allclose(ten, one * 10, rtol=1e-4, atol=1e-3)  # robust scale: units come back


def test_mri_scale_is_computed_once_over_the_volume(pipe):
    volume = np.abs(sitk.GetArrayFromImage(textured((4, 700, 800)))).astype(np.float32)
    offset, scale = volume_intensity(get_task("mri-sr"), volume)
    assert offset == 0 and scale == pytest.approx(intensity_scale("mri-sr", volume)[1], rel=0.01)


def test_samples_give_mean_and_uncertainty(pipe):
    image = sitk.Abs(textured((2, 64, 64))) / 40.0  # SUV-like
    result = pipe(image, "pet-synthesis", samples=3)
    assert result.uncertainty is not None and result.uncertainty.GetSize() == image.GetSize()
    spread = sitk.GetArrayFromImage(result.uncertainty)
    assert spread.min() >= 0 and spread.max() > 0
    assert result.metadata["options"]["samples"] == 3 and pipe(image, "pet-synthesis").uncertainty is None


def test_self_ensemble_restores_each_flip_and_rotation_and_averages(pipe, monkeypatch):
    image = textured((2, 64, 96))
    plain = restored(pipe(image, "ct-denoise"))
    calls = []
    real_restore = pipe.model.restore

    def spy(x, *args, **kwargs):
        calls.append(tuple(x.shape[-2:]))
        return real_restore(x, *args, **kwargs)

    monkeypatch.setattr(pipe.model, "restore", spy)
    result = pipe(image, "ct-denoise", self_ensemble=True)
    assert calls == [(64, 96), (96, 64)] * 4  # one batch, 8 views; a quarter turn swaps rows and columns
    ensembled = restored(result)
    assert ensembled.shape == plain.shape and not np.array_equal(ensembled, plain)
    assert result.metadata["options"]["self_ensemble"] is True


def test_self_ensemble_is_independent_of_tiling(pipe):
    large = textured((1, 300, 290))
    whole = restored(pipe(large, "ct-denoise", self_ensemble=True))
    np.testing.assert_allclose(restored(pipe(large, "ct-denoise", self_ensemble=True, tile_size=256)), whole, atol=2e-3)


def test_progress_reaches_total_and_cancel_stops_within_a_batch(pipe):
    image = textured((6, 64, 64))
    seen = []
    pipe(image, "ct-denoise", batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 6) and seen[-1] == (6, 6) and [d for d, _ in seen] == sorted(d for d, _ in seen)

    token = CancelToken()
    calls = []

    def cancel_after_first_batch(done, total):
        calls.append(done)
        if done > 0:
            token.cancel()

    with pytest.raises(RestoreCancelled):
        pipe(image, "ct-denoise", batch_size=2, progress=cancel_after_first_batch, cancel=token)
    assert calls == [0, 2]


class ScarceMemoryModel:
    """The real model behind a memory limit: raises what torch raises when a call does not fit."""

    def __init__(self, model, max_pixels: int):
        object.__setattr__(self, "inner", model)
        object.__setattr__(self, "max_pixels", max_pixels)
        object.__setattr__(self, "calls", [])

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)

    def restore(self, x, *args, **kwargs):
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[-2] * x.shape[-1] > self.max_pixels:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.restore(x, *args, **kwargs)


def test_out_of_memory_shrinks_batch_then_tile_and_says_so(tiny_weights):
    messages = []
    pipe = DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", message=messages.append)
    image = textured((2, 272, 264))
    reference = restored(pipe(image, "ct-denoise"))
    pipe.model = ScarceMemoryModel(pipe.model, max_pixels=256 * 256)
    out = restored(pipe(image, "ct-denoise"))
    np.testing.assert_allclose(out, reference, atol=2e-3)
    assert any("batch 1" in m for m in messages) and any("tile 256" in m for m in messages)
    assert max(s[-1] for s in pipe.model.calls[-4:]) == 256

    pipe.model = ScarceMemoryModel(pipe.model.inner, max_pixels=100 * 100)
    with pytest.raises(MemoryError, match="even on the CPU"):
        pipe(image, "ct-denoise")


def test_out_of_memory_on_a_gpu_at_the_smallest_tiles_moves_to_the_cpu(tiny_weights, monkeypatch):
    """The last resort on a GPU: say so, move the model and the plan to the CPU (GPU emulated by the plan)."""
    from DiffCodeRestoreLib import device as devices

    monkeypatch.setattr(devices, "release_memory", lambda device: None)  # no CUDA runtime on this runner
    messages = []
    pipe = DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", message=messages.append)
    plan = devices.WorkPlan(torch.device("cuda"), batch=1, tile=devices.MIN_TILE, shrunk=True)
    pipe._shrink(plan)
    assert "continuing on the CPU" in messages[-1]
    assert plan.device.type == pipe.device.type == "cpu" and plan.tile == devices.DEFAULT_TILE["cpu"]
    assert next(pipe.model.parameters()).dtype == torch.float32


def test_numpy_input_with_geometry(pipe):
    array = sitk.GetArrayFromImage(textured((3, 40, 44)))
    before = array.copy()
    direction = [0, 0, 1, 1, 0, 0, 0, 1, 0]
    result = pipe(array, "ct-denoise", spacing=(0.5, 0.6, 2.0), origin=(1, 2, 3), direction=direction)
    assert result.image.GetSpacing() == (0.5, 0.6, 2.0) and result.image.GetOrigin() == (1, 2, 3)
    assert result.image.GetDirection() == tuple(float(v) for v in direction)
    assert np.array_equal(array, before)
    two_d = pipe(array[0], "ct-denoise", spacing=(0.5, 0.6))
    assert two_d.image.GetDimension() == 2 and two_d.image.GetSize() == (44, 40)


def test_single_slice_volume_is_one_slice(pipe):
    image = textured((1, 50, 60))
    result = pipe(image, "ct-denoise")
    assert result.image.GetSize() == (60, 50, 1)


def test_provenance(pipe, tiny_weights):
    meta = pipe(textured((1, 32, 32)), "ct-denoise", steps=2, fidelity=0.5, seed=7).metadata
    assert meta["task"] == "ct-denoise" and meta["model"] == tiny_weights.name
    assert meta["sha256"] == sha256_of(tiny_weights / "model.safetensors")
    assert meta["options"] == {"scale": 1, "steps": 2, "fidelity": 0.5, "seed": 7, "samples": 1,
                               "self_ensemble": False}
    assert meta["version"] == __version__


@pytest.mark.parametrize("make,message", [
    (lambda: np.full((3, 20, 20), 7.0, np.float32), "constant"),
    (lambda: np.zeros((0, 20, 20), np.float32), "empty"),
    (lambda: np.where(np.eye(20)[None] > 0, np.nan, 1.0).astype(np.float32).repeat(2, 0), "NaN"),
    (lambda: np.where(np.eye(20)[None] > 0, np.inf, 1.0).astype(np.float32).repeat(2, 0), "infinite"),
    (lambda: np.zeros((2, 3, 20, 20), np.float32), "2D .* or 3D"),
    (lambda: sitk.GetImageFromArray(np.random.rand(20, 20, 3).astype(np.float32), isVector=True), "vector/RGB"),
    (lambda: sitk.Image([4, 4, 3, 2], sitk.sitkFloat32), "4D"),
])
def test_bad_input_is_one_clear_line(pipe, make, message):
    with pytest.raises(VolumeError, match=message) as error:
        pipe(make(), "ct-denoise")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("options,message", [
    (dict(task="denoise"), "Unknown task"),
    (dict(task="ct-denoise", scale=2), "MRI super-resolution only"),
    (dict(task="mri-sr", scale=3), "scale must be one of"),
    (dict(task="ct-denoise", fidelity=1.5), "fidelity"),
    (dict(task="ct-denoise", steps=99), "steps"),
    (dict(task="ct-denoise", samples=0), "samples"),
    (dict(task="ct-denoise", tile_size=100), "tile size"),
    (dict(task="ct-denoise", self_ensemble="yes"), "self_ensemble must be true or false"),
])
def test_bad_options_are_one_clear_line(pipe, options, message):
    with pytest.raises(ValueError, match=message):
        pipe(textured((1, 16, 16)), **options)


def test_device_choice_is_checked():
    from DiffCodeRestoreLib.device import mps_available, resolve_device

    expected = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA GPU.*--device cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps(monkeypatch, cuda, mps, expected):
    """The order of ``auto`` on machines this CPU runner is not (availability simulated, no tensor is moved)."""
    from DiffCodeRestoreLib import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device, "mps_available", lambda: mps)
    chosen = device.resolve_device("auto")
    assert chosen.type == expected
    if expected != "cpu":
        assert device.resolve_precision(chosen) == torch.float16  # half precision on GPUs


def test_gpu_work_is_planned_from_free_memory(monkeypatch):
    """Batch from free memory; a tile smaller than the slice when one whole slice would not fit."""
    from DiffCodeRestoreLib import device

    monkeypatch.setattr(device, "free_memory", lambda _: 300 * 10 ** 6)
    cuda = torch.device("cuda")
    small = device.plan_work(cuda, (512, 512), bytes_per_pixel=100)
    assert small.tile == device.DEFAULT_TILE["cuda"] and small.batch == int(0.6 * 300e6 / (100 * 512 * 512))
    big = device.plan_work(cuda, (2048, 2048), bytes_per_pixel=1000)
    assert big.tile == 416 and big.batch == 1  # sqrt(0.6 * 300 MB / 1000 B) = 424 -> a multiple of 32
    assert device.plan_work(cuda, (2048, 2048), bytes_per_pixel=10 ** 5).tile == device.MIN_TILE
    assert device.plan_work(cuda, (2048, 2048), tile=512, bytes_per_pixel=1000).tile == 512  # the user's choice


def test_precision_choice():
    """auto: bfloat16 only on CPUs that compute it in hardware (emulated bfloat16 is slower than float32)."""
    from DiffCodeRestoreLib.device import native_bfloat16_cpu, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto") == (torch.bfloat16 if native_bfloat16_cpu() else None)
    assert resolve_precision(torch.device("cuda"), "auto") == torch.float16
    assert resolve_precision(cpu, "float32") is None
    assert resolve_precision(cpu, "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of auto, float32"):
        resolve_precision(cpu, "double")


def test_bad_precision_is_refused_before_loading(tiny_weights):
    with pytest.raises(ValueError, match="precision must be one of"):
        DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu", precision="int8")


def test_codebook_lookup_is_exact_under_autocast(tiny_weights):
    """Nearest codes are chosen in float32 even when the networks run in bfloat16."""
    from DiffCodeRestoreLib.models import DiffCodeModel

    model = DiffCodeModel.from_pretrained(tiny_weights)
    z = torch.randn(2, model.config.latent_dim, 8, 8)
    task = torch.tensor([0, 1])
    quant, idx = model.codebook.lookup(z, task)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        quant_bf16, idx_bf16 = model.codebook.lookup(z, task)
    assert torch.equal(idx, idx_bf16) and quant_bf16.dtype == z.dtype
    books = model.codebook.codes[task]  # brute force: every distance, nearest code
    brute = torch.cdist(z.flatten(2).transpose(1, 2), books).argmin(-1).view_as(idx)
    assert torch.equal(idx, brute)
