"""The CAM family (CAM, Grad-CAM, Grad-CAM++, Score-CAM): maps worked out on paper, equations written out
independently, and known identities.

In the hand-worked cases the model's layer is the identity, so the input x *is* the activation A and
every number can be checked by hand (the comments show the arithmetic).
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_helpers as xh
from xai_helpers.methods.cam_template import activation_and_gradient
from xai_helpers.methods.grad_cam import grad_cam_plus_plus_weights
from xai_helpers.methods.score_cam import live_channels, score_cam_weights

from .conftest import GapLinear


def test_weights_accept_a_callable_target(small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = small_cnn.features(x)
    by_index = score_cam_weights(small_cnn, x, a, torch.tensor([2]))
    by_callable = score_cam_weights(small_cnn, x, a, lambda out: out.softmax(-1)[:, 2])
    torch.testing.assert_close(by_callable, by_index)


# Channel 0: [[1, 2], [3, 4]]  (sum 10); channel 1: [[4, 0], [0, 0]]  (sum 4).
A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 0.0]]]])


# Class 0 weights (4, 8): through a 2x2 average pool, dy0/dA = (4/4, 8/4) = (1, 2) everywhere.
W = [[4.0, 8.0], [1.0, -1.0]]


def test_cam_by_hand():
    model = GapLinear(W, bias=[0.5, -3.0])
    # M_0 = 4*A0 + 8*A1 = [[36, 8], [12, 16]]; min 8, span 28. The bias plays no part.
    expected = torch.tensor([[[1.0, 0.0], [4 / 28, 8 / 28]]])
    torch.testing.assert_close(xh.cam(model, A, model.features, target=0), expected)


def test_cam_of_second_class_by_hand():
    model = GapLinear(W)
    # M_1 = 1*A0 - 1*A1 = [[-3, 2], [3, 4]] -> ReLU [[0, 2], [3, 4]] -> / 4
    expected = torch.tensor([[[0.0, 0.5], [0.75, 1.0]]])
    torch.testing.assert_close(xh.cam(model, A, model.features, target=1), expected)


def test_grad_cam_by_hand():
    model = GapLinear(W)
    # alpha = mean of dy0/dA = (1, 2); map = A0 + 2*A1 = [[9, 2], [3, 4]]; min 2, span 7.
    expected = torch.tensor([[[1.0, 0.0], [1 / 7, 2 / 7]]])
    torch.testing.assert_close(xh.grad_cam(model, A, model.features, target=0), expected)


def test_grad_cam_plus_plus_by_hand():
    model = GapLinear(W)
    # g = (1, 2).  alpha = g^2 / (2 g^2 + sum(A) g^3):
    #   channel 0: 1 / (2 + 10)  = 1/12;  w0 = 4 positions * 1/12 * ReLU(1) = 1/3
    #   channel 1: 4 / (8 + 4*8) = 1/10;  w1 = 4 positions * 1/10 * ReLU(2) = 4/5
    # map = A0/3 + 4/5 A1 = [[53/15, 2/3], [1, 4/3]]; min 2/3, span 43/15.
    span = 53 / 15 - 2 / 3
    expected = torch.tensor([[[1.0, 0.0], [(1 - 2 / 3) / span, (4 / 3 - 2 / 3) / span]]])
    torch.testing.assert_close(xh.grad_cam_plus_plus(model, A, model.features, target=0), expected)


class SquareHead(nn.Module):
    """y0 = sum(A0^2), y1 = sum(A0 * A1): a non-linear head where Grad-CAM differs from CAM."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x):
        a = self.features(x)
        return torch.stack([(a[:, 0] ** 2).sum((1, 2)), (a[:, 0] * a[:, 1]).sum((1, 2))], 1)


def test_grad_cam_nonlinear_head_by_hand():
    model = SquareHead()
    # dy0/dA0 = 2*A0, mean 5; dy0/dA1 = 0  ->  map = 5*A0 -> [[0, 1/3], [2/3, 1]]
    expected = torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]])
    torch.testing.assert_close(xh.grad_cam(model, A, model.features, target=0), expected)
    # dy1/dA0 = A1 (mean 1), dy1/dA1 = A0 (mean 2.5) -> A0 + 2.5*A1 = [[11, 2], [3, 4]]
    expected = torch.tensor([[[1.0, 0.0], [1 / 9, 2 / 9]]])
    torch.testing.assert_close(xh.grad_cam(model, A, model.features, target=1), expected)


def test_cam_rejects_nonlinear_head():
    model = SquareHead()
    with pytest.raises(ValueError, match="Grad-CAM"):
        xh.cam(model, A, model.features)


