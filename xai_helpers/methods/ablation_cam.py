"""Ablation-CAM (Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
Gradient-free Localization", WACV).

Gradient-free: the weight of channel k is how much the class score drops
when that channel is switched off (set to 0). The cost is one score per
channel, so the implementation does exactly those and no more:

* only the part of the network after the layer is re-run
  (:class:`xai_helpers.engine.layer_replay.LayerReplay`): one call of the
  model per batch of ablated activations, the part before the layer computed
  once per call on the single image, not once per channel (pytorch-grad-cam's
  ``AblationCAM`` runs the whole network on every ablated copy);
* a channel that is already 0 everywhere is not ablated: removing it changes
  nothing, so its weight is exactly 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ..engine import ReshapeTransform, Target, finish, layer_pass, to_feature_map
from ..engine.inputs import batch_size_value, flag
from ..engine.layer_replay import LayerReplay
from ..engine.model_traits import uses_batch_statistics
from ..engine.progress import check_progress, progress_bar
from ..engine.targets import class_scores
from .aug_smooth import with_aug_smooth
from .cam_template import weighted_sum

__all__ = ["ABLATION_BATCH", "ablation_cam", "ablation_cam_weights", "channel_positions"]

#: Ablated activations per call of the model: the part after a late layer is cheap, so the batch can be large.
ABLATION_BATCH = {"cpu": 256, "cuda": 1024}


def channel_positions(raw: torch.Tensor, reshape_transform: ReshapeTransform, input_shape, layer: nn.Module):
    """(C, P) long: where each channel of the feature map sits in one image's flattened raw layer output.

    The layer's own layout reaches the feature map through ``reshape_transform``
    (or the detected token or channels-last layout), so that transform is
    applied to the indices 0, 1, ... of one image's raw output: each channel's
    P = h * w entries are then the raw positions to set to 0. A transform that
    does more than rearrange (slices, reshapes, permutes) would not give back
    whole indices, and is refused.
    """
    count = raw[0].numel()
    index = torch.arange(count, dtype=torch.float64, device=raw.device).view(1, *raw.shape[1:])
    mapped = to_feature_map(index, reshape_transform, tuple(input_shape), layer)[0].flatten(1)  # (C, h * w)
    whole = bool(((mapped == mapped.round()) & (mapped >= 0) & (mapped < count)).all())
    if not whole or mapped.unique().numel() != mapped.numel():
        raise ValueError("Ablation-CAM sets channels of the feature map to 0 in the layer's own output, so its "
                         "reshape_transform may only rearrange that output (slice, reshape, permute), not compute "
                         "new values")
    return mapped.long()


def ablation_cam_weights(model: nn.Module, x: torch.Tensor, layer: nn.Module, activation: torch.Tensor,
                         output: torch.Tensor, classes: torch.Tensor | None, target: Target = None,
                         batch_size: int | None = None, progress=False, raw: torch.Tensor | None = None,
                         positions: torch.Tensor | None = None) -> tuple[torch.Tensor, list[LayerReplay]]:
    """The slopes w_k = (y^c - y^c_k) / y^c, (N, C) float32, and the replays that computed them.

    ``activation`` is the layer's (N, C, h, w) feature map on ``x``, ``output``
    the model's; y^c is the class logit (or a callable target's value) on
    the image, y^c_k the same with channel k of the feature map set to 0.
    ``raw`` is the layer's own output and ``positions`` its
    :func:`channel_positions`, for a layer whose output is laid out
    otherwise (None: ``activation`` is the layer's output).
    """
    if raw is None:
        raw = activation
        positions = torch.arange(raw[0].numel(), device=raw.device).view(activation.shape[1], -1)
    n, channels = activation.shape[:2]
    per_image = uses_batch_statistics(model)
    size = 1 if per_image else (batch_size or ABLATION_BATCH.get(x.device.type, 256))
    base = class_scores(output, classes, "logit", target).double()
    live = activation.flatten(2).ne(0).any(-1)  # (N, C): an all-zero channel has nothing to remove
    weights = torch.zeros(n, channels, dtype=torch.float64, device=x.device)
    replays = []
    with progress_bar(progress, int(live.sum()), "Ablation-CAM channels") as advance:
        for i in range(n):
            replay = LayerReplay(model, x[i : i + 1], layer, raw[i : i + 1], output[i : i + 1], per_image=per_image)
            replays.append(replay)
            index = live[i].nonzero().squeeze(1)
            for start in range(0, index.numel(), size):
                ks = index[start : start + size]
                ablated = raw[i : i + 1].flatten(1).expand(ks.numel(), -1).clone()
                ablated.scatter_(1, positions[ks], 0.0)  # row r: channel ks[r] of the feature map set to 0
                out = replay(ablated.view(ks.numel(), *raw.shape[1:]))
                rows = None if classes is None else classes[i].expand(ks.numel())
                scores = class_scores(out, rows, "logit", target).double()
                drop = base[i] - scores
                if base[i] == 0 and bool((drop != 0).any()):
                    raise ValueError(f"Ablation-CAM divides by the class score y^c, which is exactly 0 for image {i}; "
                                     "explain another class or use Grad-CAM")
                # 0 / 0 where no channel moves the score (a constant model): weight 0, an all-zero map
                weights[i, ks] = torch.where(drop == 0, 0.0, drop / base[i])
                advance(ks.numel())
    return weights.float(), replays


@with_aug_smooth
def ablation_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
                 batch_size: int | None = None, progress=False,
                 reshape_transform: ReshapeTransform = None, eigen_smooth: bool = False) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020, WACV; the slope and the map as the paper defines them, equation
    numbers not checked here).

    .. math::
        w_k^c = \\frac{y^c - y^c_k}{y^c}, \\qquad
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c A^k\\Big)

    with y^c the class score (the logit) and y^c_k the score when channel k
    of the layer's activation A is set to 0 everywhere. The paper's "slope"
    divides by y^c, which assumes a positive score: for a negative y^c every
    weight changes sign (as in pytorch-grad-cam), and y^c = 0 is refused
    unless no channel changes the score (then every weight is 0).

    Differences from pytorch-grad-cam's ``AblationCAM`` (1.5.7): it sets a
    channel to 0 only when the minimum over its batch of ablated copies is 0,
    and otherwise to that minimum minus 1e7 (a deliberate deviation from the
    paper, for layers with negative values). It takes that minimum after the
    earlier rows of the batch were ablated, so the j-th channel of a batch is
    set to about min A - j * 1e7, and its weight grows with its position in
    the batch. Here a channel is always set to 0, as in the paper, and the
    slopes are computed in float64; on layers whose minimum is 0 (after a
    ReLU) the two agree.

    Args:
        model, x, layer, target: as :func:`xai_helpers.grad_cam`.
        batch_size: ablated activations per call of the model (None: 256 on
            CPU, 1024 on CUDA); memory grows with it. Models whose
            BatchNorm uses batch statistics in eval mode run one at a time.
        progress: True for a tqdm bar over the channels, or ``progress(done, total)``.
        reshape_transform: as for every layer method; it may only rearrange
            the layer's output (:func:`channel_positions`), since the
            ablated channels are written back into that output.
        eigen_smooth: as :func:`xai_helpers.grad_cam`, of the terms w_k^c A^k.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    batch_size_value(batch_size)
    check_progress(progress)
    flag("eigen_smooth", eigen_smooth)
    recorded = layer_pass(model, x, layer, target, gradient=False, reshape_transform=reshape_transform)
    raw, positions = None, None
    if recorded.raw is not recorded.activation:  # tokens, channels-last, or the caller's reshape_transform
        raw = recorded.raw
        positions = channel_positions(raw, reshape_transform, x.shape, layer)
    weights, _ = ablation_cam_weights(model, x, layer, recorded.activation, recorded.output, recorded.classes,
                                      target, batch_size, progress, raw, positions)
    with torch.inference_mode():
        maps = weighted_sum(weights, recorded.activation.float(), eigen_smooth)
    return finish(maps, x.shape[-2:])
