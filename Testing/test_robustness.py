"""The robustness suite: deterministic cases from test volumes only, the gain table, and the command end to end.

Kept small (a few seconds each on a shared 2-core machine): only the cheap cases are built (pydicom's
128 x 128 CT and 64 x 64 MR, one lung2 slice at the 128 matrix), the rest is checked as data.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from DiffCodeRestoreLib.benchmark import robustness as rob
from DiffCodeRestoreLib.benchmark.baselines import make_baselines
from DiffCodeRestoreLib.benchmark.harness import BenchCase, MethodResult, SliceResult, TaskResult
from DiffCodeRestoreLib.data.fetch import is_fetched
from DiffCodeRestoreLib.data.sources import SOURCES
from DiffCodeRestoreLib.data.volumes import PUBLIC_TEST_VOLUMES, SITE_VOLUMES, TRAINING_VOLUMES, volume_source
from DiffCodeRestoreLib.metrics import slice_scores


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The simulators' projectors and the tiny model run on torch: with the shared cores busy, two threads
    waiting on each other made one test 10x slower than one thread (as test_adapt.py does)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(name: str) -> rob.CaseSpec:
    return next(s for s in rob.CASES if s.name == name)


def _build(names, slices=1, seed=rob.SEED):
    cases, skipped = rob.build_cases([_spec(n) for n in names], slices, seed=seed)
    assert not skipped, skipped
    return cases


# ---- the cases ------------------------------------------------------------------------------------

def test_no_case_comes_from_a_training_volume():
    training = {v for names in TRAINING_VOLUMES.values() for v in names}
    sites = {v for names in SITE_VOLUMES.values() for v in names}
    assert rob.CASES
    for spec in rob.CASES:
        if spec.real:
            file = spec.source[len(rob.PYDICOM_PREFIX):]
            assert file in rob.REAL_FILES and rob.REAL_FILES[file][0] == spec.task
            assert "example_ct_dicom" not in file and "example_seg" not in file  # reserved for evaluation
        else:
            assert spec.source not in training and spec.source not in sites, spec
            assert spec.source in PUBLIC_TEST_VOLUMES[spec.task], spec
    assert len({s.name for s in rob.CASES}) == len(rob.CASES)


def test_the_suite_covers_matrices_levels_and_real_slices():
    def levels(prefix):
        return sorted({s.level for s in rob.CASES if s.name.startswith(prefix)})

    for matrix in (512, 256, 128):
        assert levels(f"ct-lung2-{matrix}-") == [1e4, 5e4, 2e5]
    assert levels("mri-colin27-x") == [2.0, 3.0, 4.0] and levels("mri-colin27-128-") == [2.0, 4.0]
    assert levels("pet-itk-dose") == pytest.approx([1 / 20, 1 / 12, 1 / 4])
    assert {s.task for s in rob.CASES if s.real} == {"ct-denoise", "mri-sr"}


def test_cases_are_deterministic():
    pytest.importorskip("pydicom")
    names = ["real-ct-neck128-i0-5e4", "real-ct-neck128-i0-1e4", "real-mr-small64-x4"]
    first, again = _build(names), _build(names)
    for a, b in zip(first, again):
        assert a.spec == b.spec and a.bench.spacing == b.bench.spacing
        np.testing.assert_array_equal(a.bench.hq, b.bench.hq)
        np.testing.assert_array_equal(a.bench.lq, b.bench.lq)
    ct5, ct1, mr = first
    np.testing.assert_array_equal(ct5.bench.hq, ct1.bench.hq)  # one reference per sweep, only the dose changes
    assert np.std(ct1.bench.lq - ct1.bench.hq) > 1.5 * np.std(ct5.bench.lq - ct5.bench.hq)
    assert ct5.bench.hq.shape == (1, 128, 128) and ct5.bench.hq.min() >= -1024
    assert mr.bench.hq.shape == (1, 64, 64)
    other = _build(names[:1], seed=rob.SEED + 1)[0]
    np.testing.assert_array_equal(other.bench.hq, ct5.bench.hq)
    assert not np.array_equal(other.bench.lq, ct5.bench.lq)


def test_lung2_at_a_coarser_matrix_keeps_its_field_of_view():
    missing = not is_fetched(SOURCES[volume_source("lung2")])
    if missing:
        pytest.fail("required source pyradiomics not fetched: run `make data`")
    sources = rob._Sources(1, None)
    spec = _spec("ct-lung2-128-i0-5e4")
    case, again = rob.build_case(spec, sources), rob.build_case(spec, sources)  # the reference is loaded once
    bench = case.bench
    assert bench.hq.shape == (1, 128, 128)
    assert bench.spacing[0] == pytest.approx(512 * 0.627 / 128, rel=0.01)  # 4x the pixel, same extent
    np.testing.assert_array_equal(bench.lq, again.bench.lq)
    assert case.info["views"] == 256 and 20 < np.nanmean(case.info["noise_hu"]) < 200


def test_a_missing_source_is_skipped_with_its_reason():
    spec = rob.CaseSpec("real-missing-x4", "mri-sr", rob.PYDICOM_PREFIX + "no_such_file.dcm", None, 4.0, "missing")
    cases, skipped = rob.build_cases([spec])
    assert cases == [] and "real-missing-x4" in skipped and skipped["real-missing-x4"]


# ---- the table ------------------------------------------------------------------------------------

def _method(name, psnrs, ssims, slow=False, case="c"):
    slices = [SliceResult(case, i, p, s, 1.0, 0.0) for i, (p, s) in enumerate(zip(psnrs, ssims)) if p is not None]
    return MethodResult(name, f"{name}-param", slow, slices)


def test_gain_and_worst_slice_by_hand():
    methods = [_method("input", [20, 21, 22], [0.5, 0.5, 0.5]),
               _method("gaussian", [25, 26, 27], [0.7, 0.7, 0.7]),
               _method("nlm", [28, 24, 29], [0.8, 0.6, 0.9]),  # mean 27.0 > gaussian 26.0: the best
               _method("bm3d", [None, 30.0, None], [None, 0.9, None], slow=True),
               _method("model", [28.5, 23.0, 29.0], [0.85, 0.7, 0.9])]
    result = TaskResult("ct-denoise", 3, [("c", 1)], 3, methods, ("c", 1), {})
    (row,) = rob.case_rows(result, ["model"], "what")
    assert row.best_filter == "nlm" and row.best_filter_parameter == "nlm-param"
    assert row.best_filter_psnr == pytest.approx(27.0) and row.method_psnr == pytest.approx(80.5 / 3)
    assert row.gain_db == pytest.approx(80.5 / 3 - 27.0)
    assert row.worst_slice_gain_db == pytest.approx(min(0.5, -1.0, 0.0)) == pytest.approx(-1.0)
    assert row.ssim_diff == pytest.approx(np.mean([0.85, 0.7, 0.9]) - np.mean([0.8, 0.6, 0.9]))
    assert row.input_psnr == pytest.approx(21.0) and row.slices == 3
    assert row.slow_best == "bm3d" and row.slow_gain_db == pytest.approx(23.0 - 30.0) and row.slow_slices == 1
    assert not row.bar_met  # -0.17 dB on the mean, but 7 dB below BM3D on its subset
    row.slow_gain_db = -0.5
    assert row.bar_met  # exactly 0.5 dB below is still within the bar
    (task,) = rob.task_summary([row])
    assert task["worst_slice_gain_db"] == pytest.approx(-1.0) and task["bar_met"]


def _oracle_case():
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:48, :48]
    hq = np.stack([100 + 40 * np.sin(x / (4.0 + i)) * np.cos(y / 6.0) for i in range(3)]).astype(np.float32)
    lq = (hq + rng.normal(0, 12, hq.shape)).astype(np.float32)
    return BenchCase("synthetic", hq, lq, (2.0, 2.0), np.full(3, 1 / 12), np.arange(3))


class _Lookup:
    """A 'model' that answers each LQ slice with a fixed image: the reference, or the input itself."""

    tasks = ("pet-synthesis",)

    def __init__(self, name, case, perfect):
        self.name = name
        self.table = {lq.tobytes(): (hq if perfect else lq) for lq, hq in zip(case.lq, case.hq)}

    def restore(self, lq, task, spacing):
        return self.table[np.asarray(lq, dtype=np.float32).tobytes()].copy()


def test_a_method_returning_the_reference_has_the_highest_gain():
    bench = _oracle_case()
    spec = rob.CaseSpec("synthetic", "pet-synthesis", "none", None, 1 / 12, "synthetic")
    case = rob.RobustCase(spec, bench)
    models = [_Lookup("oracle", bench, True), _Lookup("copy", bench, False)]
    methods = make_baselines(["input", "gaussian"]) + models
    result, rows = rob.score_case(case, methods, ["oracle", "copy"])
    oracle, copy = rows
    assert oracle.best_filter == copy.best_filter == "gaussian"
    assert oracle.gain_db > copy.gain_db and oracle.worst_slice_gain_db > copy.worst_slice_gain_db
    assert copy.gain_db < 0 and copy.method_psnr == pytest.approx(copy.input_psnr)
    gaussian = next(m for m in result.methods if m.name == "gaussian")
    per_slice = [slice_scores(lq, hq, "pet-synthesis").psnr - s.psnr
                 for lq, hq, s in zip(bench.lq, bench.hq, gaussian.slices)]
    assert copy.worst_slice_gain_db == pytest.approx(min(per_slice))
    assert copy.gain_db == pytest.approx(np.mean(per_slice))


# ---- the command ----------------------------------------------------------------------------------

def test_the_command_runs_end_to_end_on_a_tiny_subset(tiny_weights, tmp_path, capsys):
    pytest.importorskip("pydicom")
    out = tmp_path / "robustness"
    code = rob.main(["--out", str(out), "--only", "real-ct-neck128-i0-5e4", "--filters", "gaussian",
                     "--bm3d-slices", "0", "--model", f"tiny={tiny_weights}", "--model", f"again={tiny_weights}"])
    assert code == 0
    payload = json.loads((out / "results.json").read_text())
    case, again = payload["cases"]  # two models scored against the same tuned filter
    assert again["method"] == "again" and again["best_filter_psnr"] == case["best_filter_psnr"]
    assert again["method_psnr"] == pytest.approx(case["method_psnr"])  # the same weights
    assert [t["method"] for t in payload["tasks"]] == ["tiny", "again"]
    assert case["case"] == "real-ct-neck128-i0-5e4" and case["method"] == "tiny" and case["best_filter"] == "gaussian"
    assert case["gain_db"] == pytest.approx(case["method_psnr"] - case["best_filter_psnr"])
    assert case["worst_slice_gain_db"] == pytest.approx(case["gain_db"])  # one slice
    assert case["info"]["source"] == "pydicom:CT_small.dcm"
    assert payload["tasks"][0]["task"] == "ct-denoise"
    text = (out / "results.md").read_text()
    assert "| real-ct-neck128-i0-5e4 |" in text
    assert "Command: `python -m DiffCodeRestoreLib.benchmark.robustness" in text
    assert "worst slice gain" in capsys.readouterr().out
    assert rob.main(["--out", str(out), "--only", "no-such-case", "--model", f"tiny={tiny_weights}"]) == 2
    assert rob.main(["--out", str(out), "--only", "real-ct-neck128-i0-5e4", "--model", f"tiny={tiny_weights}",
                     "--model", f"tiny={tiny_weights}"]) == 2  # two models under one name
