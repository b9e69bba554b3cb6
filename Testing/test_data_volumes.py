"""The real volumes from the cache: shapes, spacings, intensity ranges, orientation and the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DiffCodeRestoreLib.data.fetch import is_fetched
from DiffCodeRestoreLib.data.sources import SOURCES
from DiffCodeRestoreLib.data.volumes import (ITK_CSF, ITK_GM, ITK_WM, PUBLIC_TEST_VOLUMES, TRAINING_VOLUMES,
                                             VOLUMES, available_volumes, load_volume, split_volumes, volume_source)
from DiffCodeRestoreLib.tasks import TASKS


def _need(*names: str) -> None:
    """Debian sources are optional: skip, naming why, where this OS could not fetch them."""
    missing = sorted({volume_source(n) for n in names if not is_fetched(SOURCES[volume_source(n)])})
    if missing:
        if any(SOURCES[m].required for m in missing):
            pytest.fail(f"required source(s) {missing} not fetched: run `make data`")
        pytest.skip(f"optional source(s) {missing} not available on this machine")


def _array(name: str) -> np.ndarray:
    return sitk.GetArrayFromImage(load_volume(name))


@pytest.mark.parametrize("name, size, spacing", [
    ("lung1", (512, 512, 48), (0.5703, 0.5703, 5.0)),
    ("lung2", (512, 512, 61), (0.6270, 0.6270, 5.0)),
    ("cranium", (256, 256, 108), (0.9570, 0.9570, 1.5)),
])
def test_ct_volumes_geometry_and_hu(name, size, spacing):
    _need(name)
    image = load_volume(name)
    assert image.GetSize() == size
    assert np.allclose(image.GetSpacing(), spacing, atol=1e-3)
    assert np.allclose(image.GetDirection(), np.eye(3).ravel())
    hu = sitk.GetArrayViewFromImage(image)
    assert hu.min() == -1024 and 1500 < hu.max() <= 3071
    middle = hu[hu.shape[0] // 2]
    assert np.median(middle[:8, :8]) < -900  # air in the corner
    body = middle[(middle > -200) & (middle < 200)]
    assert -100 < np.median(body) < 100  # soft tissue near water


@pytest.mark.parametrize("name", ["lung1", "lung2", "cranium"])
def test_ct_orientation_is_lps(name):
    """Supine patients: spine and table lie posterior, i.e. in the lower rows of an LPS axial slice."""
    _need(name)
    hu = _array(name)
    middle = hu[hu.shape[0] // 2]
    bone_rows = np.argwhere(middle > 300)[:, 0]
    assert bone_rows.mean() > middle.shape[0] / 2
    if name == "cranium":  # teeth: in the lowest slices and anterior (upper rows)
        teeth = np.argwhere(hu[:15] > 1500)
        assert teeth[:, 1].mean() < hu.shape[1] / 2


def test_mni_tissue_maps():
    image = load_volume("mni152_t1")
    assert image.GetSize() == (197, 233, 189) and image.GetSpacing() == (1.0, 1.0, 1.0)
    gm, wm, mask = _array("mni152_gm"), _array("mni152_wm"), _array("mni152_mask")
    assert gm.dtype == np.float32 and 0 <= gm.min() and gm.max() == pytest.approx(1.0)
    assert (gm + wm).max() < 1.5  # probabilities of exclusive tissues
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert 0.9 < (gm + wm)[mask == 1].sum() / (gm + wm).sum()  # the tissue lies inside the mask
    assert 1.0e6 < mask.sum() * 1.0 < 2.0e6  # about 1.5 litres of brain at 1 mm


def test_atlas_and_colin27_share_the_mni_grid_with_left_on_plus_x():
    _need("aal", "colin27")
    aal, colin = load_volume("aal"), load_volume("colin27")
    assert aal.GetSize() == colin.GetSize() == (181, 217, 181)
    assert np.allclose(aal.GetOrigin(), colin.GetOrigin())
    labels = sitk.GetArrayFromImage(aal)
    precentral_left = np.argwhere(labels == 1).mean(axis=0)[::-1]  # AAL 1 = Precentral_L
    assert aal.TransformContinuousIndexToPhysicalPoint(precentral_left.tolist())[0] > 20  # LPS: +x is left
    t1 = sitk.GetArrayFromImage(colin)
    assert t1[labels > 0].mean() > 2 * t1[labels == 0].mean()  # brain regions fall on the brain


def test_itk_t1_classes_are_csf_gm_wm_in_t1_order():
    _need("itk_t1", "itk_t1_classes")
    t1, classes = _array("itk_t1"), _array("itk_t1_classes")
    assert t1.shape == classes.shape == (128, 62, 128)  # (z, y, x) after LPS reorientation
    assert load_volume("itk_t1").GetSpacing() == (2.0, 3.0, 2.0)
    means = [t1[classes == label].mean() for label in (ITK_CSF, ITK_GM, ITK_WM)]
    assert means[0] < means[1] < means[2]  # T1: CSF dark, grey matter, white matter bright
    brain_z = np.argwhere(np.isin(classes, (ITK_GM, ITK_WM)))[:, 0].mean()
    head_z = np.argwhere(t1 > 20)[:, 0].mean()
    assert brain_z > head_z  # LPS: z grows to the head, the brain sits above the neck
    stripped = _array("itk_t1_stripped")
    inside = np.isin(classes, (ITK_GM, ITK_WM))
    assert (stripped[inside] > 0).mean() > 0.99


def test_brainweb_slices_are_grey_2d():
    _need("brainweb_t1_slice", "brainweb_pd_slice", "brainweb_pd3")
    for name in ("brainweb_t1_slice", "brainweb_pd_slice"):
        image = load_volume(name)
        assert image.GetDimension() == 2 and image.GetSize() == (181, 217)
        assert image.GetPixelID() == sitk.sitkFloat32 and image.GetSpacing() == (1.0, 1.0)
    assert load_volume("brainweb_pd3").GetSize() == (181, 217, 3)


def test_split_is_by_volume_and_matches_the_notes():
    for task in TASKS:
        train, test = set(split_volumes(task, "train")), set(split_volumes(task, "test"))
        assert train and test and not train & test
        assert train | test <= set(VOLUMES)
    assert TRAINING_VOLUMES["ct-denoise"] == ("lung1", "cranium")
    assert PUBLIC_TEST_VOLUMES == {"mri-sr": ("colin27",), "ct-denoise": ("lung2",),
                                   "pet-synthesis": ("itk_t1_classes",)}
    every_test = {name for names in PUBLIC_TEST_VOLUMES.values() for name in names}
    every_train = {name for names in TRAINING_VOLUMES.values() for name in names}
    assert not every_test & every_train  # no public test volume is training data for any task
    with pytest.raises(ValueError, match="split"):
        split_volumes("ct-denoise", "validation")


def test_available_volumes_and_clear_errors(tmp_path):
    names = available_volumes()
    assert {"lung1", "lung2", "mni152_t1", "mni152_gm", "mni152_wm", "mni152_mask"} <= set(names)
    assert available_volumes(Path(tmp_path)) == []
    with pytest.raises(FileNotFoundError, match="data.fetch --only pyradiomics"):
        load_volume("lung1", cache=tmp_path)
    with pytest.raises(ValueError, match="Unknown volume"):
        load_volume("lung3")
