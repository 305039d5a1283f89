"""The metrics: each definition by hand, against the peer library that has it, and computed once for many maps."""


import math
import numpy as np
import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers.course.synthetic import (
    load_synthetic_model,
    make_dataset,
)

from .conftest import GapLinear


def test_average_drop_and_increase_by_hand():
    y = torch.tensor([0.8, 0.5, 0.4, 0.9])
    o = torch.tensor([0.4, 0.5, 0.6, 0.0])
    # drops: 0.4/0.8 = 0.5, 0, 0 (an increase counts as 0), 0.9/0.9 = 1 -> mean 0.375
    assert M.average_drop(y, o) == pytest.approx(37.5)
    # only the third image increased
    assert M.increase_in_confidence(y, o) == pytest.approx(25.0)


def test_explanation_scores_by_hand():
    # Class 0's logit is the mean of channel 0; class 1's logit is fixed at 0.
    model = GapLinear([[1.0, 0.0], [0.0, 0.0]])
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    heat = torch.tensor([[[0.5, 1.0], [1.0, 1.0]]])
    y, o = M.explanation_scores(model, x, heat, target=0)
    # logits (1, 0) -> p = sigmoid(1); on x * heat the mean is 0.5 -> sigmoid(0.5)
    torch.testing.assert_close(y, torch.sigmoid(torch.tensor([1.0])))
    torch.testing.assert_close(o, torch.sigmoid(torch.tensor([0.5])))


def test_auc_normalised_trapezoid():
    torch.testing.assert_close(M.auc(torch.tensor([1.0, 0.5, 0.0])), torch.tensor(0.5))
    torch.testing.assert_close(M.auc(torch.tensor([1.0, 1.0, 1.0, 1.0])), torch.tensor(1.0))
    torch.testing.assert_close(M.auc(torch.tensor([0.0, 1.0])), torch.tensor(0.5))


def test_deletion_curve_by_hand():
    # One channel, 2x2 image; class 0's logit = mean of the pixels, class 1's = 0.
    model = GapLinear([[1.0], [0.0]])
    x = torch.tensor([[[[4.0, 2.0], [0.0, 0.0]]]])
    heat = torch.tensor([[[1.0, 0.5], [0.2, 0.1]]])  # delete (0,0), then (0,1), ...
    curve = M.deletion_insertion_curves(model, x, heat, target=0, mode="deletion", step=1)
    means = torch.tensor([6 / 4, 2 / 4, 0.0, 0.0, 0.0])
    torch.testing.assert_close(curve[0], torch.sigmoid(means))
    # step 3: deletes 0, then 3, then all 4 pixels
    curve3 = M.deletion_insertion_curves(model, x, heat, target=0, mode="deletion", step=3)
    torch.testing.assert_close(curve3[0], torch.sigmoid(torch.tensor([1.5, 0.0, 0.0])))


def test_insertion_starts_blurred_and_ends_at_image():
    model = GapLinear([[1.0], [0.0]])
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    heat = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1))
    curve = M.deletion_insertion_curves(model, x, heat, target=0, mode="insertion", step=64)
    assert curve.shape == (1, 16 * 16 // 64 + 1)
    start = torch.sigmoid(M.gaussian_blur(x).mean())
    torch.testing.assert_close(curve[0, 0], start)
    torch.testing.assert_close(curve[0, -1], torch.sigmoid(x.mean()))


def test_gaussian_blur_preserves_constants_and_smooths():
    flat = torch.full((1, 3, 20, 20), 0.7)
    torch.testing.assert_close(M.gaussian_blur(flat), flat)
    spike = torch.zeros(1, 1, 21, 21)
    spike[0, 0, 10, 10] = 1.0
    blurred = M.gaussian_blur(spike, sigma=5, kernel=11)
    torch.testing.assert_close(blurred.sum(), torch.tensor(1.0))
    g = torch.exp(-torch.arange(-5.0, 6.0) ** 2 / 50)
    g = g / g.sum()
    torch.testing.assert_close(blurred[0, 0, 5:16, 5:16], torch.outer(g, g))


def test_pointing_games_by_hand():
    heat = torch.zeros(2, 4, 4)
    heat[0, 1, 1] = 1.0  # peak inside
    heat[1, 3, 3] = 1.0  # peak outside, two pixels from the mask
    heat[1, 0, 0] = 0.5
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    torch.testing.assert_close(M.pointing_game(heat, mask), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(M.pointing_game(heat, mask, tolerance=2), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(M.energy_pointing_game(heat, mask), torch.tensor([1.0, 0.5 / 1.5]))
    assert M.energy_pointing_game(torch.zeros(1, 4, 4), mask[:1]).item() == 0.0


def test_keep_top_mask_and_confidence_kept():
    heat = torch.tensor([[[0.9, 0.1], [0.5, 0.5]]])
    assert M.keep_top_mask(heat, 0.5).tolist() == [[[True, False], [True, False]]]  # ties: first position
    model = GapLinear([[1.0], [0.0]])
    x = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]]]])
    # keeping half the pixels halves the mean: logit 2 -> 1
    expected = torch.sigmoid(torch.tensor(1.0)) / torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(M.confidence_kept(model, x, heat, target=0), expected.reshape(1))


