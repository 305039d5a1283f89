"""Gradients at the pixel: attributions with the input's own shape, no layer needed.

These methods differentiate the target score with respect to the input image
itself. Their raw output is a signed (N, C, H, W) tensor, the input's shape;
the registry (``xai_helpers.methods``) turns it into the common (N, H, W)
heatmap in [0, 1] with each paper's own reduction.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import Target, check_input, normalize_per_image, select_output, target_scores
from .hooks import evaluating

__all__ = ["input_gradient", "saliency", "saliency_heatmap"]


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target = None):
    """dy^c/dx for each image, in one forward and one backward pass.

    Returns ``(gradient, classes, output)``: the (N, C, H, W) gradient of each
    image's target score with respect to its own pixels (images are independent
    in eval mode, so the N scores are summed for one backward pass), the (N,)
    class indices (None for a callable target) and the detached output.
    The gradient is taken with ``torch.autograd.grad`` on a private copy of the
    input, so ``x`` and every parameter's ``.grad`` stay untouched.
    """
    check_input(model, x)
    # The caller may be inside no_grad() or inference_mode(): neither must reach the graph.
    with torch.inference_mode(False), torch.enable_grad(), evaluating(model):
        leaf = x.detach().clone().requires_grad_(True)
        # A clone of the leaf goes in, so an in-place first layer cannot write into the leaf.
        output = select_output(model(leaf.clone()))
        scores, classes = target_scores(target, output)
        if not scores.requires_grad:
            raise ValueError("the target's score does not depend on the input; check the model and the target")
        (gradient,) = torch.autograd.grad(scores.sum(), leaf)
    return gradient, classes, output.detach()


def saliency(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Image-specific class saliency, raw (Simonyan, Vedaldi & Zisserman 2014, Sec. 3.1, Eq. 2-3).

    .. math::
        w = \\frac{\\partial S_c}{\\partial I}\\Big|_{I_0}

    the gradient of the class score S_c (the logit, before softmax) at the
    image I_0: the weights of the first-order Taylor expansion
    S_c(I) ~ w^T I + b (Eq. 2).

    Args:
        model: any differentiable model; its output goes through ``core.select_output``.
        x: (N, C, H, W) input batch.
        target: as :func:`xai_helpers.grad_cam`.

    Returns:
        the signed (N, C, H, W) gradient, on the model's device. The saliency
        map of the paper is :func:`saliency_heatmap` of it.
    """
    gradient, _, _ = input_gradient(model, x, target)
    return gradient


def saliency_heatmap(gradient: torch.Tensor) -> torch.Tensor:
    """Simonyan et al. 2014, Sec. 3.1: M_ij = max_c |w_h(i,j,c)|, then min-max scaled per image: (N, H, W)."""
    return normalize_per_image(gradient.detach().abs().amax(1))
