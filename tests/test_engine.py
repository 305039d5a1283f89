"""The engine: one batched scorer for every multi-pass method and metric, and its cached, verified fast copy."""

import copy

import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers.engine import scorer
from xai_helpers.engine.fast_copy import clear_fast_copies, fast_copy, fast_copy_stats


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
            "Kernel SHAP": {"samples": 13}}
MULTI_PASS = [m for m in xh.METHODS.values() if not m.fast]


def sizes(method, model, x):
    if method.name == "Score-CAM":
        from xai_helpers.methods.score_cam import live_channels

        a = xh.engine.layer_pass(model, x, model.act, gradient=False).activation
        return {"channels": int(live_channels(a).sum(1).max())}
    if method.name == "Occlusion":
        return {"positions": 9}  # (12 - 6) / 3 + 1 = 3 per side
    return SETTINGS[method.name]


def test_every_multi_pass_method_is_registered_here():
    assert {m.name for m in MULTI_PASS} == set(SETTINGS)


@pytest.mark.parametrize("method", MULTI_PASS, ids=lambda m: m.slug)
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
