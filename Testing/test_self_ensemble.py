"""The geometric self-ensemble: the 8 views invert exactly, and the mean is taken in the input frame."""

from __future__ import annotations

import pytest
import torch

from DiffCodeRestoreLib.self_ensemble import VIEWS, ensemble_mean, unview, view


def test_views_are_the_eight_distinct_flips_and_rotations_and_invert():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(1, 2, 3, 5)
    views = [view(x, k) for k in range(VIEWS)]
    assert torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == VIEWS
    assert [tuple(v.shape[-2:]) for v in views] == [(3, 5), (5, 3)] * 4
    for k, v in enumerate(views):
        assert torch.equal(unview(v, k), x)


def test_mean_is_taken_back_in_the_input_frame():
    x = torch.rand(2, 1, 8, 12, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(3, 2, 4, 2, 3, generator=torch.Generator().manual_seed(1))
    # an equivariant restorer gives itself back; one that returns its noise gives the noise back
    assert torch.allclose(ensemble_mean(lambda v, n: 2 * v + 1, x), 2 * x + 1)
    assert torch.allclose(ensemble_mean(lambda v, n: n, x, noise), noise)
    # a restorer that is not equivariant (adds a row ramp in its own frame) is averaged over frames
    def ramp(v, n):
        return v + torch.arange(v.shape[-2], dtype=v.dtype)[:, None]
    expected = sum(unview(ramp(view(x, k), None), k) for k in range(VIEWS)) / VIEWS
    assert torch.allclose(ensemble_mean(ramp, x), expected)
    assert torch.equal(ensemble_mean(ramp, x, views=1), ramp(x, None))


@pytest.mark.parametrize("views", [0, 9])
def test_view_count_is_checked(views):
    with pytest.raises(ValueError, match="views must be between 1 and 8"):
        ensemble_mean(lambda v, n: v, torch.zeros(1, 1, 4, 4), views=views)
