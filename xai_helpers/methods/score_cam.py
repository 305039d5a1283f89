"""Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for CNNs").

Gradient-free: each activation channel, upsampled and scaled to [0, 1],
becomes a soft mask H^k on the input, and the model's confidence in the class
on the masked image X * H^k is that channel's weight.

The cost is one forward pass per channel, so the implementation is built
around doing exactly those passes and nothing else:

* channels that are constant over the map give an undefined mask (0/0 in the
  min-max step); the authors' code skips them, so they cost nothing here;
* the masked images are jobs of the engine's scorer
  (:class:`xai_helpers.engine.Scorer`): made a batch at a time (memory bounded
  by ``batch_size``, never by the number of channels), run on the cached,
  verified fast copy of the model;
* by linearity of bilinear upsampling, sum_k s_k Up(A^k) = Up(sum_k s_k A^k),
  so the weighted sum is taken at the layer's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import ReshapeTransform, Scorer, Target, finish, layer_pass, minmax
from ..engine.inputs import batch_size_value, choice, flag, positive_int
from ..engine.progress import check_progress
from .aug_smooth import with_aug_smooth
from .cam_template import weighted_sum

__all__ = ["score_cam", "score_cam_weights", "live_channels", "most_active", "channel_masks", "SCORE_CAM_SCORES"]

SCORE_CAM_SCORES = ("probability", "logit-softmax")


def live_channels(activation: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: True where a channel is not constant over its h x w map.

    A constant channel stays constant after bilinear upsampling, so its
    min-max mask is 0/0: it carries no spatial information and is skipped.
    """
    flat = activation.flatten(2)
    return flat.amax(-1) > flat.amin(-1)


def channel_masks(activation: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor,
                  size: tuple[int, int]) -> torch.Tensor:
    """H^k = s(Up(A^k)) for the (image, channel) pairs ``rows[r], channels[r]``: (B, 1, H, W) float32 in [0, 1].

    Upsampled first, then min-max scaled, as in the Score-CAM authors' code.
    """
    maps = activation[rows, channels].unsqueeze(1).float()
    return minmax(F.interpolate(maps, size=size, mode="bilinear", align_corners=False), (2, 3))


