"""pytorch-grad-cam's aug_smooth and eigen_smooth: by hand, the formula written out, identities, and pgc as an oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers.methods import aug_smooth as AS
from xai_helpers.methods.cam_template import reduce_channels, weighted_sum

from .conftest import all_hooks
from .test_cam_variants import TARGETS, ConvNet, X

SMOOTHABLE = [(name, m) for name, m in xh.METHODS.items() if m.smoothing]


def test_which_entries_have_the_settings():
    # Every layer method (and FullGrad) has aug_smooth; eigen_smooth wherever the map is a sum over channels.
    assert {n for n, m in SMOOTHABLE} == {n for n, m in xh.METHODS.items() if m.family == "activation map"}
    no_channel_sum = {n for n, m in SMOOTHABLE if "eigen_smooth" not in m.smoothing}
    assert no_channel_sum == {"EigenCAM", "Eigen-Grad-CAM", "FullGrad"}
    assert not any(m.smoothing for m in xh.METHODS.values() if m.family != "activation map")


# --- eigen_smooth ----------------------------------------------------------------------------------------------


def test_eigen_smooth_by_hand_on_rank_one_terms():
    # T^0 = M and T^1 = 2M: every centred position is (m, 2m), so v_1 = (1, 2) / sqrt 5 and the map is sqrt(5) m.
    m = torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float64)
    terms = torch.stack([m, 2 * m])[None]
    centred = m - m.mean()  # [[-1.75, -0.75], [0.25, 2.25]]: the largest |value| is positive, no flip
    torch.testing.assert_close(reduce_channels(terms, eigen_smooth=True)[0], math.sqrt(5) * centred)
    torch.testing.assert_close(reduce_channels(terms)[0], 3 * m)
    # The same through channel weights w = (1, 2) on A^0 = A^1 = M.
    a = torch.stack([m, m])[None]
    torch.testing.assert_close(weighted_sum(torch.tensor([[1.0, 2.0]], dtype=torch.float64), a, eigen_smooth=True),
                               reduce_channels(terms, eigen_smooth=True))


def test_eigen_smooth_equals_numpy_svd_with_the_sign_rule():
    terms = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for i in range(2):
        matrix = terms[i].flatten(1).T.numpy()  # (hw, C)
        matrix = matrix - matrix.mean(0)
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        projection = matrix @ vt[0]
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        torch.testing.assert_close(reduce_channels(terms, eigen_smooth=True)[i],
                                   torch.from_numpy(projection.reshape(3, 4)))


def test_hires_cam_with_eigen_smooth_is_eigen_grad_cam():
    model = ConvNet().eval()
    for layer in (model.stage2, model.head[1]):
        torch.testing.assert_close(xh.hires_cam(model, X, layer, TARGETS, eigen_smooth=True),
                                   xh.eigen_grad_cam(model, X, layer, TARGETS), rtol=0, atol=0)


def test_eigen_smooth_changes_the_map():
    model = ConvNet().eval()
    plain = xh.grad_cam(model, X, model.stage2, TARGETS)
    assert (plain - xh.grad_cam(model, X, model.stage2, TARGETS, eigen_smooth=True)).abs().amax() > 0.1


@pytest.fixture
def sign_corrected_pgc(monkeypatch):
    """pytorch-grad-cam with its own sign-corrected projection, the rule of ``first_principal_component``.

    pgc's eigen_smooth leaves the sign of v_1 to LAPACK, so a map can come out mirrored (then mostly removed by
    the ReLU); every module that imported ``get_2d_projection`` gets the corrected one.
    """
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils import svd_on_activations

    for module in ("base_cam", "hirescam", "layer_cam", "grad_cam_elementwise"):
        monkeypatch.setattr(f"pytorch_grad_cam.{module}.get_2d_projection",
                            svd_on_activations.get_2d_projection_with_sign_correction)
    return pgc


PGC = {
    "GradCAM": xh.grad_cam,
    "XGradCAM": xh.xgrad_cam,
    "HiResCAM": xh.hires_cam,
    "GradCAMElementWise": xh.grad_cam_elementwise,
    "LayerCAM": xh.layer_cam,
}


def _pgc_map(pgc, name, model, layer, **call):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with getattr(pgc, name)(model=model, target_layers=[layer]) as cam:
        return torch.from_numpy(cam(input_tensor=X, targets=[ClassifierOutputTarget(t) for t in TARGETS], **call))


@pytest.mark.parametrize("name", sorted(PGC))
def test_eigen_smooth_equals_pytorch_grad_cam_with_its_sign_correction(name, sign_corrected_pgc):
    model = ConvNet().eval()
    for layer in (model.stage1, model.stage2):  # stride 1: compared at the input's size, no resizing
        theirs = _pgc_map(sign_corrected_pgc, name, model, layer, eigen_smooth=True)
        torch.testing.assert_close(PGC[name](model, X, layer, TARGETS, eigen_smooth=True), theirs, rtol=0, atol=1e-5)


def test_ablation_cam_eigen_smooth_equals_pytorch_grad_cam(sign_corrected_pgc):
    # After a ReLU pgc's ablation value is 0, the paper's (test_ablation_cam); the projection is then the same.
    model = ConvNet().eval()
    theirs = _pgc_map(sign_corrected_pgc, "AblationCAM", model, model.stage2, eigen_smooth=True)
    torch.testing.assert_close(xh.ablation_cam(model, X, model.stage2, TARGETS, eigen_smooth=True), theirs,
                               rtol=0, atol=1e-5)


# --- aug_smooth ------------------------------------------------------------------------------------------------


def by_the_formula(method, model, x, layer, classes, **settings):
    """(1/6) sum_T T^-1(L(T x)), min-max scaled, written out: six separate calls, each copy flipped back."""
    total = torch.zeros(x.shape[0], *x.shape[-2:])
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            copy = torch.flip(x, dims=[3]) if flip else x
            args = (model, copy * factor) if layer is None else (model, copy * factor, layer)
            heat = method(*args, target=classes, **settings)
            total += torch.flip(heat, dims=[2]) if flip else heat
    mean = total / 6
    low, high = mean.amin((1, 2), keepdim=True), mean.amax((1, 2), keepdim=True)
    return (mean - low) / (high - low)


@pytest.mark.parametrize("method, layer, settings", [
    (xh.grad_cam, "stage2", {}),
    (xh.layer_cam, "stage1", {"eigen_smooth": True}),
    (xh.ss_cam, "stage2", {"samples": 2, "top_channels": 3}),  # seeded per-image noise: the batch of 6N changes nothing
    (xh.smooth_grad_cam_plus_plus, "stage2", {"samples": 2}),
    (xh.full_grad, None, {}),
])
def test_aug_smooth_equals_the_formula(method, layer, settings):
    model = ConvNet().eval()
    module = None if layer is None else model.get_submodule(layer)
    args = (model, X) if module is None else (model, X, module)
    got = method(*args, target=TARGETS, aug_smooth=True, **settings)
    torch.testing.assert_close(got, by_the_formula(method, model, X, module, TARGETS, **settings), rtol=0, atol=2e-6)
    assert (got - method(*args, target=TARGETS, **settings)).abs().amax() > 0.01  # it is not the plain map


class LeftOrRight(nn.Module):
    """conv -> ReLU -> flatten -> Linear: class 0 reads the top-left quadrant, class 1 the right half."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(2 * 4 * 4, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.features[0].bias.zero_()
            top_left, right = torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)
            top_left[:, :2, :2] = 1.0
            right[:, :, 2:] = 1.0
            self.fc.weight.copy_(torch.stack([top_left.flatten(), right.flatten()]))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def test_aug_smooth_explains_the_clean_images_class_in_every_copy():
    model = LeftOrRight().eval()
    x = torch.zeros(1, 3, 4, 4)
    x[..., :2] = 1.0  # bright on the left: class 0 (score 24 against 0); the flipped copies are class 1
    assert model(AS.augment(x)).argmax(-1).tolist() == [0, 0, 0, 1, 1, 1]
    got = xh.hires_cam(model, x, model.features, aug_smooth=True)
    # Class 0 in every copy: the flipped copies' maps are 0, the others light the top-left quadrant.
    expected = torch.zeros(1, 4, 4)
    expected[:, :2, :2] = 1.0
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(xh.hires_cam(model, x, model.features, target=0, aug_smooth=True), expected)
    # pgc lets each copy pick its own top-1: its three flipped copies explain class 1 and light the whole left half.
    pgc = pytest.importorskip("pytorch_grad_cam")
    with pgc.HiResCAM(model=model, target_layers=[model.features]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=None, aug_smooth=True))
    mixed = torch.zeros(1, 4, 4)
    mixed[:, :, :2] = 0.5
    mixed[:, :2, :2] = 1.0
    torch.testing.assert_close(theirs, mixed, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PGC))
