"""Gradient-weighted CAMs: Grad-CAM and Grad-CAM++.

Both need g = dy^c/dA, the gradient of the pre-softmax logit y^c with respect
to the layer's activation A. It is taken with ``torch.autograd.grad`` on A
alone, so the backward pass runs through the layers after A only and no
parameter's ``.grad`` is touched.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import ReshapeTransform, Target, check_input, finish, forward_with_capture, target_scores, to_feature_map

__all__ = ["grad_cam", "grad_cam_sum", "grad_cam_plus_plus", "grad_cam_plus_plus_weights", "activation_and_gradient"]


def activation_and_gradient(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    reshape_transform: ReshapeTransform = None,
):
    """One forward and one partial backward pass.

    Returns ``(A, g, classes, output)`` with A and g of shape (N, C, h, w)
    (after ``reshape_transform``), g = dy^c/dA for each image's target score
    y^c, ``classes`` the (N,) class indices (None for a callable target), and
    all of them detached. Images in a batch are independent in eval mode, so
    summing the N scores gives every image its own gradient in one backward pass.
    """
    check_input(model, x, layer)
    # The caller may be inside no_grad() or inference_mode(): neither must reach the graph.
    with torch.inference_mode(False), torch.enable_grad():
        activation, output = forward_with_capture(model, x, layer, grad=True)
        scores, classes = target_scores(target, output)
        if not scores.requires_grad:
            raise ValueError("the target's score does not depend on the layer's activation; choose a layer before the output")
        total = scores.sum()
    (grads,) = torch.autograd.grad(total, activation, allow_unused=True)
    if grads is None:
        grads = torch.zeros_like(activation)
    activation = activation.detach()
    return (
        to_feature_map(activation, reshape_transform),
        to_feature_map(grads, reshape_transform),
        classes,
        output.detach(),
    )


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
        model: any differentiable model; its output goes through ``core.select_output``.
        x: (N, 3, H, W) input batch.
        layer: the module whose output is explained.
        target: None (each image's top-1), an int, N ints, or a callable
            ``f(output) -> (N,)`` score (see ``xai_helpers.core``).
        reshape_transform: turns the layer's output into (N, C, h, w);
            None detects ViT tokens and Swin's channels-last maps.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    activation, grads, _, _ = activation_and_gradient(model, x, layer, target, reshape_transform)
    return finish(grad_cam_sum(activation, grads), x.shape[-2:])  # Eqs. 1-2


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
    """Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19 with the exponential closed form).

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
    activation, grads, _, _ = activation_and_gradient(model, x, layer, target, reshape_transform)
    weights = grad_cam_plus_plus_weights(activation, grads)
    return finish(torch.einsum("nc,nchw->nhw", weights, activation), x.shape[-2:])
