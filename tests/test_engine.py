"""The engine: one batched scorer for every multi-pass method and metric, and its cached, verified fast copy."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers.engine import scorer
from xai_helpers.engine.fast_copy import (
    _fold_pairs,
    clear_fast_copies,
    fast_copy,
    fast_copy_stats,
    fold_batchnorm,
)

from .conftest import randomize_bn


class Counter(nn.Module):
    """Counts every image that reaches it, in the model and in any deep copy of it (a class-level list)."""

    seen: list = []

    def forward(self, x):
        Counter.seen.append(x.shape[0])
        return x


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.count = Counter()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(self.count(x)))).mean((2, 3)))


@pytest.fixture
def counted():
    torch.manual_seed(0)
    return Counted().eval()


@pytest.fixture
def jobs(monkeypatch):
    """The number of jobs each Scorer loop was asked to run, recorded as the methods call it."""
    asked = []
    run, gradient_sum = scorer.Scorer.run, scorer.Scorer.gradient_sum

    def counting_run(self, counts, build, kinds=None):
        asked.append(sum(counts))
        return run(self, counts, build, kinds)

    def counting_gradient_sum(self, counts, build, weight=None):
        asked.append(sum(counts))
        return gradient_sum(self, counts, build, weight)

    monkeypatch.setattr(scorer.Scorer, "run", counting_run)
    monkeypatch.setattr(scorer.Scorer, "gradient_sum", counting_gradient_sum)
    return asked


X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
SETTINGS = {"Score-CAM": {}, "SmoothGrad": {"samples": 9}, "Integrated Gradients": {"steps": 10},
            "Occlusion": {"window": 6, "stride": 3}, "RISE": {"masks": 12}, "LIME": {"samples": 11},
            "Kernel SHAP": {"samples": 13}, "SS-CAM": {"samples": 2}, "IS-CAM": {"samples": 3},
            "Ablation-CAM": {"batch_size": 4}, "Smooth Grad-CAM++": {"samples": 3, "batch_size": 2}}
MULTI_PASS = [m for m in xh.METHODS.values() if not m.fast]
# Two multi-pass methods run their passes outside the scorer, each for a reason: Ablation-CAM re-runs only the
# layers after its layer (engine.LayerReplay), and Smooth Grad-CAM++ needs the gradient at the layer, not at the
# input (engine.layer_pass on batches of noisy copies). test_passes_outside_the_scorer counts theirs.
OUTSIDE_THE_SCORER = {"Ablation-CAM", "Smooth Grad-CAM++"}


def sizes(method, model, x):
    if method.name in ("Score-CAM", "SS-CAM", "IS-CAM", "Ablation-CAM"):
        from xai_helpers.methods.score_cam import live_channels

        a = xh.engine.layer_pass(model, x, model.act, gradient=False).activation
        return {"channels": int(live_channels(a).sum(1).max()), **SETTINGS[method.name]}
    if method.name == "Occlusion":
        return {"positions": 9}  # (12 - 6) / 3 + 1 = 3 per side
    return SETTINGS[method.name]


def test_every_multi_pass_method_is_registered_here():
    assert {m.name for m in MULTI_PASS} == set(SETTINGS)


@pytest.mark.parametrize("method", [m for m in MULTI_PASS if m.name not in OUTSIDE_THE_SCORER], ids=lambda m: m.slug)
def test_every_pass_beyond_the_first_goes_through_the_scorer(method, counted, jobs):
    clear_fast_copies()
    extra = {"segments": torch.arange(144).reshape(12, 12) // 36} if method.name in ("LIME", "Kernel SHAP") else {}
    per_image = sizes(method, counted, X[:1])
    Counter.seen.clear()
    method(counted, X[:1], counted.act, target=1, **SETTINGS[method.name], **extra)
    real = sum(Counter.seen)
    # What the model saw: the first pass (Score-CAM's scorer reuses its layer pass), the fast copy's two
    # passes when it is built (finding the foldable pairs, then checking the copy), and the scorer's jobs.
    forward, _ = method.passes(**per_image)
    expected_jobs = forward - 1
    assert sum(jobs) == expected_jobs, (method.name, jobs)
    building = 2 if expected_jobs >= scorer.FAST_COPY_MIN_PASSES else 0
    assert real == 1 + building + expected_jobs, (method.name, Counter.seen)
    # Called again, the cached copy costs one checking pass.
    Counter.seen.clear()
    method(counted, X[:1], counted.act, target=1, **SETTINGS[method.name], **extra)
    assert sum(Counter.seen) == 1 + (building // 2) + expected_jobs, (method.name, Counter.seen)


@pytest.mark.parametrize("name", sorted(OUTSIDE_THE_SCORER))
def test_passes_outside_the_scorer(name, counted, jobs):
    method = xh.METHODS[name]
    forward, backward = method.passes(**sizes(method, counted, X[:1]))
    Counter.seen.clear()
    method(counted, X[:1], counted.act, target=1, **SETTINGS[name])
    assert jobs == []  # none through the scorer
    assert sum(Counter.seen) == forward, (name, Counter.seen)  # images that went through the whole model
    if name == "Ablation-CAM":
        # the layer pass, then ceil((6 live channels + 1 check row) / 4) = 2 calls of the model on the one image:
        # the layers before the layer see one row per call, those after it up to 4 (engine.LayerReplay)
        assert Counter.seen == [1, 1, 1]
    else:  # the clean pass, then the 3 noisy copies in batches of at most 2
        assert Counter.seen == [1, 2, 1] and backward == 3


def test_the_metrics_score_through_the_scorer(counted, jobs):
    heat = {"a": torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(0)),
            "b": torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(1))}
    Counter.seen.clear()
    clear_fast_copies()
    M.faithfulness(counted, X[:1], heat, 1, metrics=("drop", "deletion"), step=36)
    # the image, two drops, deletion's end, 3 inner points per map: 1 + 2 + 1 + 6 = 10 jobs.
    assert jobs == [10]
    assert sum(Counter.seen) == 1 + 2 + 10  # the first pass, building the fast copy, the jobs


def test_batch_size_bounds_every_pass(counted):
    xh.rise(counted, X, 1, masks=20, batch_size=3)  # builds the fast copy
    Counter.seen.clear()
    xh.rise(counted, X, 1, masks=20, batch_size=3)
    assert Counter.seen[0] == 2  # the first pass: both images
    assert Counter.seen[1] == 1  # the cached copy's check, on the first image
    assert max(Counter.seen[2:]) <= 3 and sum(Counter.seen[2:]) == 40


# --- the fast copy -------------------------------------------------------------------------


def test_the_fast_copy_is_built_once_and_reused(counted):
    clear_fast_copies()
    before = fast_copy_stats()
    first = xh.occlusion(counted, X, 1, window=6, stride=3)
    second = xh.occlusion(counted, X, 1, window=6, stride=3)
    after = fast_copy_stats()
    assert after["built"] - before["built"] == 1 and after["reused"] - before["reused"] == 1
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("change", ["data", "in_place", "buffer", "attribute", "swap", "forward"])
def test_the_fast_copy_is_rebuilt_when_the_model_changes(counted, change):
    clear_fast_copies()
    expected_before = xh.occlusion(counted, X, 1, window=6, stride=3)
    if change == "data":
        counted.fc.weight.data = -counted.fc.weight.data
    elif change == "in_place":
        counted.conv.weight.data.mul_(-1)  # through .data: no version counter moves
    elif change == "buffer":
        counted.bn.running_mean.data += 1.0
    elif change == "attribute":
        counted.bn.eps = 0.5
    elif change == "swap":
        counted.act = nn.Tanh()
    else:
        counted.forward = lambda x: counted.fc(counted.conv(x).mean((2, 3))) * 2
    built = fast_copy_stats()["built"]
    got = xh.occlusion(counted, X, 1, window=6, stride=3)
    assert fast_copy_stats()["built"] == built + 1
    expected = xh.occlusion(counted, X, 1, window=6, stride=3, batch_size=1)  # the model itself
    reference = copy.deepcopy(counted)
    plain = xh.occlusion(reference, X, 1, window=6, stride=3)
    torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(got, expected_before, atol=1e-4)


def test_the_fast_copy_of_a_batch_statistics_model_is_not_folded():
    class NoStats(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).mean((2, 3)))

    model = NoStats().eval()
    assert isinstance(fast_copy(model, X[:1]).bn, nn.BatchNorm2d)


def test_the_differentiable_copy_gives_the_models_gradient(counted):
    net = fast_copy(counted, X[:1], differentiable=True)
    assert not any(getattr(m, "inplace", False) for m in net.modules())
    leaf = X.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(net(leaf.contiguous(memory_format=torch.channels_last))[:, 1].sum(), leaf)
    leaf = X.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad(counted(leaf)[:, 1].sum(), leaf)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in counted.parameters())


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


X_ONE = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(11))


def test_not_stale_after_parameter_data_is_replaced(leaky):
    first = xh.score_cam(leaky, X_ONE, leaky.bn2, target=1)
    # .data assignment bumps no version counter: the old cache keyed on _version missed it.
    leaky.fc.weight.data = -leaky.fc.weight.data
    after = xh.score_cam(leaky, X_ONE, leaky.bn2, target=1)
    reference = xh.score_cam(leaky, X_ONE, leaky.bn2, target=1, fold_bn=False)
    assert not torch.allclose(first, reference, atol=1e-3)
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)


def test_not_stale_after_a_module_attribute_changes(leaky):
    first = xh.score_cam(leaky, X_ONE, leaky.bn2, target=2)
    leaky.act.negative_slope = 0.5  # no parameter, no buffer: only the module's attribute changes
    after = xh.score_cam(leaky, X_ONE, leaky.bn2, target=2)
    reference = xh.score_cam(leaky, X_ONE, leaky.bn2, target=2, fold_bn=False)
    assert not torch.allclose(first, reference, atol=1e-3)
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after[0], naive_score_cam(leaky, X_ONE, leaky.bn2, 2), rtol=1e-4, atol=1e-5)


def test_not_stale_after_a_submodule_is_swapped(leaky):
    first = xh.score_cam(leaky, X_ONE, leaky.bn2, target=0)
    leaky.act = nn.Tanh()
    after = xh.score_cam(leaky, X_ONE, leaky.bn2, target=0)
    assert not torch.allclose(first, after)
    torch.testing.assert_close(after[0], naive_score_cam(leaky, X_ONE, leaky.bn2, 0), rtol=1e-4, atol=1e-5)


def test_forward_hook_that_changes_the_output_is_honoured(leaky):
    plain = xh.score_cam(leaky, X_ONE, leaky.bn2, target=3)
    handle = leaky.fc.register_forward_hook(lambda m, i, o: o * torch.tensor([1.0, 1.0, 1.0, -3.0]))
    try:
        with pytest.warns(RuntimeWarning, match="run on the model itself"):
            hooked = xh.score_cam(leaky, X_ONE, leaky.bn2, target=3)
        expected = naive_score_cam(leaky, X_ONE, leaky.bn2, 3)
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
            heat = xh.score_cam(leaky, X_ONE, leaky.bn2, target=3)
    finally:
        handle.remove()
    assert len(calls) == 1
    torch.testing.assert_close(heat[0], naive_score_cam(leaky, X_ONE, leaky.bn2, 3), rtol=1e-4, atol=1e-5)


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




# --- DeepLIFT's kept reference pass --------------------------------------------------------


def test_deeplift_keeps_its_reference_pass_while_the_model_is_unchanged(counted):
    from xai_helpers.engine import model_cache

    model_cache.clear()
    first = xh.deeplift(counted, X, [1, 2])
    Counter.seen.clear()
    again = xh.deeplift(counted, X, [1, 2])
    assert Counter.seen == [2]  # the image's pass only: one shared reference row, kept from the first call
    torch.testing.assert_close(again, first)
    counted.conv.weight.data.mul_(-1)  # no version counter moves
    Counter.seen.clear()
    changed = xh.deeplift(counted, X, [1, 2])
    assert Counter.seen == [1, 2]  # the reference again, then the image
    fresh = xh.deeplift(copy.deepcopy(counted), X, [1, 2])
    torch.testing.assert_close(changed, fresh)
    assert not torch.allclose(changed, first)


def test_deeplift_with_one_reference_row_equals_a_row_per_image(counted):
    reference = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(5))
    shared, delta = xh.deeplift(counted, X, [1, 2], reference=reference, return_delta=True)
    rows = torch.cat([xh.deeplift(counted, X[i : i + 1], t, reference=reference) for i, t in enumerate([1, 2])])
    torch.testing.assert_close(shared, rows, rtol=1e-4, atol=1e-6)
    assert delta.abs().max() < 1e-4  # summation-to-delta holds with the shared reference
