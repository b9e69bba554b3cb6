"""Speed and memory of whole-volume restoration beside NLM and BM3D (a command, not a test).

    python -m DiffCodeRestoreLib.benchmark.speed [--weights NAME|FOLDER] [--device cpu] [--volume-slices 300]
                                                 [--out FILE.md]

Measures, on real CT slices (``lung2`` from the cache; a synthetic phantom if it is missing):
seconds per slice at 256x256 and 512x512 for DiffCode, scikit-image non-local means (fast mode)
and BM3D; the wall time and peak resident memory of a 512x512x300 CT volume restored in a fresh
process (``ru_maxrss``); how time scales with the number of slices; and the `diffcode-restore`
command restoring a 16-slice 512x512 volume, start-up included, against NLM on the same slices.
GPU rows are added when CUDA is available. Without released weights the model's architecture is
timed with random weights (the speed does not depend on the values of the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..runtime import configure_own_process

configure_own_process()  # before torch loads (the pipeline import below loads it)

from ..pipeline import DiffCodePipeline  # noqa: E402
from .report import markdown_table as table  # noqa: E402

CT_TASK = "ct-denoise"
SCALING_COUNTS = (1, 4, 16, 48)
RSS_LIMIT_MB = 4096  # the limit for the 512 x 512 x 300 volume


# ----------------------------------------------------------------------------------------------------
# Inputs


def ct_volume(slices: int, size: int = 512) -> Tuple[sitk.Image, str]:
    """A CT volume of ``slices`` real lung2 slices (cycled), at ``size`` pixels; and what it is."""
    try:
        from ..data.volumes import load_volume

        source = load_volume("lung2")
        label = "lung2 CT (real)"
    except Exception:  # the cache is optional for a speed figure
        source = _phantom()
        label = "synthetic CT phantom (lung2 not in the cache)"
    array = sitk.GetArrayViewFromImage(source)
    picks = np.arange(slices) % array.shape[0]
    volume = np.ascontiguousarray(array[picks])
    spacing = list(source.GetSpacing())
    if size != volume.shape[1]:
        factor = volume.shape[1] // size
        volume = volume.reshape(slices, size, factor, size, factor).mean(axis=(2, 4)).astype(np.int16)
        spacing[0] *= factor
        spacing[1] *= factor
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    return image, label


def _phantom() -> sitk.Image:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:512, :512] - 256
    body = np.where(rows ** 2 / 200 ** 2 + cols ** 2 / 240 ** 2 < 1, 40.0, -1000.0)
    lungs = ((rows / 120) ** 2 + ((np.abs(cols) - 110) / 70) ** 2) < 1
    slice_ = np.where(lungs, -850.0, body)
    volume = np.stack([slice_ + rng.normal(0, 30, slice_.shape) for _ in range(16)]).astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.7, 0.7, 5.0))
    return image


def weights_folder(choice: Optional[str], workdir: Path) -> Tuple[str, str]:
    """(folder, label): the chosen or default weights, else the 'small' architecture with random weights."""
    from ..hub import WeightsError, resolve, write_manifest

    try:
        resolved = resolve(choice, allow_download=False)
        return str(resolved.folder), f"{resolved.name} ({resolved.source})"
    except WeightsError:
        if choice is not None:
            raise
    import torch

    from ..models import DiffCodeConfig, DiffCodeModel

    torch.manual_seed(0)
    folder = workdir / "small-random"
    DiffCodeModel(DiffCodeConfig.preset("small")).save_pretrained(folder, fp16=True)
    write_manifest(folder)  # like every weights folder the project writes
    return str(folder), "preset 'small', random weights (no released weights found; speed only)"


# ----------------------------------------------------------------------------------------------------
# Measurements


def timed(work: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def nlm_scikit_defaults(array: np.ndarray) -> None:
    """scikit-image NLM in fast mode with its default 7x7 patches and 11-pixel search distance, the
    reference of the speed target (the benchmark's tuned NLM uses 5 / 6, which is about 2.5x faster)."""
    from skimage.restoration import denoise_nl_means

    from .baselines import estimated_sigma

    for slice_ in array:
        sigma = estimated_sigma(slice_)
        denoise_nl_means(slice_, h=0.8 * sigma, sigma=sigma, fast_mode=True)


def per_slice_rows(pipe, device: str, slices: int, bm3d_slices: int) -> List[List[str]]:
    from .baselines import make_baselines

    nlm, bm3d = make_baselines(["nlm", "bm3d"])
    rows = []
    for size in (256, 512):
        image, _ = ct_volume(slices, size)
        pipe(image[:, :, :1], CT_TASK)  # warm-up: first-call allocations
        model = timed(lambda: pipe(image, CT_TASK)) / slices
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        spacing = image.GetSpacing()[1::-1]
        nlm_time = timed(lambda: [nlm.restore(s, CT_TASK, spacing) for s in array]) / slices
        nlm_defaults = timed(lambda: nlm_scikit_defaults(array)) / slices
        bm3d_time = timed(lambda: [bm3d.restore(s, CT_TASK, spacing) for s in array[:bm3d_slices]]) / bm3d_slices
        rows.append([f"{size} x {size}", f"{model:.3f}", f"{nlm_time:.3f}", f"{nlm_defaults:.3f}", f"{bm3d_time:.2f}",
                     device])
    return rows


def scaling_rows(pipe) -> List[List[str]]:
    rows = []
    image, _ = ct_volume(max(SCALING_COUNTS))
    pipe(image[:, :, :1], CT_TASK)
    for count in SCALING_COUNTS:
        seconds = timed(lambda: pipe(image[:, :, :count], CT_TASK))
        rows.append([str(count), f"{seconds:.2f}", f"{seconds / count:.3f}"])
    return rows


def ct_batch(slices: int):
    """``slices`` real 512 x 512 CT slices, normalised for the network: (N, 1, 512, 512)."""
    import torch

    from ..tasks import intensity_scale, normalize

    image, _ = ct_volume(slices)
    array = sitk.GetArrayFromImage(image)
    return image, torch.from_numpy(normalize(CT_TASK, array, *intensity_scale(CT_TASK, array)))[:, None]


def bare_model_seconds(pipe, x, precision="pipeline", layout=None, steps=None, context=None) -> float:
    """Seconds per slice of the pipeline's model alone (best of two, after a warm-up call), by default
    with the pipeline's settings; ``precision`` (a torch dtype or None for float32), ``layout``, ``steps``
    and the autograd ``context`` override one setting at a time."""
    import torch

    from .. import device as devices

    dtype = pipe.precision if precision == "pipeline" else precision
    layout = layout or torch.channels_last
    model = pipe.model.to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    try:
        with (context or torch.inference_mode)(), devices.autocast(pipe.device, dtype):
            model.restore(x, 1, steps=steps)
            return timed(lambda: model.restore(x, 1, steps=steps), repeat=2) / x.shape[0]
    finally:
        pipe.model.to(memory_format=torch.channels_last)


def profile_rows(pipe, slices: int = 2) -> List[List[str]]:
    """Where the time goes on 512 x 512 slices: the bare model as the pipeline runs it, then with one
    setting changed at a time (precision, memory layout, diffusion steps, autograd mode, threads, OpenMP
    wait policy), and the whole pipeline on the same slices (its overhead: normalising, noise, tiles)."""
    import torch

    image, x = ct_batch(slices)
    threads = torch.get_num_threads()
    precision = str(pipe.precision or torch.float32).replace("torch.", "")
    steps = pipe.model.config.default_steps
    rows = [[f"model as the pipeline runs it: {precision}, channels-last, {steps} step(s), inference_mode, "
             f"{threads} threads", f"{bare_model_seconds(pipe, x):.3f}"]]
    if pipe.precision is not None:
        rows.append(["... in float32", f"{bare_model_seconds(pipe, x, precision=None):.3f}"])
    rows.append(["... contiguous (NCHW) layout", f"{bare_model_seconds(pipe, x, layout=torch.contiguous_format):.3f}"])
    rows.append([f"... {pipe.model.config.diffusion_timesteps} diffusion steps",
                 f"{bare_model_seconds(pipe, x, steps=pipe.model.config.diffusion_timesteps):.3f}"])
    rows.append(["... no_grad instead of inference_mode", f"{bare_model_seconds(pipe, x, context=torch.no_grad):.3f}"])
    torch.set_num_threads(1)
    rows.append(["... 1 thread", f"{bare_model_seconds(pipe, x):.3f}"])
    torch.set_num_threads(threads)
    for policy in ("ACTIVE", "PASSIVE"):  # read when OpenMP starts: needs a fresh process
        command = [sys.executable, "-m", "DiffCodeRestoreLib.benchmark.speed", "--child-model", str(slices),
                   "--weights", str(pipe.weights.folder)]
        done = subprocess.run(command, capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_WAIT_POLICY": policy})
        rows.append([f"... OMP_WAIT_POLICY={policy} (fresh process)", done.stdout.split()[-1]])
    pipe(image[:, :, :1], CT_TASK)
    rows.append(["whole pipeline (same slices)", f"{timed(lambda: pipe(image, CT_TASK), repeat=2) / slices:.3f}"])
    rows.append(["... with the flip/rotation self-ensemble",
                 f"{timed(lambda: pipe(image, CT_TASK, self_ensemble=True)) / slices:.3f}"])
    return rows


def _child_model(weights: str, slices: int) -> None:
    pipe = DiffCodePipeline.from_pretrained(weights, device="cpu")
    print(f"{bare_model_seconds(pipe, ct_batch(slices)[1]):.3f}")


def volume_in_subprocess(weights: str, slices: int, device: str) -> Dict[str, float]:
    """Restore a 512x512xN CT volume in a fresh process; its wall time and peak resident set."""
    command = [sys.executable, "-m", "DiffCodeRestoreLib.benchmark.speed", "--child-volume", str(slices),
               "--weights", weights, "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_volume(weights: str, slices: int, device: str) -> None:
    import torch

    image, _ = ct_volume(slices)
    pipe = DiffCodePipeline.from_pretrained(weights, device=device)
    before = _peak_rss_mb()
    start = time.perf_counter()
    result = pipe(image, CT_TASK)
    seconds = time.perf_counter() - start
    if result.image.GetSize() != image.GetSize():
        raise RuntimeError(f"restored size {result.image.GetSize()} differs from the input's {image.GetSize()}")
    gpu_mb = torch.cuda.max_memory_allocated() / 2 ** 20 if pipe.device.type == "cuda" else None
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before,
                      "input_mb": image.GetNumberOfPixels() * 2 / 2 ** 20, "peak_gpu_mb": gpu_mb}))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10  # bytes on macOS, KiB elsewhere


