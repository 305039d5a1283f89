"""Evaluation you can trust: null baselines, ROAD, pinned metric definitions, shared passes, intervals."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers.methods import Method

from .conftest import GapLinear

BASELINES = [m for m in xh.METHODS.values() if m.baseline]


# --- Null baselines ------------------------------------------------------------------------


def test_four_baselines_flagged_and_last():
    assert [m.slug for m in BASELINES] == ["random-baseline", "centre-baseline", "edges-baseline", "ones-baseline"]
    assert all(m.family == "baseline" and not m.default and not m.needs_gradients for m in BASELINES)
    assert not any(m.baseline for m in xh.METHODS.values() if m.family != "baseline")
    with pytest.raises(ValueError, match="baseline=True exactly for the family 'baseline'"):
        Method(name="x", slug="x", function=xh.all_ones, paper=BASELINES[0].paper, family="gradient",
               needs_layer=False, signed=False, reports_progress=False, needs_gradients=False, cost="0",
               passes=lambda: (0, 0), baseline=True)


def test_random_map_is_the_seeded_uniform_draw(small_cnn):
    x = torch.randn(3, 3, 5, 7)
    expected = torch.rand(5, 7, generator=torch.Generator().manual_seed(4))
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    heat = xh.random_map(small_cnn, x, seed=4)
    assert heat.shape == (3, 5, 7)
    for i in range(3):
        assert torch.equal(heat[i], expected)
    assert not torch.equal(xh.random_map(small_cnn, x, seed=5)[0], expected)


def test_centre_gaussian_by_hand(small_cnn):
    heat = xh.centre_gaussian(small_cnn, torch.zeros(1, 3, 4, 4), sigma=0.25)
    # pixel centres at u = -3/8, -1/8, 1/8, 3/8; the four middle pixels are the maximum (1 after scaling)
    g = lambda u, v: math.exp(-(u * u + v * v) / (2 * 0.25**2))  # noqa: E731
    lo, hi = g(3 / 8, 3 / 8), g(1 / 8, 1 / 8)
    assert heat[0, 1, 1].item() == pytest.approx(1.0) and heat[0, 0, 0].item() == pytest.approx(0.0)
    assert heat[0, 0, 1].item() == pytest.approx((g(3 / 8, 1 / 8) - lo) / (hi - lo), rel=1e-5)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0 \(a fraction of the image side"):
        xh.centre_gaussian(small_cnn, torch.zeros(1, 3, 4, 4), sigma=0)


def test_sobel_edges_by_hand(small_cnn):
    # A vertical step from 0 to 1 between columns 1 and 2, in channel 0 only.
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :, 2:] = 1.0
    heat = xh.sobel_edges(small_cnn, x)
    # G_x at columns 1 and 2 = (1 + 2 + 1) * 1 = 4 everywhere (replicate padding keeps rows equal); 0 elsewhere
    expected = torch.tensor([[0.0, 1.0, 1.0, 0.0]]).expand(4, 4)
    torch.testing.assert_close(heat[0], expected)


def test_all_ones_and_baselines_ignore_model_and_target(small_cnn):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    other = GapLinear(torch.randn(5, 3))
    for m in BASELINES:
        a = m(small_cnn, x, target=0)
        torch.testing.assert_close(a, m(small_cnn, x, target=3))
        torch.testing.assert_close(a, m(other, x, target=[1, 2]))
    assert torch.equal(xh.all_ones(small_cnn, x), torch.ones(2, 8, 8))


def test_all_ones_gets_a_perfect_average_drop(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y, o = M.explanation_scores(small_cnn, x, xh.all_ones(small_cnn, x))
    assert M.average_drop(y, o) == 0.0 and M.increase_in_confidence(y, o) == 0.0


# --- ROAD's noisy linear imputation ------------------------------------------------------


def test_imputation_by_hand():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    # The centre alone: the weighted mean of its 8 neighbours (weights 1/6 edge, 1/12 corner, sum 1).
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    expected = (1 + 3 + 5 + 7) / 6 + (0 + 2 + 6 + 8) / 12
    assert M.noisy_linear_imputation(x, centre, noise=0, tol=1e-12)[0, 0, 1, 1].item() == pytest.approx(expected)
    # A corner: neighbours 1 and 3 (1/6 each) and 4 (1/12), weights normalised by 5/12.
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True
    got = M.noisy_linear_imputation(x, corner, noise=0, tol=1e-12)[0, 0, 0, 0].item()
    assert got == pytest.approx((1 / 6 + 3 / 6 + 4 / 12) / (5 / 12))
    # Two removed neighbours (0, 0) and (0, 1): a 2 x 2 system, solved by hand.
    pair = torch.zeros(1, 3, 3, dtype=torch.bool)
    pair[0, 0, :2] = True
    # (5/12) a = b/6 + 3/6 + 4/12 ;  (8/12) b = a/6 + 2/6 + 3/12 + 4/6 + 5/12
    system = np.array([[5 / 12, -1 / 6], [-1 / 6, 8 / 12]])
    rhs = np.array([3 / 6 + 4 / 12, 2 / 6 + 3 / 12 + 4 / 6 + 5 / 12])
    a, b = np.linalg.solve(system, rhs)
    got = M.noisy_linear_imputation(x, pair, noise=0, tol=1e-12)[0, 0, 0]
    assert got[0].item() == pytest.approx(a) and got[1].item() == pytest.approx(b)
    assert got[2].item() == 2.0  # kept pixels are untouched


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # inside pytorch-grad-cam
def test_imputation_equals_pytorch_grad_cam_and_noise_only_on_removed():
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 40, 36, generator=g, dtype=torch.float64)
    removed = torch.rand(2, 40, 36, generator=g) < torch.tensor([0.3, 0.8])[:, None, None]
    ours = M.noisy_linear_imputation(x, removed, noise=0, tol=1e-10)
    for i in range(2):
        theirs = road.NoisyLinearImputer(noise=0)(x[i].float(), (~removed[i]).float())
        torch.testing.assert_close(ours[i].float(), theirs, atol=1e-5, rtol=0)
    noisy = M.noisy_linear_imputation(x, removed, noise=0.01, tol=1e-10)
    diff = (noisy - ours).permute(1, 0, 2, 3)
    assert diff[:, ~removed].abs().max() == 0
    assert diff[:, removed].std().item() == pytest.approx(0.01, rel=0.05)
    # The default tolerance solves well inside the added noise.
    default = M.noisy_linear_imputation(x, removed, noise=0)
    assert (default - ours).abs().max() < 0.01


def test_imputation_bad_input():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="bool mask of shape"):
        M.noisy_linear_imputation(x, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="needs at least one kept pixel"):
        M.noisy_linear_imputation(x, torch.ones(1, 4, 4, dtype=torch.bool))


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # inside pytorch-grad-cam
@pytest.mark.parametrize("percentile", [20, 50, 80])
def test_road_equals_pytorch_grad_cam(percentile):
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    pc = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence")
    targets_module = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = TinyCNN().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 12, 12, generator=g)
    heat = torch.rand(2, 12, 12, generator=g)  # distinct values: the percentile cut is unambiguous
    targets = [targets_module.ClassifierOutputSoftmaxTarget(c) for c in (1, 2)]
    cams = heat.numpy()
    fraction = 1 - percentile / 100  # pytorch-grad-cam keeps the pixels below the percentile
    for metric, order in (
        (pc.RemoveMostRelevantFirst(percentile, road.NoisyLinearImputer(noise=0)), "morf"),
        (pc.RemoveLeastRelevantFirst(percentile, road.NoisyLinearImputer(noise=0)), "lerf"),
    ):
        theirs = pc.PerturbationConfidenceMetric(metric)(x, cams, targets, model)  # score after - before
        after = M.road(model, x, heat, [1, 2], fractions=(fraction,), order=order, noise=0)[:, 0]
        before = M.explanation_scores(model, x, torch.ones_like(heat), [1, 2])[0]
        np.testing.assert_allclose((after - before).numpy(), theirs, atol=2e-4)
    # And the shipped class with its own noise: the same up to the noise.
    theirs = road.ROADMostRelevantFirst(percentile)(x, cams, targets, model)
    after = M.road(model, x, heat, [1, 2], fractions=(fraction,), order="morf")[:, 0]
    np.testing.assert_allclose((after - before).numpy(), theirs, atol=0.02)


def test_road_morf_falls_for_the_evidence_and_lerf_holds():
    # Class 0's logit is the mean of channel 0: the evidence is where channel 0 is large.
    model = GapLinear([[1.0, 0.0], [0.0, 0.0]])
    x = torch.zeros(1, 2, 16, 16)
    x[0, 0, 4:8, 4:8] = 8.0
    good = x[:, 0].clone()  # points at the square
    morf = M.road(model, x, good, 0, fractions=(0.0625,), order="morf", noise=0)
    lerf = M.road(model, x, good, 0, fractions=(0.0625,), order="lerf", noise=0)
    # MoRF removes exactly the 16 square pixels; the imputation from zeros around it gives 0.
    torch.testing.assert_close(morf, torch.sigmoid(torch.zeros(1, 1)), atol=1e-4, rtol=0)
    torch.testing.assert_close(lerf, torch.sigmoid(torch.full((1, 1), 8 * 16 / 256)), atol=1e-4, rtol=0)


# --- Pinned definitions: probability / logit, relative / absolute, baselines ---------------


class _FakeExtractor:
    """torchcam's CAM-extractor protocol around fixed maps, so its metric scores *our* maps."""

    def __init__(self, model, heat):
        self.model, self.heat = model, heat

    def __call__(self, class_idx=None, scores=None, normalized=True, **_):
        return [self.heat]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        import contextlib

        return contextlib.nullcontext()


