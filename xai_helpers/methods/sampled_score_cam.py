"""SS-CAM and IS-CAM: Score-CAM with each channel's mask scored several times and the scores averaged.

Both keep Score-CAM's masks H^k = s(Up(A^k)) (:func:`~xai_helpers.methods.score_cam.channel_masks`)
and its weighting of the logit increase by a softmax over the channels; only the
masked inputs differ:

=========  ==========================================  ===============================
method     input m of channel k (m = 1..n)             paper
=========  ==========================================  ===============================
Score-CAM  X ⊙ H^k (n = 1)                             Wang et al. 2020
SS-CAM     X ⊙ (H^k + δ_m), δ_m ~ N(0, σ²) per pixel   Wang, Naidu, Michael, Kundu 2020
IS-CAM     X ⊙ (c_m H^k), c_m = sum_{j=1}^{m} j / n     Naidu et al. 2020
=========  ==========================================  ===============================

    w_k^c = softmax_k( (1/n) sum_m [ y^c(input_m of channel k) - y^c(X) ] )

with y^c the logit. The masked inputs are jobs of the engine's scorer, as in
Score-CAM: n jobs per live channel, on the cached fast copy of the model;
constant channels (an undefined mask) are skipped and get weight 0.

Where these come from: the equations above are those of torchcam (0.5.0),
the peer used as the oracle, which cites the two papers; their text was not
checked here. Deliberate differences from torchcam: the masks are min-max
scaled after upsampling (torchcam scales before; the two agree when the layer
has the input's resolution), constant channels are left out of the softmax
(torchcam gives their all-zero mask a score and a share of the softmax), and
the noise comes from a seeded generator per image.
"""

from __future__ import annotations

import torch
from torch import nn

from ..engine import ReshapeTransform, Scorer, Target, finish, layer_pass
from ..engine.inputs import batch_size_value, flag, number, positive_int, seed_value
from ..engine.progress import check_progress
from .aug_smooth import with_aug_smooth
from .cam_template import weighted_sum
from .score_cam import channel_masks, live_channels, most_active

__all__ = ["integration_coefficients", "is_cam", "sampled_score_weights", "ss_cam"]


def integration_coefficients(samples: int) -> torch.Tensor:
    """IS-CAM's mask scales c_m = sum_{j=1}^{m} j / n for m = 1..n (torchcam's code), float64 (n,).

    They grow past 1 (c_n = (n + 1) / 2): later inputs are the image times a
    mask scaled up, not a path from 0 to the masked image.
    """
    steps = torch.arange(1, samples + 1, dtype=torch.float64)
    return torch.cumsum(steps / samples, 0)


