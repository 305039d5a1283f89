"""The methods that attribute to pixels or superpixels (lessons 08-10): gradients, perturbations, surrogates, by hand and by identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_helpers as xh
from xai_helpers.methods.perturbation import occlusion_positions, rise_masks
from xai_helpers.methods.pixel_gradients import path_rule
from xai_helpers.methods.shapley import shapley_kernel

from .conftest import GapLinear

D = torch.float64


class Quadratic(nn.Module):
    """f(x) = sum(x^2) as a one-class "logit": gradient 2x, so integrals are polynomials in alpha."""

    def forward(self, x):
        return x.pow(2).flatten(1).sum(1, keepdim=True)


class TinyMLP(nn.Module):
    """Flatten -> Linear(4, 2) -> act -> Linear(2, 1) with fixed weights, small enough for paper."""

    def __init__(self, act: nn.Module | None = None):
        super().__init__()
        self.fc1 = nn.Linear(4, 2)
        self.act = act if act is not None else nn.ReLU6()
        self.fc2 = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 2.0, -1.0, 0.5], [3.0, 1.0, 2.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([-1.0, 0.5]))
            self.fc2.weight.copy_(torch.tensor([[2.0, -1.0]]))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


X4 = torch.tensor([[1.0, 0.5, 1.0, 2.0]], dtype=D).view(1, 1, 2, 2)


# ---------------------------------------------------------------- gradients at the pixel


def test_input_x_gradient_of_a_gap_linear_model_is_each_pixels_share():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]])
    model = GapLinear(w, bias=[0.3, -0.1]).double()
    x = torch.randn(1, 3, 4, 5, dtype=D, generator=torch.Generator().manual_seed(0))
    got = xh.input_x_gradient(model, x, target=0)
    torch.testing.assert_close(got, x * w[0].double().view(1, 3, 1, 1) / 20)
    # Completeness for a linear model: the shares add up to the logit minus the bias.
    assert abs(got.sum() - (model(x)[0, 0] - model.fc.bias[0])) < 1e-12


@pytest.mark.parametrize("method", xh.pixel_gradients.PATH_RULES)
def test_integrated_gradients_of_a_quadratic(method):
    x = torch.randn(1, 2, 3, 3, dtype=D, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(1, 2, 3, 3, dtype=D, generator=torch.Generator().manual_seed(2))
    steps = 4
    got = xh.integrated_gradients(Quadratic(), x, 0, reference=x0, steps=steps, method=method)
    d = x - x0
    # The integrand 2 (x0 + a d) d is linear in a: every symmetric rule is exact, x^2 - x0^2.
    exact = x.pow(2) - x0.pow(2)
    if method in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        torch.testing.assert_close(got, exact)
    else:  # left / right sums: sum_k (1/S) 2 (x0 + a_k d) d with a_k = k/S or (k+1)/S
        mean_alpha = (steps - 1) / (2 * steps) if method == "riemann_left" else (steps + 1) / (2 * steps)
        torch.testing.assert_close(got, 2 * d * (x0 + mean_alpha * d))


def test_path_rules_integrate_what_they_should():
    for method in xh.pixel_gradients.PATH_RULES:
        alphas, weights = path_rule(5, method)
        assert abs(weights.sum() - 1) < 1e-12, method
        assert alphas.min() >= 0 and alphas.max() <= 1
    alphas, weights = path_rule(3, "gausslegendre")
    assert abs((weights * alphas**5).sum() - 1 / 6) < 1e-12  # degree 5 = 2 * 3 - 1: exact


def test_integrated_gradients_completeness_and_batching(small_cnn):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = small_cnn.double()
    attr, delta = xh.integrated_gradients(model, x.double(), [0, 2, 4], steps=64, return_delta=True, batch_size=5)
    with torch.no_grad():
        logits = model(x.double())
        base = model(torch.zeros_like(x.double()))
    expected = logits[[0, 1, 2], [0, 2, 4]] - base[[0, 1, 2], [0, 2, 4]]
    torch.testing.assert_close(attr.flatten(1).sum(1) - expected, delta)
    # ReLU kinks make the integrand piecewise smooth: the quadrature error is small, not zero.
    assert delta.abs().max() < 1e-2 * expected.abs().max()
    # The batch size changes how the work is cut, not the result.
    torch.testing.assert_close(xh.integrated_gradients(model, x.double(), [0, 2, 4], steps=64, batch_size=64), attr)


def test_smoothgrad_is_the_gradient_for_linear_models_and_for_zero_noise(small_cnn):
    w = torch.tensor([[1.0, -2.0, 0.5]])
    model = GapLinear(w)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(xh.smoothgrad(model, x, 0, samples=7), xh.saliency(model, x, 0))
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(xh.smoothgrad(small_cnn, x, 1, samples=3, noise=0.0), xh.saliency(small_cnn, x, 1))


def test_smoothgrad_averages_the_noisy_gradients():
    x = torch.randn(1, 1, 3, 3, dtype=D, generator=torch.Generator().manual_seed(4))
    got = xh.smoothgrad(Quadratic(), x, 0, samples=4000, noise=0.2, batch_size=500)
    # E[2 (x + eps)] = 2x; the mean of 4000 draws is within a few sigma / sqrt(n) of it.
    sigma = 0.2 * float(x.max() - x.min())
    assert (got - 2 * x).abs().max() < 5 * 2 * sigma / 4000**0.5


# ---------------------------------------------------------------- modified backpropagation


def test_deeplift_by_hand():
    # z = W1 x + b1 = [1 + 1 - 1 + 1 - 1, 3 + 0.5 + 2 + 2 + 0.5] = [1, 8]; reference x0 = 0: z0 = b1 = [-1, 0.5].
    # ReLU6: y = [1, 6], y0 = [0, 0.5]; multipliers m = dy/dz = [1/2, 5.5/7.5].
    # C_i = x_i * sum_j W2_j m_j W1_ji.
    model = TinyMLP().double()
    got, delta = xh.deeplift(model, X4, 0, return_delta=True)
    m = torch.tensor([1 / 2, 5.5 / 7.5], dtype=D)
    w1, w2 = model.fc1.weight.detach(), model.fc2.weight.detach()[0]
    expected = X4.flatten() * ((w2 * m) @ w1)
    torch.testing.assert_close(got.flatten(), expected)
    # Summation-to-delta: t(x) - t(x0) = (2*1 - 6) - (2*0 - 0.5) = -3.5.
    assert abs(got.sum() + 3.5) < 1e-12 and abs(delta) < 1e-12
    # The plain gradient x input does not add up: ReLU6 is saturated (8 > 6) and the first unit crossed zero.
    assert abs(xh.input_x_gradient(model, X4, 0).sum() + 3.5) > 0.5


@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.ReLU6(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(),
                                 nn.LeakyReLU(0.1), nn.GELU(), nn.Hardswish(), nn.ELU()])
def test_deeplift_summation_to_delta_for_every_activation(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), act, nn.Conv2d(6, 6, 3, padding=1),
                          type(act)() if not isinstance(act, nn.LeakyReLU) else nn.LeakyReLU(0.1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=D)
    x0 = torch.randn(1, 3, 8, 8, dtype=D)
    attr, delta = xh.deeplift(model, x, [0, 2], reference=x0, return_delta=True)
    with torch.no_grad():
        diff = model(x)[[0, 1], [0, 2]] - model(x0.expand_as(x))[[0, 1], [0, 2]]
    assert delta.abs().max() < 1e-9 * max(1.0, float(diff.abs().max()))
    torch.testing.assert_close(attr.flatten(1).sum(1), diff)


class Functional(nn.Module):
    """Activations as function calls, one of them in place: no module for a hook to find."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x)
        h.relu_()
        h = F.relu6(h * 3 - 1)
        return self.fc(torch.sigmoid(h).mean((2, 3)))


