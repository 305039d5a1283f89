"""One pass that differentiates the target score with respect to the input itself.

The engine under Saliency, Gradient x Input, Guided Backprop and Guided
Grad-CAM (one pass each; the multi-pass gradient methods use
:meth:`xai_helpers.engine.Scorer.gradient_sum`). The gradient is taken with
``torch.autograd.grad`` on a private leaf copy of the input, so ``x`` and
every parameter's ``.grad`` stay untouched, and the model sees a copy of the
leaf, so a model that writes into its input cannot write into the leaf.
"""

from __future__ import annotations

import torch
from torch import nn

from .forward import model_output
from .hooks import evaluating
from .inputs import check_input
from .targets import Target, target_scores

__all__ = ["input_gradient"]


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target = None):
    """dy^c/dx for each image, in one forward and one backward pass.

    Returns ``(gradient, classes, output)``: the (N, C, H, W) gradient of each
    image's target score (the logit for a class index) with respect to its own
    pixels (images are independent in eval mode, so the N scores are summed
    for one backward pass), the (N,) class indices (None for a callable
    target) and the detached output.
    """
    check_input(model, x)
    # The caller may be inside no_grad() or inference_mode(): neither must reach the graph.
    with torch.inference_mode(False), torch.enable_grad(), evaluating(model):
        leaf = x.detach().clone().requires_grad_(True)
        output = model_output(model, leaf)
        scores, classes = target_scores(target, output)
        if not scores.requires_grad:
            raise ValueError("the target's score does not depend on the input; check the model and the target")
        (gradient,) = torch.autograd.grad(scores.sum(), leaf)
    return gradient, classes, output.detach()
