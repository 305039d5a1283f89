"""The protocol every registry entry keeps: its output, and the caller's model, input and autograd state left exactly as they were."""

import copy

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import xai_helpers as xh
from xai_helpers.methods.cam_template import activation_and_gradient

from .conftest import SmallCNN, all_hooks, randomize_bn

METHODS = list(xh.METHODS.items())
# The layer each method is asked about; methods without a layer ignore it.


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return randomize_bn(resnet18(weights=None, num_classes=7)).eval()


@pytest.fixture(scope="module")
def x_small():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name,method", METHODS)
def test_no_hooks_left_after_many_calls(name, method, small_cnn):
    x = torch.randn(1, 3, 16, 16)
    for _ in range(100 if method.fast else 10):
        method(small_cnn, x, small_cnn.features[5])
    assert all_hooks(small_cnn) == 0


@pytest.mark.parametrize("name,method", METHODS)
def test_no_hooks_left_after_exceptions(name, method, small_cnn):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError):
        method(small_cnn, x, small_cnn.features[5], target=99)  # fails after the forward pass

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    small_cnn.pool, original = Boom(), small_cnn.pool
    try:
        with pytest.raises(RuntimeError, match="boom"):
            method(small_cnn, x, small_cnn.features[5])
    finally:
        small_cnn.pool = original
    assert all_hooks(small_cnn) == 0
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name,method", METHODS)
def test_train_mode_restored_and_eval_used(name, method, small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = method(small_cnn, x, small_cnn.features[5])  # computed in eval mode
    small_cnn.train()
    small_cnn.features[1].eval()  # a mixed set-up, e.g. frozen BatchNorm
    running = small_cnn.features[4].running_mean.clone()
    got = method(small_cnn, x, small_cnn.features[5])
    assert small_cnn.training and small_cnn.features[4].training and not small_cnn.features[1].training
    # Eval mode: BatchNorm used (and did not update) its running statistics.
    assert torch.equal(small_cnn.features[4].running_mean, running)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name,method", METHODS)
def test_grads_requires_grad_and_input_untouched(name, method, small_cnn):
    params = list(small_cnn.parameters())
    params[0].grad = torch.full_like(params[0], 3.0)  # a pre-existing gradient
    params[1].requires_grad_(False)
    x = torch.randn(2, 3, 16, 16)
    x_before = x.clone()
    method(small_cnn, x, small_cnn.features[5])
    assert torch.equal(params[0].grad, torch.full_like(params[0], 3.0))
    assert all(p.grad is None for p in params[1:])
    assert [p.requires_grad for p in params] == [True, False] + [True] * (len(params) - 2)
    assert torch.equal(x, x_before) and not x.requires_grad


@pytest.mark.parametrize("name,method", METHODS)
def test_frozen_model(name, method, resnet, x_small):
    frozen = copy.deepcopy(resnet)
    for p in frozen.parameters():
        p.requires_grad_(False)
    got = method(frozen, x_small, frozen.layer4, **method.preview)
    torch.testing.assert_close(got, method(resnet, x_small, resnet.layer4, **method.preview))
    assert not any(p.requires_grad for p in frozen.parameters())
    assert got.amax((1, 2)).eq(1).all()  # real maps, not the all-zero maps of empty gradients


@pytest.mark.parametrize("name,method", METHODS)
def test_under_no_grad_and_inference_mode(name, method, small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    expected = method(small_cnn, x, small_cnn.features[5])
    with torch.no_grad():
        torch.testing.assert_close(method(small_cnn, x, small_cnn.features[5]), expected)
    with torch.inference_mode():
        torch.testing.assert_close(method(small_cnn, x, small_cnn.features[5]), expected)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name,method", METHODS)
def test_inplace_relu_resnet(name, method, resnet, x_small):
    heat = method(resnet, x_small, resnet.layer4, **method.preview)
    assert heat.shape == (2, 64, 64) and torch.isfinite(heat).all()
    assert heat.amax((1, 2)).eq(1).all()


def test_activation_is_not_overwritten_by_inplace_ops(resnet, x_small):
    # bn2's output is then changed in place by `out += identity` and ReLU(inplace=True).
    layer = resnet.layer3[1].bn2
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach().clone()) or None)
    with torch.no_grad():
        resnet(x_small)
    handle.remove()
    a, g, _, _ = activation_and_gradient(resnet, x_small, layer)
    torch.testing.assert_close(a, store["a"])
    assert (a < 0).any()  # pre-ReLU values survived
    assert all_hooks(resnet) == 0


def test_gradient_through_inplace_ops_matches_finite_differences(resnet, x_small):
    # The gradient flows through `out += identity` and ReLU(inplace=True) after bn2.
    model = copy.deepcopy(resnet).double()
    x = x_small.double()
    layer = model.layer3[1].bn2
    _, g, targets, _ = activation_and_gradient(model, x, layer, target=3)
    direction = torch.randn(g.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def logit_with_shift(eps):
        handle = layer.register_forward_hook(lambda m, i, o: o + eps * direction)
        try:
            with torch.no_grad():
                return model(x)[:, 3].sum().item()
        finally:
            handle.remove()

    eps = 1e-6
    numeric = (logit_with_shift(eps) - logit_with_shift(-eps)) / (2 * eps)
    analytic = float((g * direction).sum())
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)
    assert abs(analytic) > 1e-3  # a real, non-zero directional derivative