def test_deeplift_with_functional_and_in_place_activations():
    torch.manual_seed(1)
    model = Functional().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=D)
    attr, delta = xh.deeplift(model, x, 1, return_delta=True)
    assert delta.abs().max() < 1e-10
    assert not torch.allclose(attr, xh.input_x_gradient(model, x, 1))


def test_deeplift_on_efficientnet_lite0_sums_to_delta(lite0, cat_x):
    attr, delta = xh.deeplift(lite0.model, cat_x, 285, return_delta=True)
    with torch.no_grad():
        logit = lite0.model(cat_x)[0, 285] - lite0.model(torch.zeros_like(cat_x))[0, 285]
    # float32 through 60 layers: the error is rounding, a millionth of the logit difference.
    assert abs(float(delta)) < 1e-4 * abs(float(logit)), (float(delta), float(logit))


def test_guided_backprop_by_hand():
    # ReLU6 at z = [1, 8]: unit 1 passes (0 < 1 < 6), unit 2 is saturated; the backward signal
    # W2 = [2, -1] keeps only its positive part: R = W1^T [1[0<z<6] * max(W2, 0)] = W1^T [2, 0].
    model = TinyMLP().double()
    got = xh.guided_backprop(model, X4, 0)
    torch.testing.assert_close(got.flatten(), 2 * model.fc1.weight.detach()[0])
    # At x / 2, z = [0, 4.25]: unit 1 sits at the kink (blocked), unit 2 is live but its signal
    # -1 is negative, so nothing goes back; the plain gradient, -W1[1], does.
    x = X4 * 0.5
    assert torch.equal(xh.guided_backprop(model, x, 0), torch.zeros_like(x))
    torch.testing.assert_close(xh.saliency(model, x, 0).flatten(), -model.fc1.weight.detach()[1])