def most_active(activation: torch.Tensor, live: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C) bool: the ``k`` live channels of each image with the largest mean activation.

    Ties are broken by channel index (a stable sort), so the choice does not
    depend on the machine. Fewer than ``k`` live channels keeps them all.
    """
    mean = activation.flatten(2).float().mean(-1).masked_fill(~live, float("-inf"))
    order = torch.argsort(mean, dim=1, descending=True, stable=True)[:, :k]
    chosen = torch.zeros_like(live).scatter_(1, order, True)
    return chosen & live


def _check_options(batch_size, score, subtract_reference, fold_bn, progress, top_channels) -> None:
    choice("score", score, SCORE_CAM_SCORES)
    if top_channels is not None:
        positive_int("top_channels", top_channels)
    batch_size_value(batch_size)
    flag("subtract_reference", subtract_reference)
    flag("fold_bn", fold_bn)
    check_progress(progress)


def score_cam_weights(
    model: nn.Module,
    x: torch.Tensor,
    activation: torch.Tensor,
    target: Target = None,
    batch_size: int | None = None,
    score: str = "probability",
    subtract_reference: bool = False,
    progress=False,
    fold_bn: bool = True,
    output: torch.Tensor | None = None,
    top_channels: int | None = None,
) -> torch.Tensor:
    """Score-CAM channel weights s (N, C); 0 for skipped constant channels.

    For each live channel k of image n (Wang et al. 2020, Eq. 3 and Algorithm 1)::

        H^k = s(Up(A^k)),  s(M) = (M - min M) / (max M - min M)
        C(A^k) = f^c(X * H^k) [- f^c(X_b)]

    ``target`` as in every method (class indices or a callable).
    ``score="probability"``: f^c is the softmax probability of class c and
    the weight is C(A^k) itself, as in the authors' code (the default).
    ``score="logit-softmax"``: f^c is the logit, and the weights are a softmax
    of C(A^k) over the channels, as Algorithm 1 prints it and pytorch-grad-cam
    does; there the reference term is a constant that cancels.
    A callable target's value is f^c as it is, under either setting.
    ``subtract_reference`` subtracts f^c(X_b) for an all-zero X_b (mid-grey
    in this package's normalised space), Eq. 3's "increase of confidence".
    ``fold_bn=False`` runs the masked passes on the model itself instead of
    the engine's fast copy. ``output`` is the model's selected output on
    ``x`` when the caller has it already (it saves a pass).
    ``top_channels=k`` scores only the k live channels with the largest mean
    activation (:func:`most_active`) and gives the others weight 0: an
    approximation that is not in the paper, for a cheaper first look
    (the registry's ``preview``); None (the default) scores every live channel.
    """
    _check_options(batch_size, score, subtract_reference, fold_bn, progress, top_channels)
    scorer = Scorer(model, x, target, score="probability" if score == "probability" else "logit",
                    batch_size=batch_size, progress=progress, desc="Score-CAM masked passes", fast=fold_bn,
                    who="score_cam", output=output)
    n, channels = activation.shape[:2]
    live = live_channels(activation)
    if top_channels is not None:
        live = most_active(activation, live, top_channels)
    index = [live[i].nonzero().squeeze(1) for i in range(n)]
    size = x.shape[-2:]

    counts = torch.tensor([int(i.numel()) for i in index], device=x.device)
    flat, offsets = torch.cat(index), torch.cumsum(counts, 0) - counts

    def build(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return x[rows] * channel_masks(activation, rows, flat[offsets[rows] + cols], size).to(x.dtype)

    values = scorer.run(counts.tolist(), build)
    raw = torch.zeros(n, channels, device=x.device, dtype=torch.float32)
    for i in range(n):
        raw[i, index[i]] = values[i].float()
    if subtract_reference and score == "probability":
        empty = scorer.run([1] * n, lambda rows, cols: torch.zeros_like(x[rows]))
        raw = torch.where(live, raw - torch.stack(empty).float(), raw)
    if score == "logit-softmax":
        raw = raw.masked_fill(~live, float("-inf")).softmax(-1)
        raw = torch.where(live.any(1, keepdim=True), raw, torch.zeros_like(raw))  # an image with no live channel
    return raw


@with_aug_smooth
def score_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    batch_size: int | None = None,
    *,
    score: str = "probability",
    subtract_reference: bool = False,
    progress=False,
    fold_bn: bool = True,
    reshape_transform: ReshapeTransform = None,
    top_channels: int | None = None,
    eigen_smooth: bool = False,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, Eqs. 3-4 and Algorithm 1; by default the authors' released code).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k s_k^c\\, \\mathrm{Up}(A^k)\\Big),
        \\qquad s_k^c = \\mathrm{softmax}\\big(f(X \\circ H^k)\\big)_c

    The ReLU is applied after upsampling, as in the authors' code (Eq. 4 and
    Algorithm 1 write the map at the layer's resolution); then each map is
    min-max scaled. See :func:`score_cam_weights` for the variants.

    Args:
        model, x, layer, target, reshape_transform: as :func:`xai_helpers.grad_cam`.
        batch_size: masked images per forward pass (memory grows with it);
            None lets the engine choose (8 on CPU, 128 on CUDA). Models whose
            BatchNorm uses batch statistics in eval mode always run one image at a time.
        score: ``"probability"`` (default) or ``"logit-softmax"``.
        subtract_reference: subtract the score of an all-zero input.
        progress: True for a tqdm progress bar over the masked passes, or a
            callable ``progress(done, total)`` called after each batch.
        fold_bn: run the masked passes on the engine's fast copy (BatchNorm
            folded, checked against the model on every call); False runs them
            on the model itself.
        top_channels: score only this many live channels, those with the
            largest mean activation, and give the rest weight 0. An
            approximation for a first look, not the paper's method; None
            (default) scores every live channel.
        eigen_smooth: as :func:`xai_helpers.grad_cam`, of the terms s_k^c A^k.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    _check_options(batch_size, score, subtract_reference, fold_bn, progress, top_channels)
    flag("eigen_smooth", eigen_smooth)
    recorded = layer_pass(model, x, layer, target, gradient=False, reshape_transform=reshape_transform)
    targets = target if recorded.classes is None else recorded.classes
    weights = score_cam_weights(model, x, recorded.activation, targets, batch_size, score, subtract_reference,
                                progress, fold_bn, output=recorded.output, top_channels=top_channels)
    with torch.inference_mode():
        maps = weighted_sum(weights, recorded.activation.float(), eigen_smooth)
    return finish(maps, x.shape[-2:], relu_first=False)
