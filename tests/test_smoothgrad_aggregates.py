"""SmoothGrad², VarGrad: SmoothGrad's ``aggregate`` setting, by hand, by identities and against captum's NoiseTunnel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_helpers as xh

from .test_cam_variants import TARGETS, ConvNet, X


class Quadratic(nn.Module):
    """y_c = sum (c + 1) x^2 / 2, so d y_c / d x = (c + 1) x: the noisy gradients are known in closed form."""

    def forward(self, x):
        half = 0.5 * x.square().flatten(1).sum(1, keepdim=True)
        return torch.cat([half, 2 * half], dim=1)


def noisy_gradients(model, x, target, samples, noise, seed=0):
    """The n noisy gradients of each image, drawn as SmoothGrad draws them (one generator per image, in order)."""
    out = []
    for i in range(x.shape[0]):
        generator = torch.Generator().manual_seed(seed)
        sigma = noise * float(x[i].max() - x[i].min())
        grads = []
        for _ in range(samples):
            copy = (x[i : i + 1] + sigma * torch.randn((1, *x.shape[1:]), generator=generator, dtype=x.dtype))
            copy.requires_grad_(True)
            score = model(copy)[0, target[i] if isinstance(target, list) else target]
            (g,) = torch.autograd.grad(score, copy)
            grads.append(g[0].double())
        out.append(torch.stack(grads))
    return out  # per image: (n, C, H, W)


def test_the_three_statistics_by_the_formula():
    model = ConvNet().eval().double()
    x = X.double()
    grads = noisy_gradients(model, x, TARGETS, samples=5, noise=0.2)
    mean = torch.stack([g.mean(0) for g in grads])
    square = torch.stack([g.square().mean(0) for g in grads])
    for aggregate, expected in (("mean", mean), ("square", square), ("variance", square - mean.square())):
        got = xh.smoothgrad(model, x, TARGETS, samples=5, noise=0.2, aggregate=aggregate, batch_size=3)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # VarGrad is the population variance of the samples (divided by n, not n - 1).
    torch.testing.assert_close(xh.smoothgrad(model, x, TARGETS, samples=5, noise=0.2, aggregate="variance"),
                               torch.stack([g.var(0, unbiased=False) for g in grads]), rtol=1e-9, atol=1e-12)


def test_identities_without_noise_and_on_a_quadratic():
    model = ConvNet().eval().double()
    x = X.double()
    g = xh.saliency(model, x, TARGETS).double()
    # Without noise every sample is the gradient: SmoothGrad² is its square, VarGrad is 0.
    torch.testing.assert_close(xh.smoothgrad(model, x, TARGETS, samples=3, noise=0.0, aggregate="square"), g.square())
    # (float64 rounding of mean(g^2) - mean(g)^2 only)
    assert xh.smoothgrad(model, x, TARGETS, samples=3, noise=0.0, aggregate="variance").max() <= 1e-12 * g.square().max()
    # On y = |x|^2 / 2 the gradient is x + sigma e, so VarGrad -> sigma^2 everywhere and SmoothGrad² -> x^2 + sigma^2.
    x1 = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = 0.3 * float(x1.max() - x1.min())
    var = xh.smoothgrad(Quadratic(), x1, 0, samples=4000, noise=0.3, aggregate="variance", batch_size=500)
    torch.testing.assert_close(var, torch.full_like(x1, sigma**2), rtol=0.1, atol=0)
    sq = xh.smoothgrad(Quadratic(), x1, 0, samples=4000, noise=0.3, aggregate="square", batch_size=500)
    torch.testing.assert_close(sq, x1.square() + sigma**2, rtol=0.1, atol=0)


@pytest.mark.parametrize("aggregate, nt_type", [("mean", "smoothgrad"), ("square", "smoothgrad_sq"),
                                                ("variance", "vargrad")])
def test_equals_captums_noise_tunnel_with_the_same_noise(aggregate, nt_type, monkeypatch):
    attr = pytest.importorskip("captum.attr")
    model = ConvNet().eval().double()
    x = X[:1].double()
    samples, noise = 6, 0.2
    sigma = noise * float(x.max() - x.min())
    generator = torch.Generator().manual_seed(0)
    ours_noise = torch.cat([sigma * torch.randn((1, *x.shape[1:]), generator=generator, dtype=x.dtype)
                            for _ in range(samples)])
    # captum draws torch.normal(0, stdevs) once for all samples; hand it SmoothGrad's noise instead.
    real_normal = torch.normal

    def same_noise(mean, std, *args, **kwargs):
        if isinstance(std, torch.Tensor) and std.shape == ours_noise.shape:
            torch.testing.assert_close(std, torch.full_like(std, sigma))
            return ours_noise.clone()
        return real_normal(mean, std, *args, **kwargs)

    monkeypatch.setattr(torch, "normal", same_noise)
    theirs = attr.NoiseTunnel(attr.Saliency(model)).attribute(x, nt_type=nt_type, nt_samples=samples, stdevs=sigma,
                                                              target=TARGETS[0], abs=False)
    ours = xh.smoothgrad(model, x, TARGETS[0], samples=samples, noise=noise, aggregate=aggregate)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_the_registry_entry_takes_the_setting_and_bad_values_are_refused(small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    heat = xh.METHODS["SmoothGrad"](small_cnn, x, target=0, samples=3, aggregate="variance")
    assert heat.shape == (1, 16, 16) and heat.amin() >= 0 and heat.amax() == 1
    with pytest.raises(ValueError, match="aggregate must be one of"):
        xh.smoothgrad(small_cnn, x, 0, samples=2, aggregate="vargrad")
