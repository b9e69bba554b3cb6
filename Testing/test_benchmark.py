"""Benchmark harness: baseline tuning, method protocol, end-to-end reports on a tiny synthetic test set."""

import json
import re
from collections import namedtuple

import numpy as np
import pytest
from PIL import Image

from DiffCodeRestoreLib.benchmark import __main__ as cli
from DiffCodeRestoreLib.benchmark.baselines import BASELINES, Axis, DecimatedInterpolation, make_baselines
from DiffCodeRestoreLib.benchmark.harness import BenchCase, run_task, spread
from DiffCodeRestoreLib import models
from DiffCodeRestoreLib.benchmark.methods import DiffCodeMethod, Method
from DiffCodeRestoreLib.benchmark.report import write_reports
from DiffCodeRestoreLib.metrics import slice_scores

SliceCase = namedtuple("SliceCase", "name hq lq spacing level")  # the data package's fields


def _phantom(size: int, seed: int) -> np.ndarray:
    """Piecewise-smooth CT-like slice in HU: body of soft tissue with a few organs and a bone."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    hu = np.where((y - 0.5) ** 2 / 0.16 + (x - 0.5) ** 2 / 0.2 < 1, 40.0, -1000.0)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.12)
        hu[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(-100, 150)
    hu[(y - 0.7) ** 2 + (x - 0.5) ** 2 < 0.003] = 800.0
    return hu.astype(np.float32)


def _ct_case(name: str, seed: int, n: int = 3, size: int = 48, noise: float = 40.0) -> SliceCase:
    rng = np.random.default_rng(seed)
    hq = np.stack([_phantom(size, seed * 10 + i) for i in range(n)])
    lq = (hq + rng.normal(0, noise, hq.shape)).astype(np.float32)
    return SliceCase(name, hq, lq, (0.8, 0.8), np.full(n, 5e4))


def _mri_case(name: str, seed: int, n: int = 2, size: int = 48, factor: int = 4) -> SliceCase:
    hq = np.stack([_phantom(size, seed * 10 + i) + 1100.0 for i in range(n)])  # positive a.u.
    spectrum = np.fft.fftshift(np.fft.fft2(hq), axes=(-2, -1))
    keep = np.zeros((size, size), bool)
    lo, hi = size // 2 - size // (2 * factor), size // 2 + size // (2 * factor)
    keep[lo:hi, lo:hi] = True
    lq = np.abs(np.fft.ifft2(np.fft.ifftshift(spectrum * keep, axes=(-2, -1)))).astype(np.float32)
    return SliceCase(name, hq.astype(np.float32), lq, (1.0, 1.0), np.full(n, float(factor)))


def _bench(case: SliceCase) -> BenchCase:
    return BenchCase.from_case(case)


def test_every_baseline_follows_the_method_protocol():
    for method in make_baselines():
        assert isinstance(method, Method)
        assert set(method.tasks) <= {"mri-sr", "ct-denoise", "pet-synthesis"}
    with pytest.raises(ValueError, match="Unknown baseline"):
        make_baselines(["input", "wiener"])


def _smooth_case(noise: float) -> BenchCase:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64]
    hq = np.stack([100 + 50 * np.sin(x / (5.0 + i)) * np.cos(y / 7.0) for i in range(2)]).astype(np.float32)
    lq = (hq + rng.normal(0, noise, hq.shape)).astype(np.float32)
    return _bench(SliceCase("smooth", hq, lq, (2.0, 2.0), np.full(2, 1 / 12)))


def _psnr_by_hand(method, case: BenchCase, sigma: float, task: str = "pet-synthesis") -> float:
    return float(np.mean([slice_scores(method.apply(lq, sigma), hq, task).psnr for lq, hq in zip(case.lq, case.hq)]))


def test_grid_tuning_picks_the_best_setting_of_its_grid():
    task, case = "pet-synthesis", _smooth_case(noise=15.0)
    gaussian = BASELINES["gaussian"]()
    gaussian.tune([case], task)
    start = gaussian.axes[0].values
    by_hand = {sigma: _psnr_by_hand(gaussian, case, sigma) for sigma in start}
    best = max(by_hand, key=by_hand.get)
    # Strong white noise on a smooth image: the optimum is inside the starting grid, so it does not grow.
    assert start[0] < best < start[-1]
    assert gaussian.chosen[task] == (best,)
    assert gaussian.parameter(task) == f"sigma={best:g} px"
    assert list(gaussian.tuning[task].values()) == pytest.approx(list(by_hand.values()))
    input_psnr = np.mean([slice_scores(lq, hq, task).psnr for lq, hq in zip(case.lq, case.hq)])
    assert by_hand[best] > input_psnr + 3


def test_grid_tuning_grows_past_an_edge_until_the_optimum_is_inside():
    task, case = "pet-synthesis", _smooth_case(noise=150.0)
    gaussian = BASELINES["gaussian"]()
    gaussian.tune([case], task)
    tried = sorted(float(k.split("=")[1].split()[0]) for k in gaussian.tuning[task])
    (chosen,) = gaussian.chosen[task]
    assert chosen > gaussian.axes[0].values[-1]  # beyond the starting grid
    assert chosen < tried[-1]  # and a larger smoothing was tried and lost
    assert _psnr_by_hand(gaussian, case, chosen) == pytest.approx(max(gaussian.tuning[task].values()))
    assert not gaussian.parameter(task).endswith("(grid edge)")
    # Almost no noise: the least smoothing wins, down to the axis bound, and the table says so.
    gaussian.tune([_smooth_case(noise=0.01)], task)
    assert gaussian.chosen[task] == (min(float(k.split("=")[1].split()[0]) for k in gaussian.tuning[task]),)
    assert gaussian.parameter(task).endswith("(grid edge)")


@pytest.mark.parametrize("name", ["curvature-ad", "gradient-ad", "nlm"])
def test_tuned_denoisers_reduce_noise(name):
    case = _bench(_ct_case("a", 2, n=1))
    method = BASELINES[name]()
    method.tune([case], "ct-denoise")
    out = method.restore(case.lq[0], "ct-denoise", case.spacing)
    assert out.shape == case.lq[0].shape and out.dtype == np.float32
    assert slice_scores(out, case.hq[0], "ct-denoise").psnr > slice_scores(case.lq[0], case.hq[0], "ct-denoise").psnr + 2


@pytest.mark.parametrize("kind", ["bicubic", "bspline"])
def test_sr_interpolation_uses_the_known_factor(kind):
    case = _bench(_mri_case("m", 3, factor=2))
    method = DecimatedInterpolation(kind)
    method.tune([case], "mri-sr")
    assert method.factor == 2 and method.parameter("mri-sr") == "s=2 (known)"
    out = method.restore(case.lq[0], "mri-sr", case.spacing)
    assert out.shape == case.lq[0].shape
    # The LQ is band-limited to 1/2: its every 2nd sample interpolated back stays close to it, and the
    # kept samples are reproduced exactly.
    assert np.allclose(out[::2, ::2], case.lq[0][::2, ::2], atol=1e-2)
    assert slice_scores(out, case.lq[0], "mri-sr").psnr > 25
    mixed = case.take(np.arange(2))
    mixed.level = np.array([2.0, 4.0])
    with pytest.raises(ValueError, match="one integer super-resolution factor"):
        method.tune([mixed], "mri-sr")


def test_spread_picks_evenly_over_cases():
    cases = [_bench(_ct_case("a", 1, n=3)), _bench(_ct_case("b", 2, n=3))]
    picked = spread(cases, 3)
    assert [k for c in picked for k in c.keys()] == [("a", 0), ("a", 2), ("b", 2)]
    assert spread(cases, 0) == cases and spread(cases, 10) == cases


def test_harness_end_to_end_writes_tables_json_and_montage(tmp_path):
    methods = make_baselines(["input", "gaussian", "bm3d", "bicubic"])
    methods[2].axes = [Axis((1.0,), 1.0, 1.0)]  # one BM3D setting keeps the test fast
    results = [
        run_task("ct-denoise", [_ct_case("a", 1), _ct_case("b", 2)], methods, slow_slices=2, log=lambda _: None),
        run_task("mri-sr", [_mri_case("m", 3)], methods, slow_slices=1, tune_slices=1, log=lambda _: None),
    ]
    text = write_reports(results, tmp_path, command="python -m DiffCodeRestoreLib.benchmark --test")
    for task in ("ct-denoise", "mri-sr"):
        for ext in ("md", "json", "png"):
            assert (tmp_path / f"{task}.{ext}").stat().st_size > 0
    assert (tmp_path / "results.md").read_text(encoding="utf-8") == text
    assert not list(tmp_path.glob("*.tmp"))

    ct_md = (tmp_path / "ct-denoise.md").read_text(encoding="utf-8")
    rows = [line.split(" | ")[0].strip("| ") for line in ct_md.splitlines() if line.startswith("| ")]
    assert rows[:4] == ["Method", "input", "gaussian", "bm3d †"]  # bicubic is MRI-only
    assert "oracle tuning" in text and "bm3d †" in text and "Mean PSNR" in text
    assert "Every method on those same subsets" in text
    assert "2 evenly spread slices" in ct_md

    data = json.loads((tmp_path / "ct-denoise.json").read_text(encoding="utf-8"))
    by_name = {m["name"]: m for m in data["methods"]}
    assert set(by_name) == {"input", "gaussian", "bm3d"}
    assert len(by_name["gaussian"]["slices"]) == 6 and len(by_name["bm3d"]["slices"]) == 2
    assert {tuple(s) for s in data["slow_subset"]} == {(s["case"], s["slice"]) for s in by_name["bm3d"]["slices"]}
    assert by_name["gaussian"]["parameter"].startswith("sigma=") and len(by_name["gaussian"]["tuning_mean_psnr"]) >= 6
    assert set(by_name["input"]["per_case"]) == {"a", "b"}
    mri = {m["name"]: m for m in json.loads((tmp_path / "mri-sr.json").read_text(encoding="utf-8"))["methods"]}
    assert mri["bicubic"]["parameter"] == "s=4 (known)"

    with Image.open(tmp_path / "ct-denoise.png") as png:
        png.verify()
    with Image.open(tmp_path / "ct-denoise.png") as png:
        assert png.format == "PNG" and png.mode == "L"
        pixels = np.asarray(png)
    panels = data["montage"]["panels"]
    assert panels == ["input", "gaussian", "bm3d", "reference"]
    assert pixels.shape[1] == (256 + 2) * len(panels) - 2 and pixels.std() > 10  # one row of cells


def test_cli_runs_on_loaded_cases_and_rejects_bad_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_test_cases", lambda task: [_ct_case("a", 1), _ct_case("b", 2)])
    out = tmp_path / "bench"
    assert cli.main(["--tasks", "ct-denoise", "--methods", "input,gaussian", "--max-slices", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| gaussian |" in printed and (out / "ct-denoise.png").exists()
    assert json.loads((out / "ct-denoise.json").read_text(encoding="utf-8"))["n_slices"] == 4

    assert cli.main(["--tasks", "ct-denoise", "--methods", "wiener", "--out", str(out)]) == 2
    assert "Unknown method 'wiener'" in capsys.readouterr().err
    assert cli.main(["--tasks", "xray", "--out", str(out)]) == 2
    assert cli.main(["--methods", "input", "--model", "broken", "--out", str(out)]) == 2
    assert "NAME=FOLDER" in capsys.readouterr().err


def test_model_method_restores_padded_slices_deterministically(tmp_path):
    models.DiffCodeModel(models.DiffCodeConfig.preset("tiny")).save_pretrained(tmp_path / "tiny")
    method = DiffCodeMethod(tmp_path / "tiny", name="tiny")
    assert isinstance(method, Method) and method.parameter("ct-denoise").startswith("steps=")
    lq = _ct_case("a", 1, n=1, size=50).lq[0][:, :37]  # not a multiple of the model's size_multiple
    out = method.restore(lq, "ct-denoise", (0.8, 0.8))
    assert out.shape == lq.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(out, method.restore(lq, "ct-denoise", (0.8, 0.8)))  # seeded sampling
    used = method.code_usage("ct-denoise")
    assert 0 < used <= 1 and method.code_usage("mri-sr") is None  # only what was restored is counted
    assert method.seconds_per_slice(lq, "ct-denoise") > 0 and method.code_usage("ct-denoise") == used
    ensemble = DiffCodeMethod(tmp_path / "tiny", name="tiny", self_ensemble=True)
    averaged = ensemble.restore(lq, "ct-denoise", (0.8, 0.8))  # 37 columns: padded, turned, cropped back
    assert averaged.shape == lq.shape and not np.array_equal(averaged, out)
    assert "self-ensemble" in ensemble.parameter("ct-denoise") and ensemble.code_usage("ct-denoise") == used


def test_model_without_prior_reports_no_code_usage(tmp_path):
    config = models.DiffCodeConfig.preset("tiny", prior="none", diffusion=False)
    models.DiffCodeModel(config).save_pretrained(tmp_path / "plain")
    method = DiffCodeMethod(tmp_path / "plain", name="plain")
    method.restore(_ct_case("a", 1, n=1, size=32).lq[0], "ct-denoise", (0.8, 0.8))
    assert method.code_usage("ct-denoise") is None


def test_cli_puts_models_beside_baselines(tmp_path, monkeypatch):
    models.DiffCodeModel(models.DiffCodeConfig.preset("tiny")).save_pretrained(tmp_path / "tiny")
    monkeypatch.setattr(cli, "load_test_cases", lambda task: [_ct_case("a", 1, n=2)])
    out = tmp_path / "bench"
    assert cli.main(["--tasks", "ct-denoise", "--methods", "input,gaussian,tiny", "--model", f"tiny={tmp_path / 'tiny'}",
                     "--out", str(out)]) == 0
    markdown = (out / "ct-denoise.md").read_text(encoding="utf-8")
    assert "| tiny | steps=" in markdown and "tiny vs best baseline on all slices (gaussian)" in markdown
    summary = (out / "results.md").read_text(encoding="utf-8")
    facts = json.loads((out / "models.json").read_text(encoding="utf-8"))
    assert [f["name"] for f in facts] == ["tiny"] and 0 < facts[0]["code_usage"]["ct-denoise"] <= 1
    assert facts[0]["parameters"] == sum(p.numel() for p in models.DiffCodeModel(
        models.DiffCodeConfig.preset("tiny")).parameters())
    assert re.search(r"\| tiny \| 0\.\d\d M \| [\d.]+ \| [\d.]+ \| \d+\.\d% \|", summary)

    # "diffcode" is the catalog's default model; here it resolves to the tiny folder.
    monkeypatch.setattr(cli, "default_weights", lambda: (tmp_path / "tiny", ""))
    assert cli.main(["--tasks", "ct-denoise", "--methods", "input,diffcode", "--out", str(out)]) == 0
    assert "| diffcode | steps=" in (out / "ct-denoise.md").read_text(encoding="utf-8")


def test_cli_says_why_a_model_is_unavailable(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_test_cases", lambda task: [_ct_case("a", 1, n=1)])
    monkeypatch.setattr(cli, "default_weights", lambda: (None, "model 'diffcode-small' is not available"))
    assert cli.main(["--tasks", "ct-denoise", "--methods", "diffcode", "--out", str(tmp_path)]) == 2
    assert "not available (or name a folder with --model diffcode=FOLDER)" in capsys.readouterr().err
    assert cli.main(["--tasks", "ct-denoise", "--methods", "input,broken", "--model", f"broken={tmp_path}",
                     "--out", str(tmp_path)]) == 2
    assert "not a weights folder (missing config.json, model.safetensors)" in capsys.readouterr().err


def test_speed_benchmark_volume_run_reports_time_and_memory(tiny_weights):
    """The speed benchmark's fresh-process volume run, on 2 slices with the tiny model (a smoke test)."""
    from DiffCodeRestoreLib.benchmark import speed

    figures = speed.volume_in_subprocess(str(tiny_weights), 2, "cpu")
    assert figures["seconds"] > 0 and figures["peak_gpu_mb"] is None
    assert 0 < figures["rss_before_mb"] <= figures["peak_rss_mb"] < speed.RSS_LIMIT_MB
    assert figures["input_mb"] == 512 * 512 * 2 * 2 / 2 ** 20


def test_immerkaer_noise_estimate_recovers_white_noise():
    from DiffCodeRestoreLib.benchmark.ceiling import immerkaer_sigma

    rng = np.random.default_rng(0)
    flat = 100 + rng.normal(0, 3.0, (256, 256))
    assert abs(immerkaer_sigma(flat) - 3.0) < 0.1
    ramp = np.add.outer(np.arange(256.0), np.arange(256.0))  # smooth structure: no noise
    assert immerkaer_sigma(ramp) < 1e-9


def test_oracle_wiener_filter_beats_the_input_and_keeps_a_noiseless_image():
    from DiffCodeRestoreLib.benchmark.ceiling import oracle_wiener

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    clean = np.stack([np.where((yy - 32) ** 2 + (xx - 30) ** 2 < 300, 8.0, 2.0)]).astype(np.float32)
    noisy = clean + rng.normal(0, 1.0, clean.shape).astype(np.float32)
    filtered = oracle_wiener(noisy, clean)
    assert np.mean((filtered - clean) ** 2) < 0.3 * np.mean((noisy - clean) ** 2)
    np.testing.assert_allclose(oracle_wiener(clean, clean), clean, atol=1e-4)  # no noise: nothing to remove