def sampled_score_weights(model: nn.Module, x: torch.Tensor, activation: torch.Tensor, target: Target,
                          samples: int, perturb, *, batch_size=None, progress=False, fold_bn=True, output=None,
                          top_channels=None, desc="masked passes", who="xai_helpers") -> torch.Tensor:
    """softmax over the live channels of the mean logit increase of ``samples`` masked inputs each, (N, C).

    ``perturb(masks, rows, sample) -> masks`` turns the (B, 1, H, W) masks of
    the jobs into what multiplies the image (``sample``: (B,) m - 1).
    Jobs run sample-major per image: job j is sample j // L of the j % L-th
    live channel (L live channels), the order the noise is drawn in.
    """
    scorer = Scorer(model, x, target, score="logit", batch_size=batch_size, progress=progress, desc=desc,
                    fast=fold_bn, who=who, output=output)
    n, channels = activation.shape[:2]
    live = live_channels(activation)
    if top_channels is not None:
        live = most_active(activation, live, top_channels)
    index = [live[i].nonzero().squeeze(1) for i in range(n)]
    lives = torch.tensor([int(i.numel()) for i in index], device=x.device)
    flat, offsets = torch.cat(index), torch.cumsum(lives, 0) - lives
    size = x.shape[-2:]

    def build(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        sample, k = cols // lives[rows], cols % lives[rows]
        masks = channel_masks(activation, rows, flat[offsets[rows] + k], size)
        return x[rows] * perturb(masks, rows, sample).to(x.dtype)

    values = scorer.run((lives * samples).tolist(), build)
    weights = torch.zeros(n, channels, device=x.device, dtype=torch.float32)
    for i in range(n):
        if index[i].numel():
            increase = values[i].double().view(samples, -1).mean(0) - scorer.base[i].double()
            weights[i, index[i]] = increase.softmax(0).float()
    return weights


def _layer_and_weights(model, x, layer, target, reshape_transform, weights_of, eigen_smooth):
    recorded = layer_pass(model, x, layer, target, gradient=False, reshape_transform=reshape_transform)
    targets = target if recorded.classes is None else recorded.classes
    weights = weights_of(recorded, targets)
    with torch.inference_mode():
        maps = weighted_sum(weights, recorded.activation.float(), eigen_smooth)
    return finish(maps, x.shape[-2:], relu_first=False)


def _check(samples, batch_size, progress, fold_bn, top_channels, eigen_smooth) -> int:
    samples = positive_int("samples", samples)
    flag("eigen_smooth", eigen_smooth)
    batch_size_value(batch_size)
    check_progress(progress)
    flag("fold_bn", fold_bn)
    if top_channels is not None:
        positive_int("top_channels", top_channels)
    return samples


@with_aug_smooth
def ss_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *, samples: int = 35,
           noise: float = 2.0, seed: int = 0, batch_size: int | None = None, progress=False, fold_bn: bool = True,
           top_channels: int | None = None, reshape_transform: ReshapeTransform = None,
           eigen_smooth: bool = False) -> torch.Tensor:
    """SS-CAM, Smoothed Score-CAM (Wang, Naidu, Michael, Kundu 2020, arXiv:2006.14255; equation numbers not
    checked here).

    .. math::
        w_k^c = \\mathrm{softmax}_k\\Big(\\frac{1}{n} \\sum_{m=1}^{n}
        y^c\\big(X \\odot (H^k + \\delta_m)\\big) - y^c(X)\\Big), \\quad
        \\delta_m \\sim \\mathcal N(0, \\sigma^2), \\qquad
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c\\, \\mathrm{Up}(A^k)\\Big)

    (see the module's table and its note on where the equations come from).
    ``noise`` is sigma in units of the [0, 1] mask (torchcam's default 2.0,
    with ``samples`` = 35); one (H, W) noise field per job, broadcast over the
    colour channels, drawn from a CPU generator seeded with ``seed`` per
    image, so the map does not depend on the batch size or the device.
    ``top_channels=k`` scores only the k most active live channels (an
    approximation for a first look, as for :func:`~xai_helpers.score_cam`).
    Cost: 1 + samples x live channels forward passes. Other arguments and
    the return value as :func:`~xai_helpers.score_cam`.
    """
    samples = _check(samples, batch_size, progress, fold_bn, top_channels, eigen_smooth)
    noise = number("noise", noise, low=0.0, hint=" (the standard deviation added to the [0, 1] mask, e.g. 2.0)")
    seed = seed_value(seed)
    generators = [torch.Generator().manual_seed(seed) for _ in range(x.shape[0])]
    size = tuple(x.shape[-2:])

    def perturb(masks: torch.Tensor, rows: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        # One draw per job, in job order: the same noise for every batch size and device.
        fields = [torch.randn((1, 1, *size), generator=generators[r]) for r in rows.tolist()]
        return masks + noise * torch.cat(fields).to(masks.device)

    def weights_of(recorded, targets):
        return sampled_score_weights(model, x, recorded.activation, targets, samples, perturb, batch_size=batch_size,
                                     progress=progress, fold_bn=fold_bn, output=recorded.output,
                                     top_channels=top_channels, desc="SS-CAM masked passes", who="ss_cam")

    return _layer_and_weights(model, x, layer, target, reshape_transform, weights_of, eigen_smooth)


@with_aug_smooth
def is_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *, samples: int = 10,
           batch_size: int | None = None, progress=False, fold_bn: bool = True, top_channels: int | None = None,
           reshape_transform: ReshapeTransform = None, eigen_smooth: bool = False) -> torch.Tensor:
    """IS-CAM, Integrated Score-CAM (Naidu, Ghosh, Maurya, Nayak K, Kundu 2020, arXiv:2010.03023; equation numbers
    not checked here).

    .. math::
        w_k^c = \\mathrm{softmax}_k\\Big(\\frac{1}{n} \\sum_{m=1}^{n}
        y^c\\big(X \\odot c_m H^k\\big) - y^c(X)\\Big), \\quad
        c_m = \\sum_{j=1}^{m} \\frac{j}{n}, \\qquad
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c\\, \\mathrm{Up}(A^k)\\Big)

    The scales c_m are torchcam's code (:func:`integration_coefficients`);
    torchcam's docstring writes the sum from j = 0 to m - 1, one step behind
    its code, and the paper's text was not checked here (see the module's
    note). ``top_channels`` as for :func:`ss_cam`. Cost: 1 + samples x live
    channels forward passes. Other arguments and the return value as
    :func:`~xai_helpers.score_cam`.
    """
    samples = _check(samples, batch_size, progress, fold_bn, top_channels, eigen_smooth)
    coefficients = integration_coefficients(samples).to(x.device)

    def perturb(masks: torch.Tensor, rows: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        return masks * coefficients[sample].view(-1, 1, 1, 1).to(masks.dtype)

    def weights_of(recorded, targets):
        return sampled_score_weights(model, x, recorded.activation, targets, samples, perturb, batch_size=batch_size,
                                     progress=progress, fold_bn=fold_bn, output=recorded.output,
                                     top_channels=top_channels, desc="IS-CAM masked passes", who="is_cam")

    return _layer_and_weights(model, x, layer, target, reshape_transform, weights_of, eigen_smooth)
