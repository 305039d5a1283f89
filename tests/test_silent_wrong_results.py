"""Inputs on which the package once returned wrong maps without a word (issue 19). Each test failed before its fix.

They use only the public protocol (``xh.*`` and the registry), the same names before and after the fix.
"""

import numpy as np
import pytest
import torch
from torch import nn

import xai_helpers as xh

METHODS = list(xh.METHODS.values())
# Settings that keep the slow methods cheap here; the defect does not depend on them.
CHEAP = {"Score-CAM": {}, "SmoothGrad": {"samples": 4}, "Integrated Gradients": {"steps": 4},
         "Occlusion": {"window": 0.5, "stride": 0.5}, "RISE": {"masks": 16}, "LIME": {"samples": 16},
         "Kernel SHAP": {"samples": 16}}


def settings(method):
    return CHEAP.get(method.name, {})


def stride_two():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10)).eval()


# --- 1. a channels-first map read as channels-last ---------------------------------------


def grad_cam_by_hand(model, x, layer, target):
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    with torch.enable_grad():
        out = model(x)
        (g,) = torch.autograd.grad(out[:, target].sum(), store["a"])
    handle.remove()
    cam = (g.mean((2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True).clamp_min(0).detach()
    cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo, hi = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    return (cam - lo) / (hi - lo)


@pytest.mark.parametrize("size", [(32, 48), (31, 33)])
def test_channels_equal_to_the_height_are_not_taken_for_channels_last(size):
    # (1, 16, 16, 24) at 32 x 48: 16 channels of 16 x 24, which only fits the input read channels first.
    model = stride_two()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    expected = grad_cam_by_hand(model, x, model[1], 3)
    torch.testing.assert_close(xh.grad_cam(model, x, model[1], target=3), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xh.grad_cam(model, x, model[1], target=3, reshape_transform=lambda t: t), expected,
                               rtol=1e-4, atol=1e-5)
    # CAM finds the GAP -> Linear head, which the permuted map hid, and equals Grad-CAM there.
    torch.testing.assert_close(xh.cam(model, x, model[1], target=3), expected, rtol=1e-4, atol=1e-5)


def test_an_ambiguous_layout_asks_for_reshape_transform():
    # 16 channels of 16 x 16 from a 32 x 32 input: (N, 16, 16, 16) reads both ways, and the layer is a ReLU.
    model = stride_two()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="reshape_transform=lambda t: t"):
        xh.grad_cam(model, x, model[1], target=3)
    torch.testing.assert_close(xh.grad_cam(model, x, model[1], target=3, reshape_transform=lambda t: t),
                               grad_cam_by_hand(model, x, model[1], 3), rtol=1e-4, atol=1e-5)
    # A convolution's output is channels-first by construction: no question to ask.
    torch.testing.assert_close(xh.grad_cam(model, x, model[0], target=3), grad_cam_by_hand(model, x, model[0], 3),
                               rtol=1e-4, atol=1e-5)


# --- 2. NaN or inf in, a normal-looking map out ---------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused(method, small_cnn, bad):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x[0, 1, 3, 4] = bad
    with pytest.raises(ValueError, match="non-finite"):
        method(small_cnn, x, small_cnn.features[5], target=1, **settings(method))


@pytest.mark.parametrize("method", [m for m in METHODS if "reference" in m.function.__code__.co_varnames],
                         ids=lambda m: m.slug)
def test_non_finite_reference_is_refused(method, small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    reference = torch.zeros(3, 16, 16)
    reference[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite|finite number"):
        method(small_cnn, x, small_cnn.features[5], target=1, reference=reference, **settings(method))
    with pytest.raises(ValueError, match="finite"):
        method(small_cnn, x, small_cnn.features[5], target=1, reference=float("inf"), **settings(method))


@pytest.mark.parametrize("noise", [float("inf"), float("nan"), True])
def test_smoothgrad_noise_must_be_a_finite_number(small_cnn, noise):
    with pytest.raises(ValueError, match="noise must be a finite number"):
        xh.smoothgrad(small_cnn, torch.randn(1, 3, 16, 16), 0, samples=2, noise=noise)


class NaNInside(nn.Module):
    """Finite input, NaN from the second layer on (log of a negative number): a bug a map must not hide."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Identity()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = self.act(torch.log(self.conv(x)))  # NaN wherever the convolution is negative
        return self.fc(a.mean((2, 3)))


@pytest.mark.parametrize("method", [m for m in METHODS if not m.baseline], ids=lambda m: m.slug)
def test_a_model_that_makes_nan_is_reported_not_zeroed(method):
    torch.manual_seed(0)
    model = NaNInside().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="NaN or inf"):
        method(model, x, model.act, target=1, **settings(method))


# --- 3. float and bool targets truncated ----------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("target", [[1.7, 2.2], torch.tensor([1.7, 2.2]), np.array([1.7, 2.2]), [True, False],
                                    torch.tensor([True, False]), np.array([True, False]), 1.5])
def test_float_and_bool_targets_are_refused(method, small_cnn, target):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="target"):
        method(small_cnn, x, small_cnn.features[5], target=target, **settings(method))


@pytest.mark.parametrize("target", [np.int64(3), torch.tensor(3), np.array([3, 1]), [np.int32(3), 1]])
def test_numpy_and_tensor_integers_are_class_indices(small_cnn, target):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = xh.grad_cam(small_cnn, x, small_cnn.features[5], target=[3, 1] if np.size(target) == 2 else 3)
    torch.testing.assert_close(xh.grad_cam(small_cnn, x, small_cnn.features[5], target=target), expected)


# --- 4. a model that writes into its input --------------------------------------------------


class MulInPlace(nn.Module):
    def __init__(self, first: str):
        super().__init__()
        self.first = first
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = self.relu(x) if self.first == "relu" else x.mul_(2)
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("first", ["relu", "mul_"])
def test_a_model_that_writes_into_its_input_leaves_the_callers_tensor_alone(method, first):
    torch.manual_seed(0)
    model = MulInPlace(first).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    before = x.clone()
    first_call = method(model, x, model.act, target=[1, 2], **settings(method))
    assert torch.equal(x, before), f"{method.name} let the model overwrite the input"
    second_call = method(model, x, model.act, target=[1, 2], **settings(method))
    torch.testing.assert_close(second_call, first_call)


# --- 5. an image's map depends on its neighbours in the batch ------------------------------


class BatchStatistics(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5, track_running_stats=False)
        self.act = nn.ReLU()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_batch_statistics_never_mix_the_images_of_a_batch(method):
    torch.manual_seed(0)
    model = BatchStatistics().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    extra = {"segments": torch.arange(64).reshape(8, 8) // 16} if method.name in ("LIME", "Kernel SHAP") else {}
    if method.requirement and "running statistics" in method.requirement:  # FullGrad: a BatchNorm bias must be fixed
        with pytest.raises(ValueError, match="batch statistics"):
            method(model, x, model.act, target=[0, 1, 2], **settings(method), **extra)
        return
    together = method(model, x, model.act, target=[0, 1, 2], **settings(method), **extra)
    alone = torch.cat([method(model, x[i : i + 1], model.act, target=i, **settings(method), **extra) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
