"""SS-CAM and IS-CAM: values worked out on 2 x 2 activations, the identities that tie them to Score-CAM, and
torchcam as a test-only oracle with the same noise.
"""

import math

import pytest
import torch

import xai_helpers as xh
from xai_helpers.methods.sampled_score_cam import integration_coefficients
from xai_helpers.methods.score_cam import live_channels

from .conftest import GapLinear
from .test_cam_variants import TARGETS, ConvNet, X, scaled

A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 0.0]]]])
W = [[4.0, 8.0], [1.0, -1.0]]


def test_integration_coefficients():
    torch.testing.assert_close(integration_coefficients(4), torch.tensor([0.25, 0.75, 1.5, 2.5], dtype=torch.float64))
    # mean_m c_m = (n + 1)(n + 2) / (6 n): exactly 1 for n = 2
    for n in (2, 5, 10):
        assert math.isclose(float(integration_coefficients(n).mean()), (n + 1) * (n + 2) / (6 * n))


def test_is_cam_by_hand():
    # The layer is the identity, so the masks come from the input: H^0 = (A^0 - 1) / 3, H^1 = A^1 / 4.
    # y_0(X ⊙ H^0) = 4 mean([[0, 2/3], [2, 4]]) + 8 * 0 = 20/3; y_0(X ⊙ H^1) = 4 * 0.25 + 8 * 1 = 9; y_0(X) = 18.
    # The model is linear in the mask's scale and mean(c) = 1 for n = 2, so the mean increase is y(X ⊙ H) - 18.
    model = GapLinear(W)
    w = torch.tensor([20.0 / 3.0 - 18.0, 9.0 - 18.0]).softmax(0)
    expected = scaled(w[0] * A[0, 0] + w[1] * A[0, 1])
    torch.testing.assert_close(xh.is_cam(model, A, model.features, target=0, samples=2), expected)
    # ... which is Score-CAM with Algorithm 1's softmax of logits
    torch.testing.assert_close(xh.score_cam(model, A, model.features, target=0, score="logit-softmax"), expected)
    # n = 4: mean(c) = 30 / 24 = 1.25, so the increases become 1.25 y(X ⊙ H) - 18.
    w4 = torch.tensor([1.25 * 20.0 / 3.0 - 18.0, 1.25 * 9.0 - 18.0]).softmax(0)
    torch.testing.assert_close(xh.is_cam(model, A, model.features, target=0, samples=4),
                               scaled(w4[0] * A[0, 0] + w4[1] * A[0, 1]))


def test_ss_cam_without_noise_is_score_cam_and_its_noise_is_seeded():
    model = ConvNet().eval()
    plain = xh.score_cam(model, X, model.stage2, target=TARGETS, score="logit-softmax")
    torch.testing.assert_close(xh.ss_cam(model, X, model.stage2, target=TARGETS, samples=3, noise=0.0), plain)
    noisy = xh.ss_cam(model, X, model.stage2, target=TARGETS, samples=3)
    assert (noisy - plain).abs().max() > 1e-3  # the noise does something
    # The same seed gives the same map for every batch size, and a batch the maps of its images one by one.
    torch.testing.assert_close(xh.ss_cam(model, X, model.stage2, target=TARGETS, samples=3, batch_size=5), noisy)
    one = xh.ss_cam(model, X[1:2], model.stage2, target=TARGETS[1:2], samples=3)
    torch.testing.assert_close(one[0], noisy[1])
    assert (xh.ss_cam(model, X, model.stage2, target=TARGETS, samples=3, seed=1) - noisy).abs().max() > 1e-3


def test_top_channels_scores_only_the_most_active():
    model = ConvNet().eval()
    full = xh.is_cam(model, X, model.stage2, target=TARGETS, samples=2)
    assert torch.equal(xh.is_cam(model, X, model.stage2, target=TARGETS, samples=2, top_channels=8), full)  # 8 of 8
    assert not torch.equal(xh.is_cam(model, X, model.stage2, target=TARGETS, samples=2, top_channels=2), full)


@pytest.mark.parametrize("bad, match", [({"samples": 0}, "samples"), ({"noise": -1.0}, "noise"),
                                        ({"top_channels": 0}, "top_channels"), ({"seed": -1}, "seed")])
def test_refuses_bad_settings(bad, match):
    model = ConvNet().eval()
    with pytest.raises(ValueError, match=match):
        xh.ss_cam(model, X, model.stage2, **bad)


class Replayed:
    """Stands in for torchcam's noise distribution and hands out the package's draws instead."""

    def __init__(self, fields):
        self.fields = list(fields)

    def sample(self, size):
        field = self.fields.pop(0)
        assert tuple(field.shape) == tuple(size)
        return field


def package_noise(n_images, channels, samples, size, seed=0):
    """The package's draws in torchcam's layout: one (N, C, H, W) tensor per sample."""
    draws = []
    for _ in range(n_images):
        g = torch.Generator().manual_seed(seed)
        draws.append([torch.randn((1, 1, *size), generator=g) for _ in range(samples * channels)])
    return [torch.cat([torch.cat(draws[i][m * channels : (m + 1) * channels], 1) for i in range(n_images)])
            for m in range(samples)]


@pytest.mark.parametrize("name", ["SSCAM", "ISCAM"])
def test_equal_torchcam_with_the_same_noise(name):
    methods = pytest.importorskip("torchcam.methods")
    model, x = ConvNet().eval().double(), X.double()  # float64, so that only the formulas can differ
    layer = model.stage2  # at the input's resolution: scaling before or after upsampling is the same
    samples = 3
    with getattr(methods, name)(model, target_layer=layer, num_samples=samples, input_shape=(3, 16, 16)) as extractor:
        if name == "SSCAM":
            # torchcam adds its draws as they are: hand it sigma = 2 times the package's standard normal fields
            extractor._distrib = Replayed(2.0 * f for f in package_noise(3, 8, samples, (16, 16)))
        with torch.no_grad():
            scores = model(x)
        theirs = torch.cat(extractor(TARGETS, scores))  # ReLU'd and min-max scaled, + 1e-8
    ours = (xh.ss_cam if name == "SSCAM" else xh.is_cam)(model, x, layer, target=TARGETS, samples=samples,
                                                         fold_bn=False)
    # every channel is live, so both softmaxes run over the same channels
    assert bool(live_channels(xh.engine.layer_pass(model, x, layer, gradient=False).activation).all())
    # torchcam's only deliberate differences here: 1e-8 in the masks' and the maps' min-max denominators.
    torch.testing.assert_close(ours.double(), theirs, rtol=0, atol=1e-5)
