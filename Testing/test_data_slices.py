"""The slice-pair datasets: split by volume, headline levels, geometry, noise records, caching.

Small variants (``limit``) are built from the real fetched images into a temporary cache, so the
tests run in seconds and never touch the full datasets.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from DiffCodeRestoreLib.data import recipes, slices
from DiffCodeRestoreLib.data.fetch import is_fetched
from DiffCodeRestoreLib.data.slices import build, dataset_dir, load_cases, read_manifest
from DiffCodeRestoreLib.data.sources import SOURCES
from DiffCodeRestoreLib.data.volumes import PUBLIC_TEST_VOLUMES, TRAINING_VOLUMES, volume_source
from DiffCodeRestoreLib.data import cache_dir

QUIET = {"log": lambda line: None}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache that reads the real fetched sources (``make data``) and keeps its own datasets."""
    root = tmp_path_factory.mktemp("cache")
    (root / "sources").symlink_to(cache_dir() / "sources", target_is_directory=True)
    return root


def _need(task: str, split: str) -> None:
    names = recipes.PARAMETERS[(task, split)].get("volume")
    missing = [n for n in ([names] if names else []) if not is_fetched(SOURCES[volume_source(n)])]
    if missing:
        pytest.skip(f"optional Debian source for {missing} not available on this machine")


@pytest.fixture
def small_ct_training(monkeypatch):
    """CT training recipe on small grids (the projector's cost grows with the cube of the size)."""
    params = dict(recipes.PARAMETERS[("ct-denoise", "train")], pixel_mm=[1.2, 1.5], size_px=[128, 160])
    monkeypatch.setitem(recipes.PARAMETERS, ("ct-denoise", "train"), params)


@pytest.fixture
def quick_pet_training(monkeypatch):
    """PET training recipe with few MLEM iterations (the anatomy and dose sampling are what is tested)."""
    params = dict(recipes.PARAMETERS[("pet-synthesis", "train")], iterations=4)
    monkeypatch.setitem(recipes.PARAMETERS, ("pet-synthesis", "train"), params)


@pytest.mark.parametrize("task, shape, spacing, level", [
    ("mri-sr", (217, 181), (1.0, 1.0), 4.0),
    ("ct-denoise", (512, 512), (0.627, 0.627), 5e4),
    ("pet-synthesis", (128, 128), (2.0, 2.0), 1 / 12),
])
def test_public_test_split_is_the_headline(cache, task, shape, spacing, level):
    _need(task, "test")
    cases = load_cases(task, "test", cache=cache, limit=1)
    assert [case.name for case in cases] == list(PUBLIC_TEST_VOLUMES[task])
    case = cases[0]
    assert case.hq.shape[1:] == case.lq.shape[1:] == shape and case.hq.dtype == case.lq.dtype == np.float32
    assert np.allclose(case.spacing, spacing, atol=1e-3)
    assert np.allclose(case.level, level)
    assert np.all(np.isfinite(case.lq)) and not np.allclose(case.hq, case.lq)
    record = read_manifest(task, "test", cache)["cases"][0]
    if task == "ct-denoise":
        assert 30 < record["noise_hu"][0] < 100  # evaluation.md: ~30 (head) to ~85 HU (abdomen) at 5e4
        assert case.hq.min() >= -1024 and abs(float(np.mean(case.lq - case.hq))) < 5
    if task == "pet-synthesis":  # counts calibrated: low dose is noisier, the mean activity is kept
        assert abs(record["lq_mean"][0] / record["hq_mean"][0] - 1) < 0.05
        assert record["lq_noise_rel"][0] > 0.02


def test_mri_training_is_diverse_and_noisy(cache):
    cases = load_cases("mri-sr", "train", cache=cache, limit=2)
    manifest = read_manifest("mri-sr", "train", cache)
    assert {entry["name"].rsplit("-", 1)[0] for entry in manifest["cases"]} == set(recipes.used_volumes("mri-sr", "train"))
    pixels = [case.spacing[0] for case in cases]
    assert min(pixels) >= 0.39 and max(pixels) <= 1.52 and max(pixels) / min(pixels) > 1.3
    for case, entry in zip(cases, manifest["cases"]):
        assert set(np.unique(case.level)) <= {2.0, 4.0}
        assert min(case.hq.shape[1:]) >= 128 and max(case.hq.shape[1:]) <= 512
        low, high = recipes.PARAMETERS[("mri-sr", "train")]["snr"]
        assert all(low <= snr <= high for snr in entry["snr"]) and all(s > 0 for s in entry["rician_sigma"])
        if entry["background_noise"]:  # Rician floor in the air around the head
            assert float(np.median(case.hq[:, :4, :4])) > 0


