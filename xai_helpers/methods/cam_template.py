"""The CAM template: a layer method is one function ``combine(activation, gradient) -> map``.

Every method of the CAM family shares the same pipeline, as in
pytorch-grad-cam's ``BaseCAM`` (but in torch, on the model's device):

1. one pass records the layer's activation A (N, C, h, w) and, for the
   gradient methods, g = d y^c / d A (:func:`xai_helpers.engine.layer_pass`);
2. the method's own piece turns (A, g) into an (N, h, w) map;
3. ReLU, bilinear upsampling to the input's size, min-max scaling
   (:func:`xai_helpers.engine.finish`).

Only step 2 differs between methods, and it reads like the paper's equation::

    def layer_cam(model, x, layer, target=None, *, reshape_transform=None):
        return layer_heatmap(model, x, layer, target, lambda a, g: (g.clamp_min(0) * a).sum(1),
                             reshape_transform=reshape_transform)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..engine import ReshapeTransform, Target, finish, layer_pass

__all__ = ["Combine", "layer_heatmap", "weighted_sum", "activation_and_gradient"]

Combine = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def weighted_sum(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """sum_k w_k^c A^k: (N, C) channel weights (or (N, C, h, w) pixel-wise ones) and (N, C, h, w) -> (N, h, w)."""
    if weights.ndim == 2:
        return torch.einsum("nc,nchw->nhw", weights.to(activation.dtype), activation)
    return (weights * activation).sum(1)


def layer_heatmap(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target, combine: Combine, *,
                  reshape_transform: ReshapeTransform = None, gradient: bool = True,
                  relu_first: bool = True) -> torch.Tensor:
    """The template: ``finish(combine(A, g))`` for one pass over ``layer``; (N, H, W) float32 in [0, 1].

    ``gradient=False`` skips the backward pass (``combine`` then gets g = None).
    """
    recorded = layer_pass(model, x, layer, target, gradient=gradient, reshape_transform=reshape_transform)
    return finish(combine(recorded.activation, recorded.gradient), x.shape[-2:], relu_first)


def activation_and_gradient(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None,
                            reshape_transform: ReshapeTransform = None):
    """``(A, g, classes, output)`` of one pass, as the lessons unpack it (see :class:`~xai_helpers.engine.LayerPass`)."""
    recorded = layer_pass(model, x, layer, target, gradient=True, reshape_transform=reshape_transform)
    return recorded.activation, recorded.gradient, recorded.classes, recorded.output
