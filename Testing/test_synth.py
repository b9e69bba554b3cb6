"""The synthetic-image engine (data/synth): determinism, ranges and units, geometry draws, the MRI
factor and CT dose ranges, the source/task permissions, and speed. Small images keep it fast."""

import dataclasses
import json
import math
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffCodeRestoreLib import metrics
from DiffCodeRestoreLib.data.fetch import is_fetched
from DiffCodeRestoreLib.data.sources import SOURCES
from DiffCodeRestoreLib.data.synth import (LabelMap, default_params, draw_grid, draw_synthetic, kspace_truncate_axes,
                                           label_volume, random_geometry, random_shapes_labels, synth_pair,
                                           synthetic_cases)
from DiffCodeRestoreLib.data.synth.labels import LOADERS, itk_class_labels, label_sources_present, lung1_hu_labels
from DiffCodeRestoreLib.data.synth.params import GeometryParams, ShapeParams
from DiffCodeRestoreLib.data.synth.tissues import TISSUES, TOTALSEGMENTATOR_V2, tissue_for_name
from DiffCodeRestoreLib.simulate import mri
from DiffCodeRestoreLib.tasks import intensity_scale

torch.set_num_threads(1)
NO_GEOMETRY = {task: default_params(task).replace(geometry=None) for task in ("mri-sr", "ct-denoise", "pet-synthesis")}


def _pin(task, **ranges):
    """Default ranges with some of the task's own ranges replaced (e.g. i0=(3e3, 3e3))."""
    params = NO_GEOMETRY[task]
    field = {"mri-sr": "mri", "ct-denoise": "ct", "pet-synthesis": "pet"}[task]
    return params.replace(**{field: dataclasses.replace(getattr(params, field), **ranges)})


def _body_labels(size, seed, pixel_mm):
    return random_shapes_labels((size, size), seed, ShapeParams(body_probability=1.0), pixel_mm)


# ---- label maps ------------------------------------------------------------------------------------

def test_random_shapes_are_deterministic_varied_and_integer():
    first = random_shapes_labels((96, 120), 7)
    assert first.shape == (96, 120) and first.dtype == np.int32 and first.min() >= 0
    np.testing.assert_array_equal(first, random_shapes_labels((96, 120), 7))
    assert not np.array_equal(first, random_shapes_labels((96, 120), 8))
    assert len(np.unique(first)) >= 4


def test_random_shapes_draw_thin_vessels_and_a_body():
    only_vessels = ShapeParams(cells=(1, 1), blob_fields=(0, 0), dots=(0, 0), sheets=(0, 0), vessels=(3, 3),
                               vessel_radius_px=(0.5, 0.5), body_probability=0.0, fat_rim_probability=0.0)
    labels = random_shapes_labels((128, 128), 3, only_vessels)
    tubes = labels > 1
    assert 0 < tubes.mean() < 0.05  # one-pixel lines: long but thin
    assert len(np.unique(labels[tubes])) == 3
    rows, cols = np.nonzero(tubes)
    assert max(np.ptp(rows), np.ptp(cols)) > 25
    with_body = random_shapes_labels((128, 128), 4, ShapeParams(body_probability=1.0), pixel_mm=3.0)
    assert with_body[0, 0] == 0 and with_body[64, 64] > 0
    assert (with_body > 0).any(axis=0).sum() * 3.0 <= 450 + 3.0  # body_max_mm


def test_tissue_names_and_totalsegmentator_table():
    assert len(TOTALSEGMENTATOR_V2) == 117
    assert (TOTALSEGMENTATOR_V2[1], TOTALSEGMENTATOR_V2[21], TOTALSEGMENTATOR_V2[51], TOTALSEGMENTATOR_V2[90],
            TOTALSEGMENTATOR_V2[117]) == ("spleen", "urinary_bladder", "heart", "brain", "costal_cartilages")
    expected = {"kidney_left": "kidney", "urinary_bladder": "bladder", "gallbladder": "fluid", "heart": "heart",
                "liver": "liver", "liver_tumor": "lesion", "brain": "brain_gm", "vertebrae_L1": "bone",
                "aorta": "blood", "lung_upper_lobe_left": "lung", "gluteus_maximus_left": "muscle"}
    assert {name: tissue_for_name(name) for name in expected} == expected
    assert tissue_for_name("unknown_structure") is None
    for tissue in TISSUES.values():
        assert -1024 <= tissue.hu[0] <= tissue.hu[1] <= 3071 and tissue.suv[0] >= 0 and tissue.mu_511 >= 0