def test_ct_training_aims_dose_at_the_noise_range(cache, small_ct_training):
    cases = load_cases("ct-denoise", "train", cache=cache, limit=3)
    manifest = read_manifest("ct-denoise", "train", cache)
    assert {c.name.rsplit("-", 1)[0] for c in cases} == set(recipes.used_volumes("ct-denoise", "train"))
    low, high = recipes.PARAMETERS[("ct-denoise", "train")]["noise_hu"]
    for case, entry in zip(cases, manifest["cases"]):
        assert case.hq.shape[1] == case.hq.shape[2] and 128 <= case.hq.shape[1] <= 160
        assert 1.15 < case.spacing[0] < 1.55 and len(set(case.level.tolist())) == 1
        assert low <= entry["target_noise_hu"] <= high and 10 < entry["reference_noise_hu"] < 60
        measured = np.nanmedian(np.array(entry["noise_hu"], dtype=float))
        assert 0.5 < measured / entry["target_noise_hu"] < 2.5  # aimed; starvation can push it up
        assert abs(float(np.mean(case.lq - case.hq))) < 0.2 * measured  # zero-mean noise


def test_pet_training_uses_the_mni_anatomy_over_dose_range(cache, quick_pet_training):
    cases = load_cases("pet-synthesis", "train", cache=cache, limit=1)
    manifest = read_manifest("pet-synthesis", "train", cache)
    assert manifest["volumes"][:3] == ["mni152_gm", "mni152_wm", "mni152_mask"]
    for case, entry in zip(cases, manifest["cases"]):
        assert case.hq.shape[1:] == (128, 128) and np.allclose(case.spacing, 2.0, atol=0.02)
        assert 1 / 20 - 1e-6 <= entry["dose_fraction"] <= 1 / 4 + 1e-6 and 1e6 <= entry["full_counts"] <= 1e7
        assert np.allclose(case.level, entry["dose_fraction"])


def test_pet_training_anatomy_draws_are_at_the_test_level(monkeypatch):
    """The ceiling's second anatomy: the template's maps at the test's counts and dose, HQ nearer the
    noiseless image than LQ, and the same draws for the same seed."""
    params = dict(recipes.PARAMETERS[("pet-synthesis", "test")], iterations=4)
    monkeypatch.setitem(recipes.PARAMETERS, ("pet-synthesis", "test"), params)
    hq, lq, clean, spacing = recipes.pet_training_anatomy_draws(slices=2)
    assert hq.shape == lq.shape == clean.shape == (2, 128, 128) and np.allclose(spacing, 2.0, atol=0.02)
    inside = clean > 0.5
    assert np.mean((hq - clean)[inside] ** 2) < 0.2 * np.mean((lq - clean)[inside] ** 2)  # 1/12 of the counts
    np.testing.assert_array_equal(recipes.pet_training_anatomy_draws(slices=2)[1], lq)


def test_split_is_by_volume(cache, quick_pet_training, small_ct_training):
    for task in TRAINING_VOLUMES:  # the same small recipes as above: these builds are cached
        build(task, "train", cache=cache, limit={"mri-sr": 2, "ct-denoise": 3, "pet-synthesis": 1}[task], **QUIET)
        train = set(read_manifest(task, "train", cache)["volumes"])
        assert train <= set(TRAINING_VOLUMES[task])
        assert not train & set(PUBLIC_TEST_VOLUMES[task])
    for task in PUBLIC_TEST_VOLUMES:
        assert recipes.PARAMETERS[(task, "test")]["volume"] in PUBLIC_TEST_VOLUMES[task]


def test_cache_is_reused_and_rebuilt_only_on_change(cache):
    folder = build("mri-sr", "test", cache=cache, limit=2, **QUIET)
    stamp = (folder / "colin27.npz").stat().st_mtime_ns
    start = time.monotonic()
    assert build("mri-sr", "test", cache=cache, limit=2, **QUIET) == folder
    assert time.monotonic() - start < 1.0 and (folder / "colin27.npz").stat().st_mtime_ns == stamp
    key = read_manifest("mri-sr", "test", cache)["key"]
    build("mri-sr", "test", cache=cache, limit=3, **QUIET)  # other parameters: a new key, rebuilt
    assert read_manifest("mri-sr", "test", cache)["key"] != key
    assert len(load_cases("mri-sr", "test", cache=cache, limit=3)[0].hq) == 3
    build("mri-sr", "test", cache=cache, limit=3, force=True, **QUIET)
    assert (folder / "colin27.npz").stat().st_mtime_ns != stamp


def test_failed_build_keeps_the_previous_dataset(cache, monkeypatch):
    folder = build("mri-sr", "test", cache=cache, limit=2, **QUIET)
    before = json.loads((folder / "manifest.json").read_text())

    original = recipes.make_cases

    def broken(*args, **kwargs):
        yield from original("mri-sr", "test", recipes.parameters("mri-sr", "test", 2), cache)
        raise RuntimeError("simulator crashed")

    monkeypatch.setattr(slices.recipes, "make_cases", broken)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        build("mri-sr", "test", cache=cache, limit=2, force=True, **QUIET)
    assert json.loads((folder / "manifest.json").read_text()) == before
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []


