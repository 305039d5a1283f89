"""The rest of the CAM family (XGrad-CAM, HiResCAM, Grad-CAM element-wise, LayerCAM, EigenCAM, Eigen-Grad-CAM):
maps worked out on 2 x 2 activations, the identities that tie them to CAM, and pytorch-grad-cam and torchcam as
test-only oracles on the same model, layer and target.

As in test_cam_family.py, the models' layer is the identity, so the input x *is* the activation A.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers.methods import cam_variants as V
from xai_helpers.methods.cam_template import weighted_sum

from .conftest import GapLinear

# Channel 0: [[1, 2], [3, 4]]; channel 1: [[4, 0], [0, 0]].
A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 0.0]]]])
# Through the 2 x 2 average pool, dy_c/dA^k = W_ck / 4 at every position.
W = [[4.0, 8.0], [1.0, -1.0]]


def scaled(m):
    m = torch.as_tensor(m, dtype=torch.float32)
    return ((m - m.min()) / (m.max() - m.min())).reshape(1, 2, 2)


class FlattenHead(nn.Module):
    """features (identity) -> flatten -> Linear: y_c = sum_kij W_c,kij A_kij + b_c, so dy_c/dA = W_c laid out as A."""

    def __init__(self, weight, bias):
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(8, len(weight))
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.copy_(torch.tensor(bias))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def test_xgrad_cam_by_hand():
    model = GapLinear(W)
    # Class 0: g = (1, 2) everywhere, so alpha_k = sum_ij (A_ij / sum A) * g_k = g_k: (1, 2).
    torch.testing.assert_close(V.xgrad_cam_weights(A, torch.ones_like(A) * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)),
                               torch.tensor([[1.0, 2.0]]))
    # map = A0 + 2 A1 = [[9, 2], [3, 4]]
    torch.testing.assert_close(xh.xgrad_cam(model, A, model.features, target=0), scaled([[9, 2], [3, 4]]))
    # A gradient that varies: g0 = [[1, 0], [0, 0]] on channel 0 only -> alpha_0 = A0[0, 0] / sum A0 = 1 / 10.
    g = torch.zeros_like(A)
    g[0, 0, 0, 0] = 1.0
    torch.testing.assert_close(V.xgrad_cam_weights(A, g), torch.tensor([[0.1, 0.0]]))
    # A channel whose activations sum to 0 gets weight 0 (no division by zero).
    torch.testing.assert_close(V.xgrad_cam_weights(torch.zeros_like(A), g), torch.zeros(1, 2))


def test_hires_cam_and_elementwise_by_hand():
    # Class 1 of FlattenHead: W_1 = channel 0 [[1, -1], [0, 2]], channel 1 [[-1, 0], [3, 0]].
    weight = [[0.0] * 8, [1.0, -1.0, 0.0, 2.0, -1.0, 0.0, 3.0, 0.0]]
    model = FlattenHead(weight, [0.5, -2.0])
    # g ⊙ A: channel 0 [[1, -2], [0, 8]], channel 1 [[-4, 0], [0, 0]]
    # HiResCAM sums first: [[-3, -2], [0, 8]] -> ReLU [[0, 0], [0, 8]]
    torch.testing.assert_close(xh.hires_cam(model, A, model.features, target=1), scaled([[0, 0], [0, 8]]))
    # element-wise takes the ReLU first: [[1, 0], [0, 8]]
    torch.testing.assert_close(xh.grad_cam_elementwise(model, A, model.features, target=1), scaled([[1, 0], [0, 8]]))
    # Grad-CAM averages the gradient: alpha = (mean W_1 ch0, mean W_1 ch1) = (0.5, 0.5):
    # 0.5 (A0 + A1) = [[2.5, 1], [1.5, 2]] -> it lights up the top-left, which HiResCAM says the model did not use.
    torch.testing.assert_close(xh.grad_cam(model, A, model.features, target=1), scaled([[2.5, 1], [1.5, 2]]))


def test_hires_cam_adds_up_to_the_logit_on_a_flattening_head():
    # Draelos & Carin's guarantee: with one Linear layer after A, sum_ij sum_k g ⊙ A = y_c - b_c.
    g = torch.Generator().manual_seed(0)
    model = FlattenHead(torch.randn(3, 8, generator=g).tolist(), [0.3, -1.0, 2.0])
    x = torch.randn(4, 2, 2, 2, generator=g)
    for c in range(3):
        a, grads, _, output = xh.activation_and_gradient(model, x, model.features, target=c)
        torch.testing.assert_close((grads * a).sum((1, 2, 3)), output[:, c] - model.fc.bias[c].detach())


def test_layer_cam_by_hand_and_where_it_differs_from_cam():
    model = GapLinear(W)
    # Class 0: all weights positive, ReLU(g) = g = (1, 2): LayerCAM = CAM = A0 + 2 A1.
    torch.testing.assert_close(xh.layer_cam(model, A, model.features, target=0), xh.cam(model, A, model.features, target=0))
    # Class 1: W = (1, -1), g = (1/4, -1/4). CAM: (A0 - A1)/4 = [[-3, 2], [3, 4]]/4 -> ReLU -> [[0, 2], [3, 4]].
    torch.testing.assert_close(xh.cam(model, A, model.features, target=1), scaled([[0, 2], [3, 4]]))
    # LayerCAM drops the negatively weighted channel: ReLU(g) = (1/4, 0), map = A0 / 4 = [[1, 2], [3, 4]] / 4.
    torch.testing.assert_close(xh.layer_cam(model, A, model.features, target=1), scaled([[1, 2], [3, 4]]))
    torch.testing.assert_close(V.layer_cam_map(A, torch.full_like(A, 0.25) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)),
                               torch.tensor([[[0.25, 0.5], [0.75, 1.0]]]))


def test_hires_and_xgrad_cam_equal_cam_on_a_gap_linear_head():
    g = torch.Generator().manual_seed(1)
    model = GapLinear(torch.randn(5, 6, generator=g).tolist(), bias=torch.randn(5, generator=g).tolist())
    x = torch.randn(3, 6, 4, 4, generator=g).relu()
    for c in range(5):
        expected = xh.cam(model, x, model.features, target=c)
        torch.testing.assert_close(xh.hires_cam(model, x, model.features, target=c), expected)
        torch.testing.assert_close(xh.xgrad_cam(model, x, model.features, target=c), expected)


def test_first_principal_component_by_hand():
    # A1 = 2 A0, so the channels vary along v1 = (1, 2)/sqrt(5). A0 = [0, 0, 1, 3] centred: [-1, -1, 0, 2];
    # each position's coordinate along v1 is sqrt(5) * that: [-s, -s, 0, 2s]. Its largest |value| is positive.
    a0 = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    a = torch.stack([a0, 2 * a0])[None]
    s = math.sqrt(5)
    torch.testing.assert_close(V.first_principal_component(a), torch.tensor([[[-s, -s], [0.0, 2 * s]]], dtype=torch.float64))
    # ReLU and min-max: [[0, 0], [0, 1]]
    model = GapLinear([[1.0, 1.0]])
    torch.testing.assert_close(xh.eigen_cam(model, a, model.features), torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]))


@pytest.mark.parametrize("shape", [(3, 6, 5, 4), (2, 30, 3, 3)], ids=["more positions than channels", "fewer"])
def test_first_principal_component_equals_pca_up_to_the_sign_rule(shape):
    decomposition = pytest.importorskip("sklearn.decomposition")
    g = torch.Generator().manual_seed(2)
    maps = torch.randn(*shape, generator=g)
    ours = V.first_principal_component(maps)
    n, _, h, w = shape
    for i in range(n):
        pca = decomposition.PCA(n_components=1, svd_solver="full").fit_transform(maps[i].flatten(1).T.double().numpy())
        pca = torch.from_numpy(pca[:, 0]).view(h, w)
        if pca.min().abs() > pca.max().abs():  # the same sign rule as the package
            pca = -pca
        torch.testing.assert_close(ours[i], pca)
        assert ours[i].max() >= ours[i].min().abs()


def test_eigen_cam_is_class_agnostic_and_fixes_the_sign():
    g = torch.Generator().manual_seed(3)
    model = GapLinear(torch.randn(4, 6, generator=g).tolist())
    x = torch.randn(2, 6, 5, 5, generator=g)
    first = xh.eigen_cam(model, x, model.features, target=0)
    torch.testing.assert_close(xh.eigen_cam(model, x, model.features, target=3), first)
    # Negating the activations negates M, so without a sign rule the ReLU would keep the opposite half of the map.
    torch.testing.assert_close(xh.eigen_cam(model, -x, model.features), first)
    # Eigen-Grad-CAM is class-specific: on this GAP head g ⊙ A = W_ck A^k / Z, a different matrix per class.
    grad_0 = xh.eigen_grad_cam(model, x, model.features, target=0)
    assert not torch.allclose(grad_0, xh.eigen_grad_cam(model, x, model.features, target=1))
    # ... and equal to the principal component of W_c ⊙ A written out.
    w = model.fc.weight.detach()[0].view(1, 6, 1, 1) / 25
    by_hand = V.first_principal_component(w * x).clamp_min(0).float()
    torch.testing.assert_close(grad_0, xh.engine.finish(by_hand, (5, 5)))


def test_layer_cam_fusion_by_hand():
    # Two layers of the same model: the identity (A itself) and a ReLU after it (the same values, A >= 0).
    model = nn.Sequential(nn.Identity(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[4].weight.copy_(torch.tensor(W))
        model[4].bias.zero_()
    # Class 1 at either layer: M = A0 / 4 = [[1, 2], [3, 4]] / 4, max 1: tanh(2 M / max M) = tanh([[.5, 1], [1.5, 2]]).
    expected = scaled(torch.tanh(torch.tensor([[0.5, 1.0], [1.5, 2.0]])))
    fused = xh.layer_cam_fusion(model, A, [model[0], model[1]], target=1)
    torch.testing.assert_close(fused, expected)
    # One layer: its own map scaled by tanh, which is monotone, so the ranking is LayerCAM's.
    single = xh.layer_cam_fusion(model, A, [model[0]], target=1)
    torch.testing.assert_close(single, expected)
    assert torch.equal(single.flatten().argsort(), xh.layer_cam(model, A, model[0], target=1).flatten().argsort())


@pytest.mark.parametrize("bad, match", [([], "non-empty list"), ("layer", "non-empty list"), (0.0, "gamma"),
                                        (float("nan"), "gamma")])
def test_layer_cam_fusion_refuses_bad_settings(bad, match):
    model = GapLinear(W)
    with pytest.raises(ValueError, match=match):
        if match == "gamma":
            xh.layer_cam_fusion(model, A, [model.features], gamma=bad)
        else:
            xh.layer_cam_fusion(model, A, model.features if bad == "layer" else bad)


# --- pytorch-grad-cam and torchcam, test-only oracles ---------------------------------------------------------


class ConvNet(nn.Module):
    """A small CNN with two stride-1 stages, so the layers can be compared at the input's size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stage1 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(12, 5))

    def forward(self, x):
        return self.head(self.stage2(self.stage1(x)))