def test_average_drop_and_increase_equal_torchcam():
    metrics = pytest.importorskip("torchcam.metrics")
    model = TinyCNN().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 10, 10, generator=g)
    heat = torch.rand(6, 10, 10, generator=g)
    heat[0] = 1.0  # an image whose score cannot drop
    metric = metrics.ClassificationMetric(_FakeExtractor(model, heat), lambda logits: logits.softmax(-1))
    metric.update(x)
    summary = metric.summary()
    y, o = M.explanation_scores(model, x, heat)
    assert M.average_drop(y, o) == pytest.approx(100 * summary["avg_drop"], abs=1e-4)
    assert M.increase_in_confidence(y, o) == pytest.approx(100 * summary["conf_increase"], abs=1e-4)


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # inside pytorch-grad-cam
def test_absolute_drop_equals_pytorch_grad_cam_and_differs_from_relative():
    cam_mult = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image")
    targets_module = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = TinyCNN().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 10, 10, generator=g)
    heat = torch.rand(4, 10, 10, generator=g)
    classes = [0, 1, 2, 3]
    for score, target in (("probability", targets_module.ClassifierOutputSoftmaxTarget),
                          ("logit", targets_module.ClassifierOutputTarget)):
        theirs = cam_mult.DropInConfidence()(x, heat.numpy(), [target(c) for c in classes], model)
        y, o = M.explanation_scores(model, x, heat, classes, score=score)
        assert M.absolute_drop(y, o) == pytest.approx(float(np.mean(theirs)), abs=1e-5)
    y, o = M.explanation_scores(model, x, heat, classes)
    # relative = mean of drop / y, absolute = mean of drop: the same only if every y were 1
    assert M.average_drop(y, o) == pytest.approx(100 * float(((y - o).clamp_min(0) / y).mean()))
    assert M.average_drop(y, o) != pytest.approx(100 * M.absolute_drop(y, o))


