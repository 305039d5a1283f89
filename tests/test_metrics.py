"""Metrics on hand-computed cases."""

import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers.course.synthetic import CLASSES, SIZE, SyntheticCNN, SyntheticMLP, load_synthetic_model, make_dataset

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


def test_synthetic_dataset_has_exact_masks():
    x, y, masks = make_dataset(30, seed=3)
    assert x.shape == (30, 3, SIZE, SIZE) and masks.shape == (30, SIZE, SIZE)
    assert torch.bincount(y).tolist() == [10, 10, 10]
    pixels = x * 0.25 + 0.5
    for i in range(30):
        colour = {"red": 0, "green": 1, "blue": 2}[CLASSES[int(y[i])][0]]
        inside = pixels[i, :, masks[i]]
        # the mask covers exactly the class object: its dominant channel is the class colour
        assert masks[i].sum() > 60 and (inside.argmax(0) == colour).all()
    x2, y2, masks2 = make_dataset(30, seed=3)
    assert torch.equal(x, x2) and torch.equal(masks, masks2)


def test_synthetic_checkpoint_loads_and_is_accurate():
    model = load_synthetic_model()
    assert isinstance(model, SyntheticCNN) and not model.training
    x, y, _ = make_dataset(150, seed=7)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.95
    assert xh.find_gap_linear(model, x[:1], model.features.block4) is model.classifier


def test_second_synthetic_model_has_a_head_where_the_methods_differ():
    model = load_synthetic_model("mlp")
    assert isinstance(model, SyntheticMLP) and not model.training
    x, y, _ = make_dataset(150, seed=7)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.95
    layer = model.features.block4
    with pytest.raises(ValueError, match="global average pooling"):
        xh.cam(model, x[:2], layer)
    grad_cam = xh.grad_cam(model, x[:8], layer, target=y[:8])
    plus = xh.grad_cam_plus_plus(model, x[:8], layer, target=y[:8])
    assert (grad_cam - plus).abs().amax() > 0.2  # genuinely different maps, unlike on the GAP model
    with pytest.raises(ValueError, match="unknown synthetic model 'vgg'; choose from gap, mlp"):
        load_synthetic_model("vgg")


def test_synthetic_checkpoint_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_synthetic.py"):
        load_synthetic_model(path=tmp_path / "none.pt")


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
