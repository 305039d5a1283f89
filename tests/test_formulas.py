"""The finished methods against their equations written out independently, and known identities."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_helpers as xh
from xai_helpers.methods.cam_template import activation_and_gradient
from xai_helpers.methods.grad_cam import grad_cam_plus_plus_weights
from xai_helpers.engine.fast_copy import fast_copy, fold_batchnorm
from xai_helpers.methods.score_cam import live_channels

from .conftest import SmallCNN, randomize_bn


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


def test_fold_batchnorm_is_exact_and_leaves_model_alone(small_cnn):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    before = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    folded = fold_batchnorm(small_cnn, x[:1])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), small_cnn(x), rtol=1e-5, atol=1e-5)
    for k, v in small_cnn.state_dict().items():
        assert torch.equal(v, before[k])
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in small_cnn.modules())


def test_fold_batchnorm_real_model(lite0, cat_x):
    folded = fold_batchnorm(lite0.model, cat_x)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0
    with torch.no_grad():
        torch.testing.assert_close(folded(cat_x), lite0.model(cat_x), rtol=1e-4, atol=1e-4)


def test_live_channels():
    a = torch.zeros(1, 3, 2, 2)
    a[0, 1, 0, 0] = 1e-6
    a[0, 2] = 7.0
    assert live_channels(a).tolist() == [[False, True, False]]


def test_real_model_has_dead_channels(lite0, cat_x):
    a = xh.engine.layer_pass(lite0.model, cat_x, lite0.target_layer, gradient=False).activation
    live = int(live_channels(a).sum())
    assert 0 < live < a.shape[1]


def test_fast_inference_copy_is_exact_and_private(small_cnn, lite0, cat_x):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    fast = fast_copy(small_cnn, x[:1])
    assert all(m.inplace for m in fast.modules() if isinstance(m, torch.nn.ReLU))
    with torch.no_grad():
        torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), small_cnn(x), rtol=1e-5, atol=1e-5)
    assert not any(m.inplace for m in lite0.model.modules() if isinstance(m, torch.nn.ReLU6))
    fast = fast_copy(lite0.model, cat_x)
    with torch.no_grad():
        torch.testing.assert_close(fast(cat_x), lite0.model(cat_x), rtol=1e-4, atol=1e-4)


def test_fast_inference_copy_falls_back_when_inplace_is_unsafe():
    class PreActivationSkip(nn.Module):
        # The ReLU's input is used again afterwards: making it in-place would change the output.
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return (self.relu(y) + y).mean((2, 3))

    model = PreActivationSkip().eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match="without in-place activations"):
        fast = fast_copy(model, x[:1])
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x))
    assert not fast.relu.inplace