def test_npz_files_hold_plain_arrays_only(cache):
    folder = build("mri-sr", "test", cache=cache, limit=1, **QUIET)
    with np.load(folder / "colin27.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["hq", "level", "lq", "spacing"]
        assert all(data[name].dtype != object for name in data.files)


def test_bad_names_are_clear_errors(cache):
    with pytest.raises(ValueError, match="Unknown task"):
        build("denoise", "test", cache=cache)
    with pytest.raises(ValueError, match="split"):
        build("ct-denoise", "val", cache=cache)
    with pytest.raises(ValueError, match="limit"):
        build("ct-denoise", "test", cache=cache, limit=0)
    assert dataset_dir("ct-denoise", "test", cache) == cache / "datasets" / "ct-denoise" / "test"


def test_mixed_split_adds_synthetic_pairs_in_a_bank_of_its_own(cache):
    """The mixed split is the real training recipe plus synthetic cases, in its own folder and key, so the
    real-only recipe is untouched; TotalSegmentator (the adaptation benchmark's CT site) is never drawn."""
    build("mri-sr", "train", cache=cache, limit=1, **QUIET)
    real = read_manifest("mri-sr", "train", cache)
    build("mri-sr", "train-mixed", cache=cache, limit=1, **QUIET)
    mixed = read_manifest("mri-sr", "train-mixed", cache)
    assert mixed["key"] != real["key"] and dataset_dir("mri-sr", "train-mixed", cache).name == "train-mixed"
    real_names = [entry["name"] for entry in real["cases"]]
    mixed_names = [entry["name"] for entry in mixed["cases"]]
    assert mixed_names[:len(real_names)] == real_names  # the same real part, then the synthetic cases
    synthetic = [entry for entry in mixed["cases"] if entry["name"].startswith("synth-")]
    assert len(synthetic) == 1 and synthetic[0]["synthetic"] and synthetic[0]["slices"] == 1
    assert 2.0 <= synthetic[0]["level"][0] <= 4.0  # a continuous k-space factor
    for task in recipes.SYNTHETIC:
        assert "totalsegmentator" not in recipes.parameters(task, "train-mixed")["synthetic"]["shares"]
    case = next(c for c in load_cases("mri-sr", "train-mixed", cache=cache, limit=1) if c.name.startswith("synth-"))
    assert case.hq.shape == case.lq.shape and np.all(np.isfinite(case.lq)) and not np.allclose(case.hq, case.lq)
    assert all(entry["name"].startswith("synth-") is False for entry in read_manifest("mri-sr", "train", cache)["cases"])


def test_wide_split_widens_ct_and_pet_in_banks_of_their_own(cache):
    """The wide split is the training recipe over the ranges the robustness suite lost on: CT pixels to 3 mm,
    matrices from 96 and noise 5-400 HU, PET more dose levels over a wider range; MRI keeps its recipe; the
    wide-mixed split adds synthetic pairs for CT and PET only."""
    train, wide = recipes.parameters("ct-denoise", "train"), recipes.parameters("ct-denoise", "train-wide")
    assert wide["pixel_mm"][0] < train["pixel_mm"][0] and wide["pixel_mm"][1] >= 3.0
    assert wide["size_px"][0] < 128 and wide["noise_hu"][0] < train["noise_hu"][0] and wide["noise_hu"][1] >= 352
    pet, pet_wide = recipes.parameters("pet-synthesis", "train"), recipes.parameters("pet-synthesis", "train-wide")
    assert pet_wide["cases"] > pet["cases"] and max(pet_wide["dose_fraction"]) > max(pet["dose_fraction"])
    assert recipes.parameters("mri-sr", "train-wide") == recipes.parameters("mri-sr", "train")
    assert [task for task in TRAINING_VOLUMES if "synthetic" in recipes.parameters(task, "train-wide-mixed")] == [
        "ct-denoise", "pet-synthesis"]
    assert not any("synthetic" in recipes.parameters(task, "train-wide") for task in TRAINING_VOLUMES)

    build("ct-denoise", "train-wide", cache=cache, limit=3, **QUIET)
    manifest = read_manifest("ct-denoise", "train-wide", cache)
    assert dataset_dir("ct-denoise", "train-wide", cache).name == "train-wide"
    assert manifest["parameters"]["noise_hu"] == wide["noise_hu"]
    sides = [entry["shape"][-1] for entry in manifest["cases"]]
    pixels = [entry["spacing"][0] for entry in manifest["cases"]]
    assert all(96 <= side <= 512 for side in sides) and all(0.29 < p < 3.1 for p in pixels)
    # Deterministic draws (fixed seed): some case lies outside the old recipe's geometry.
    assert any(side < 128 for side in sides) or any(p > 1.5 for p in pixels)
    targets = [entry["target_noise_hu"] for entry in manifest["cases"]]
    assert all(5.0 <= t <= 400.0 for t in targets)
    assert any(t > 150.0 or t < 10.0 for t in targets)  # and some dose outside the old noise range
