"""Score-CAM's private fast copy: never stale, never silently different from the user's model."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_helpers as xh
from xai_helpers.engine.fast_copy import _fold_pairs, fast_copy
from xai_helpers.methods.score_cam import score_cam_weights

from .conftest import randomize_bn


def naive_score_cam(model, x, layer, target):
    """Algorithm 1 one channel at a time, on the model itself (hooks included), softmax probability weights."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    a = store["a"][0]
    weights = []
    for k in range(a.shape[0]):
        up = F.interpolate(a[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        span = up.max() - up.min()
        if span == 0:
            weights.append(0.0)
            continue
        mask = (up - up.min()) / span
        with torch.no_grad():
            weights.append(float(model(x * mask).softmax(-1)[0, target]))
    cam = torch.einsum("k,khw->hw", torch.tensor(weights), a)
    cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].clamp_min(0)
    return (cam - cam.min()) / (cam.max() - cam.min())


class LeakyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.act = nn.LeakyReLU(0.01)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        a = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.fc(self.act(a).mean((2, 3)))


@pytest.fixture
def leaky():
    torch.manual_seed(3)
    return randomize_bn(LeakyNet()).eval()


X = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(11))


def test_not_stale_after_parameter_data_is_replaced(leaky):
    first = xh.score_cam(leaky, X, leaky.bn2, target=1)
    # .data assignment bumps no version counter: the old cache keyed on _version missed it.
    leaky.fc.weight.data = -leaky.fc.weight.data
    after = xh.score_cam(leaky, X, leaky.bn2, target=1)
    reference = xh.score_cam(leaky, X, leaky.bn2, target=1, fold_bn=False)
    assert not torch.allclose(first, reference, atol=1e-3)
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)


def test_not_stale_after_a_module_attribute_changes(leaky):
    first = xh.score_cam(leaky, X, leaky.bn2, target=2)
    leaky.act.negative_slope = 0.5  # no parameter, no buffer: only the module's attribute changes
    after = xh.score_cam(leaky, X, leaky.bn2, target=2)
    reference = xh.score_cam(leaky, X, leaky.bn2, target=2, fold_bn=False)
    assert not torch.allclose(first, reference, atol=1e-3)
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after[0], naive_score_cam(leaky, X, leaky.bn2, 2), rtol=1e-4, atol=1e-5)


def test_not_stale_after_a_submodule_is_swapped(leaky):
    first = xh.score_cam(leaky, X, leaky.bn2, target=0)
    leaky.act = nn.Tanh()
    after = xh.score_cam(leaky, X, leaky.bn2, target=0)
    assert not torch.allclose(first, after)
    torch.testing.assert_close(after[0], naive_score_cam(leaky, X, leaky.bn2, 0), rtol=1e-4, atol=1e-5)


def test_forward_hook_that_changes_the_output_is_honoured(leaky):
    plain = xh.score_cam(leaky, X, leaky.bn2, target=3)
    handle = leaky.fc.register_forward_hook(lambda m, i, o: o * torch.tensor([1.0, 1.0, 1.0, -3.0]))
    try:
        with pytest.warns(RuntimeWarning, match="run on the model itself"):
            hooked = xh.score_cam(leaky, X, leaky.bn2, target=3)
        expected = naive_score_cam(leaky, X, leaky.bn2, 3)
    finally:
        handle.remove()
    assert not torch.allclose(plain, hooked, atol=1e-3)
    torch.testing.assert_close(hooked[0], expected, rtol=1e-4, atol=1e-5)


def test_logging_hook_changes_nothing_and_fires_once(leaky):
    calls = []
    handle = leaky.bn2.register_forward_hook(lambda *args: calls.append(1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the fast path is taken, without a fallback warning
            heat = xh.score_cam(leaky, X, leaky.bn2, target=3)
    finally:
        handle.remove()
    assert len(calls) == 1
    torch.testing.assert_close(heat[0], naive_score_cam(leaky, X, leaky.bn2, 3), rtol=1e-4, atol=1e-5)


class NoRunningStats(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5, track_running_stats=False)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_batchnorm_without_running_stats():
    torch.manual_seed(0)
    model = NoRunningStats().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    # Used to fail with a bare AssertionError inside fuse_conv_bn_eval. Batch statistics
    # make an image's output depend on its batch, so every masked image runs alone.
    heat = xh.score_cam(model, x, model.conv, target=1, batch_size=8)
    torch.testing.assert_close(heat[0], naive_score_cam(model, x, model.conv, 1), rtol=1e-4, atol=1e-5)
    assert isinstance(fast_copy(model, x).bn, nn.BatchNorm2d)  # not folded


class ConvReluPoolBN(nn.Module):
    """conv1 -> bn1 (foldable); conv2 -> ReLU(inplace) -> MaxPool -> bn2 and conv3 -> ReLU(inplace) -> bn3 (not)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        x = self.bn2(self.pool(self.relu(self.conv2(x))))
        x = self.bn3(self.relu(self.conv3(x)))  # the in-place ReLU changes conv3's output tensor itself
        return self.fc(x.mean((2, 3)))


def test_fold_pairs_only_pairs_a_conv_with_the_bn_that_reads_its_unchanged_output():
    torch.manual_seed(0)
    model = randomize_bn(ConvReluPoolBN()).eval()
    x = torch.randn(1, 3, 16, 16)
    assert _fold_pairs(model, x) == [("conv1", "bn1")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # folding is exact, so no fallback is announced
        fast = fast_copy(model, x)
    assert isinstance(fast.bn1, nn.Identity) and isinstance(fast.bn2, nn.BatchNorm2d) and isinstance(fast.bn3, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
    heat = xh.score_cam(model, x, model.bn3, target=2)
    torch.testing.assert_close(heat[0], naive_score_cam(model, x, model.bn3, 2), rtol=1e-4, atol=1e-5)


def test_weights_accept_a_callable_target(small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = small_cnn.features(x)
    by_index = score_cam_weights(small_cnn, x, a, torch.tensor([2]))
    by_callable = score_cam_weights(small_cnn, x, a, lambda out: out.softmax(-1)[:, 2])
    torch.testing.assert_close(by_callable, by_index)