@pytest.mark.parametrize("bad", [0.0, 1.5])
def test_metric_errors(bad):
    with pytest.raises(ValueError, match="keep must be a finite number > 0 and <= 1"):
        M.keep_top_mask(torch.zeros(1, 2, 2), bad)
    with pytest.raises(ValueError, match="same shape"):
        M.pointing_game(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="mode must be"):
        M.deletion_insertion_curves(GapLinear([[1.0]]), torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2), mode="erase")










def test_spearman_by_hand():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    torch.testing.assert_close(M.spearman(a, a ** 3 + 7), torch.tensor([1.0]))  # monotone: identical ranks
    torch.testing.assert_close(M.spearman(a, -a), torch.tensor([-1.0]))
    # ranks (0,1,2,3) vs (1,0,3,2): d = (1,1,1,1) -> rho = 1 - 6*4/(4*15) = 0.6
    b = torch.tensor([[[2.0, 1.0], [4.0, 3.0]]])
    torch.testing.assert_close(M.spearman(a, b), torch.tensor([0.6]))
    assert M.spearman(a, torch.zeros_like(a)).item() == 0.0


def test_ssim_identities():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 32, 32, generator=g)
    torch.testing.assert_close(M.ssim(a, a), torch.ones(2))
    noisy = (a + 0.3 * torch.rand(2, 32, 32, generator=g)).clamp(0, 1)
    worse = torch.rand(2, 32, 32, generator=g)
    assert (M.ssim(a, noisy) < 1).all() and (M.ssim(a, worse) < M.ssim(a, noisy)).all()
    # constant maps: mean term only; two equal constants are identical
    c = torch.full((1, 16, 16), 0.5)
    torch.testing.assert_close(M.ssim(c, c), torch.ones(1))


# --- against the libraries that define them (test-only oracles) ---------------------------


def test_spearman_equals_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    # ReLU'd maps: many tied zeros, plus tied plateaus.
    a = (torch.randn(4, 9, 9, generator=g)).clamp_min(0).round(decimals=1)
    b = (torch.randn(4, 9, 9, generator=g) + a).clamp_min(0).round(decimals=1)
    got = M.spearman(a, b)
    for i in range(4):
        expected = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert abs(got[i].item() - expected) < 1e-6, (i, got[i].item(), expected)
    # The position-order tie-break of the old implementation gave a different number.
    assert abs(M.spearman(torch.tensor([[[0.0, 0.0, 1.0]]]), torch.tensor([[[1.0, 0.0, 0.0]]])).item() + 0.5) < 1e-6


def test_average_ranks_equal_scipy_rankdata():
    stats = pytest.importorskip("scipy.stats")
    values = torch.tensor([[3.0, 1.0, 3.0, 0.0, 3.0, 1.0]])
    expected = torch.from_numpy(stats.rankdata(values[0].numpy())).double()  # scipy's dtype varies by version
    torch.testing.assert_close(M.average_ranks(values)[0] + 1, expected)
    # Rows are ranked apart, even where one row ends with the value the next one starts with.
    rows = torch.tensor([[1.0, 5.0, 5.0, 2.0], [5.0, 5.0, 0.0, 5.0], [7.0, 7.0, 7.0, 7.0]])
    expected = torch.from_numpy(stats.rankdata(rows.numpy(), axis=1)).double()
    torch.testing.assert_close(M.average_ranks(rows) + 1, expected)
    big = torch.rand(3, 5000, generator=torch.Generator().manual_seed(1)).round(decimals=2)  # many ties
    torch.testing.assert_close(M.average_ranks(big) + 1, torch.from_numpy(stats.rankdata(big.numpy(), axis=1)).double())