class ModuleReLUs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu(self.conv(x)))).mean((2, 3)))


class FunctionalReLUs(ModuleReLUs):
    def forward(self, x):
        h = self.conv(x)
        h.relu_()  # in place, as a method call
        return self.fc(torch.relu(self.conv2(h)).mean((2, 3)))


def test_guided_backprop_reaches_functional_and_in_place_activations():
    torch.manual_seed(2)
    modules = ModuleReLUs().double().eval()
    functional = FunctionalReLUs().double().eval()
    functional.load_state_dict(modules.state_dict())
    x = torch.randn(1, 3, 6, 6, dtype=D)
    guided = xh.guided_backprop(modules, x, 0)
    torch.testing.assert_close(xh.guided_backprop(functional, x, 0), guided)
    assert not torch.allclose(guided, xh.saliency(modules, x, 0))


def test_guided_grad_cam_is_guided_backprop_times_the_upsampled_cam(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    layer = small_cnn.features[5]
    a, g, _, _ = xh.activation_and_gradient(small_cnn, x, layer, [1, 3])
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
    expected = xh.guided_backprop(small_cnn, x, [1, 3]) * cam
    torch.testing.assert_close(xh.guided_grad_cam(small_cnn, x, layer, [1, 3]), expected)


# ---------------------------------------------------------------- perturbation


def test_occlusion_with_one_pixel_windows_is_gradient_x_input_for_a_linear_model():
    w = torch.tensor([[1.0, -2.0, 0.5]])
    model = GapLinear(w).double()
    x = torch.randn(1, 3, 4, 5, dtype=D, generator=torch.Generator().manual_seed(7))
    got = xh.occlusion(model, x, 0, window=1, stride=1, score="logit")
    # Hiding pixel (i, j) in every channel removes sum_c w_c x_cij / (H W) from the logit.
    share = xh.input_x_gradient(model, x, 0).sum(1, keepdim=True)
    torch.testing.assert_close(got, share.expand_as(got))


def test_occlusion_averages_over_the_windows_that_cover_a_pixel():
    # Logit = x[0, 0, 0, 0] + 10 * x[0, 0, 0, 2]; image of ones, 1 x 2 windows with stride 1 along a 1 x 3 row.
    class Picker(nn.Module):
        def forward(self, x):
            return (x[:, 0, 0, 0] + 10 * x[:, 0, 0, 2])[:, None]

    x = torch.ones(1, 1, 1, 3, dtype=D)
    got = xh.occlusion(Picker(), x, 0, window=(1, 2), stride=1, score="logit")
    # Windows {0,1} drop 1, {1,2} drop 10: pixel 0 -> 1, pixel 1 -> (1 + 10)/2, pixel 2 -> 10.
    torch.testing.assert_close(got.flatten(), torch.tensor([1.0, 5.5, 10.0], dtype=D))
    assert occlusion_positions((224, 224), 32, 16) == (13, 13)
    assert occlusion_positions((20, 20), 6, 4) == (5, 5)  # ceil(14 / 4) + 1; the last window is cut


def test_rise_equals_its_formula_written_out():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).double().eval()
    x = torch.randn(1, 3, 12, 12, dtype=D)
    masks = rise_masks(50, (12, 12), grid=3, p=0.4, seed=5).double()
    with torch.no_grad():
        scores = model(x * masks[:, None]).softmax(-1)[:, 2]
    eq6 = torch.einsum("k,khw->hw", scores, masks) / (50 * 0.4)
    got = xh.rise(model, x, 2, masks=50, grid=3, p=0.4, seed=5, centre=False, batch_size=7)
    torch.testing.assert_close(got[0].double(), eq6)
    centred = scores.mean() + torch.einsum("k,khw->hw", scores - scores.mean(), masks) / (50 * 0.4)
    torch.testing.assert_close(xh.rise(model, x, 2, masks=50, grid=3, p=0.4, seed=5, batch_size=16)[0].double(), centred)