def test_logit_score_and_removal_baselines():
    model = GapLinear([[1.0], [0.0]])
    x = torch.tensor([[[[4.0, 2.0], [0.0, 0.0]]]])
    heat = torch.tensor([[[1.0, 0.5], [0.2, 0.1]]])
    logits = M.deletion_insertion_curves(model, x, heat, 0, "deletion", step=1, score="logit")
    torch.testing.assert_close(logits[0], torch.tensor([1.5, 0.5, 0.0, 0.0, 0.0]))
    big = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = M.reference_image(big, "blur")
    curve = M.deletion_insertion_curves(model, big, big[:, 0], 0, "deletion", step=256, score="logit", reference="blur")
    torch.testing.assert_close(curve[0], torch.stack([big.mean(), blurred.mean()]))
    noise = M.reference_image(x, "noise", seed=3)
    torch.testing.assert_close(noise, torch.randn(x.shape, generator=torch.Generator().manual_seed(3)))
    for bad in ({"score": "prob"}, {"deletion_reference": "grey"}, {"metrics": ("roar",)}):
        with pytest.raises(ValueError, match="must be one of"):
            M.faithfulness(model, x, {"m": heat}, 0, **bad)


# --- Shared passes -----------------------------------------------------------------------


def test_faithfulness_scores_each_distinct_image_once_and_agrees_with_the_single_metrics():
    model = TinyCNN().eval()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 8, 8, generator=g)
    a = torch.rand(2, 8, 8, generator=g)
    maps = {"a": a, "a again": a * 0.5, "b": torch.rand(2, 8, 8, generator=g)}  # "a again": same order
    totals = []
    found = M.faithfulness(model, x, maps, step=16, road_fractions=(0.25, 0.5, 0.75), progress=lambda d, t: totals.append(t))
    # Per image: the image, 3 explanation maps, each curve's far end, 3 inner points per curve for the
    # 2 distinct orders, and 2 orders x 3 fractions of ROAD per distinct order.
    per_image = 1 + 3 + 2 * (1 + 3 * 2) + 2 * 3 * 2
    assert totals[-1] == 2 * per_image
    for name, heat in maps.items():
        torch.testing.assert_close(found[name]["deletion"], M.deletion_insertion_curves(model, x, heat, None, "deletion", 16))
        torch.testing.assert_close(found[name]["insertion"], M.deletion_insertion_curves(model, x, heat, None, "insertion", 16))
        torch.testing.assert_close(found[name]["morf"], M.road(model, x, heat, fractions=(0.25, 0.5, 0.75)))
        y, o = M.explanation_scores(model, x, heat)
        torch.testing.assert_close(found[name]["y"], y)
        torch.testing.assert_close(found[name]["o"], o)
    assert torch.equal(found["a"]["lerf"], found["a again"]["lerf"])
    assert not torch.equal(found["a"]["o"], found["a again"]["o"])  # the product uses the values


