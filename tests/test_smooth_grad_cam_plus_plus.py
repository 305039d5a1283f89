"""Smooth Grad-CAM++: Grad-CAM++ without noise, the formula written out over the same noisy copies, and torchcam
as a test-only oracle with the same noise, its four differences reproduced.
"""

import pytest
import torch

import xai_helpers as xh

from .test_cam_variants import TARGETS, ConvNet, X
from .test_sampled_score_cam import Replayed


def noisy_copies(x, samples, noise=0.15, seed=0):
    """The package's noisy copies: per image a seeded CPU generator, one (C, H, W) draw per copy, in order."""
    copies = []
    for i in range(x.shape[0]):
        g = torch.Generator().manual_seed(seed)
        sigma = noise * float(x[i].max() - x[i].min())
        copies.append([x[i : i + 1] + sigma * torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype)
                       for _ in range(samples)])
    return copies


def test_without_noise_it_is_grad_cam_plus_plus():
    model = ConvNet().eval()
    for layer in (model.stage2, model.head[1]):
        torch.testing.assert_close(xh.smooth_grad_cam_plus_plus(model, X, layer, target=TARGETS, noise=0.0),
                                   xh.grad_cam_plus_plus(model, X, layer, target=TARGETS))


def paper_formula(model, x, layer, targets, samples):
    maps = []
    for i, copies in enumerate(noisy_copies(x, samples)):
        a, _, _, _ = xh.activation_and_gradient(model, x[i : i + 1], layer, target=targets[i])
        gs = [xh.activation_and_gradient(model, c, layer, target=targets[i])[1].double() for c in copies]
        d1, d2, d3 = (sum(g.pow(p) for g in gs) / samples for p in (1, 2, 3))
        alpha = d2 / (2 * d2 + a.double().sum((2, 3), keepdim=True) * d3)
        alpha = torch.nan_to_num(alpha, nan=0.0)  # 0/0 where every copy's gradient is 0: the package's rule
        w = (alpha * d1.clamp_min(0)).sum((2, 3))
        maps.append((w.view(1, -1, 1, 1) * a.double()).sum(1))
    return xh.engine.finish(torch.cat(maps).float(), x.shape[-2:])


def test_equals_the_formula_written_out_and_does_not_depend_on_the_batch_size():
    model = ConvNet().eval()
    ours = xh.smooth_grad_cam_plus_plus(model, X, model.stage2, target=TARGETS, samples=3)
    torch.testing.assert_close(ours, paper_formula(model, X, model.stage2, TARGETS, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(xh.smooth_grad_cam_plus_plus(model, X, model.stage2, target=TARGETS, samples=3,
                                                            batch_size=2), ours)
    assert (ours - xh.grad_cam_plus_plus(model, X, model.stage2, target=TARGETS)).abs().max() > 1e-3


@pytest.mark.parametrize("bad, match", [({"samples": 0}, "samples"), ({"noise": -0.1}, "noise"),
                                        ({"seed": 1.5}, "seed"), ({"batch_size": 0}, "batch_size")])
def test_refuses_bad_settings(bad, match):
    model = ConvNet().eval()
    with pytest.raises(ValueError, match=match):
        xh.smooth_grad_cam_plus_plus(model, X, model.stage2, **bad)


def test_equals_torchcam_with_its_four_differences():
    methods = pytest.importorskip("torchcam.methods")
    model, x, samples = ConvNet().eval().double(), X.double(), 3
    copies = noisy_copies(x, samples)
    # torchcam draws one (N, C, H, W) noise tensor per copy: hand it the package's noise.
    fields = [torch.cat([copies[i][m] - x[i : i + 1] for i in range(3)]) for m in range(samples)]
    with methods.SmoothGradCAMpp(model, target_layer=model.stage2, num_samples=samples,
                                 input_shape=(3, 16, 16)) as extractor:
        extractor._distrib = Replayed(fields)
        scores = model(x)
        theirs = torch.cat(extractor(TARGETS, scores))
    maps = []
    for i in range(3):
        a, _, _, _ = xh.activation_and_gradient(model, x[i : i + 1], model.stage2, target=TARGETS[i])
        passes = [xh.activation_and_gradient(model, c, model.stage2, target=TARGETS[i]) for c in copies[i]]
        gs = [p[1] for p in passes]
        d2, d3 = (sum(g.pow(p) for g in gs) / samples for p in (2, 3))
        # torchcam: sum(A * D^3) instead of sum(A) * D^3, + 1e-8, ReLU of the last copy's gradient ...
        alpha = d2 / (2 * d2 + (a * d3).sum((2, 3), keepdim=True) + 1e-8)
        w = (alpha * gs[-1].clamp_min(0)).sum((2, 3))
        maps.append((w.view(1, -1, 1, 1) * passes[-1][0]).sum(1))  # ... and the last copy's activation
    quirks = torch.cat(maps).clamp_min(0)
    quirks = quirks - quirks.amin((1, 2), keepdim=True)
    torch.testing.assert_close(quirks / (quirks.amax((1, 2), keepdim=True) + 1e-8), theirs, rtol=0, atol=1e-7)
    ours = xh.smooth_grad_cam_plus_plus(model, x, model.stage2, target=TARGETS, samples=samples)
    assert (ours.double() - theirs).abs().max() > 1e-2  # the differences are visible