def test_upsampling_is_bilinear_without_corner_alignment():
    model = GapLinear([[1.0, 0.0]])
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, :2, :2] = 1.0  # top-left quadrant
    low = torch.nn.functional.avg_pool2d(x, 2)  # (1, 2, 2, 2)
    # Capture the 2x2 map from a model that pools first, then check the 4x4 output by hand.
    pooled = nn.Sequential()
    pooled.features = nn.AvgPool2d(2)
    pooled.pool = nn.AdaptiveAvgPool2d(1)
    pooled.flat = nn.Flatten()
    pooled.fc = model.fc
    heat = xh.cam(pooled, x, pooled.features, target=0)
    assert low[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    # Bilinear 2x2 -> 4x4 (align_corners=False): rows/cols weights (1, .75, .25, 0).
    ramp = torch.tensor([1.0, 0.75, 0.25, 0.0])
    torch.testing.assert_close(heat[0], torch.outer(ramp, ramp))


def _softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _score_cam_by_formula(weight, a, c, score="probability", baseline=False):
    """Score-CAM on GapLinear(weight) with x = A, written out with Python lists."""
    channels = len(a)
    flat = [[v for row in a[k] for v in row] for k in range(channels)]
    scores = []
    for k in range(channels):
        lo, hi = min(flat[k]), max(flat[k])
        mask = [(v - lo) / (hi - lo) for v in flat[k]]
        pooled = [sum(m * v for m, v in zip(mask, flat[j])) / len(mask) for j in range(channels)]
        logits = [sum(w * p for w, p in zip(row, pooled)) for row in weight]
        scores.append(_softmax(logits)[c] if score == "probability" else logits[c])
    if baseline:
        scores = [s - _softmax([0.0] * len(weight))[c] for s in scores]
    if score == "logit-softmax":
        scores = _softmax(scores)
    cam = [max(0.0, sum(scores[k] * flat[k][i] for k in range(channels))) for i in range(len(flat[0]))]
    lo, hi = min(cam), max(cam)
    return torch.tensor([(v - lo) / (hi - lo) for v in cam]).reshape(1, 2, 2)


@pytest.mark.parametrize("score", ["probability", "logit-softmax"])
@pytest.mark.parametrize("baseline", [False, True])
@pytest.mark.parametrize("c", [0, 1])
def test_score_cam_by_formula(score, baseline, c):
    weight = [[0.4, -0.3], [-0.2, 0.9]]
    model = GapLinear(weight)
    a = [[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 1.0]]]
    heat = xh.score_cam(model, torch.tensor([a]), model.features, target=c, score=score, subtract_reference=baseline)
    torch.testing.assert_close(heat, _score_cam_by_formula(weight, a, c, score, baseline), rtol=1e-5, atol=1e-6)


def test_score_cam_probability_by_hand():
    # Class 0 weights (0, 1): the logit is the mean of the masked channel 1.
    model = GapLinear([[0.0, 1.0], [0.0, 0.0]])
    a = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]], [[2.0, 2.0], [2.0, 6.0]]]])
    # Mask 0 = A0 itself -> masked A1 = [0, 2, 0, 6], mean 2 -> p0 = e^2 / (e^2 + 1)
    # Mask 1 = [0, 0, 0, 1] -> masked A1 mean 6/4 = 1.5 -> p0 = e^1.5 / (e^1.5 + 1)
    s0, s1 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1.5))
    cam = torch.tensor([[2 * s1, s0 + 2 * s1], [2 * s1, s0 + 6 * s1]])
    expected = (cam - cam.min()) / (cam.max() - cam.min())
    torch.testing.assert_close(xh.score_cam(model, a, model.features, target=0)[0], expected)


def test_score_cam_skips_constant_channels():
    model = GapLinear([[1.0, 1.0], [0.0, 0.0]])
    a = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    # Channel 1 is constant: its mask is 0/0, so it gets weight 0 and adds nothing.
    activation = a
    weights = score_cam_weights(model, a, activation, torch.tensor([0]))
    assert weights[0, 1] == 0 and weights[0, 0] > 0
    torch.testing.assert_close(xh.score_cam(model, a, model.features)[0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))