def test_aug_smooth_equals_pytorch_grad_cam(name):
    pgc = pytest.importorskip("pytorch_grad_cam")
    model = ConvNet().eval()
    # pgc averages six maps in [0, 1] and does not rescale; min-max scaling its mean (an increasing affine map).
    theirs = xh.engine.normalize_per_image(_pgc_map(pgc, name, model, model.stage2, aug_smooth=True))
    torch.testing.assert_close(PGC[name](model, X, model.stage2, TARGETS, aug_smooth=True), theirs, rtol=0, atol=1e-5)


def test_both_settings_together_equal_pytorch_grad_cam(sign_corrected_pgc):
    model = ConvNet().eval()
    theirs = xh.engine.normalize_per_image(_pgc_map(sign_corrected_pgc, "GradCAM", model, model.stage1,
                                                    aug_smooth=True, eigen_smooth=True))
    torch.testing.assert_close(xh.grad_cam(model, X, model.stage1, TARGETS, aug_smooth=True, eigen_smooth=True),
                               theirs, rtol=0, atol=1e-5)


# --- the protocol with the settings on -------------------------------------------------------------------------


@pytest.mark.parametrize("name,method", SMOOTHABLE)
def test_settings_leave_the_model_and_input_alone(name, method, small_cnn):
    params = list(small_cnn.parameters())
    params[0].grad = torch.full_like(params[0], 3.0)
    params[1].requires_grad_(False)
    small_cnn.train()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    before, state = x.clone(), {k: v.clone() for k, v in small_cnn.state_dict().items()}
    settings = {**method.preview, **{s: True for s in method.smoothing}}
    heat = method(small_cnn, x, small_cnn.features[5], **settings)
    assert heat.shape == (2, 16, 16) and heat.dtype == torch.float32 and torch.isfinite(heat).all()
    assert heat.amin() >= 0 and heat.amax() <= 1
    assert torch.equal(x, before) and not x.requires_grad and small_cnn.training
    assert all(torch.equal(v, state[k]) for k, v in small_cnn.state_dict().items())
    assert torch.equal(params[0].grad, torch.full_like(params[0], 3.0)) and all(p.grad is None for p in params[1:])
    assert [p.requires_grad for p in params] == [True, False] + [True] * (len(params) - 2)
    assert all_hooks(small_cnn) == 0