def test_ssim_equals_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 32, 40, generator=g)
    b = (a + 0.3 * torch.rand(3, 32, 40, generator=g)).clamp(0, 1)
    got = M.ssim(a, b, window=11, sigma=1.5, data_range=1.0)
    for i in range(3):
        expected = metrics.structural_similarity(
            a[i].double().numpy(), b[i].double().numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
        assert abs(got[i].item() - expected) < 1e-6, (got[i].item(), expected)
    # Adebayo et al.'s setting: maps in [-1, 1], data range 2.
    s = M.ssim(a * 2 - 1, b * 2 - 1, data_range=2.0)
    expected = metrics.structural_similarity(
        (a[0] * 2 - 1).double().numpy(), (b[0] * 2 - 1).double().numpy(), data_range=2.0, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False,
    )
    assert abs(s[0].item() - expected) < 1e-6
    # Adebayo et al.'s call: scikit-image's defaults (box window, sample covariance) with window 5.
    u = M.ssim(a * 2 - 1, b * 2 - 1, window=5, data_range=2.0, uniform=True)
    for i in range(3):
        expected = metrics.structural_similarity((a[i] * 2 - 1).double().numpy(), (b[i] * 2 - 1).double().numpy(),
                                                 win_size=5, data_range=2.0)
        assert abs(u[i].item() - expected) < 1e-6, (u[i].item(), expected)


def test_unit_signed_by_hand():
    raw = torch.tensor([[[[1.0, -4.0]], [[1.0, 2.0]]]])  # (1, 2, 1, 2): channel sums 2 and -2
    torch.testing.assert_close(M.unit_signed(raw), torch.tensor([[[1.0, -1.0]]], dtype=torch.float64))
    torch.testing.assert_close(M.unit_signed(torch.zeros(2, 3, 3)), torch.zeros(2, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        M.ssim(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), window=5)


def test_auc_equals_numpy_trapezoid():
    np = pytest.importorskip("numpy")
    curve = torch.rand(5, 17, generator=torch.Generator().manual_seed(2))
    expected = [np.trapezoid(c.numpy(), dx=1 / 16) for c in curve]
    torch.testing.assert_close(M.auc(curve), torch.tensor(expected))
    with pytest.raises(ValueError, match="at least 2 points"):
        M.auc(torch.ones(3, 1))


def test_metrics_accept_tensors_made_under_inference_mode():
    model = GapLinear([[1.0], [0.0]])
    with torch.inference_mode():
        x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
        heat = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(4))
        mask = heat > 0.5
    assert M.keep_top_mask(heat).shape == (2, 16, 16)
    assert M.confidence_kept(model, x, heat, target=0).shape == (2,)
    y, o = M.explanation_scores(model, x, heat, target=0)
    assert 0 <= M.average_drop(y, o) <= 100 and 0 <= M.increase_in_confidence(y, o) <= 100
    assert M.deletion_auc(model, x, heat, target=0, step=64).shape == (2,)
    assert M.insertion_auc(model, x, heat, target=0, step=64).shape == (2,)
    assert M.pointing_game(heat, mask).shape == (2,) and M.energy_pointing_game(heat, mask).shape == (2,)
    assert M.spearman(heat, heat).tolist() == pytest.approx([1.0, 1.0])
    assert M.ssim(heat, heat).tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("shape", [(4, 4), (1, 1, 4, 4)])
def test_keep_top_mask_rejects_a_bad_shape_clearly(shape):
    with pytest.raises(ValueError, match=r"heat must be a \(N, H, W\) tensor of maps, got"):
        M.keep_top_mask(torch.zeros(shape))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_curves_match_cpu():
    model = load_synthetic_model("mlp")
    x, y, _ = make_dataset(3, seed=7)
    heat = xh.grad_cam(model, x, model.features.block4, target=y)
    cpu = M.deletion_insertion_curves(model, x, heat, y, "deletion", step=256)
    gpu_model = load_synthetic_model("mlp").cuda()
    gpu = M.deletion_insertion_curves(gpu_model, x.cuda(), heat.cuda(), y.cuda(), "deletion", step=256)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


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


def test_road_tolerance_is_a_setting_and_a_looser_one_stays_within_the_noise(small_cnn):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    heat = {"a": torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(4))}
    tight = M.faithfulness(small_cnn, x, heat, [0, 1], metrics=("road",), road_fractions=(0.5,), road_tol=1e-8)
    loose = M.faithfulness(small_cnn, x, heat, [0, 1], metrics=("road",), road_fractions=(0.5,), road_tol=1e-3)
    for order in ("morf", "lerf"):
        assert (tight["a"][order] - loose["a"][order]).abs().max() < 1e-2  # the imputation adds noise of 0.01 itself
    for bad in (0.0, 1.0, -1e-3):
        with pytest.raises(ValueError, match="road_tol"):
            M.faithfulness(small_cnn, x, heat, [0, 1], metrics=("road",), road_tol=bad)


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


