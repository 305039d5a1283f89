"""CAM: class activation mapping (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization").

For a network whose head is global average pooling followed by one Linear
layer, the class score is (Eq. 2 of the paper, bias dropped)

    S_c = sum_k w_k^c * (1/Z) sum_{x,y} A^k(x, y)  =  (1/Z) sum_{x,y} M_c(x, y),
    M_c(x, y) = sum_k w_k^c A^k(x, y),

so the class activation map M_c is the fc weight of class c applied to every
spatial position of the last feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import (
    ReshapeTransform,
    Target,
    check_input,
    finish,
    forward_with_capture,
    is_callable_target,
    resolve_targets,
    to_feature_map,
)
from .hooks import iter_modules

__all__ = ["cam", "find_gap_linear"]

_NEEDS_HEAD = (
    "CAM needs a head that is global average pooling of this layer followed by a single Linear layer "
    "(Zhou et al. 2016); {why}. Use Grad-CAM, which works with any differentiable head."
)


def find_gap_linear(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, reshape_transform: ReshapeTransform = None
) -> nn.Linear:
    """Find the Linear layer that maps GAP(layer output) straight to the logits.

    Runs one forward pass and checks two facts rather than trusting module
    names: the Linear's output *is* the model's output, and its input equals
    the spatial mean of the layer's activation. Raises ValueError otherwise.
    """
    check_input(model, x, layer)
    activation, logits, seen = _forward(model, x[:1], layer, record_linears=True)
    return _match_head(seen, to_feature_map(activation, reshape_transform), logits)


def _forward(model: nn.Module, x: torch.Tensor, layer: nn.Module, record_linears: bool):
    """One inference pass: (raw activation, output, [(linear, its input, its output), ...])."""
    seen: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []
    handles = []
    if record_linears:
        handles = [
            m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0], out)))
            for m in iter_modules(model)
            if isinstance(m, nn.Linear)
        ]
    try:
        activation, logits = forward_with_capture(model, x, layer, grad=False)
    finally:
        for h in handles:
            h.remove()
    return activation, logits, seen


def _match_head(seen, activation: torch.Tensor, logits: torch.Tensor) -> nn.Linear:
    final = [(m, inp) for m, inp, out in seen if out is logits]
    if not final:
        raise ValueError(_NEEDS_HEAD.format(why="the model's output is not produced by an nn.Linear"))
    fc, fc_input = final[-1]
    pooled = activation.float().mean((2, 3))
    # The model computed its pooling in its own precision: compare at that precision's rounding.
    eps = torch.finfo(fc_input.dtype).eps if fc_input.is_floating_point() else 1.0
    scale = float(pooled.abs().max().clamp_min(1.0)) if pooled.numel() else 1.0
    rtol, atol = max(1e-4, 8 * eps), max(1e-5, 8 * eps * scale)
    if fc_input.shape != pooled.shape or not torch.allclose(fc_input.float(), pooled, rtol=rtol, atol=atol):
        raise ValueError(
            _NEEDS_HEAD.format(
                why=f"the final Linear ({fc.in_features} inputs) does not receive the global average of this "
                f"layer's {activation.shape[1]}-channel output"
            )
        )
    return fc


def cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    fc: nn.Linear | None = None,
    *,
    reshape_transform: ReshapeTransform = None,
) -> torch.Tensor:
    """Class activation maps, M_c = sum_k w_k^c A^k (Zhou et al. 2016, Eq. 2).

    Args:
        model: a classifier whose head is GAP(layer) -> Linear.
        x: (N, 3, H, W) input batch.
        layer: the module whose output is pooled.
        target: None (each image's top-1), an int, or N ints. A callable
            target has no fc row, so CAM refuses it (use Grad-CAM).
        fc: the final Linear; detected (and verified) when None.
        reshape_transform: as :func:`xai_helpers.grad_cam`.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].

    Zhou et al. define M_c without a ReLU and without the 1/Z of the pooling;
    here, as in every CAM method of this package, the map is ReLU'd and
    min-max scaled (``core.finish``), which removes any positive factor such as
    1/Z. The fc bias adds the same constant to every pixel and is dropped.

    Example:
        >>> heat = cam(m.model, x, m.target_layer)  # doctest: +SKIP
    """
    check_input(model, x, layer)
    if is_callable_target(target):
        raise ValueError(
            "CAM explains one class through its row of the final Linear layer, so target must be None, an int "
            "or N ints; use Grad-CAM for a callable target"
        )
    # One forward pass does everything: the activation, the logits (for
    # target=None) and, when fc is not given, the evidence to find it.
    activation, logits, seen = _forward(model, x, layer, record_linears=fc is None)
    activation = to_feature_map(activation, reshape_transform)
    if logits.ndim != 2:
        raise ValueError(f"CAM needs (N, classes) logits, but the model's output has shape {tuple(logits.shape)}")
    if fc is None:
        fc = _match_head(seen, activation, logits)
    elif (
        not isinstance(fc, nn.Linear)
        or fc.in_features != activation.shape[1]
        or fc.out_features != logits.shape[-1]
    ):
        got = f"Linear({fc.in_features}, {fc.out_features})" if isinstance(fc, nn.Linear) else type(fc).__name__
        raise ValueError(
            f"fc must be an nn.Linear with {activation.shape[1]} inputs (the layer's channels) and "
            f"{logits.shape[-1]} outputs (the model's classes), got {got}"
        )
    targets = resolve_targets(target, logits)
    with torch.inference_mode():
        weights = fc.weight[targets].to(activation.dtype)  # (N, C): w^c for each image's class
        maps = torch.einsum("nc,nchw->nhw", weights, activation)
    return finish(maps, x.shape[-2:])