def test_rise_masks_have_mean_p_and_find_a_one_pixel_detector():
    masks = rise_masks(2000, (16, 16), grid=4, p=0.3, seed=0)
    assert abs(float(masks.mean()) - 0.3) < 0.02
    assert masks.min() >= 0 and masks.max() <= 1

    class Detector(nn.Module):  # the logit is the value of pixel (5, 9)
        def forward(self, x):
            return x[:, :, 5, 9].sum(1, keepdim=True)

    heat = xh.rise(Detector(), torch.ones(1, 3, 16, 16), 0, masks=500, grid=4, score="logit")
    assert divmod(int(heat[0].argmax()), 16) in {(5, 9), (5, 8), (5, 10), (4, 9), (6, 9)}


# ---------------------------------------------------------------- surrogates


def test_shapley_values_by_hand():
    # v(S) = |S|^2 with M = 3: symmetric, so each phi = v(F) / 3 = 3.
    torch.testing.assert_close(xh.shapley_values(lambda z: z.sum(1).double() ** 2, 3), torch.full((3,), 3.0, dtype=D))
    # v(S) = 1 when players 0 and 1 are both in S: they share it, player 2 is a dummy.
    got = xh.shapley_values(lambda z: (z[:, 0] * z[:, 1]).double(), 3)
    torch.testing.assert_close(got, torch.tensor([0.5, 0.5, 0.0], dtype=D))


def test_shapley_kernel_by_hand():
    # M = 4, |z| = 1: (4 - 1) / (C(4, 1) * 1 * 3) = 1/4; |z| = 2: 3 / (6 * 2 * 2) = 1/8.
    torch.testing.assert_close(shapley_kernel(4, torch.tensor([1, 2, 3])), torch.tensor([0.25, 0.125, 0.25], dtype=D))


def test_kernel_shap_sampled_keeps_local_accuracy(small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    seg = torch.arange(16).view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1)  # 16 squares
    got = xh.kernel_shap(small_cnn, x, 2, segments=seg, samples=100, return_segments=True)
    with torch.no_grad():
        full = small_cnn(x).softmax(-1)[0, 2]
        empty = small_cnn(torch.zeros_like(x)).softmax(-1)[0, 2]
    assert abs(float(got.values[0].sum() - (full - empty))) < 1e-6
    assert abs(float(got.intercept[0] - empty)) < 1e-6
    assert got.segments.shape == (1, 16, 16) and int(got.segments.max()) == 15


