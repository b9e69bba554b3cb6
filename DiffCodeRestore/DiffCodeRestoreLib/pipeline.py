"""Whole-volume restoration: a clinical volume in, the restored volume with exact geometry out.

How a volume is restored, and why:

- **Slices along the acquisition axis.** The model is 2D; the slice axis is the index axis with the
  largest spacing (ties: the last axis; a single-slice volume: its singleton axis), found in index
  space, so any direction matrix works and the output keeps the input's grid exactly.
- **Streaming.** Slices are read from a view of the input, a batch at a time, normalised, restored
  and written into the one output array; the volume is never held as several float copies.
- **Tiles.** A slice larger than the tile edge is cut into overlapping tiles on the model's stride
  grid. Each tile's outer ``context`` pixels get zero weight (they see the tile border instead of
  the image), and neighbouring tiles cross-fade over a ``blend`` band with complementary sin^2
  ramps, so the output does not depend on tiling (beyond the network's effective receptive field).
- **Noise.** The diffusion noise of every slice is drawn for the whole slice from a generator seeded
  by (seed, slice, sample) and cropped per tile, so results are reproducible and independent of
  batch and tile sizes (and of the device: the noise is drawn on the CPU).
- **Self-ensemble** (opt-in): each tile is also restored flipped and rotated by 90 degrees, the 8
  results turned back and averaged; the noise turns with the image.
- **Intensities** (``tasks.py``): CT and PET are clipped to the network range and scaled back;
  voxels outside that range (e.g. -3024 HU padding, metal, a hot bladder) keep their input value.
  CT keeps its integer voxel type (rounded, clipped to the type's range); PET and MRI come out
  float32. MRI is scaled by a robust percentile computed once over the whole volume.
- **MRI super-resolution** ``scale=2|4``: zero-filled k-space interpolation onto an s-times finer
  in-plane grid, shifted by a Fourier phase ramp so that voxel centres follow the voxel-centre
  convention: the output covers exactly the input's field of view and overlays it in physical space.
- **Hardware.** ``device="auto"`` picks CUDA, then MPS, then the CPU; float16 autocast on GPUs and
  bfloat16 on CPUs that have it in hardware (``precision``); channels-last memory layout; batch (and
  tile, when a whole slice would not fit) from free GPU memory; on out-of-memory the batch, then the
  tile, shrink, and finally the work moves to the CPU with a message.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from . import __version__
from . import device as devices
from .errors import CancelToken  # noqa: F401  (re-exported: the pipeline's public API takes it)
from .hub import Catalog, ResolvedWeights, resolve
from .input_rules import IntensityConversion, choose_task, input_conversion
from .options import TILE_BLEND, TILE_CONTEXT, RestoreOptions, check_restore_options
from .self_ensemble import VIEWS, ensemble_mean
from .tasks import TaskSpec, denormalize, intensity_scale, network_range, normalize
from .volume_io import DICOM_MODALITY_TAG, READER_PREFIX, VolumeError, check_volume, image_from_array

Progress = Callable[[int, int], None]
Message = Callable[[str], None]
MRI_SCALE_SAMPLE = 1 << 22  # voxels used for the robust MRI percentile (a regular subsample)


class RestoreCancelled(Exception):
    """Restoration stopped by its cancel token; nothing was written."""


class NonFiniteResult(RuntimeError):
    """The model produced NaN or infinity even in float32; nothing is returned."""


@dataclass
class RestoreResult:
    image: sitk.Image
    uncertainty: Optional[sitk.Image]
    metadata: Dict[str, object] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Geometry


def slice_axis(image: sitk.Image) -> int:
    """Index axis (0=i, 1=j, 2=k) along which slices are taken: the thickest spacing, see module doc."""
    if image.GetDimension() == 2:
        return 2
    size, spacing = image.GetSize(), image.GetSpacing()
    singleton = [a for a in range(3) if size[a] == 1]
    if len(singleton) == 1:
        return singleton[0]
    thickest = max(spacing)
    return max(a for a in range(3) if spacing[a] >= thickest * (1 - 1e-6))


def super_resolution_geometry(image: sitk.Image, axis: int, scale: int):
    """(size, spacing, origin) of the grid ``scale`` times finer across ``axis``, same field of view.

    Voxel-centre convention: input voxel n spans index [n - 1/2, n + 1/2]; its s output voxels have
    centres at input index n - 1/2 + (m + 1/2)/s, m = 0..s-1. The direction matrix is unchanged.
    """
    dim = image.GetDimension()
    in_plane = [a for a in range(dim) if a != axis]
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    shift_index = np.zeros(dim)
    for a in in_plane:
        size[a] *= scale
        shift_index[a] = -0.5 + 0.5 / scale
    direction = np.asarray(image.GetDirection()).reshape(dim, dim)
    origin = np.asarray(image.GetOrigin()) + direction @ (np.asarray(image.GetSpacing()) * shift_index)
    for a in in_plane:
        spacing[a] /= scale
    return size, spacing, origin.tolist()


def upsample_voxel_centred(slices: np.ndarray, scale: int) -> np.ndarray:
    """k-space zero-filling of (N, h, w) onto (N, h*s, w*s) with voxel-centre alignment.

    ``simulate.mri.kspace_upsample`` puts output sample m at input position m/s (sample 0 on
    sample 0); the voxel-centre grid needs position (m - (s-1)/2)/s, i.e. the band-limited
    interpolant shifted by (s-1)/(2s) input pixels, applied first as a Fourier phase ramp.
    """
    from .simulate.mri import kspace_upsample

    if scale == 1:
        return slices
    delta = (scale - 1) / (2.0 * scale)
    spectrum = np.fft.fft2(slices, axes=(-2, -1))
    rows = np.fft.fftfreq(slices.shape[-2])[:, None]
    cols = np.fft.fftfreq(slices.shape[-1])[None, :]
    spectrum *= np.exp(-2j * np.pi * delta * (rows + cols))
    return kspace_upsample(np.fft.ifft2(spectrum, axes=(-2, -1)), scale)


# ----------------------------------------------------------------------------------------------------
# Tiles


def tile_starts(length: int, tile: int, step: int) -> List[int]:
    """Tile origins (multiples of the model stride) covering [0, length) with windows of ``tile``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_weights_1d(start: int, size: int, length: int, context: int, blend: int) -> np.ndarray:
    """Zero over ``context`` pixels at inner tile edges, then a sin^2 ramp over ``blend``, then one."""
    position = np.arange(size, dtype=np.float64)
    weight = np.ones(size)
    ramp = lambda d: np.where(d < 0, 0.0, np.where(d >= blend, 1.0, np.sin(0.5 * np.pi * (d + 0.5) / blend) ** 2))
    if start > 0:
        weight *= ramp(position - context)
    if start + size < length:
        weight *= ramp(size - 1 - position - context)
    return weight.astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Noise