X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
TARGETS = [1, 4, 2]

PGC = {
    "LayerCAM": V.layer_cam,
    "XGradCAM": V.xgrad_cam,
    "HiResCAM": V.hires_cam,
    "GradCAMElementWise": V.grad_cam_elementwise,
}


@pytest.mark.parametrize("name", sorted(PGC))
@pytest.mark.parametrize("layer", ["stage1", "stage2", "head.1"])
def test_gradient_variants_equal_pytorch_grad_cam(name, layer):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = ConvNet().eval()
    module = model.get_submodule(layer)
    with getattr(pgc, name)(model=model, target_layers=[module]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=X, targets=[ClassifierOutputTarget(t) for t in TARGETS]))
    torch.testing.assert_close(PGC[name](model, X, module, target=TARGETS), theirs, rtol=0, atol=1e-5)


def test_grad_cam_plus_plus_equals_pytorch_grad_cam_with_its_epsilon():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xai_helpers.methods.grad_cam import grad_cam_plus_plus_weights

    model = ConvNet().eval()
    with pgc.GradCAMPlusPlus(model=model, target_layers=[model.stage2]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=X, targets=[ClassifierOutputTarget(t) for t in TARGETS]))
    a, g, _, _ = xh.activation_and_gradient(model, X, model.stage2, target=TARGETS)
    # pgc's alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6), 0 where g = 0 (1.5.7).
    g2 = g.pow(2)
    alpha = torch.where(g != 0, g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + 1e-6), 0.0)
    with_eps = xh.engine.finish(weighted_sum((alpha * g.clamp_min(0)).sum((2, 3)), a), (16, 16))
    torch.testing.assert_close(with_eps, theirs, rtol=0, atol=1e-5)
    # The gradients here are about 1e-3, so g^2 is near the epsilon: the paper's alpha gives another map.
    assert (xh.grad_cam_plus_plus(model, X, model.stage2, target=TARGETS) - theirs).abs().amax() > 0.05
    paper = xh.engine.finish(weighted_sum(grad_cam_plus_plus_weights(a, g), a), (16, 16))
    torch.testing.assert_close(xh.grad_cam_plus_plus(model, X, model.stage2, target=TARGETS), paper)