def test_lime_fit_and_kernel(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    got = xh.lime(small_cnn, x, None, samples=300, return_segments=True)
    assert got.maps.shape == (2, 16, 16) and len(got.values) == 2
    assert all(0 <= float(f) <= 1 for f in got.fit)
    # Every pixel carries its segment's value.
    for i in range(2):
        torch.testing.assert_close(got.maps[i], got.values[i][got.segments[i]])


def test_user_segments_are_relabelled_and_checked(small_cnn):
    x = torch.randn(1, 3, 16, 16)
    seg = torch.zeros(16, 16, dtype=torch.long)
    seg[:, 8:] = 7  # labels 0 and 7: two segments
    got = xh.kernel_shap(small_cnn, x, 0, segments=seg.numpy(), samples=10, return_segments=True)
    assert got.values[0].shape == (2,)
    with pytest.raises(ValueError, match="segments must have shape"):
        xh.lime(small_cnn, x, 0, segments=torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer labels"):
        xh.lime(small_cnn, x, 0, segments=torch.zeros(16, 16))


def test_superpixels_follow_the_image():
    x = torch.zeros(1, 3, 32, 32)
    x[:, 0, :, 16:] = 1.0  # a red right half
    seg = xh.superpixels(x, n_segments=4)
    assert seg.shape == (1, 32, 32) and seg.dtype == torch.int64
    # A one-channel image is a grey picture, not a volume: still one label per pixel.
    grey = xh.superpixels(x[:, :1], n_segments=4)
    assert grey.shape == (1, 32, 32) and int(grey.max()) >= 1
    # No superpixel straddles the colour edge.
    for label in seg.unique():
        cols = (seg[0] == label).nonzero()[:, 1]
        assert bool((cols < 16).all()) or bool((cols >= 16).all())


# ---------------------------------------------------------------- shared machinery


def test_batch_statistics_models_run_one_image_per_pass():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(1, 3, 8, 8)
    got = xh.occlusion(model, x, 0, window=4, stride=4, batch_size=4)
    by_hand = []
    with torch.no_grad():
        p = model(x).softmax(-1)[0, 0]
        for r in (0, 4):
            for c in (0, 4):
                xo = x.clone()
                xo[:, :, r : r + 4, c : c + 4] = 0
                by_hand.append(p - model(xo).softmax(-1)[0, 0])
    torch.testing.assert_close(got[0, 0, ::4, ::4].flatten(), torch.stack(by_hand))


def test_progress_callbacks_count_every_pass(small_cnn):
    x = torch.randn(1, 3, 16, 16)
    for fn, kwargs, total in ((xh.occlusion, {"window": 8, "stride": 4}, 9), (xh.rise, {"masks": 20}, 20),
                              (xh.lime, {"samples": 30}, 30), (xh.integrated_gradients, {"steps": 6}, 6),
                              (xh.smoothgrad, {"samples": 5}, 5)):
        calls = []
        fn(small_cnn, x, 0, progress=lambda done, n: calls.append((done, n)), **kwargs)
        assert calls[-1] == (total, total), fn.__name__


@pytest.mark.parametrize("call,match", [
    (lambda m, x: xh.occlusion(m, x, 0, window=32), "larger than the image"),
    (lambda m, x: xh.occlusion(m, x, 0, window=4, stride=6), "stride .* is larger than the window"),
    (lambda m, x: xh.occlusion(m, x, 0, window=(2, 0)), "window must be a positive int"),
    (lambda m, x: xh.integrated_gradients(m, x, 0, steps=0), "steps must be a positive int"),
    (lambda m, x: xh.integrated_gradients(m, x, 0, method="simpson"), "method must be one of"),
    (lambda m, x: xh.integrated_gradients(m, x, 0, reference=torch.zeros(2, 5, 5)), "does not broadcast"),
    (lambda m, x: xh.deeplift(m, x, 0, reference="black"), "reference must be None, a number or a tensor"),
    (lambda m, x: xh.smoothgrad(m, x, 0, samples=0), "samples must be a positive int"),
    (lambda m, x: xh.smoothgrad(m, x, 0, noise=-1), "noise must be a finite number >= 0"),
    (lambda m, x: xh.rise(m, x, 0, p=1.5), r"p must be a finite number > 0 and < 1"),
    (lambda m, x: xh.rise(m, x, 0, masks=0), "masks must be a positive int"),
    (lambda m, x: xh.lime(m, x, 0, samples=0), "samples must be a positive int"),
    (lambda m, x: xh.lime(m, x, 0, kernel_width=0), "kernel_width must be a finite number > 0"),
    (lambda m, x: xh.kernel_shap(m, x, 0, score="margin"), "score must be one of"),
    (lambda m, x: xh.occlusion(m, x, 0, batch_size=0), "batch_size must be a positive int"),
    (lambda m, x: xh.rise(m, x, 0, progress="yes"), "progress must be True, False or a callable"),
])
def test_bad_settings_are_named(small_cnn, call, match):
    with pytest.raises(ValueError, match=match):
        call(small_cnn, torch.randn(1, 3, 16, 16))


def test_occlusion_window_as_a_fraction_of_the_side():
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    torch.testing.assert_close(xh.occlusion(net, x, 0, window=0.25, stride=0.125),
                               xh.occlusion(net, x, 0, window=(8, 12), stride=(4, 6)))
    torch.testing.assert_close(xh.occlusion(net, x, 0, window=(0.5, 8), stride=4),
                               xh.occlusion(net, x, 0, window=(16, 8), stride=4))
    with pytest.raises(ValueError, match=r"fraction of the image side must lie in \(0, 1\]"):
        xh.occlusion(net, x, 0, window=1.5)