def test_score_cam_top_channels_scores_only_the_most_active():
    # Channel means: 2.5, 1.25 and 7 (constant, so dead). With top_channels=1 only channel 0 is scored:
    # the map is s_0 * A^0, min-max scaled, which is A^0 scaled = [[0, 1/3], [2/3, 1]].
    model = GapLinear([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 1.0]], [[7.0, 7.0], [7.0, 7.0]]]])
    weights = score_cam_weights(model, a, a, torch.tensor([0]), top_channels=1)
    full = score_cam_weights(model, a, a, torch.tensor([0]))
    assert weights[0, 0] == full[0, 0] > 0 and weights[0, 1] == 0 and weights[0, 2] == 0
    torch.testing.assert_close(xh.score_cam(model, a, model.features, target=0, top_channels=1)[0],
                               torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    # As many channels as are live (or more) is the exact method.
    for k in (2, 3, 50):
        torch.testing.assert_close(score_cam_weights(model, a, a, torch.tensor([0]), top_channels=k), full)
    assert xh.METHODS["Score-CAM"].passes(channels=2, **xh.METHODS["Score-CAM"].preview) == (3, 0)
    assert xh.METHODS["Score-CAM"].passes(channels=509, top_channels=64) == (65, 0)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "64"])
def test_score_cam_top_channels_refuses_non_counts(bad):
    model = GapLinear([[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="top_channels"):
        xh.score_cam(model, A, model.features, top_channels=bad)


class Flatten(nn.Module):
    """y = W vec(x) + b: the input gradient of class c is row c of W, laid out like the image."""

    def __init__(self, weight):
        super().__init__()
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.copy_(torch.tensor([5.0, -5.0]))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_saliency_by_hand():
    # Class 0: channel 0 = [[1, -2], [0, 3]], channel 1 = [[-4, 1], [2, 0]].
    model = Flatten([[1.0, -2.0, 0.0, 3.0, -4.0, 1.0, 2.0, 0.0], [0.0] * 8])
    x = torch.randn(1, 2, 2, 2)
    raw = xh.saliency(model, x, target=0)
    torch.testing.assert_close(raw, torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[-4.0, 1.0], [2.0, 0.0]]]]))
    # max over channels of |w| = [[4, 2], [2, 3]]; min 2, span 2.
    expected = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
    torch.testing.assert_close(xh.METHODS["Saliency"](model, x, target=0), expected)