def test_label_volume_reads_any_integer_volume_and_refuses_test_files(tmp_path):
    labels = np.zeros((4, 20, 24), np.int16)
    labels[:, 5:15, 5:12] = 5  # TotalSegmentator v2: liver
    labels[:, 5:15, 14:20] = 90  # brain
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.5, 1.5, 3.0))
    path = tmp_path / "seg.nii.gz"
    sitk.WriteImage(image, str(path))
    hu = np.full(labels.shape, -1000.0, np.float32)
    hu[:, 2:18, 2:22] = -100.0  # fat around the organs
    loaded = label_volume(path, names=TOTALSEGMENTATOR_V2, fill_hu=hu)
    assert loaded.spacing == (3.0, 1.5, 1.5) and loaded.labels.shape == (4, 20, 24)
    assert loaded.classes[5] == "liver" and loaded.classes[90] == "brain_gm"
    filled = ~np.isin(loaded.labels, (0, 5, 90))
    kinds = np.array([loaded.classes[int(v)] for v in loaded.labels[filled]])
    assert (kinds == "fat").mean() > 0.6  # the body around the organs (its edge smoothed into other classes)
    assert np.all(loaded.labels[labels > 0] == labels[labels > 0])  # organ labels kept
    from_array = label_volume(labels.astype(np.float32), spacing=(3.0, 1.5, 1.5))
    assert from_array.labels.dtype.kind in "ui" and from_array.classes == {}
    with pytest.raises(ValueError, match="integers"):
        label_volume(labels + 0.5, spacing=(3.0, 1.5, 1.5))
    with pytest.raises(ValueError, match="spacing"):
        label_volume(labels)
    reserved = tmp_path / "example_seg_dicom.nii.gz"
    sitk.WriteImage(image, str(reserved))
    with pytest.raises(ValueError, match="evaluation"):
        label_volume(reserved)


def test_sources_only_train_the_tasks_they_are_marked_for():
    assert "pet-synthesis" not in LOADERS["itk_classes"][1]  # the PET public-test anatomy
    assert LOADERS["aal"][1] == ("pet-synthesis",)  # drawn on Colin27, the MRI public test subject
    assert "itk_classes" not in label_sources_present("pet-synthesis")
    assert "aal" not in label_sources_present("mri-sr") + label_sources_present("ct-denoise")
    restricted = LabelMap("itk-like", np.ones((8, 8), np.uint8), (1.0, 1.0), tasks=("mri-sr", "ct-denoise"))
    with pytest.raises(ValueError, match="may not train"):
        restricted.pair("pet-synthesis", 0)


@pytest.mark.skipif(not (is_fetched(SOURCES["itk-examples"]) and is_fetched(SOURCES["pyradiomics"])),
                    reason="registry sources not fetched (make data)")
def test_registry_label_maps_load_with_classes():
    itk = itk_class_labels()
    assert itk.labels.ndim == 3 and itk.spacing == (2.0, 3.0, 2.0) and set(np.unique(itk.labels)) <= set(range(7))
    lung = lung1_hu_labels()
    assert lung.labels.shape == (48, 512, 512) and lung.spacing[0] == 5.0
    present = {lung.classes[int(v)] for v in np.unique(lung.labels) if v > 0}
    assert {"lung", "fat", "soft_tissue", "bone"} <= present
    hq, lq, info = lung.pair("ct-denoise", 5, default_params("ct-denoise").replace(
        geometry=GeometryParams(pixel_mm=(1.5, 1.5), matrix=(96, 96))))
    assert hq.shape == (96, 96) and info["geometry"]["plane"].startswith("across axis 0")  # 5 mm slices: axial only


# ---- geometry ---------------------------------------------------------------------------------------

def test_geometry_draws_stay_within_the_stated_ranges():
    params = GeometryParams()
    for seed in range(300):
        pixel, (rows, cols) = draw_grid(np.random.default_rng(seed), params)
        assert 0.3 <= pixel <= 3.0
        assert 96 <= rows <= 512 and 96 <= cols <= 512
        assert max(rows, cols) * pixel <= 500.0 * 1.34 + pixel  # FOV cap (aspect may widen one side)


def test_random_geometry_is_nearest_neighbour_deterministic_and_rotates():
    rng = np.random.default_rng(0)
    volume = np.zeros((40, 50, 60), np.uint8)
    volume[5:35, 10:40, 10:50] = rng.integers(1, 9, (30, 30, 40))
    grid = (1.0, (100, 120))
    out, spacing, info = random_geometry(volume, (1.0, 1.0, 1.0), 3, grid=grid)
    assert out.shape == (100, 120) and spacing == (1.0, 1.0) and out.dtype == np.int32
    assert set(np.unique(out)) <= set(np.unique(volume))  # no interpolated label values
    again, _, _ = random_geometry(volume, (1.0, 1.0, 1.0), 3, grid=grid)
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, random_geometry(volume, (1.0, 1.0, 1.0), 4, grid=grid)[0])
    assert info["foreground"] >= 0.05 and 0 <= info["rotation_deg"] < 360
    square = np.zeros((64, 64), np.int32)
    square[16:48, 28:36] = 1  # a vertical bar
    turned = [random_geometry(square, (1.0, 1.0), s, GeometryParams(elastic_mm=(0, 0)), grid=(1.0, (96, 96)))
              for s in range(12)]
    angles = [info["rotation_deg"] for _, _, info in turned]
    assert np.ptp(angles) > 180  # any orientation
    with pytest.raises(ValueError, match="integer"):
        random_geometry(square.astype(np.float32), (1.0, 1.0), 0)


