"""The task table and its intensity conventions (numpy only): run under Python 3.9 + numpy 1.26 too."""

from __future__ import annotations

import numpy as np
import pytest

from DiffCodeRestoreLib import TASKS, get_task
from DiffCodeRestoreLib.tasks import (MRI_PERCENTILE, MRI_PERCENTILE_TARGET, denormalize, intensity_scale,
                                      normalize)


def test_three_tasks_with_distinct_indices_and_modalities():
    assert list(TASKS) == ["mri-sr", "ct-denoise", "pet-synthesis"]
    assert sorted(spec.index for spec in TASKS.values()) == [0, 1, 2]
    assert {name: spec.modality for name, spec in TASKS.items()} == {"mri-sr": "MR", "ct-denoise": "CT",
                                                                     "pet-synthesis": "PT"}
    assert get_task("ct-denoise").units == "HU"
    with pytest.raises(ValueError, match="Unknown task 'dental-xray': choose one of mri-sr, ct-denoise"):
        get_task("dental-xray")


@pytest.mark.parametrize("task", ["ct-denoise", "pet-synthesis"])
def test_fixed_range_tasks_clip_to_unit_interval_and_invert(task):
    lo, hi = get_task(task).norm_range
    image = np.array([[lo - 500, lo, (lo + hi) / 2, hi, hi + 500]], dtype=np.float32)
    offset, scale = intensity_scale(task, image)
    assert (offset, scale) == (lo, hi - lo)
    x = normalize(task, image, offset, scale)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[0, 0, 0.5, 1, 1]], atol=1e-6)
    np.testing.assert_allclose(denormalize(task, x, offset, scale), np.clip(image, lo, hi), rtol=1e-5, atol=1e-3)


def test_mri_scale_is_a_robust_percentile_of_the_positive_voxels():
    rng = np.random.default_rng(0)
    image = np.concatenate([np.zeros(1000), rng.uniform(1, 500, 4000)]).astype(np.float32).reshape(50, 100)
    offset, scale = intensity_scale("mri-sr", image)
    assert offset == 0.0
    expected = np.percentile(image[image > 0], MRI_PERCENTILE) / MRI_PERCENTILE_TARGET
    assert scale == pytest.approx(expected)
    x = normalize("mri-sr", image - 10, offset, scale)  # negatives are clipped at 0, the top is not
    assert x.min() == 0.0 and (x < 0).sum() == 0
    assert normalize("mri-sr", image, offset, scale).max() > MRI_PERCENTILE_TARGET
    assert intensity_scale("mri-sr", np.zeros((4, 4))) == (0.0, 1.0)
