"""Ablation-CAM: slopes worked out on 2 x 2 activations, the formula written out as a slow loop of full forward
passes, the replay of the layers after the layer (tail and full modes), and pytorch-grad-cam as a test-only oracle.
"""

import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers.engine import LayerReplay, layer_pass
from xai_helpers.methods.ablation_cam import ablation_cam_weights

from .conftest import GapLinear
from .test_cam_variants import TARGETS, ConvNet, X, scaled

A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 0.0]]]])
W = [[4.0, 8.0], [1.0, -1.0]]


def test_ablation_cam_by_hand():
    # GAP -> Linear: y_c = sum_k W_ck mean(A^k), mean(A^0) = 2.5, mean(A^1) = 1, so switching channel k off
    # lowers y_c by W_ck mean(A^k), and w_k = W_ck mean(A^k) / y_c.
    model = GapLinear(W)
    rec = layer_pass(model, A, model.features, [0], gradient=False)
    weights, _ = ablation_cam_weights(model, A, model.features, rec.activation, rec.output, rec.classes, [0])
    torch.testing.assert_close(weights, torch.tensor([[10.0 / 18.0, 8.0 / 18.0]]))  # y_0 = 10 + 8 = 18
    # map = (10 A^0 + 8 A^1) / 18 = [[42, 20], [30, 40]] / 18
    torch.testing.assert_close(xh.ablation_cam(model, A, model.features, target=0), scaled([[42, 20], [30, 40]]))
    # Class 1: y_1 = 2.5 - 1 = 1.5, w = (2.5, -1) / 1.5; 2.5 A^0 - A^1 = [[-1.5, 5], [7.5, 10]] -> ReLU
    torch.testing.assert_close(xh.ablation_cam(model, A, model.features, target=1), scaled([[0, 5], [7.5, 10]]))


def test_a_negative_class_score_flips_every_slope_and_zero_is_refused():
    # With bias -3, y_1 = 1.5 - 3 = -1.5: the paper's division by y_c turns w into (-2.5, 1) / 1.5.
    model = GapLinear(W, bias=[0.0, -3.0])
    torch.testing.assert_close(xh.ablation_cam(model, A, model.features, target=1), scaled([[2.5, 0], [0, 0]]))
    zero = GapLinear(W, bias=[0.0, -1.5])  # y_1 = 0 exactly
    with pytest.raises(ValueError, match="exactly 0 for image 0"):
        xh.ablation_cam(zero, A, zero.features, target=1)


def test_all_zero_channels_cost_nothing():
    model = GapLinear([[1.0, 2.0, 3.0]])
    x = torch.cat([A, torch.zeros(1, 1, 2, 2)], 1)  # channel 2 is 0 everywhere: removing it changes nothing
    rec = layer_pass(model, x, model.features, [0], gradient=False)
    weights, replays = ablation_cam_weights(model, x, model.features, rec.activation, rec.output, rec.classes, [0])
    assert weights[0, 2] == 0 and replays[0].rows == 1 + 2  # the check row and the two live channels
    assert replays[0].mode == "tail" and replays[0].prefix_passes == 1


def zero_channel(out, k):
    out[:, k] = 0


def slow_ablation_cam(model, x, layer, targets, ablate=zero_channel):
    """The paper's formula with one full forward pass per channel and a hook that zeroes it (``ablate(out, k)``)."""
    maps = []
    for i, c in enumerate(targets):
        xi = x[i : i + 1]
        with torch.no_grad():
            y = model(xi)[0, c].double()
            a = layer_pass(model, xi, layer, gradient=False).activation
            weights = torch.zeros(a.shape[1], dtype=torch.float64)
            for k in range(a.shape[1]):
                def zero(module, inputs, out, k=k):
                    out = out.clone()
                    ablate(out, k)
                    return out
                handle = layer.register_forward_hook(zero)
                try:
                    weights[k] = (y - model(xi)[0, c].double()) / y
                finally:
                    handle.remove()
        maps.append((weights.float().view(1, -1, 1, 1) * a).sum(1))
    return xh.engine.finish(torch.cat(maps), x.shape[-2:])


@pytest.mark.parametrize("layer", ["stage1.0", "stage2", "head.1"])
def test_equals_the_formula_written_out(layer):
    model = ConvNet().eval()
    module = model.get_submodule(layer)
    torch.testing.assert_close(xh.ablation_cam(model, X, module, target=TARGETS),
                               slow_ablation_cam(model, X, module, TARGETS), rtol=0, atol=1e-5)
    # Small batches give the same map (more calls of the layers after the layer).
    torch.testing.assert_close(xh.ablation_cam(model, X, module, target=TARGETS, batch_size=3),
                               xh.ablation_cam(model, X, module, target=TARGETS), rtol=0, atol=1e-6)


class SkipAround(nn.Module):
    """A skip connection around the explained layer: added (broadcasts, tail mode) or concatenated (full mode)."""

    def __init__(self, concatenate: bool):
        super().__init__()
        torch.manual_seed(1)
        self.concatenate = concatenate
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 if concatenate else 4, 3))

    def forward(self, x):
        s = self.stem(x)
        b = self.block(s)
        return self.head(torch.cat([s, b], 1) if self.concatenate else s + b)