# --- Intervals and rank agreement --------------------------------------------------------


def test_bootstrap_ci_by_formula():
    values = [0.1, 0.4, 0.35, 0.8, 0.2, 0.55]
    low, high = M.bootstrap_ci(values, resamples=500, seed=3)
    index = torch.randint(0, 6, (500, 6), generator=torch.Generator().manual_seed(3))
    means = np.asarray(values)[index.numpy()].mean(1)
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert low < np.mean(values) < high
    assert M.bootstrap_ci([0.3] * 5) == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError, match="at least one value"):
        M.bootstrap_ci([])


def test_kendall_tau_equals_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b = rng.integers(0, 4, 9), rng.integers(0, 5, 9)
        assert M.kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
    assert M.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert M.kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0


def test_probability_and_logit_from_the_same_passes():
    model = TinyCNN().eval()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 8, 8, generator=g)
    maps = {"a": torch.rand(2, 8, 8, generator=g)}
    totals = []
    both = M.faithfulness(model, x, maps, step=16, road_fractions=(0.5,), score=("probability", "logit"),
                          progress=lambda d, t: totals.append(t))
    single = []
    M.faithfulness(model, x, maps, step=16, road_fractions=(0.5,), progress=lambda d, t: single.append(t))
    assert totals[-1] == single[-1]  # no extra passes for the second score
    for sc in ("probability", "logit"):
        torch.testing.assert_close(both[sc]["a"]["deletion"], M.deletion_insertion_curves(model, x, maps["a"], None, "deletion", 16, score=sc))
    logits = model(x)
    torch.testing.assert_close(both["logit"]["a"]["y"], logits.gather(1, logits.argmax(1, keepdim=True))[:, 0].detach())


