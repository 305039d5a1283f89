"""Gradient-weighted CAMs: Grad-CAM and Grad-CAM++, each one ``combine`` of the template.

Both need g = dy^c/dA, the gradient of the pre-softmax logit y^c with respect
to the layer's activation A (:mod:`xai_helpers.methods.cam_template`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..engine import ReshapeTransform, Target
from .cam_template import layer_heatmap, weighted_sum

__all__ = ["grad_cam", "grad_cam_sum", "grad_cam_plus_plus", "grad_cam_plus_plus_weights"]


def grad_cam_sum(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_k alpha_k^c A^k with alpha_k^c the spatial mean of the gradient (Eqs. 1-2, before the ReLU): (N, h, w)."""
    return (grads.mean((2, 3), keepdim=True) * activation).sum(1)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    *,
    reshape_transform: ReshapeTransform = None,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2).

    .. math::
        \\alpha_k^c = \\frac{1}{Z} \\sum_i \\sum_j \\frac{\\partial y^c}{\\partial A^k_{ij}}
        \\qquad (1)

        L^c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big) \\qquad (2)

    with y^c the logit of class c (before softmax) and Z = h * w.

    Args:
        model: any differentiable model; its output goes through ``engine.select_output``.
        x: (N, 3, H, W) input batch.
        layer: the module whose output is explained.
        target: None (each image's top-1), an int, N ints, or a callable
            ``f(output) -> (N,)`` score (see ``xai_helpers.engine.targets``).
        reshape_transform: turns the layer's output into (N, C, h, w);
            None detects ViT tokens and Swin's channels-last maps where the
            layout is unambiguous (``xai_helpers.engine.feature_maps``).

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    return layer_heatmap(model, x, layer, target, grad_cam_sum, reshape_transform=reshape_transform)


def grad_cam_plus_plus_weights(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights w_k (Chattopadhay et al. 2018, Eqs. 19 and 7).

    With Y^c = exp(S^c) the higher derivatives of Y become powers of
    g = dS^c/dA, and exp(S^c) cancels from alpha (Eq. 19):

    .. math::
        \\alpha^{kc}_{ij} = \\frac{g_{ij}^2}{2 g_{ij}^2 + \\sum_{a,b} A^k_{ab}\\, g_{ij}^3}

    alpha is 0 where the denominator is 0 (which includes g = 0). The weights
    are then w_k = sum_ij alpha_ij ReLU(g_ij) (Eq. 7); the positive factor
    exp(S^c) in dY/dA scales every w_k alike and vanishes in the min-max step.
    """
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_a = activation.sum((2, 3), keepdim=True)
    denominator = 2 * g2 + sum_a * g3
    nonzero = denominator != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0.0)
    return (alpha * grads.clamp_min(0)).sum((2, 3))


def grad_cam_plus_plus(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    *,
    reshape_transform: ReshapeTransform = None,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19 with the exponential closed form, and Eq. 7).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c A^k\\Big), \\qquad
        w_k^c = \\sum_{i,j} \\alpha^{kc}_{ij}\\, \\mathrm{ReLU}\\Big(\\frac{\\partial S^c}{\\partial A^k_{ij}}\\Big)

    with alpha from :func:`grad_cam_plus_plus_weights`. This is the paper's
    alpha, as pytorch-grad-cam computes it (up to its +1e-7 in the
    denominator). Variants in the wild:

    * the authors' code also divides alpha by its spatial sum where that is
      non-zero;
    * torchcam (0.5.0) sums A * g^3 instead of multiplying sum(A) by g^3, and
      its division of alpha writes into a copy made by boolean indexing, so
      alpha stays g^2: a silent no-op that only a test against Eq. 19 finds.

    Args and returns as :func:`grad_cam`.
    """
    return layer_heatmap(model, x, layer, target,
                         lambda a, g: weighted_sum(grad_cam_plus_plus_weights(a, g), a),
                         reshape_transform=reshape_transform)