@pytest.mark.parametrize("k, n", [(20, 20), (0, 20), (19, 20), (7, 12), (1, 1)])
def test_proportion_ci_is_wilsons_interval_written_out(k, n):
    z = 1.959963984540054  # the 0.975 normal quantile
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    expected = ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))
    hits = [1] * k + [0] * (n - k)
    assert M.proportion_ci(hits) == pytest.approx(expected, abs=1e-12)
    assert M.proportion_ci(torch.tensor(hits, dtype=torch.bool)) == pytest.approx(expected, abs=1e-12)


def test_proportion_ci_is_not_empty_where_the_bootstrap_is():
    low, high = M.proportion_ci([1] * 20)
    assert M.bootstrap_ci([1.0] * 20) == (1.0, 1.0) and high == 1.0 and 0.8 < low < 0.85


@pytest.mark.parametrize("bad", [[], [0.5, 1], [2, 0]])
def test_proportion_ci_refuses_what_is_not_hits(bad):
    with pytest.raises(ValueError, match="proportion_ci"):
        M.proportion_ci(bad)


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




# --- the sanity-check protocol (lessons 07 and 09 share it) ---------------------------------


def test_sanity_measures_and_verdict_rule():
    from xai_helpers.metrics import sanity

    a = torch.linspace(-1, 1, 64).reshape(1, 8, 8).double()
    same = sanity.similarity(a, a)
    assert same == pytest.approx({"spearman": 1.0, "spearman |·|": 1.0, "ssim": 1.0})
    flipped = sanity.similarity(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["spearman |·|"] == pytest.approx(1.0)
    # The rule: every measure's mean below 0.5.
    assert sanity.verdict({"spearman": 0.49, "spearman |·|": 0.1, "ssim": 0.2}) == "passes"
    assert sanity.verdict({"spearman": 0.1, "spearman |·|": 0.1, "ssim": 0.5}) == "FAILS"


def test_classifier_randomisation_separates_a_class_map_from_an_edge_map():
    import xai_helpers as xh
    from xai_helpers.metrics import sanity

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    methods = {"Grad-CAM": xh.METHODS["Grad-CAM"], "Sobel edges (baseline)": xh.METHODS["Sobel edges (baseline)"]}
    before = model[4].weight.clone()
    trials = sanity.classifier_randomisation(model, lambda m: m[4], methods, [(x, 2)], layer=lambda m: m[1],
                                             seeds=(0, 1, 2, 3))
    assert torch.equal(model[4].weight, before)  # the trained model is left alone
    summary = sanity.summarise(trials)
    assert summary["Sobel edges (baseline)"]["verdict"] == "FAILS" and summary["Sobel edges (baseline)"]["n"] == 4
    assert summary["Sobel edges (baseline)"]["means"]["spearman"] == pytest.approx(1.0)
    assert summary["Grad-CAM"]["means"]["spearman"] < 0.9  # random classifier rows reorder the map
    # Maps of the trained model handed over are used as they are: the same maps give the same trials ...
    before_maps = {n: sanity.comparable_map(methods[n], model, x, model[1], 2)[0] for n in methods}
    again = sanity.classifier_randomisation(model, lambda m: m[4], methods, [(x, 2)], layer=lambda m: m[1],
                                            seeds=(0, 1, 2, 3), trained_maps={0: before_maps})
    assert again == trials
    # ... and a different one is not recomputed behind the caller's back.
    other = sanity.classifier_randomisation(model, lambda m: m[4], methods, [(x, 2)], layer=lambda m: m[1],
                                            seeds=(0,), trained_maps={0: {"Grad-CAM": -before_maps["Grad-CAM"]}})
    assert other["Grad-CAM"][0]["spearman"] == pytest.approx(-trials["Grad-CAM"][0]["spearman"])
    assert other["Sobel edges (baseline)"][0] == trials["Sobel edges (baseline)"][0]