def slice_seed(seed: int, index: int, sample: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), int(sample)]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------------
# The pipeline


class DiffCodePipeline:
    """A loaded model on a device, ready to restore volumes (see the module docstring)."""

    def __init__(self, model, weights: ResolvedWeights, device: torch.device,
                 message: Optional[Message] = None, precision: str = "auto", threads: Optional[int] = None) -> None:
        self.model = model.to(memory_format=torch.channels_last)  # measured 1.2x faster convolutions on the CPU
        self.weights = weights
        self.device = device
        self.message = message or (lambda text: None)
        self.context = TILE_CONTEXT
        self.blend = TILE_BLEND
        self.precision_name = precision
        self.precision = devices.resolve_precision(device, precision)  # None: float32
        self.threads = devices.cpu_thread_count(threads) if device.type == "cpu" else None
        self._bytes_per_pixel: Optional[float] = None
        # Called with (task, code indices or None) after each model call: the benchmark counts codebook
        # usage on exactly the path users run.
        self.on_codes: Optional[Callable[[str, Optional[torch.Tensor]], None]] = None

    @classmethod
    def from_pretrained(
        cls,
        model: Optional[str] = None,
        device: Union[str, torch.device] = "auto",
        catalog: Optional[Catalog] = None,
        allow_download: bool = True,
        progress: Optional[Progress] = None,
        cancel: Optional[CancelToken] = None,
        show_progress: bool = False,
        message: Optional[Message] = None,
        threads: Optional[int] = None,
        precision: str = "auto",
    ) -> "DiffCodePipeline":
        """Load weights by catalog name (None: the default model) or from a folder, onto ``device``.

        ``progress(bytes_done, bytes_total)`` and ``cancel`` apply to a download, if one is needed.
        ``precision``: ``auto`` (float16 on GPUs, bfloat16 on CPUs with native bfloat16, else float32),
        ``float32``, ``bfloat16`` or ``float16``.
        """
        from .models import DiffCodeModel

        target = devices.resolve_device(device)
        devices.resolve_precision(target, precision)  # reject a bad name before any download
        weights = resolve(model, catalog=catalog, allow_download=allow_download, progress=progress,
                          cancel=cancel, show_progress=show_progress, message=message)
        network = DiffCodeModel.from_pretrained(weights.folder, device=target, dtype=torch.float32)
        return cls(network, weights, target, message, precision, threads)

    # -- public call ----------------------------------------------------------------------------
    def __call__(
        self,
        image: Union[sitk.Image, np.ndarray],
        task: Optional[str] = None,
        scale: int = 1,
        steps: Optional[int] = None,
        fidelity: Optional[float] = None,
        seed: int = 0,
        samples: int = 1,
        self_ensemble: bool = False,
        suv_factor: Optional[float] = None,
        hu_offset: Optional[float] = None,
        progress: Optional[Progress] = None,
        cancel: Optional[CancelToken] = None,
        spacing: Optional[Sequence[float]] = None,
        origin: Optional[Sequence[float]] = None,
        direction: Optional[Sequence[float]] = None,
        batch_size: Optional[int] = None,
        tile_size: Optional[int] = None,
    ) -> RestoreResult:
        """Restore ``image`` for ``task``; see the module docstring for what happens to it.

        ``task`` None (or "auto") takes the task from the image (DICOM modality, then intensities, as
        the Slicer panel suggests it) when that is certain, else asks for it (``VolumeError``).

        ``progress(done, total)`` counts slices (times samples); ``cancel`` stops within one batch
        with ``RestoreCancelled``. A NumPy array is indexed like ``SimpleITK.GetArrayFromImage``
        with spacing/origin/direction in SimpleITK's (i, j, k) order. ``self_ensemble`` averages the
        8 flips and 90-degree rotations of every slice (8x the time; see ``self_ensemble.py``).
        ``suv_factor`` (PET stored in Bq/mL) and ``hu_offset`` (CT stored as HU+1024: -1024) say how
        the voxels relate to the task's units when the file does not (see ``input_rules.py``).
        """
        image = _as_image(image, spacing, origin, direction)
        volume = sitk.GetArrayViewFromImage(image)
        volume = volume[None] if volume.ndim == 2 else volume
        modality = image.GetMetaData(DICOM_MODALITY_TAG) if image.HasMetaDataKey(DICOM_MODALITY_TAG) else None
        choice = choose_task(task, volume, modality)
        options = self._check_options(choice.task, scale, steps, fidelity, seed, samples, batch_size, tile_size,
                                      self_ensemble, suv_factor, hu_offset)
        axis = slice_axis(image)
        facts = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if key.startswith(READER_PREFIX)}
        conversion = input_conversion(volume, options.spec.name, facts, options.suv_factor, options.hu_offset)
        slices = np.moveaxis(volume, 2 - axis, 0)  # (N, rows, cols), a view: nothing is copied

        size, out_spacing, out_origin = super_resolution_geometry(image, axis, options.scale)
        out_volume = np.empty((1,) * (3 - len(size)) + tuple(reversed(size)), _output_dtype(options.spec, volume.dtype))
        spread = np.empty(out_volume.shape, np.float32) if options.samples > 1 else None
        with devices.cpu_threads(self.threads if self.device.type == "cpu" else None):
            self._stream(options, conversion, slices, np.moveaxis(out_volume, 2 - axis, 0),
                         None if spread is None else np.moveaxis(spread, 2 - axis, 0),
                         volume_intensity(options.spec, volume, conversion), batch_size, tile_size, progress, cancel)

        result = _to_image(out_volume, image, out_spacing, out_origin)
        uncertainty = _to_image(spread, image, out_spacing, out_origin) if spread is not None else None
        metadata = self.provenance(options)
        if task in (None, "auto"):
            metadata["task_reason"] = choice.reason
        if not conversion.identity:
            metadata["intensity_conversion"] = conversion.note
        return RestoreResult(result, uncertainty, metadata)

    def _stream(self, options: RestoreOptions, conversion: IntensityConversion, slices: np.ndarray,
                out_slices: np.ndarray, spread_slices: Optional[np.ndarray], intensity: Tuple[float, float],
                batch_size: Optional[int], tile_size: Optional[int], progress: Optional[Progress],
                cancel: Optional[CancelToken]) -> None:
        """Batches of slices: read, convert to task units, normalise, restore, scale back, write into the outputs.

        Voxels outside the range the network represents (``tasks.network_range``: CT padding or metal,
        a hot PET bladder, an MRI spike) are clipped on the way in, so that they cannot spread through
        the slice, and keep their input value on the way out (for MRI super-resolution: over their
        block of the finer grid); every other output voxel stays inside that range.
        """
        spec, (offset, norm_scale) = options.spec, intensity
        low, high = network_range(spec.name, offset, norm_scale)
        rows, cols = out_slices.shape[1:]
        padded = (_round_up(rows, self.model.size_multiple), _round_up(cols, self.model.size_multiple))
        plan = devices.plan_work(self.device, padded, batch_size, tile_size, self._bytes_per_pixel)
        planned_from_memory = batch_size is not None or self._bytes_per_pixel is not None
        total, done, start = slices.shape[0] * options.samples, 0, 0
        if progress:
            progress(0, total)
        with torch.inference_mode():
            while start < slices.shape[0]:
                stop = min(slices.shape[0], start + plan.batch)
                source = conversion.to_task_units(slices[start:stop])
                batch = self._prepare(options, source, (low, high), offset, norm_scale)
                try:
                    mean, std = self._restore_batch(batch, options, start, plan, cancel)
                except _Retry:
                    continue  # out of memory: the plan is smaller now, run the same slices again
                restored = np.clip(denormalize(spec.name, mean[:, :rows, :cols], offset, norm_scale), low, high)
                outside = (source < low) | (source > high)
                if outside.any():  # what the network cannot represent stays as it was
                    restored = np.where(_blocks(outside, options.scale), _blocks(source, options.scale), restored)
                out_slices[start:stop] = _cast(conversion.to_stored_units(restored), out_slices.dtype)
                if spread_slices is not None:
                    spread_slices[start:stop] = std[:, :rows, :cols] * norm_scale
                done, start = done + (stop - start) * options.samples, stop
                if progress:
                    progress(done, total)
                if not (planned_from_memory or plan.shrunk) and self._bytes_per_pixel:
                    planned_from_memory = True  # the first GPU call measured the memory a pixel needs
                    replanned = devices.plan_work(self.device, padded, None, tile_size, self._bytes_per_pixel)
                    plan.batch, plan.tile = replanned.batch, replanned.tile

    # -- pieces ---------------------------------------------------------------------------------
    def _check_options(self, task: str, scale, steps, fidelity, seed, samples, batch_size, tile_size,
                       self_ensemble, suv_factor=None, hu_offset=None) -> RestoreOptions:
        """``options.check_restore_options`` with this model's limits and defaults."""
        config = self.model.config
        return check_restore_options(
            task, scale, steps, fidelity, seed, samples, self_ensemble, batch_size, tile_size, suv_factor, hu_offset,
            max_steps=getattr(config, "diffusion_timesteps", None) if getattr(config, "diffusion", True) else None,
            default_steps=config.default_steps, default_fidelity=config.default_fidelity,
            size_multiple=self.model.size_multiple)

    def _prepare(self, options: RestoreOptions, source: np.ndarray, limits: Tuple[float, float], offset: float,
                 norm_scale: float) -> np.ndarray:
        """Float32 slices clipped to ``limits`` (before any upsampling, so an outlier cannot ring through
        the slice), upsampled for MRI SR, normalised, padded (reflection) to the model stride."""
        batch = np.clip(np.asarray(source, dtype=np.float32), *limits)
        if options.scale > 1:
            batch = upsample_voxel_centred(batch, options.scale)
        batch = normalize(options.spec.name, batch, offset, norm_scale)
        multiple = self.model.size_multiple
        pad_rows = _round_up(batch.shape[1], multiple) - batch.shape[1]
        pad_cols = _round_up(batch.shape[2], multiple) - batch.shape[2]
        if pad_rows or pad_cols:
            batch = np.pad(batch, ((0, 0), (0, pad_rows), (0, pad_cols)), mode="symmetric")
        return np.ascontiguousarray(batch)

    def _restore_batch(self, batch: np.ndarray, options: RestoreOptions, first_index: int, plan: devices.WorkPlan,
                       cancel: Optional[CancelToken]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Mean and std over samples of the restored, still normalised batch (N, rows, cols)."""
        total = np.zeros(batch.shape, np.float64)
        squares = np.zeros(batch.shape, np.float64) if options.samples > 1 else None
        for sample in range(options.samples):
            if cancel is not None and cancel.cancelled:
                raise RestoreCancelled("restoration cancelled; nothing was written.")
            restored = self._run_tiles(batch, options, first_index, sample, plan)
            if options.samples == 1:
                return restored, None
            total += restored
            squares += np.square(restored, dtype=np.float64)
        mean = total / options.samples
        std = np.sqrt(np.maximum(squares / options.samples - mean * mean, 0.0))
        return mean.astype(np.float32), std.astype(np.float32)

    def _run_tiles(self, batch: np.ndarray, options: RestoreOptions, first_index: int, sample: int,
                   plan: devices.WorkPlan) -> np.ndarray:
        """The batch through the model whole, or in overlapping tiles blended with ``tile_weights_1d``."""
        n, rows, cols = batch.shape
        stride = self.model.size_multiple
        noise = self._draw_noise(n, first_index, sample, options, rows, cols)
        step = plan.tile - 2 * self.context - self.blend
        row_starts, col_starts = tile_starts(rows, plan.tile, step), tile_starts(cols, plan.tile, step)
        if len(row_starts) == 1 and len(col_starts) == 1:
            return self._run_model(batch, noise, options, plan)
        out = np.zeros(batch.shape, np.float32)
        weight_sum = np.zeros((rows, cols), np.float32)
        for r0 in row_starts:
            for c0 in col_starts:
                r1, c1 = min(rows, r0 + plan.tile), min(cols, c0 + plan.tile)
                crop = noise[:, :, :, r0 // stride:r1 // stride, c0 // stride:c1 // stride]
                y = self._run_model(batch[:, r0:r1, c0:c1], crop, options, plan)
                w = np.outer(tile_weights_1d(r0, r1 - r0, rows, self.context, self.blend),
                             tile_weights_1d(c0, c1 - c0, cols, self.context, self.blend))
                out[:, r0:r1, c0:c1] += y * w
                weight_sum[r0:r1, c0:c1] += w
        return out / weight_sum

    def _draw_noise(self, n: int, first_index: int, sample: int, options: RestoreOptions, rows: int,
                    cols: int) -> torch.Tensor:
        """(draws, N, C, rows/s, cols/s) diffusion noise for whole slices, seeded per slice and sample."""
        latent = (rows // self.model.size_multiple, cols // self.model.size_multiple)
        schedule = getattr(self.model, "schedule", None)
        if getattr(self.model, "denoiser", None) is None or schedule is None:
            return torch.zeros((0, n, 1) + latent)
        shape = (len(schedule.step_indices(options.steps)), self.model.config.latent_dim) + latent
        per_slice = []
        for i in range(n):
            generator = torch.Generator().manual_seed(slice_seed(options.seed, first_index + i, sample))
            per_slice.append(torch.randn(shape, generator=generator))
        return torch.stack(per_slice, dim=1)

    def _run_model(self, x: np.ndarray, noise: torch.Tensor, options: RestoreOptions,
                   plan: devices.WorkPlan) -> np.ndarray:
        """One model call; on out-of-memory shrink the plan (then leave the GPU) and retry the batch."""
        tensor = torch.from_numpy(x).unsqueeze(1).to(plan.device)

        views_done = []

        def restore(view: torch.Tensor, view_noise: Optional[torch.Tensor]) -> torch.Tensor:
            arguments = (view.contiguous(memory_format=torch.channels_last), options.spec.index)
            settings = dict(steps=options.steps, fidelity=options.fidelity, noise=view_noise)
            if self.on_codes is None:
                return self.model.restore(*arguments, **settings)
            image, codes = self.model.restore_with_codes(*arguments, **settings)
            if not views_done:  # the plain (unturned) view's codes
                self.on_codes(options.spec.name, codes)
            views_done.append(True)
            return image

        try:
            calibrate = plan.device.type == "cuda" and self._bytes_per_pixel is None
            if calibrate:
                torch.cuda.reset_peak_memory_stats(plan.device)
                before = torch.cuda.memory_allocated(plan.device)
            views = VIEWS if options.self_ensemble else 1
            with devices.autocast(plan.device, self.precision):
                y = ensemble_mean(restore, tensor, noise if noise.shape[0] else None, views=views)
            if not bool(torch.isfinite(y).all()):
                y = self._float32_again(restore, tensor, noise, views)
            if calibrate:
                peak = torch.cuda.max_memory_allocated(plan.device) - before
                self._bytes_per_pixel = peak / float(x.size)
            return y[:, 0].cpu().numpy()
        except Exception as error:
            if not devices.is_out_of_memory(error):
                raise
            self._shrink(plan)
            raise _Retry() from None

    def _float32_again(self, restore, tensor: torch.Tensor, noise: torch.Tensor, views: int) -> torch.Tensor:
        """A batch whose result holds NaN or infinity (float16 overflow) is computed again in float32."""
        if self.precision is None:
            raise NonFiniteResult("the model produced NaN or infinite values in float32; nothing was written "
                                  "(please report this input).")
        self.message(f"{str(self.precision).replace('torch.', '')} overflowed on this batch (NaN or infinite "
                     "values): computing it again in float32.")
        y = ensemble_mean(restore, tensor.float(), noise if noise.shape[0] else None, views=views)
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteResult("the model produced NaN or infinite values even in float32; nothing was written "
                                  "(please report this input).")
        return y

    def _shrink(self, plan: devices.WorkPlan) -> None:
        devices.release_memory(plan.device)
        if plan.smaller():
            self.message(f"Out of memory on {plan.device.type}: retrying with batch {plan.batch}, tile {plan.tile}.")
            return
        if plan.device.type == "cpu":
            raise MemoryError("out of memory even on the CPU with the smallest tiles; close other programs.")
        self.message(f"Out of memory on {plan.device.type} even with the smallest tiles: continuing on the CPU "
                     "(slower).")
        self.model.to(device="cpu", dtype=torch.float32)
        self.device = torch.device("cpu")
        self.precision = devices.resolve_precision(self.device, self.precision_name)
        self.threads = devices.cpu_thread_count()
        cpu_plan = devices.plan_work(self.device, (plan.tile, plan.tile))
        plan.device, plan.batch, plan.tile = self.device, cpu_plan.batch, devices.DEFAULT_TILE["cpu"]

    def provenance(self, options: RestoreOptions) -> Dict[str, object]:
        """What produced a result: written into the output file's metadata."""
        return {
            "software": "DiffCode Restore",
            "version": __version__,
            "task": options.spec.name,
            "model": self.weights.name,
            "revision": self.weights.revision,
            "sha256": self.weights.sha256,
            "weights_source": self.weights.source,
            "options": {"scale": options.scale, "steps": options.steps, "fidelity": options.fidelity,
                        "seed": options.seed, "samples": options.samples, "self_ensemble": options.self_ensemble},
            "device": self.device.type,
            "precision": str(self.precision or torch.float32).replace("torch.", ""),
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        }


def volume_intensity(spec: TaskSpec, volume: np.ndarray,
                     conversion: IntensityConversion = IntensityConversion()) -> Tuple[float, float]:
    """(offset, scale) once per volume; MRI's percentile from a regular subsample of voxels."""
    if spec.norm_range is not None:
        return intensity_scale(spec.name, volume[:1])
    flat = volume.reshape(-1)
    step = max(1, flat.size // MRI_SCALE_SAMPLE)
    return intensity_scale(spec.name, np.asarray(conversion.to_task_units(flat[::step]), dtype=np.float32))


def _blocks(values: np.ndarray, scale: int) -> np.ndarray:
    """(N, h, w) -> (N, h*s, w*s), each value repeated over its block of the s-times finer grid."""
    if scale == 1:
        return values
    return np.repeat(np.repeat(values, scale, axis=1), scale, axis=2)


def _output_dtype(spec: TaskSpec, dtype: np.dtype) -> np.dtype:
    """CT keeps an integer voxel type (HU); everything else is float32."""
    if spec.modality == "CT" and dtype.kind in "iu":
        return dtype
    return np.dtype(np.float32)


class _Retry(Exception):
    """Internal: the batch hit out-of-memory and the plan was shrunk; run the batch again."""


def _as_image(image, spacing, origin, direction) -> sitk.Image:
    """The input as a checked SimpleITK image (a NumPy array gets the geometry given with it)."""
    if isinstance(image, np.ndarray):
        image = image_from_array(image, spacing, origin, direction)
    elif not isinstance(image, sitk.Image):
        raise VolumeError(f"input must be a SimpleITK image or a NumPy array, not {type(image).__name__}.")
    check_volume(image, "input")
    if image.GetDimension() == 3 and sorted(image.GetSize())[1] == 1:
        raise VolumeError(f"input: a {tuple(image.GetSize())} volume is a line, not an image; give 2D slices.")
    return image


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def _to_image(array: np.ndarray, reference: sitk.Image, spacing, origin) -> sitk.Image:
    if reference.GetDimension() == 2:
        array = array[0]
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(reference.GetDirection())
    return image
