"""Beyond one class index: callable targets, non-tensor outputs, segmentation and transformer models."""

import copy
import threading
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_helpers as xh
from xai_helpers.methods.cam_template import activation_and_gradient

from .conftest import all_hooks

METHODS = list(xh.METHODS.values())
GRADIENT_LAYER_METHODS = [m for m in METHODS if m.needs_layer and m.needs_gradients]


def finish_reference(cam, size):
    """ReLU -> bilinear upsampling -> min-max, written out."""
    cam = F.interpolate(cam.clamp_min(0)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    return torch.where(hi > lo, (cam - lo) / (hi - lo), torch.zeros_like(cam))


# --- callable targets -------------------------------------------------------------------


def test_sum_of_classes_is_the_sum_of_gradients(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    layer = small_cnn.features[5]
    a, g1, _, _ = activation_and_gradient(small_cnn, x, layer, target=1)
    _, g3, _, _ = activation_and_gradient(small_cnn, x, layer, target=3)
    expected = finish_reference(((g1 + g3).mean((2, 3), keepdim=True) * a).sum(1), (16, 16))
    got = xh.grad_cam(small_cnn, x, layer, target=lambda out: out[:, 1] + out[:, 3])
    torch.testing.assert_close(got, expected)
    assert got.amax() == 1 and not torch.allclose(got, xh.grad_cam(small_cnn, x, layer, target=1))


def test_sigmoid_multilabel_score_equals_its_logit_for_grad_cam(small_cnn):
    # d sigmoid(y)/dA = sigmoid'(y) dy/dA: a positive factor per image, removed by the min-max step.
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    layer = small_cnn.features[5]
    got = xh.grad_cam(small_cnn, x, layer, target=lambda out: torch.sigmoid(out)[:, 2])
    torch.testing.assert_close(got, xh.grad_cam(small_cnn, x, layer, target=2), rtol=1e-4, atol=1e-5)


def test_score_cam_callable_probability_equals_class_index(small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    layer = small_cnn.features[5]
    got = xh.score_cam(small_cnn, x, layer, target=lambda out: out.softmax(-1)[:, 4])
    torch.testing.assert_close(got, xh.score_cam(small_cnn, x, layer, target=4))


def test_saliency_callable_target_is_the_sum_of_gradients(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    both = xh.saliency(small_cnn, x, target=lambda out: out[:, 0] - out[:, 2])
    torch.testing.assert_close(both, xh.saliency(small_cnn, x, target=0) - xh.saliency(small_cnn, x, target=2))


def test_cam_refuses_a_callable_target(small_cnn):
    with pytest.raises(ValueError, match="use Grad-CAM for a callable target"):
        xh.cam(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], target=lambda out: out[:, 0])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_callable_target_with_the_wrong_shape(method, small_cnn):
    # Either "must return one score per image, shape (2,)", or, for a method that explains
    # class indices only, "... use Grad-CAM for a callable target".
    with pytest.raises(ValueError, match=r"one score per image, shape \(2,\)|for a callable target"):
        method(small_cnn, torch.randn(2, 3, 16, 16), small_cnn.features[5], target=lambda out: out.sum())
    assert all_hooks(small_cnn) == 0


# --- what the model returns ---------------------------------------------------------------


@dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


class Wrapped(nn.Module):
    def __init__(self, inner, kind):
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x):
        logits = self.inner(x)
        if self.kind == "tuple":
            return logits, x.mean()
        if self.kind == "logits-dict":
            return {"aux": logits * 0, "logits": logits}
        if self.kind == "out-dict":
            return {"out": logits}
        return Output(logits=logits, hidden=x)


@pytest.mark.parametrize("kind", ["tuple", "logits-dict", "out-dict", "object"])
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_non_tensor_outputs_go_through_the_selector(kind, method, small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    wrapped = Wrapped(small_cnn, kind).eval()
    expected = method(small_cnn, x, small_cnn.features[5], target=[1, 2])
    torch.testing.assert_close(method(wrapped, x, small_cnn.features[5], target=[1, 2]), expected)
    heat = method(small_cnn, x, small_cnn.features[5])
    torch.testing.assert_close(xh.confidence_kept(wrapped, x, heat), xh.confidence_kept(small_cnn, x, heat))


def test_selector_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"keys \['a', 'b'\].*'logits' or 'out'"):
        xh.select_output({"a": torch.zeros(1), "b": torch.zeros(1)})
    with pytest.raises(ValueError, match="expected a tensor"):
        xh.select_output("logits")


@pytest.fixture(scope="module")
def segmenter():
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4).eval()


def test_segmentation_region_target_against_written_out_grad_cam(segmenter):
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    region = torch.zeros(96, 96)
    region[20:60, 30:70] = 1.0
    layer = segmenter.backbone["16"]

    def target(out):  # class 2 summed over the region, out = the "out" entry (N, 4, 96, 96)
        return (out[:, 2] * region).sum((1, 2))

    got = xh.grad_cam(segmenter, x, layer, target=target)

    # Reference: a private copy, a retained gradient and a full backward pass.
    ref_model = copy.deepcopy(segmenter)
    store = {}

    def keep(module, inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = ref_model.backbone["16"].register_forward_hook(keep)
    with torch.enable_grad():
        score = (ref_model(x)["out"][:, 2] * region).sum()
        score.backward()
    handle.remove()
    a, g = store["a"].detach(), store["a"].grad
    expected = finish_reference((g.mean((2, 3), keepdim=True) * a).sum(1), (96, 96))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert got.amax() == 1 and all_hooks(segmenter) == 0


def test_segmentation_needs_a_callable_target(segmenter):
    with pytest.raises(ValueError, match="pass a callable target"):
        xh.grad_cam(segmenter, torch.randn(1, 3, 64, 64), segmenter.backbone["16"], target=2)


# --- transformer layers ---------------------------------------------------------------------


def vit_reshape(t):
    """pytorch-grad-cam's documented ViT reshape: drop the class token, 14 x 14 grid, channels first."""
    grid = t[:, 1:, :].reshape(t.size(0), 14, 14, t.size(2))
    return grid.transpose(2, 3).transpose(1, 2)


@pytest.fixture(scope="module")
def vit():
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    model = vit_b_16(weights=None).eval()
    # torchvision initialises the classification head to zeros: every gradient would vanish.
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


@pytest.fixture(scope="module")
def swin():
    from torchvision.models import swin_t

    torch.manual_seed(0)
    return swin_t(weights=None).eval()


X224 = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))