@pytest.mark.parametrize("setting", ["aug_smooth", "eigen_smooth"])
@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_a_setting_that_is_not_a_bool_is_refused(setting, bad, small_cnn):
    x = torch.randn(1, 3, 16, 16)
    for method in (xh.grad_cam, xh.score_cam, xh.ablation_cam):
        with pytest.raises(ValueError, match=f"{setting} must be True or False"):
            method(small_cnn, x, small_cnn.features[5], **{setting: bad})


def test_aug_smooth_refuses_a_bad_target(small_cnn):
    with pytest.raises(ValueError, match="out of range"):
        xh.grad_cam(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], target=99, aug_smooth=True)


def test_the_command_line_turns_the_settings_on_where_they_exist(tmp_path, capsys, monkeypatch, lite0):
    from xai_helpers.ui import cli, figures

    drawn = {}
    real = figures.plot_overlays  # the command line imports it when it runs
    monkeypatch.setattr(figures, "plot_overlays", lambda image, heats, **kw: drawn.update(heats) or real(image, heats, **kw))
    out = tmp_path / "f.png"
    assert cli.main(["explain", "coffee", "--method", "grad-cam", "--method", "eigen-cam", "--method", "saliency",
                     "--aug-smooth", "--eigen-smooth", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(aug_smooth is not a setting of Saliency; it runs without it)" in text
    assert "(eigen_smooth is not a setting of EigenCAM, Saliency; they run without it)" in text
    x = lite0.preprocess("coffee")
    target = lite0.predict(x, k=1)[0][0]
    torch.testing.assert_close(drawn["Grad-CAM"], xh.grad_cam(lite0.model, x, lite0.target_layer, target,
                                                              aug_smooth=True, eigen_smooth=True)[0])
    torch.testing.assert_close(drawn["EigenCAM"], xh.eigen_cam(lite0.model, x, lite0.target_layer, target,
                                                               aug_smooth=True)[0])
    torch.testing.assert_close(drawn["Saliency"], xh.METHODS["Saliency"](lite0.model, x, target=target)[0])


def test_with_settings_makes_a_row_of_its_own_and_refuses_unknown_settings():
    model = ConvNet().eval()
    entry = xh.METHODS["Grad-CAM"].with_settings(eigen_smooth=True)
    assert entry.name == "Grad-CAM (eigen_smooth=True)" and entry.name not in xh.METHODS
    assert entry.smoothing == ("aug_smooth", "eigen_smooth")
    torch.testing.assert_close(entry(model, X, model.stage2, TARGETS),
                               xh.grad_cam(model, X, model.stage2, TARGETS, eigen_smooth=True), rtol=0, atol=0)
    assert entry.passes() == (1, 1) and entry.cost == xh.METHODS["Grad-CAM"].cost
    augmented = xh.METHODS["Grad-CAM"].with_settings(aug_smooth=True)
    assert augmented.passes() == (7, 6) and augmented.cost.startswith("6 x (1 forward + 1 backward")
    with pytest.raises(ValueError, match="Grad-CAM has no setting 'samples'; its settings are reshape_transform"):
        xh.METHODS["Grad-CAM"].with_settings(samples=3)
    with pytest.raises(ValueError, match="at least one setting"):
        xh.METHODS["Grad-CAM"].with_settings()