def test_saliency_with_an_inplace_first_layer():
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.tensor([[[[1.0, -1.0], [2.0, -2.0]]]])
    raw = xh.saliency(model, x, target=0)
    # ReLU passes the gradient only where x > 0.
    torch.testing.assert_close(raw, torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]]))
    assert torch.equal(x, torch.tensor([[[[1.0, -1.0], [2.0, -2.0]]]]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cam_accepts_low_precision_models(dtype, small_cnn):
    # The head check compares GAP(A) with the Linear's input at the model's own precision.
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = xh.cam(small_cnn, x, small_cnn.features[5], target=1)
    low = copy.deepcopy(small_cnn).to(dtype)
    got = xh.cam(low, x.to(dtype), low.features[5], target=1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=0.05, rtol=0)


def eq19_loops(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights for one image, element by element as Eq. 19 and Eq. 7 read (float64)."""
    a, g = a.double(), g.double()
    channels, h, w = a.shape
    weights = torch.zeros(channels, dtype=torch.float64)
    for k in range(channels):
        total_a = sum(float(a[k, i, j]) for i in range(h) for j in range(w))
        for i in range(h):
            for j in range(w):
                gij = float(g[k, i, j])
                denominator = 2 * gij**2 + total_a * gij**3
                alpha = 0.0 if denominator == 0 else gij**2 / denominator
                weights[k] += alpha * max(gij, 0.0)
    return weights


def test_grad_cam_plus_plus_weights_match_eq19_written_out():
    torch.manual_seed(1)
    a = torch.rand(2, 6, 3, 4)
    g = torch.randn(2, 6, 3, 4)
    g[0, 0] = 0.0  # a whole channel with zero gradient
    g[0, 1, 1, 2] = 0.0  # single zero-gradient positions
    g[1, 2, :, 1] = 0.0
    a[1, 3] = 0.0  # sum(A) = 0: the denominator is 2 g^2
    # sum(A) * g = -2 makes the denominator 2g^2 + sum(A) g^3 = g^2 (2 - 2) = 0 at one position.
    a[0, 4] = 0.25
    g[0, 4, 0, 0] = -2 / float(a[0, 4].sum())
    got = grad_cam_plus_plus_weights(a, g)
    for n in range(2):
        torch.testing.assert_close(got[n].double(), eq19_loops(a[n], g[n]), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(got).all()


def test_grad_cam_plus_plus_alpha_is_not_just_g_squared():
    # The torchcam no-op bug leaves alpha = g^2; Eq. 19 divides it.
    a = torch.ones(1, 1, 2, 2)
    g = torch.full((1, 1, 2, 2), 2.0)
    # alpha = 4 / (8 + 4 * 8) = 0.1; w = 4 * 0.1 * 2 = 0.8, whereas alpha = g^2 would give 32.
    torch.testing.assert_close(grad_cam_plus_plus_weights(a, g), torch.tensor([[0.8]]))


def test_grad_cam_equals_cam_on_gap_linear_real_model(lite0, cat_x):
    model, layer = lite0.model, lite0.target_layer
    for target in (None, 285, 967):
        torch.testing.assert_close(
            xh.grad_cam(model, cat_x, layer, target=target), xh.cam(model, cat_x, layer, target=target), atol=1e-5, rtol=0
        )


def test_grad_cam_weights_are_fc_over_hw_on_real_model(lite0, cat_x):
    a, g, targets, _ = activation_and_gradient(lite0.model, cat_x, lite0.target_layer, target=285)
    h, w = a.shape[-2:]
    alpha = g.mean((2, 3))[0]
    torch.testing.assert_close(alpha, lite0.fc.weight[285].detach() / (h * w), rtol=1e-5, atol=1e-7)
    # ... and the gradient is the same at every position, as GAP -> Linear implies.
    torch.testing.assert_close(g[0], alpha[:, None, None].expand_as(g[0]), rtol=1e-5, atol=1e-7)


def test_find_gap_linear(lite0, cat_x):
    assert xh.find_gap_linear(lite0.model, cat_x, lite0.target_layer) is lite0.fc


def test_cam_rejects_vgg_style_head():
    from torchvision.models import vgg11

    model = vgg11(weights=None).eval()
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="global average pooling.*Grad-CAM"):
        xh.cam(model, x, model.features)
    # Grad-CAM works on the same head.
    assert xh.grad_cam(model, x, model.features).shape == (1, 64, 64)


def test_cam_rejects_layer_that_is_not_pooled(lite0, cat_x):
    with pytest.raises(ValueError, match="does not receive the global average"):
        xh.cam(lite0.model, cat_x, lite0.model.features.stage7)


def naive_score_cam(model, x, layer, target, score="probability"):
    """The authors' Score-CAM loop: one channel at a time, no batching, no folding."""
    store = {}

    def keep(module, inputs, output):
        store["a"] = output.detach().clone()  # a copy: an in-place ReLU may follow

    handle = layer.register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    a = store["a"]
    h, w = x.shape[-2:]
    scores, maps = [], []
    with torch.no_grad():
        for k in range(a.shape[1]):
            up = F.interpolate(a[:, k : k + 1], size=(h, w), mode="bilinear", align_corners=False)
            if up.max() == up.min():
                continue
            mask = (up - up.min()) / (up.max() - up.min())
            out = model(x * mask)
            scores.append(F.softmax(out, dim=1)[0, target] if score == "probability" else out[0, target])
            maps.append(up)
    scores = torch.stack(scores)
    if score == "logit-softmax":
        scores = scores.softmax(0)
    cam = F.relu(sum(s * m for s, m in zip(scores, maps)))[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


@pytest.mark.parametrize("score", ["probability", "logit-softmax"])
def test_score_cam_matches_naive_loop_small_cnn(small_cnn, score):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 32, 32)
    layer = small_cnn.features[4]  # BatchNorm output: has negative values and live channels
    expected = naive_score_cam(small_cnn, x, layer, target=3, score=score)
    got = xh.score_cam(small_cnn, x, layer, target=3, batch_size=5, score=score)[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_score_cam_matches_naive_loop_real_model(lite0):
    # 96x96 keeps the naive loop (one pass per channel) to a few seconds.
    x = lite0.transform(xh.load_image("coffee")).unsqueeze(0)
    x = F.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False)
    expected = naive_score_cam(lite0.model, x, lite0.target_layer, target=967)
    got = xh.score_cam(lite0.model, x, lite0.target_layer, target=967)[0]
    correlation = torch.corrcoef(torch.stack([got.flatten(), expected.flatten()]))[0, 1]
    assert correlation > 0.9999
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)


def test_score_cam_batch_size_does_not_change_result(small_cnn):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    layer = small_cnn.features[4]
    ref = xh.score_cam(small_cnn, x, layer, batch_size=1)
    for batch_size in (3, 64, None):
        torch.testing.assert_close(xh.score_cam(small_cnn, x, layer, batch_size=batch_size), ref)


def test_live_channels():
    a = torch.zeros(1, 3, 2, 2)
    a[0, 1, 0, 0] = 1e-6
    a[0, 2] = 7.0
    assert live_channels(a).tolist() == [[False, True, False]]


def test_real_model_has_dead_channels(lite0, cat_x):
    a = xh.engine.layer_pass(lite0.model, cat_x, lite0.target_layer, gradient=False).activation
    live = int(live_channels(a).sum())
    assert 0 < live < a.shape[1]