# ---- pairs: determinism, units, levels --------------------------------------------------------------

@pytest.mark.parametrize("task", ["mri-sr", "ct-denoise", "pet-synthesis"])
def test_pairs_are_deterministic_and_in_units(task):
    size, pixel = (64, 3.0) if task == "pet-synthesis" else (96, 1.5)
    labels = _body_labels(size, 11, pixel)
    params = NO_GEOMETRY[task]
    hq, lq, info = synth_pair(task, labels, (pixel, pixel), params, seed=21)
    hq2, lq2, info2 = synth_pair(task, labels, (pixel, pixel), params, seed=21)
    np.testing.assert_array_equal(hq, hq2)
    np.testing.assert_array_equal(lq, lq2)
    assert json.dumps(info, sort_keys=True) == json.dumps(info2, sort_keys=True)
    hq3, lq3, _ = synth_pair(task, labels, (pixel, pixel), params, seed=22)
    assert not np.array_equal(hq, hq3) and not np.array_equal(lq, lq3)
    assert hq.shape == lq.shape == labels.shape and hq.dtype == lq.dtype == np.float32
    assert np.all(np.isfinite(hq)) and np.all(np.isfinite(lq))
    if task == "ct-denoise":
        assert hq.min() >= -1024 and hq.max() <= 3071 and lq.min() >= -1024 and lq.max() <= 3071
        assert info["views"] == 2 * size and 3e3 <= info["i0"] <= 1e7
    else:
        assert hq.min() >= 0 and lq.min() >= 0
    if task == "pet-synthesis":
        assert 1 / 20 <= info["dose_fraction"] <= 1 / 4 and 1e6 <= info["full_counts"] <= 1e7
        assert hq.max() > 0.5  # activity survives the emission simulation, in SUV-like units


def test_pair_with_geometry_from_a_3d_map_and_hq_independent_of_the_degradation():
    volume = np.zeros((30, 40, 40), np.uint8)
    volume[5:25, 5:35, 5:35] = 1
    volume[10:20, 12:28, 12:28] = 2
    small = default_params("mri-sr").replace(geometry=GeometryParams(pixel_mm=(0.8, 1.2), matrix=(96, 128),
                                                                     fov_mm=(48, 200)))
    hq, lq, info = synth_pair("mri-sr", volume, (1.0, 1.0, 1.0), small, seed=5)
    assert 96 <= hq.shape[0] <= 128 and 0.8 <= info["geometry"]["pixel_mm"] <= 1.2
    hq_other_factor, lq_other, _ = synth_pair("mri-sr", volume, (1.0, 1.0, 1.0),
                                              small.replace(mri=dataclasses.replace(small.mri, factor=(3.9, 3.9))), 5)
    np.testing.assert_array_equal(hq, hq_other_factor)  # separate random streams
    assert not np.array_equal(lq, lq_other)


def test_mri_factor_is_continuous_in_2_to_4_and_sometimes_anisotropic():
    labels = random_shapes_labels((48, 48), 1)
    factors, anisotropic = [], 0
    for seed in range(60):
        _, _, info = synth_pair("mri-sr", labels, (1.0, 1.0), NO_GEOMETRY["mri-sr"], seed)
        factors += [info["factor_rows"], info["factor_cols"]]
        anisotropic += info["anisotropic"] and info["factor_rows"] != info["factor_cols"]
        assert math.isclose(info["level"], math.sqrt(info["factor_rows"] * info["factor_cols"]))
    factors = np.array(factors)
    assert factors.min() >= 2.0 and factors.max() <= 4.0
    assert len(np.unique(np.round(factors, 3))) > 50  # not only 2 and 4
    assert ((factors > 2.2) & (factors < 3.8)).mean() > 0.6
    assert 5 <= anisotropic <= 35  # about 30 %