# --- The harder synthetic benchmark and the photo variants ---------------------------------


def test_hard_dataset_masks_instances_sizes_and_cue():
    from xai_helpers.course.synthetic import CLASSES, CORNERS, make_hard_dataset

    data = make_hard_dataset(90, seed=3)
    x, y, mask, tag = data["x"], data["y"], data["mask"], data["tag"]
    assert x.shape == (90, 3, 64, 64) and torch.bincount(y).tolist() == [30, 30, 30]
    assert not (mask & tag).any()  # the cue is never evidence
    assert tag.flatten(1).sum(1).eq(32).all()  # one 4 x 8 tag per image
    assert 15 <= int(data["two"].sum()) <= 45  # about a third show two instances
    assert data["radius"].min() >= 3 and data["radius"].max() <= 12 and (data["radius"] <= 5).any()
    pixels = x * 0.25 + 0.5
    for i in range(90):
        colour = {"red": 0, "green": 1, "blue": 2}[CLASSES[int(y[i])][0]]
        assert (pixels[i, :, mask[i]].argmax(0) == colour).all()
    # cue = 1: the tag always sits in the class's corner; cue = 0: it says nothing about the class
    def corner(data, i):
        ys, xs = torch.nonzero(data["tag"][i], as_tuple=True)
        return [k for k, (cy, cx) in enumerate(CORNERS) if cy <= ys.min() <= cy + 7 and cx <= xs.min() <= cx + 7][0]

    always = make_hard_dataset(30, seed=4, cue=1.0)
    assert all(corner(always, i) == int(always["y"][i]) for i in range(30))
    never = make_hard_dataset(300, seed=5, cue=0.0)
    agree = sum(corner(never, i) == int(never["y"][i]) for i in range(300)) / 300
    assert 0.2 < agree < 0.47  # chance is 1/3
    again = make_hard_dataset(90, seed=3)
    assert torch.equal(again["x"], x) and torch.equal(again["mask"], mask)
    with pytest.raises(ValueError, match="cue must be a probability"):
        make_hard_dataset(3, cue=1.5)


@pytest.mark.parametrize("kind", ["gap-hard", "mlp-hard"])
def test_hard_checkpoints_load_and_are_accurate(kind):
    from xai_helpers.course.synthetic import load_synthetic_model, make_hard_dataset

    model = load_synthetic_model(kind)
    data = make_hard_dataset(150, seed=7)
    with torch.no_grad():
        assert (model(data["x"]).argmax(1) == data["y"]).float().mean() >= 0.95


def test_photo_variants():
    from PIL import ImageOps

    from xai_helpers.course.images import VARIANTS, photo_variant

    assert VARIANTS == ("original", "mirror", "crop")
    original = photo_variant("chelsea")
    assert np.array_equal(np.asarray(photo_variant("chelsea", "mirror")), np.asarray(original)[:, ::-1])
    assert np.array_equal(np.asarray(ImageOps.mirror(original)), np.asarray(original)[:, ::-1])
    w, h = original.size
    assert photo_variant("chelsea", "crop").size == (round(0.9 * w) - round(0.1 * w), round(0.9 * h) - round(0.1 * h))
    with pytest.raises(ValueError, match="unknown variant 'rotate'; choose from original, mirror, crop"):
        photo_variant("chelsea", "rotate")