def test_gradient_matches_autograd_on_functional_copy(resnet, x_small):
    # d logit / d layer4 output: layer4 is followed by avgpool and fc only.
    a, g, t, _ = activation_and_gradient(resnet, x_small, resnet.layer4, target=[1, 4])
    w = resnet.fc.weight.detach()[t]  # (N, C)
    torch.testing.assert_close(g, (w / (a.shape[2] * a.shape[3]))[:, :, None, None].expand_as(g))


@pytest.mark.parametrize("name,method", METHODS)
def test_deterministic(name, method, small_cnn):
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(method(small_cnn, x, small_cnn.features[5]), method(small_cnn, x, small_cnn.features[5]))


@pytest.mark.parametrize("name,method", METHODS)
def test_batch_of_three_targets_equals_single_calls(name, method, resnet):
    # 48 x 48: a 2 x 2 layer4 map; the preview settings: the property does not depend on the sample count.
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(9))
    layer, targets, settings = resnet.layer4, [4, 0, 2], method.preview
    batched = method(resnet, x, layer, target=targets, **settings)
    singles = torch.cat([method(resnet, x[i : i + 1], layer, target=t, **settings) for i, t in enumerate(targets)])
    # A batch takes other kernels than one image: float32 rounding, amplified by the min-max step where a
    # map's range is small. Mixing images (the bug this guards against) moves maps by up to 1.
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-4)
    if method.baseline or method.class_agnostic:
        return  # a null baseline and EigenCAM ignore the target by design (tests/test_baselines.py, test_cam_variants.py)
    # Different targets really give different maps (the targets were not dropped).
    same = method(resnet, x, layer, target=4, **settings)
    assert not torch.allclose(batched[1:], same[1:])


def test_batch_real_model(lite0):
    # 128 x 128 (a 4 x 4 head map) keeps the run short: the property does not depend on the size.
    x = torch.cat([lite0.preprocess(s) for s in ("chelsea", "coffee", "rocket")])
    x = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    targets = [285, 967, 657]
    for name, method in METHODS:
        if not method.fast:
            continue
        batched = method(lite0.model, x, lite0.target_layer, target=targets)
        singles = torch.cat([method(lite0.model, x[i : i + 1], lite0.target_layer, target=t) for i, t in enumerate(targets)])
        # A batch may take other convolution kernels than one image, so float32 rounding differs.
        # Signed pixel-level maps (Saliency) run their gradient through every layer and are
        # min-max scaled by a single pixel, so they get a looser bound plus a correlation check.
        atol = 2e-2 if method.signed else 1e-3
        torch.testing.assert_close(batched, singles, rtol=1e-3, atol=atol, msg=name)
        if batched.std() > 0:  # the all-ones baseline is constant: no correlation to compute
            assert torch.corrcoef(torch.stack([batched.flatten(), singles.flatten()]))[0, 1] > 0.999, name


@pytest.mark.parametrize("name,method", METHODS)
def test_output_contract(name, method, small_cnn):
    x = torch.randn(2, 3, 20, 28)
    heat = method(small_cnn, x, small_cnn.features[5])
    assert heat.shape == (2, 20, 28) and heat.dtype == torch.float32
    assert heat.min() >= 0 and heat.max() <= 1 and not torch.isnan(heat).any()


@pytest.mark.parametrize("name,method", METHODS)
def test_constant_map_is_zeros_not_nan(name, method):
    model = SmallCNN()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # every activation is constant (zero)
    heat = method(model.eval(), torch.randn(2, 3, 16, 16), model.features[5])
    if method.baseline:  # ignores the model by design; its own tests are in tests/test_evaluation.py
        assert not torch.isnan(heat).any()
        return
    assert torch.equal(heat, torch.zeros(2, 16, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name,method", METHODS)
def test_cuda_matches_cpu(name, method, small_cnn):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cpu = method(small_cnn, x, small_cnn.features[5])
    model = small_cnn.cuda()
    # PyTorch computes convolutions in TF32 on Ampere and later GPUs by default (about 1e-3 relative
    # error); Occlusion's differences of nearly equal scores then move by ~0.5% of the map's range.
    # This test is about our code on CUDA, so it compares float32 with float32.
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        gpu = method(model, x.cuda(), model.features[5])
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
        small_cnn.cpu()


def test_score_cam_private_passes_do_not_fire_user_hooks(small_cnn):
    calls = []
    handle = small_cnn.features[5].register_forward_hook(lambda *args: calls.append(1))
    try:
        xh.score_cam(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5])
    finally:
        handle.remove()
    assert len(calls) == 1  # the one pass that captures the activation; none of the masked passes