def test_anisotropic_truncation_cuts_each_axis_to_its_own_band():
    image = np.random.default_rng(2).random((64, 80)) + 10.0
    np.testing.assert_allclose(kspace_truncate_axes(image, 3.0, 3.0 + 1e-9), mri.kspace_truncate(image, 3.0),
                               rtol=1e-5)
    out = kspace_truncate_axes(image, 2.0, 4.0).astype(np.float64)
    spectrum = np.abs(np.fft.fft2(out)) ** 2
    k_rows = np.abs(np.round(np.fft.fftfreq(64) * 64))[:, None]
    k_cols = np.abs(np.round(np.fft.fftfreq(80) * 80))[None, :]
    outside = (k_rows > mri.band_size(64, 2.0) / 2) | (k_cols > mri.band_size(80, 4.0) / 2)
    assert spectrum[outside].sum() / spectrum.sum() < 1e-12
    assert spectrum[(k_rows > 10) & (k_rows < 16) & (k_cols < 5)].sum() > 0  # rows keep a wider band


def test_ct_dose_range_reaches_photon_starved_and_nearly_clean():
    """AMIR protocol (-160..240 HU, range 400): the ends of the I0 range give input PSNR < 20 dB
    and > 40 dB on body-sized slices; drawn doses spread over both sides."""
    low, high = default_params("ct-denoise").ct.i0
    for seed, pixel in ((1, 2.4), (2, 2.0), (3, 2.6)):  # random bodies in 256-333 mm fields (128 x 128)
        labels = _body_labels(128, seed, pixel)
        hq, starved, _ = synth_pair("ct-denoise", labels, (pixel, pixel), _pin("ct-denoise", i0=(low, low)), seed)
        _, clean, _ = synth_pair("ct-denoise", labels, (pixel, pixel), _pin("ct-denoise", i0=(high, high)), seed)
        assert metrics.slice_scores(starved, hq, "ct-denoise").psnr < 20.0
        assert metrics.slice_scores(clean, hq, "ct-denoise").psnr > 40.0
    psnr = []
    for seed in range(16):
        pixel = 1.0 + 0.1 * seed
        hq, lq, _ = synth_pair("ct-denoise", _body_labels(96, seed, pixel), (pixel, pixel), NO_GEOMETRY["ct-denoise"],
                               seed)
        psnr.append(metrics.slice_scores(lq, hq, "ct-denoise").psnr)
    assert min(psnr) < 20.0 < 40.0 < max(psnr)


def test_mri_reference_keeps_noise_and_ct_reference_texture():
    labels = np.ones((96, 96), np.int32)
    labels[30:60, 30:60] = 2
    hq, _, info = synth_pair("mri-sr", labels, (1.0, 1.0), _pin("mri-sr", snr=(20.0, 20.0), texture=(0.0, 0.0)), 3)
    assert info["mri_snr"] == pytest.approx(20.0)
    flat = hq[5:25, 5:25]
    assert flat.std() > 0.01 * flat.mean()  # Rician noise in the reference
    classes = {1: "soft_tissue", 2: "liver"}
    hq_ct, _, info_ct = synth_pair("ct-denoise", labels, (1.0, 1.0), NO_GEOMETRY["ct-denoise"], 3, classes=classes)
    assert info_ct["tissues"] == {"1": "soft_tissue", "2": "liver"}
    assert 10.0 <= np.median(hq_ct[5:25, 5:25]) <= 70.0 and hq_ct[5:25, 5:25].std() > 1.0


def test_bank_draws_and_cases_fit_the_slice_dataset():
    first = draw_synthetic("mri-sr", 4, maps={})
    second = draw_synthetic("mri-sr", 4, maps={})
    np.testing.assert_array_equal(first[0], second[0])
    assert first[2]["source"] == "shapes"
    small = default_params("mri-sr").replace(geometry=GeometryParams(pixel_mm=(1.0, 2.0), matrix=(96, 112)))
    cases = list(synthetic_cases("mri-sr", {"cases": 2, "slices_per_case": 3, "seed": 9}, params=small, maps={}))
    assert [c.name for c in cases] == ["synth-shapes-000", "synth-shapes-001"]
    for case in cases:
        assert case.hq.shape == case.lq.shape and case.hq.shape[0] == 3 and case.hq.dtype == np.float32
        assert 2.0 <= case.level.min() and case.level.max() <= 4.0
        assert len(case.info["lq_error_rel"]) == 3
        json.dumps(case.info)  # the manifest is JSON
        scales = [intensity_scale("mri-sr", lq)[1] for lq in case.lq]  # one a.u. scale per case, as per volume
        np.testing.assert_allclose(scales, scales[0], rtol=1e-4)


def test_speed_per_256_pair():
    """Generous bounds (the machine is shared); docs/training-data.md reports the measured times."""
    labels = random_shapes_labels((256, 256), 0)
    for task, bound in (("mri-sr", 2.0), ("ct-denoise", 10.0)):
        start = time.perf_counter()
        synth_pair(task, labels, (1.0, 1.0), NO_GEOMETRY[task], 0)
        assert time.perf_counter() - start < bound, task