def command_line_rows(weights: str, device: str, workdir: Path) -> List[List[str]]:
    """`diffcode-restore restore` on a 16-slice 512x512 CT volume, start-up included, vs NLM."""
    from .baselines import make_baselines

    image, _ = ct_volume(16)
    source, target = workdir / "ct16.nrrd", workdir / "ct16-restored.nrrd"
    sitk.WriteImage(image, str(source))
    command = [sys.executable, "-m", "DiffCodeRestoreLib", "restore", str(source), str(target), "--task", CT_TASK,
               "--model", weights, "--device", device, "--quiet", "--overwrite"]
    seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True))
    float32 = timed(lambda: subprocess.run(command + ["--precision", "float32"], check=True, capture_output=True))
    nlm = make_baselines(["nlm"])[0]
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    nlm_seconds = timed(lambda: [nlm.restore(s, CT_TASK, (0.7, 0.7)) for s in array])
    defaults_seconds = timed(lambda: nlm_scikit_defaults(array))
    verdict = "met" if seconds <= defaults_seconds else "not met"
    verdict32 = "met" if float32 <= defaults_seconds else "not met"  # what a CPU without bfloat16 runs
    return [["diffcode-restore restore (whole command, defaults)", f"{seconds:.1f}", f"{seconds / 16:.3f}"],
            ["diffcode-restore restore --precision float32", f"{float32:.1f}", f"{float32 / 16:.3f}"],
            ["scikit-image NLM, fast mode, defaults 7 / 11 (filter only)", f"{defaults_seconds:.1f}",
             f"{defaults_seconds / 16:.3f}"],
            ["scikit-image NLM, fast mode, 5 / 6 as tuned in the benchmark (filter only)", f"{nlm_seconds:.1f}",
             f"{nlm_seconds / 16:.3f}"],
            [f"target (whole command <= NLM defaults, filter only): {verdict}; in float32: {verdict32}", "", ""]]


