"""Maps worked out on paper for 2-channel, 2x2 activations.

The models' layer is the identity, so the input x *is* the activation A and
every number below can be checked by hand (the comments show the arithmetic).
"""

import copy
import math

import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers.methods.score_cam import score_cam_weights

from .conftest import GapLinear, SmallCNN

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
