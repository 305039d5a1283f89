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

from ..engine import (
    ReshapeTransform,
    Target,
    check_input,
    finish,
    iter_modules,
    layer_pass,
)
from ..engine.inputs import flag
from ..engine.targets import is_callable_target
from .aug_smooth import with_aug_smooth
from .cam_template import weighted_sum

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
    recorded, seen = _pass_recording_linears(model, x[:1], layer, None, reshape_transform)
    return _match_head(seen, recorded.activation, recorded.output)


def _pass_recording_linears(model, x, layer, target, reshape_transform):
    """One inference pass (engine.layer_pass) and, per Linear module, its inputs and outputs."""
    seen: dict[nn.Linear, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def record(module, inputs, output):
        seen.setdefault(module, []).append((inputs[0].detach(), output.detach()))

    handles = [m.register_forward_hook(record) for m in iter_modules(model) if isinstance(m, nn.Linear)]
    try:
        recorded = layer_pass(model, x, layer, target, gradient=False, reshape_transform=reshape_transform)
    finally:
        for h in handles:
            h.remove()
    return recorded, seen


def _match_head(seen, activation: torch.Tensor, logits: torch.Tensor) -> nn.Linear:
    final = []
    for module, calls in seen.items():
        out = torch.cat([o for _, o in calls])
        if out.shape == logits.shape and torch.equal(out, logits):
            final.append((module, torch.cat([i for i, _ in calls])))
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


@with_aug_smooth
def cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    fc: nn.Linear | None = None,
    *,
    reshape_transform: ReshapeTransform = None,
    eigen_smooth: bool = False,
) -> torch.Tensor:
    """Class activation maps, M_c = sum_k w_k^c A^k (Zhou et al. 2016, Eq. 2).

    Args:
        model: a classifier whose head is GAP(layer) -> Linear.
        x: (N, 3, H, W) input batch.
        layer: the module whose output is pooled.
        target: None (each image's top-1), an int, or N ints. A callable
            target has no fc row, so CAM refuses it (use Grad-CAM).
        fc: the final Linear; detected (and verified) when None.
        reshape_transform, eigen_smooth: as :func:`xai_helpers.grad_cam`.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].

    Zhou et al. define M_c without a ReLU and without the 1/Z of the pooling;
    here, as in every CAM method of this package, the map is ReLU'd and
    min-max scaled (``engine.finish``), which removes any positive factor such as
    1/Z. The fc bias adds the same constant to every pixel and is dropped.

    Example:
        >>> heat = cam(m.model, x, m.target_layer)  # doctest: +SKIP
    """
    check_input(model, x, layer)
    flag("eigen_smooth", eigen_smooth)
    if is_callable_target(target):
        raise ValueError(
            "CAM explains one class through its row of the final Linear layer, so target must be None, an int "
            "or N ints; use Grad-CAM for a callable target"
        )
    if fc is not None and not isinstance(fc, nn.Linear):
        raise ValueError(f"fc must be an nn.Linear, got {type(fc).__name__}")
    # One forward pass does everything: the activation, the logits (for
    # target=None) and, when fc is not given, the evidence to find it.
    if fc is None:
        recorded, seen = _pass_recording_linears(model, x, layer, target, reshape_transform)
    else:
        recorded = layer_pass(model, x, layer, target, gradient=False, reshape_transform=reshape_transform)
    activation, logits = recorded.activation, recorded.output
    if logits.ndim != 2:
        raise ValueError(f"CAM needs (N, classes) logits, but the model's output has shape {tuple(logits.shape)}")
    if fc is None:
        fc = _match_head(seen, activation, logits)
    elif fc.in_features != activation.shape[1] or fc.out_features != logits.shape[-1]:
        raise ValueError(
            f"fc must be an nn.Linear with {activation.shape[1]} inputs (the layer's channels) and "
            f"{logits.shape[-1]} outputs (the model's classes), got Linear({fc.in_features}, {fc.out_features})"
        )
    with torch.inference_mode():
        weights = fc.weight[recorded.classes]  # (N, C): w^c for each image's class
        maps = weighted_sum(weights, activation, eigen_smooth)
    return finish(maps, x.shape[-2:])
