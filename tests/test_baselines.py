"""The null baselines: registered like methods, each map computed by hand, and what they show about metrics."""

import math

import pytest
import torch

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers.methods import Method

from .conftest import GapLinear

BASELINES = [m for m in xh.METHODS.values() if m.baseline]


def test_four_baselines_flagged_and_last():
    assert [m.slug for m in BASELINES] == ["random-baseline", "centre-baseline", "edges-baseline", "ones-baseline"]
    assert all(m.family == "baseline" and not m.default and not m.needs_gradients for m in BASELINES)
    assert not any(m.baseline for m in xh.METHODS.values() if m.family != "baseline")
    with pytest.raises(ValueError, match="baseline=True exactly for the family 'baseline'"):
        Method(name="x", slug="x", function=xh.all_ones, paper=BASELINES[0].paper, family="gradient",
               needs_layer=False, signed=False, reports_progress=False, needs_gradients=False, cost="0",
               passes=lambda: (0, 0), baseline=True)


def test_random_map_is_the_seeded_uniform_draw(small_cnn):
    x = torch.randn(3, 3, 5, 7)
    expected = torch.rand(5, 7, generator=torch.Generator().manual_seed(4))
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    heat = xh.random_map(small_cnn, x, seed=4)
    assert heat.shape == (3, 5, 7)
    for i in range(3):
        assert torch.equal(heat[i], expected)
    assert not torch.equal(xh.random_map(small_cnn, x, seed=5)[0], expected)


def test_centre_gaussian_by_hand(small_cnn):
    heat = xh.centre_gaussian(small_cnn, torch.zeros(1, 3, 4, 4), sigma=0.25)
    # pixel centres at u = -3/8, -1/8, 1/8, 3/8; the four middle pixels are the maximum (1 after scaling)
    g = lambda u, v: math.exp(-(u * u + v * v) / (2 * 0.25**2))  # noqa: E731
    lo, hi = g(3 / 8, 3 / 8), g(1 / 8, 1 / 8)
    assert heat[0, 1, 1].item() == pytest.approx(1.0) and heat[0, 0, 0].item() == pytest.approx(0.0)
    assert heat[0, 0, 1].item() == pytest.approx((g(3 / 8, 1 / 8) - lo) / (hi - lo), rel=1e-5)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0 \(a fraction of the image side"):
        xh.centre_gaussian(small_cnn, torch.zeros(1, 3, 4, 4), sigma=0)


def test_sobel_edges_by_hand(small_cnn):
    # A vertical step from 0 to 1 between columns 1 and 2, in channel 0 only.
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :, 2:] = 1.0
    heat = xh.sobel_edges(small_cnn, x)
    # G_x at columns 1 and 2 = (1 + 2 + 1) * 1 = 4 everywhere (replicate padding keeps rows equal); 0 elsewhere
    expected = torch.tensor([[0.0, 1.0, 1.0, 0.0]]).expand(4, 4)
    torch.testing.assert_close(heat[0], expected)


def test_all_ones_and_baselines_ignore_model_and_target(small_cnn):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    other = GapLinear(torch.randn(5, 3))
    for m in BASELINES:
        a = m(small_cnn, x, target=0)
        torch.testing.assert_close(a, m(small_cnn, x, target=3))
        torch.testing.assert_close(a, m(other, x, target=[1, 2]))
    assert torch.equal(xh.all_ones(small_cnn, x), torch.ones(2, 8, 8))


def test_all_ones_gets_a_perfect_average_drop(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y, o = M.explanation_scores(small_cnn, x, xh.all_ones(small_cnn, x))
    assert M.average_drop(y, o) == 0.0 and M.increase_in_confidence(y, o) == 0.0


