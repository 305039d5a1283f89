"""The CAM template: a layer method is one function ``combine(activation, gradient) -> map``.

Every method of the CAM family shares the same pipeline, as in
pytorch-grad-cam's ``BaseCAM`` (but in torch, on the model's device):

1. one pass records the layer's activation A (N, C, h, w) and, for the
   gradient methods, g = d y^c / d A (:func:`xai_helpers.engine.layer_pass`);
2. the method's own piece turns (A, g) into an (N, h, w) map;
3. ReLU, bilinear upsampling to the input's size, min-max scaling
   (:func:`xai_helpers.engine.finish`).

Most pieces sum per-channel terms T^k (w_k A^k, g^k ⊙ A^k, ...) over k;
:func:`reduce_channels` does that sum, or, with pytorch-grad-cam's
``eigen_smooth``, takes the terms' first principal component instead
(:func:`first_principal_component`).

Only step 2 differs between methods, and it reads like the paper's equation::

    def layer_cam(model, x, layer, target=None, *, reshape_transform=None):
        return layer_heatmap(model, x, layer, target, lambda a, g: (g.clamp_min(0) * a).sum(1),
                             reshape_transform=reshape_transform)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..engine import ReshapeTransform, Target, finish, layer_pass
from ..engine.inputs import flag

__all__ = [
    "Combine",
    "activation_and_gradient",
    "first_principal_component",
    "layer_heatmap",
    "reduce_channels",
    "weighted_sum",
]

Combine = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def first_principal_component(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h, w) float64: each position's projection on the first principal direction of the C channels.

    With M the (hw, C) matrix of one image, centred over the positions, and
    M = U S V^T its singular value decomposition, the map is M v_1, the
    positions' coordinates along the direction of largest variance
    (Muhammad & Yeasin 2020 project the activations on v_1 of their SVD; the
    centring is pytorch-grad-cam's). The SVD fixes v_1 only up to its sign; the sign is
    chosen so that the map's largest |value| is positive (Chung & Ying 2025,
    Eq. 13, pytorch-grad-cam's ``get_2d_projection_with_sign_correction``).
    Computed in float64, from the eigendecomposition of the smaller of
    M M^T (hw x hw) and M^T M (C x C) rather than a full SVD: M v_1 = s_1 u_1,
    with u_1 the top eigenvector of M M^T and s_1^2 its eigenvalue.
    """
    n, c, h, w = maps.shape
    m = maps.detach().double().flatten(2).transpose(1, 2)  # (N, hw, C)
    m = m - m.mean(1, keepdim=True)
    if h * w <= c:
        values, vectors = torch.linalg.eigh(m @ m.transpose(1, 2))  # ascending eigenvalues
        projection = vectors[..., -1] * values[..., -1:].clamp_min(0).sqrt()
    else:
        _, vectors = torch.linalg.eigh(m.transpose(1, 2) @ m)
        projection = (m @ vectors[..., -1:]).squeeze(-1)  # (N, hw)
    flip = projection.amin(1).abs() > projection.amax(1).abs()
    projection = torch.where(flip.unsqueeze(1), -projection, projection)
    return projection.view(n, h, w)


def reduce_channels(terms: torch.Tensor, eigen_smooth: bool = False) -> torch.Tensor:
    """(N, C, h, w) per-channel terms T^k -> the (N, h, w) map: sum_k T^k.

    ``eigen_smooth=True`` is pytorch-grad-cam's setting of that name: the
    terms' first principal component over the channels instead of their sum
    (:func:`first_principal_component`), which keeps only the dominant
    pattern the channels share. It is not in any method's paper, and for
    HiResCAM it gives up the paper's guarantee that the map adds up to the
    logit; HiResCAM with it is exactly Eigen-Grad-CAM.
    """
    if flag("eigen_smooth", eigen_smooth):
        return first_principal_component(terms).to(terms.dtype)
    return terms.sum(1)


def weighted_sum(weights: torch.Tensor, activation: torch.Tensor, eigen_smooth: bool = False) -> torch.Tensor:
    """sum_k w_k^c A^k: (N, C) channel weights (or (N, C, h, w) pixel-wise ones) and (N, C, h, w) -> (N, h, w).

    ``eigen_smooth``: as :func:`reduce_channels`, of the terms w_k^c A^k.
    """
    if flag("eigen_smooth", eigen_smooth):
        w = weights[:, :, None, None] if weights.ndim == 2 else weights
        return reduce_channels(w.to(activation.dtype) * activation, True)
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
