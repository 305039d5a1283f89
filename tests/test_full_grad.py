"""FullGrad: the full-gradient decomposition's completeness (an identity of ReLU networks), BatchNorm's effective
bias, the map written out, and pytorch-grad-cam as a test-only oracle.
"""

import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers.methods.full_grad import (
    bias_layers,
    effective_bias,
    full_gradient_decomposition,
)


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def relu_net(inplace=True):
    torch.manual_seed(0)
    return randomize(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, groups=2), nn.ReLU(inplace=inplace), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4)))


X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
TARGETS = [1, 3, 0]


def test_the_decomposition_adds_up_to_the_output_of_a_relu_network():
    model = relu_net()
    input_term, terms, scores = full_gradient_decomposition(model, X, TARGETS)
    assert [t.shape for t in terms] == [(3, 6, 16, 16), (3, 6, 16, 16), (3, 8, 8, 8), (3, 4)]
    total = input_term.flatten(1).sum(1) + sum(t.flatten(1).sum(1) for t in terms)
    torch.testing.assert_close(total, model(X)[torch.arange(3), TARGETS].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, model(X)[torch.arange(3), TARGETS].detach())


def test_batchnorm_effective_bias_by_hand():
    bn = nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([3.0, 0.0]))
        bn.weight.copy_(torch.tensor([2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.25, 1.0]))
    bn.eps = 1.0
    # beta - gamma mu / sqrt(var + eps): 0.25 - 2 * 1 / 2 = -0.75; 1 - 0.5 * (-2) / 1 = 2
    torch.testing.assert_close(effective_bias(bn), torch.tensor([-0.75, 2.0]))
    # BatchNorm(x) = x * gamma / sqrt(var + eps) + effective bias
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(bn(x), x * torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
                               + effective_bias(bn).view(1, 2, 1, 1))
    assert effective_bias(nn.Conv2d(1, 1, 1, bias=False)) is None
    with pytest.raises(ValueError, match="running statistics"):
        effective_bias(nn.BatchNorm2d(2, track_running_stats=False))


def test_the_map_written_out():
    model = relu_net()
    input_term, terms, _ = full_gradient_decomposition(model, X, TARGETS)

    def psi(t):  # |.|, min-max per channel, upsample each channel, sum over channels
        a = t.abs()
        lo, hi = a.amin((2, 3), keepdim=True), a.amax((2, 3), keepdim=True)
        scaled = torch.where(hi > lo, (a - lo) / (hi - lo).clamp_min(1e-30), 0.0)
        return nn.functional.interpolate(scaled, size=(16, 16), mode="bilinear", align_corners=False).sum(1)

    total = psi(input_term) + sum(psi(t) for t in terms if t.ndim == 4)
    lo, hi = total.amin((1, 2), keepdim=True), total.amax((1, 2), keepdim=True)
    torch.testing.assert_close(xh.full_grad(model, X, TARGETS), (total - lo) / (hi - lo), rtol=0, atol=1e-5)


def test_leaves_the_model_alone_and_refuses_batch_statistics():
    model = relu_net()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = X.clone()
    xh.full_grad(model, X, TARGETS)
    assert torch.equal(X, before) and model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())
    model = relu_net()
    model[1].track_running_stats, model[1].running_mean, model[1].running_var = False, None, None
    with pytest.raises(ValueError, match="batch statistics"):
        xh.full_grad(model, X, TARGETS)
    assert not any(m._forward_hooks for m in model.modules())


class StrideOne(nn.Module):
    """Every convolution at the input's resolution, so that rescaling before or after resizing is the same."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                                      nn.Conv2d(5, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))

    def forward(self, x):
        return self.head(self.features(x))


def test_equals_pytorch_grad_cam():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = randomize(StrideOne())
    assert len(bias_layers(model)) == 4  # two convolutions, one BatchNorm, the linear layer
    with pgc.FullGrad(model=model, target_layers=[]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=X, targets=[ClassifierOutputTarget(t) for t in TARGETS]))
    # pgc's one deliberate difference here: 1e-7 in its min-max denominators, which is not small next to these
    # terms (their largest values are about 1e-4 to 1e-3): with it written in, the maps are equal.
    input_term, terms, _ = full_gradient_decomposition(model, X, TARGETS)

    def psi(t):
        a = t.abs() - t.abs().amin((2, 3), keepdim=True)
        return (a / (a.amax((2, 3), keepdim=True) + 1e-7)).sum(1)

    total = psi(input_term) + sum(psi(t) for t in terms if t.ndim == 4)
    total = total - total.amin((1, 2), keepdim=True)
    torch.testing.assert_close(total / (total.amax((1, 2), keepdim=True) + 1e-7), theirs, rtol=0, atol=1e-6)
    assert float(input_term.abs().amax()) < 1e-2
    torch.testing.assert_close(xh.full_grad(model, X, TARGETS), theirs, rtol=0, atol=2e-2)