def pgc_grad_cam(model, layer, reshape, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        return torch.from_numpy(cam(input_tensor=X224, targets=[ClassifierOutputTarget(t) for t in targets]))


def test_vit_tokens_detected_and_equal_to_pytorch_grad_cam(vit):
    pytest.importorskip("pytorch_grad_cam")
    layer = vit.encoder.layers[-1].ln_1  # output (N, 197, 768): a class token and 14 x 14 patches
    ours = xh.grad_cam(vit, X224, layer, target=[3, 7])
    torch.testing.assert_close(ours, xh.grad_cam(vit, X224, layer, target=[3, 7], reshape_transform=vit_reshape))
    torch.testing.assert_close(ours, pgc_grad_cam(vit, layer, vit_reshape, [3, 7]), rtol=0, atol=1e-4)
    assert ours.amax((1, 2)).eq(1).all() and all_hooks(vit) == 0


def test_swin_channels_last_detected_and_equal_to_pytorch_grad_cam(swin):
    pytest.importorskip("pytorch_grad_cam")
    layer = swin.features[-1][-1].norm1  # output (N, 7, 7, 768)

    def nhwc(t):
        return t.permute(0, 3, 1, 2)

    ours = xh.grad_cam(swin, X224, layer, target=[3, 7])
    torch.testing.assert_close(ours, xh.grad_cam(swin, X224, layer, target=[3, 7], reshape_transform=xh.nhwc_to_nchw))
    torch.testing.assert_close(ours, pgc_grad_cam(swin, layer, nhwc, [3, 7]), rtol=0, atol=1e-4)
    plus = xh.grad_cam_plus_plus(swin, X224, layer, target=3)
    assert plus.shape == (2, 224, 224) and plus.amax((1, 2)).eq(1).all()


def test_tokens_to_grid():
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).view(2, 17, 3)  # class token + 4 x 4
    grid = xh.tokens_to_grid(tokens)
    assert grid.shape == (2, 3, 4, 4)
    assert torch.equal(grid[1, 2, 0, 1], tokens[1, 2, 2])  # token 1 + (row 0, col 1), channel 2
    assert xh.tokens_to_grid(tokens[:, 1:]).shape == (2, 3, 4, 4)  # no class token
    assert xh.tokens_to_grid(tokens, prefix=1, grid=(2, 8)).shape == (2, 3, 2, 8)
    with pytest.raises(ValueError, match="square grid"):
        xh.tokens_to_grid(torch.zeros(1, 7, 3))


@pytest.mark.parametrize("method", [m for m in METHODS if m.needs_layer], ids=lambda m: m.slug)
def test_reshape_transform_reaches_every_layer_method(method):
    class Tokens(nn.Module):
        """A 'transformer': patches as tokens plus a class token, a linear head on the mean token."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 6, 4, stride=4)
            self.blocks = nn.Identity()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)  # (N, 16, 6)
            t = torch.cat([t.mean(1, keepdim=True), t], 1)  # (N, 17, 6)
            return self.fc(self.blocks(torch.relu(t))[:, 1:].mean(1))

    torch.manual_seed(0)
    model = Tokens().eval()
    x = torch.randn(1, 3, 16, 16)
    heat = method(model, x, model.blocks, target=1)
    if method.requirement is None:
        assert heat.shape == (1, 16, 16) and heat.amax() == 1
    with pytest.raises(ValueError, match=r"reshape_transform must return an \(N, C, h, w\)"):
        method(model, x, model.blocks, target=1, reshape_transform=lambda t: t)


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_calls_on_one_model_are_safe(small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    layer = small_cnn.features[5]
    small_cnn.train()  # the flags must come back right too
    expected = xh.grad_cam(small_cnn, x, layer, target=1)
    failures, results = [], []

    def work():
        for _ in range(300):
            try:
                results.append(xh.grad_cam(small_cnn, x, layer, target=1))
            except Exception as error:  # noqa: BLE001 - counted below
                failures.append(repr(error))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(results) == 600 and all(torch.equal(r, expected) for r in results)
    assert all(m.training for m in small_cnn.modules()) and all_hooks(small_cnn) == 0


def test_a_users_forward_in_another_thread_is_not_captured(small_cnn):
    x = torch.randn(1, 3, 16, 16)
    layer = small_cnn.features[5]
    from xai_helpers.engine.hooks import LayerCapture

    with LayerCapture(layer) as cap:
        worker = threading.Thread(target=lambda: small_cnn(x))
        worker.start()
        worker.join()
        small_cnn(x)
    assert cap.calls == 1