def cpu_name() -> str:
    """The CPU's model name (a speed claim holds only for the CPU it was measured on)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# ----------------------------------------------------------------------------------------------------
# Report


def run(args: argparse.Namespace) -> str:
    import torch

    from ..device import describe, native_bfloat16_cpu, resolve_device

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        weights, weights_label = weights_folder(args.weights, workdir)
        device = resolve_device(args.device)
        pipe = DiffCodePipeline.from_pretrained(weights, device=device)
        _, data_label = ct_volume(1)
        sections = [
            f"# DiffCode Restore speed benchmark\n\nModel: {weights_label}. Data: {data_label}. "
            f"Device: {describe(device)}; CPU: {cpu_name()}, native bfloat16: "
            f"{'yes' if native_bfloat16_cpu() else 'no (float32 is what auto uses)'}; "
            f"CPU cores available: {len(os.sched_getaffinity(0))}; "
            f"torch {torch.__version__}; load average at the start {os.getloadavg()[0]:.1f} "
            "(other processes share the cores: compare rows of one run).",
            "## Seconds per slice (CT, best of one run over the slices)\n\n" + table(
                ["slice", "DiffCode", "NLM (fast, 5 / 6 as tuned)", "NLM (fast, defaults 7 / 11)", "BM3D",
                 "DiffCode device"], per_slice_rows(pipe, device.type, args.slices, args.bm3d_slices)),
            "## Profile: seconds per 512 x 512 slice\n\n" + table(["setting", "seconds per slice"],
                                                                  profile_rows(pipe)),
            "## Scaling with the number of 512 x 512 slices\n\n" + table(
                ["slices", "seconds", "seconds per slice"], scaling_rows(pipe)),
        ]
        volume = volume_in_subprocess(weights, args.volume_slices, device.type)
        sections.append(
            f"## A 512 x 512 x {args.volume_slices} CT volume in a fresh process\n\n" + table(
                ["wall time (s)", "s per slice", "peak RSS (MB)", f"RSS under {RSS_LIMIT_MB // 1024} GB",
                 "RSS before restoring (MB)", "input int16 (MB)", "peak GPU memory (MB)"],
                [[f"{volume['seconds']:.1f}", f"{volume['seconds'] / args.volume_slices:.3f}",
                  f"{volume['peak_rss_mb']:.0f}", "yes" if volume["peak_rss_mb"] < RSS_LIMIT_MB else "**NO**",
                  f"{volume['rss_before_mb']:.0f}", f"{volume['input_mb']:.0f}",
                  "-" if volume.get("peak_gpu_mb") is None else f"{volume['peak_gpu_mb']:.0f}"]]))
        sections.append("## 16-slice 512 x 512 CT volume from the command line (start-up included)\n\n" + table(
            ["what", "seconds", "seconds per slice"], command_line_rows(weights, device.type, workdir)))
        if device.type == "cpu" and torch.cuda.is_available():
            gpu = DiffCodePipeline.from_pretrained(weights, device="cuda")
            sections.append("## GPU\n\n" + table(["slice", "DiffCode", "NLM (5 / 6)", "NLM (7 / 11)", "BM3D",
                                                   "DiffCode device"], per_slice_rows(gpu, "cuda", args.slices, 1)))
    return "\n\n".join(sections) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.benchmark.speed",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="catalog name or weights folder (default: the default model)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--slices", type=int, default=8, help="slices timed per size (default 8)")
    parser.add_argument("--bm3d-slices", type=int, default=1, help="slices timed for BM3D (default 1)")
    parser.add_argument("--volume-slices", type=int, default=300, help="slices of the big volume (default 300)")
    parser.add_argument("--out", help="also write the Markdown report here")
    parser.add_argument("--child-volume", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-model", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_volume:
        _child_volume(args.weights, args.child_volume, args.device)
        return 0
    if args.child_model:
        _child_model(args.weights, args.child_model)
        return 0
    report = run(args)
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