@pytest.mark.parametrize("ours, theirs", [("eigen_cam", "EigenCAM"), ("eigen_grad_cam", "EigenGradCAM")])
def test_eigen_variants_equal_pytorch_grad_cam_up_to_its_sign(ours, theirs):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = ConvNet().eval()
    module = model.head[1]
    with getattr(pgc, theirs)(model=model, target_layers=[module]) as cam:
        peer = torch.from_numpy(cam(input_tensor=X, targets=[ClassifierOutputTarget(t) for t in TARGETS]))
    mine = getattr(xh, ours)(model, X, module, target=TARGETS)
    # pgc leaves v1's sign to LAPACK; with the opposite sign, ReLU keeps the other side of the projection.
    a, g, _, _ = xh.activation_and_gradient(model, X, module, target=TARGETS)
    flipped = xh.engine.finish(-V.first_principal_component(a if ours == "eigen_cam" else g * a).float(), (16, 16))
    for i in range(len(TARGETS)):
        assert (torch.allclose(mine[i], peer[i], atol=1e-5) or torch.allclose(flipped[i], peer[i], atol=1e-5)), i
    # pgc's sign-corrected projection (Chung & Ying 2025, Eq. 13) is ours exactly.
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    corrected = get_2d_projection_with_sign_correction((a if ours == "eigen_cam" else g * a).numpy())
    torch.testing.assert_close(V.first_principal_component(a if ours == "eigen_cam" else g * a).float(),
                               torch.from_numpy(corrected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["LayerCAM", "XGradCAM"])
def test_layer_maps_equal_torchcam(name):
    methods = pytest.importorskip("torchcam.methods")
    model, x = ConvNet().eval().double(), X.double()  # float64, so that only the formulas can differ
    with getattr(methods, name)(model, target_layer=model.stage2) as extractor:
        scores = model(x)
        theirs = torch.cat(extractor(TARGETS, scores))  # (N, 16, 16), ReLU'd and min-max scaled
    a, g, _, _ = xh.activation_and_gradient(model, x, model.stage2, target=TARGETS)
    raw = V.layer_cam_map(a, g) if name == "LayerCAM" else weighted_sum(V.xgrad_cam_weights(a, g), a)
    ours = raw.clamp_min(0)
    ours = ours - ours.amin((1, 2), keepdim=True)
    # torchcam's two deliberate epsilons, the package has neither: 1e-8 in its min-max step ...
    if name == "LayerCAM":
        torch.testing.assert_close(ours / (ours.amax((1, 2), keepdim=True) + 1e-8), theirs, rtol=0, atol=1e-9)
    else:  # ... and 1e-8 in XGrad-CAM's denominator sum_ab A_ab
        total = a.sum((2, 3))
        with_eps = weighted_sum((a * g).sum((2, 3)) / (total + 1e-8), a).clamp_min(0)
        with_eps = with_eps - with_eps.amin((1, 2), keepdim=True)
        torch.testing.assert_close(with_eps / (with_eps.amax((1, 2), keepdim=True) + 1e-8), theirs, rtol=0, atol=1e-9)
    # Without them the maps agree to the size of the epsilons relative to the maps' ranges.
    torch.testing.assert_close(ours / ours.amax((1, 2), keepdim=True), theirs, rtol=0, atol=1e-3)


def test_layer_cam_fusion_equals_torchcams_fuse_cams():
    methods = pytest.importorskip("torchcam.methods")
    model = ConvNet().eval()
    with methods.LayerCAM(model, target_layer=[model.stage1, model.stage2]) as extractor:
        scores = model(X)
        theirs = extractor.fuse_cams(extractor(TARGETS, scores))  # both layers are 16 x 16: no resizing
    theirs = xh.engine.normalize_per_image(theirs)
    ours = xh.layer_cam_fusion(model, X, [model.stage1, model.stage2], target=TARGETS)
    # torchcam scales by the min-max normalisation, the paper by the maximum: equal where a map's minimum is 0.
    a, g, _, _ = xh.activation_and_gradient(model, X, model.stage1, target=TARGETS)
    assert (V.layer_cam_map(a, g).clamp_min(0).flatten(1).amin(1) == 0).all()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_the_variants_leave_the_model_and_input_alone(small_cnn):
    layer = small_cnn.features[4]
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    before, state = x.clone(), {k: v.clone() for k, v in small_cnn.state_dict().items()}
    small_cnn.train()
    for method in (xh.layer_cam, xh.xgrad_cam, xh.hires_cam, xh.grad_cam_elementwise, xh.eigen_cam, xh.eigen_grad_cam):
        heat = method(small_cnn, x, layer, target=[0, 1])
        assert heat.shape == (2, 16, 16) and heat.amin() >= 0 and heat.amax() <= 1
    xh.layer_cam_fusion(small_cnn, x, [small_cnn.features[1], layer], target=0)
    assert torch.equal(x, before) and small_cnn.training
    assert all(torch.equal(v, state[k]) for k, v in small_cnn.state_dict().items())
    assert all(p.grad is None for p in small_cnn.parameters())
    assert not small_cnn._forward_hooks and all(not m._forward_hooks for m in small_cnn.modules())


def test_numpy_free_of_nan_on_constant_maps():
    # A layer whose activations are all equal: every variant gives the all-zero map, not NaN.
    model = GapLinear(W)
    flat = torch.ones(1, 2, 2, 2)
    for method in (xh.layer_cam, xh.xgrad_cam, xh.hires_cam, xh.grad_cam_elementwise, xh.eigen_cam, xh.eigen_grad_cam):
        heat = method(model, flat, model.features, target=0)
        assert np.isfinite(heat.numpy()).all()