@pytest.mark.parametrize("concatenate, mode", [(False, "tail"), (True, "full")])
def test_the_replay_runs_only_the_tail_where_it_can(concatenate, mode):
    model = SkipAround(concatenate).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    rec = layer_pass(model, x, model.block, [0, 2], gradient=False)
    _, replays = ablation_cam_weights(model, x, model.block, rec.activation, rec.output, rec.classes, [0, 2])
    assert [r.mode for r in replays] == [mode, mode]
    torch.testing.assert_close(xh.ablation_cam(model, x, model.block, target=[0, 2]),
                               slow_ablation_cam(model, x, model.block, [0, 2]), rtol=0, atol=1e-5)


def test_a_model_with_batch_statistics_runs_one_ablation_per_call():
    model = ConvNet().eval()
    model.stage2.insert(1, nn.BatchNorm2d(8, track_running_stats=False))  # batch statistics even in eval mode
    module = model.stage2[0]
    torch.testing.assert_close(xh.ablation_cam(model, X, module, target=TARGETS),
                               slow_ablation_cam(model, X, module, TARGETS), rtol=0, atol=1e-5)


def test_the_replay_refuses_a_batch_and_checks_its_own_row():
    model = ConvNet().eval()
    rec = layer_pass(model, X, model.stage2, gradient=False)
    with pytest.raises(ValueError, match="one image at a time"):
        LayerReplay(model, X, model.stage2, rec.activation, rec.output)
    replay = LayerReplay(model, X[:1], model.stage2, rec.activation[:1], rec.output[:1])
    with pytest.raises(ValueError, match=r"replacements must be \(B, 8, 16, 16\)"):
        replay(torch.zeros(2, 8, 4, 4))
    out = replay(rec.activation[:1].expand(3, -1, -1, -1).clone())
    torch.testing.assert_close(out, rec.output[:1].expand(3, -1), rtol=1e-4, atol=1e-5)
    assert not any(m._forward_hooks for m in model.modules())


def test_tokens_and_channels_last_are_ablated_in_the_layers_own_layout():
    # A token layer (N, T, C): channel k of the feature map is entry k of every grid token; the class token is
    # not part of the feature map and keeps its values.
    torch.manual_seed(0)
    tokens = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.Flatten(2), Transpose(), WithClassToken(), nn.ReLU(),
                           Mean(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    rec = layer_pass(tokens, x, tokens[4], [0, 2], gradient=False)
    assert rec.raw.shape == (2, 17, 4) and rec.activation.shape == (2, 4, 4, 4)

    def grid_channel(out, k):
        out[:, 1:, k] = 0  # the grid tokens' channel k

    torch.testing.assert_close(xh.ablation_cam(tokens, x, tokens[4], target=[0, 2]),
                               slow_ablation_cam(tokens, x, tokens[4], [0, 2], ablate=grid_channel),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="may only rearrange"):
        xh.ablation_cam(tokens, x, tokens[4], target=0,
                        reshape_transform=lambda t: 2 * xh.engine.tokens_to_grid(t))


class WithClassToken(nn.Module):
    def forward(self, t):
        return torch.cat([t.mean(1, keepdim=True), t], 1)


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class Mean(nn.Module):
    def forward(self, x):
        return x.mean(1)


@pytest.mark.parametrize("layer", ["stage2", "head.1"])
def test_equals_pytorch_grad_cam_on_layers_with_zero_minimum(layer):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = ConvNet().eval()
    module = model.get_submodule(layer)
    assert float(layer_pass(model, X, module, gradient=False).activation.min()) == 0  # after a ReLU
    with pgc.AblationCAM(model=model, target_layers=[module]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=X, targets=[ClassifierOutputTarget(t) for t in TARGETS]))
    torch.testing.assert_close(xh.ablation_cam(model, X, module, target=TARGETS), theirs, rtol=0, atol=1e-5)


def test_differs_from_pytorch_grad_cam_where_activations_go_negative():
    # pgc sets a channel to min - 1e7 when the minimum is not 0, and the paper (and this package) to 0. pgc takes
    # that minimum over the batch of ablated copies *after* the rows before it were ablated, so the j-th channel of
    # a batch is set to about min A - j 1e7. On a GAP -> Linear head the drop of channel j is then about
    # j 1e7 W_cj: pgc's weights grow with the channel's position in its batch.
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = GapLinear(W), A - 2  # channel 0 [[-1, 0], [1, 2]] (mean 0.5), channel 1 [[2, -2], [-2, -2]] (mean -1)
    # Class 1: y = 0.5 + 1 = 1.5, w = (0.5, 1) / 1.5; 0.5 A^0 + A^1 = [[1.5, -2], [-1.5, -1]] -> ReLU
    ours = xh.ablation_cam(model, x, model.features, target=1)
    torch.testing.assert_close(ours, scaled([[1.5, 0], [0, 0]]))
    with pgc.AblationCAM(model=model, target_layers=[model.features]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(1)]))
    # pgc: channel 0 set to -2 - 1e7, channel 1 to -2 - 2e7: w ~ (1e7, -2e7) / 1.5, so A^0 - 2 A^1 = [[-5, 4], [5, 6]]
    torch.testing.assert_close(theirs, scaled([[0, 4], [5, 6]]), rtol=0, atol=1e-4)
