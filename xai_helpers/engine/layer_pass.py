"""One pass that records a layer: its activation A, and optionally g = d y^c / d A.

This is the engine under every layer method (the CAM family). The gradient
is taken with ``torch.autograd.grad`` on A alone: the hook makes A a fresh
leaf and switches autograd on only from there, so the backward pass runs
through the layers after A, works on frozen models, and never touches a
parameter's ``.grad``. Images in a batch are independent in eval mode, so
summing the N target scores gives every image its own gradient in one
backward pass; a model whose BatchNorm uses batch statistics runs one image
at a time instead (:mod:`xai_helpers.engine.forward`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .model_traits import uses_batch_statistics
from .feature_maps import ReshapeTransform, to_feature_map
from .forward import check_output, readable_model_errors, with_input_layout
from .hooks import LayerCapture, evaluating
from .inputs import check_input
from .targets import Target, select_output, target_scores

__all__ = ["LayerPass", "layer_pass"]


@dataclass(frozen=True)
class LayerPass:
    """What one pass recorded, all detached.

    activation, gradient: (N, C, h, w) after ``reshape_transform`` (gradient
    None when not asked for); output: the model's selected output;
    classes: the (N,) class indices explained (None for a callable target);
    raw: the layer's output as the layer returned it, before ``reshape_transform``
    (the same tensor as ``activation`` for an (N, C, h, w) output).
    """

    activation: torch.Tensor
    gradient: torch.Tensor | None
    output: torch.Tensor
    classes: torch.Tensor | None
    raw: torch.Tensor | None = None


def _capture(model: nn.Module, chunk: torch.Tensor, layer: nn.Module, grad: bool):
    with readable_model_errors(chunk):
        activation, output = with_input_layout(model, chunk, lambda inputs: _capture_once(model, inputs, layer, grad),
                                               differentiable=grad)
    return activation, check_output(output, chunk.shape[0])


def _capture_once(model: nn.Module, inputs: torch.Tensor, layer: nn.Module, grad: bool):
    if grad:
        # inference_mode(False): the methods also run inside a caller's inference_mode block.
        with torch.inference_mode(False), torch.no_grad(), LayerCapture(layer, grad=True) as cap:
            output = select_output(model(inputs))
    else:
        with torch.inference_mode(), LayerCapture(layer) as cap:
            output = select_output(model(inputs))
    return cap.check(), output


def layer_pass(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
               gradient: bool = True, reshape_transform: ReshapeTransform = None) -> LayerPass:
    """Run ``model(x)`` in eval mode recording ``layer``'s output, and with ``gradient`` its gradient.

    ``target`` as in :mod:`xai_helpers.engine.targets`; the gradient is that
    of each image's target score (the logit for a class index).
    """
    check_input(model, x, layer)
    n = x.shape[0]
    chunks = [x[i : i + 1] for i in range(n)] if n > 1 and uses_batch_statistics(model) else [x]
    with evaluating(model):
        with torch.inference_mode(False), torch.enable_grad() if gradient else torch.no_grad():
            recorded = [_capture(model, chunk, layer, gradient) for chunk in chunks]
            activations = [a for a, _ in recorded]
            output = torch.cat([o for _, o in recorded]) if len(recorded) > 1 else recorded[0][1]
            scores, classes = target_scores(target, output)
            grads = None
            if gradient:
                if not scores.requires_grad:
                    raise ValueError("the target's score does not depend on the layer's activation; "
                                     "choose a layer before the output")
                grads = torch.autograd.grad(scores.sum(), activations, allow_unused=True)
                grads = [torch.zeros_like(a) if g is None else g for a, g in zip(activations, grads)]
    size = tuple(x.shape)
    activation = torch.cat(activations).detach() if len(activations) > 1 else activations[0].detach()
    feature = to_feature_map(activation, reshape_transform, size, layer)
    grad = None
    if grads is not None:
        g = torch.cat(grads) if len(grads) > 1 else grads[0]
        grad = to_feature_map(g.detach(), reshape_transform, size, layer)
    return LayerPass(feature, grad, output.detach(), classes, activation)
