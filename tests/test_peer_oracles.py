"""The pixel, perturbation and surrogate methods against captum, a test-only oracle, under the same settings.

captum's hooks only work on ``nn.ReLU`` modules that are not in place, and its
DeepLift has its own rule for max-pooling, so the oracle model is a small
ReLU CNN without max-pooling: there the Rescale rule is unambiguous. Float64
throughout, so the tolerances are those of the arithmetic, not of float32.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers.methods.surrogates import superpixels

captum_attr = pytest.importorskip("captum.attr")


class ReluCNN(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(3)
    model = ReluCNN().double().eval()
    with torch.no_grad():
        bn = model.features[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def probability(model):
    return lambda inp: model(inp).softmax(-1)


TARGETS = [1, 3]


def test_saliency_and_input_x_gradient(net, x):
    ours = xh.saliency(net, x, target=TARGETS)
    theirs = captum_attr.Saliency(net).attribute(x, target=TARGETS, abs=False)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(xh.input_x_gradient(net, x, target=TARGETS),
                               captum_attr.InputXGradient(net).attribute(x, target=TARGETS))


@pytest.mark.parametrize("method", xh.pixel_gradients.PATH_RULES)
def test_integrated_gradients(net, x, method):
    baseline = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    ours, delta = xh.integrated_gradients(net, x, TARGETS, reference=baseline, steps=20, method=method,
                                          batch_size=7, return_delta=True)
    theirs, their_delta = captum_attr.IntegratedGradients(net).attribute(
        x, baselines=baseline, target=TARGETS, n_steps=20, method=method, return_convergence_delta=True)
    if method == "riemann_trapezoid":
        # A deliberate difference: captum (0.9) gives the n trapezoid points the step 1/n instead
        # of 1/(n - 1), so its weights sum to (n - 1)/n and every attribution shrinks by that factor.
        # Ours are the trapezoid rule; with the factor put back the two agree.
        theirs = theirs * 20 / 19
        assert abs(xh.pixel_gradients.path_rule(20, method)[1].sum() - 1) < 1e-12
    else:
        torch.testing.assert_close(delta, their_delta)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("baseline", ["zeros", "random"])
def test_deeplift_rescale(net, x, baseline):
    x0 = None if baseline == "zeros" else torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours, delta = xh.deeplift(net, x, TARGETS, reference=x0, return_delta=True)
    theirs = captum_attr.DeepLift(net).attribute(x, baselines=torch.zeros_like(x) if x0 is None else x0, target=TARGETS)
    torch.testing.assert_close(ours, theirs)
    assert delta.abs().max() < 1e-10  # summation-to-delta, exact on this network
    # DeepLIFT is not the plain gradient here: some units cross zero between x0 and x.
    assert not torch.allclose(ours, xh.input_x_gradient(net, x, TARGETS))


def test_guided_backprop_and_guided_grad_cam(net, x):
    torch.testing.assert_close(xh.guided_backprop(net, x, TARGETS),
                               captum_attr.GuidedBackprop(net).attribute(x, target=TARGETS))
    layer = net.features[5]
    ours = xh.guided_grad_cam(net, x, layer, TARGETS)
    theirs = captum_attr.GuidedGradCam(net, layer).attribute(x, target=TARGETS, interpolate_mode="bilinear")
    torch.testing.assert_close(ours, theirs)
    # captum's default nearest-neighbour upsampling is a (named) variant, and differs.
    nearest = captum_attr.GuidedGradCam(net, layer).attribute(x, target=TARGETS)
    assert not torch.allclose(ours, nearest)


@pytest.mark.parametrize("window,stride", [(4, 2), ((5, 3), (4, 3)), (6, 4)])
def test_occlusion(net, x, window, stride):
    ours = xh.occlusion(net, x, TARGETS, window=window, stride=stride, batch_size=5)
    w = (window, window) if isinstance(window, int) else window
    s = (stride, stride) if isinstance(stride, int) else stride
    theirs = captum_attr.Occlusion(probability(net)).attribute(
        x, sliding_window_shapes=(3, *w), strides=(3, *s), baselines=0, target=TARGETS)
    # captum divides by the window counts in float32.
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-5, atol=1e-7)
    assert ours.abs().max() > 1e-4  # far above the tolerance


def test_occlusion_logit_and_baseline(net, x):
    fill = torch.randn(3, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = xh.occlusion(net, x, TARGETS, window=4, stride=4, reference=fill, score="logit")
    theirs = captum_attr.Occlusion(net).attribute(
        x, sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), baselines=fill.expand(3, 20, 20), target=TARGETS)
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-5, atol=1e-6)


def _lime_kernel(width):
    def similarity(original, perturbed, interpretable, **_):
        cosine = interpretable.sum().sqrt() / interpretable.numel() ** 0.5
        return torch.exp(-((1 - cosine) ** 2) / width**2)
    return similarity


def test_lime_matches_captum_with_the_same_samples(net, x):
    pytest.importorskip("sklearn")
    from captum._utils.models.linear_model import SkLearnRidge

    image = x[:1]
    seg = superpixels(image, n_segments=12)
    m = int(seg.max()) + 1
    samples = 60
    ours = xh.lime(net, image, 2, segments=seg, samples=samples, return_segments=True)
    # The same coalitions, in the same order: the first is the image itself.
    z = torch.randint(0, 2, (samples, m), generator=torch.Generator().manual_seed(0))
    z[0] = 1

    def coalitions(original, **_):
        for row in z:
            yield row[None].double()

    lime = captum_attr.Lime(probability(net), interpretable_model=SkLearnRidge(alpha=1.0),
                            similarity_func=_lime_kernel(0.25), perturb_func=coalitions)
    theirs = lime.attribute(image, baselines=0, target=2, feature_mask=seg[:, None], n_samples=samples,
                            perturbations_per_eval=8)
    torch.testing.assert_close(ours.maps[0], theirs[0, 0].double(), rtol=1e-5, atol=1e-7)
    assert ours.maps.abs().max() > 1e-4
    assert 0 <= ours.fit[0] <= 1


class SegmentLinear(nn.Module):
    """Logit_k = sum_j c_kj * mean(x over segment j, channel 0): linear in the segment indicators
    when the image is 1 on every pixel and the baseline 0."""

    def __init__(self, seg: torch.Tensor, coef: torch.Tensor):
        super().__init__()
        one_hot = torch.nn.functional.one_hot(seg.flatten(), int(seg.max()) + 1).double()
        self.register_buffer("pool", one_hot / one_hot.sum(0))
        self.coef = nn.Parameter(coef)

    def forward(self, x):
        return (x[:, 0].flatten(1) @ self.pool) @ self.coef.T


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_exact_recovery_when_the_model_is_linear_in_the_segments(method):
    seg = torch.arange(6).repeat_interleave(4).reshape(4, 6).repeat_interleave(3, 0)  # (12, 6), 6 segments
    coef = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0, -1.0], [0.3, 0.2, 0.1, 0.0, -0.1, 0.4]], dtype=torch.float64)
    model = SegmentLinear(seg, coef).eval()
    image = torch.ones(1, 3, 12, 6, dtype=torch.float64)
    fn = getattr(xh, method)
    kwargs = {"alpha": 0.0} if method == "lime" else {}
    got = fn(model, image, 0, segments=seg, samples=40, score="logit", return_segments=True, **kwargs)
    torch.testing.assert_close(got.values[0].double(), coef[0], rtol=1e-5, atol=1e-6)
    # captum's Kernel SHAP recovers the same coefficients (its sampling, its solver).
    theirs = captum_attr.KernelShap(model).attribute(image, baselines=0, target=0, feature_mask=seg[None, None],
                                                     n_samples=200, perturbations_per_eval=50)
    torch.testing.assert_close(theirs[0, 0].double(), coef[0][seg], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.maps[0].double(), theirs[0, 0].double(), rtol=1e-4, atol=1e-4)


def test_kernel_shap_with_every_coalition_is_exact_shapley(net, x):
    image = x[:1]
    seg = torch.arange(4).repeat_interleave(5)[None, :].expand(20, 20).clone()
    seg[10:] += 4  # 8 segments: 2^8 - 2 = 254 coalitions
    got = xh.kernel_shap(net, image, 1, segments=seg, samples=254, return_segments=True)

    def value(z):
        keep = z[:, seg].unsqueeze(1).double()
        with torch.no_grad():
            return net(image * keep).softmax(-1)[:, 1]

    exact = xh.shapley_values(value, 8)
    torch.testing.assert_close(got.values[0].double(), exact, rtol=1e-5, atol=1e-7)
    # Efficiency: the values add up to f(x) - f(empty).
    assert abs(exact.sum() - (value(torch.ones(1, 8, dtype=torch.long)) - value(torch.zeros(1, 8, dtype=torch.long)))) < 1e-12
    # captum's sampled Kernel SHAP approaches the same values.
    theirs = captum_attr.KernelShap(probability(net)).attribute(image, baselines=0, target=1, feature_mask=seg[None, None],
                                                                n_samples=2000, perturbations_per_eval=100)
    per_segment = torch.stack([theirs[0, 0][seg == j][0] for j in range(8)]).double()
    assert (per_segment - exact).abs().max() < 0.1 * exact.abs().max()
