"""FullGrad (Srinivas & Fleuret 2019, "Full-Gradient Representation for Neural Network Visualization", NeurIPS).

For a ReLU network (piecewise linear, biases b_l in its layers) the output is
exactly (the paper's full-gradient decomposition)::

    f(x) = sum_i (x ⊙ ∇_x f)_i + sum_l sum_i (b_l ⊙ ∇_{b_l} f)_i

where ∇_{b_l} f ⊙ b_l is the gradient at layer l's output times its bias.
FullGrad's map keeps every spatial term of that sum, each made positive,
upsampled and rescaled. One forward and one backward pass give all of them:
the gradient at each bias layer's output is collected on the way back.

The bias of a BatchNorm layer in eval mode is its effective one,
beta - gamma * mu / sqrt(var + eps) (the authors' and pytorch-grad-cam's
rule); a BatchNorm that uses batch statistics has none and is refused.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import Target, minmax, normalize_per_image
from ..engine.forward import check_output, readable_model_errors, with_input_layout
from ..engine.hooks import evaluating
from ..engine.inputs import check_input
from ..engine.model_traits import uses_batch_statistics
from ..engine.targets import select_output, target_scores
from .aug_smooth import with_aug_smooth

__all__ = ["bias_layers", "effective_bias", "full_grad", "full_gradient_decomposition"]


def effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The bias a layer adds to its output: a convolution's or linear layer's ``bias``; for BatchNorm in eval mode
    beta - gamma * mu / sqrt(var + eps). None for a layer without one."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None:
            raise ValueError(f"{type(module).__name__} without running statistics has no fixed bias; "
                             "FullGrad needs BatchNorm layers that track running statistics")
        scale = torch.rsqrt(module.running_var + module.eps)
        gamma = module.weight if module.weight is not None else torch.ones_like(scale)
        beta = module.bias if module.bias is not None else torch.zeros_like(scale)
        return (beta - gamma * module.running_mean * scale).detach()
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.bias is not None:
        return module.bias.detach()
    return None


def bias_layers(model: nn.Module) -> list[nn.Module]:
    """The convolutions, linear and BatchNorm layers of ``model`` that add a bias, in module order."""
    kinds = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)
    found = [m for m in model.modules() if isinstance(m, kinds)]
    return [m for m in found if isinstance(m, nn.modules.batchnorm._BatchNorm) or m.bias is not None]


def full_gradient_decomposition(model: nn.Module, x: torch.Tensor, target: Target = None):
    """``(input_term, bias_terms, scores)`` of one forward and one backward pass.

    input_term: x ⊙ ∇_x f, (N, C, H, W); bias_terms: one tensor per layer of
    :func:`bias_layers` that ran, b ⊙ ∇_b f laid out like the layer's output
    ((N, C, h, w) for a convolution, (N, K) for a linear layer); scores: the
    (N,) target scores f(x). For a ReLU network the sum of every element of
    all the terms is f(x) (the completeness the tests check).
    """
    check_input(model, x)
    if uses_batch_statistics(model):
        raise ValueError("FullGrad needs BatchNorm layers with running statistics (eval mode); "
                         "this model normalises with batch statistics")
    layers = bias_layers(model)
    biases = [effective_bias(m) for m in layers]
    thread = threading.get_ident()
    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}

    def recorder(i):
        def hook(module, inputs, out):
            if threading.get_ident() != thread:
                return None
            outputs[i].append(out)
            # The rest of the network gets a copy, so an in-place op after the layer cannot change `out`,
            # whose gradient is the one wanted.
            return out.clone()
        return hook

    with torch.inference_mode(False), torch.enable_grad(), evaluating(model):
        handles = [m.register_forward_hook(recorder(i)) for i, m in enumerate(layers)]
        try:
            leaf = x.detach().clone().requires_grad_(True)

            def attempt(inputs):  # restartable: a retry in another memory layout records afresh
                for recorded in outputs.values():
                    recorded.clear()
                return select_output(model(inputs))

            with readable_model_errors(leaf):
                output = check_output(with_input_layout(model, leaf, attempt, differentiable=True), x.shape[0])
        finally:
            for h in handles:
                h.remove()
        scores, _ = target_scores(target, output)
        if not scores.requires_grad:
            raise ValueError("the target's score does not depend on the input; check the model and the target")
        for i, outs in outputs.items():
            if len(outs) > 1:
                raise ValueError(f"the layer {type(layers[i]).__name__} ran {len(outs)} times in one forward pass, "
                                 "so its bias term is ambiguous; FullGrad needs every bias layer to run once")
        ran = [i for i in outputs if outputs[i]]
        grads = torch.autograd.grad(scores.sum(), [leaf] + [outputs[i][0] for i in ran], allow_unused=True)
    input_term = (x.detach() * grads[0]).detach()
    terms = []
    for i, g in zip(ran, grads[1:]):
        out = outputs[i][0]
        g = torch.zeros_like(out) if g is None else g
        shape = (1, -1) + (1,) * (out.ndim - 2)
        terms.append((g * biases[i].to(g.dtype).view(shape)).detach())
    return input_term, terms, scores.detach()


def _psi(term: torch.Tensor, size) -> torch.Tensor:
    """sum_c psi(term_c): absolute value and min-max per channel, summed, then bilinear upsampling -> (N, H, W).

    Upsampling is linear, so upsampling the sum of the rescaled channels equals
    summing the upsampled ones: one upsampling per layer, not one per channel
    (at 224 x 224 the 1280 channels of the head alone would be 64 million values).
    """
    summed = minmax(term.abs().float(), (2, 3)).sum(1, keepdim=True)
    return F.interpolate(summed, size=size, mode="bilinear", align_corners=False)[:, 0]


@with_aug_smooth
def full_grad(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """FullGrad saliency (Srinivas & Fleuret 2019: the full-gradient decomposition and the FullGrad map built on it;
    equation numbers not checked here).

    .. math::
        S_f(x) = \\psi(\\nabla_x f(x) \\odot x)
        + \\sum_{l \\in L} \\sum_{c \\in c_l} \\psi\\big(\\nabla_{b} f(x) \\odot b\\big)_{l,c}

    with psi = absolute value, min-max rescaling and bilinear upsampling to
    the input's size, applied to each channel c of each convolution or
    BatchNorm layer l with a bias (the spatial terms; a linear layer's term
    has no position and is left out, as in the paper's maps), and to each
    colour channel of the input term; the result is min-max scaled per
    image. No layer argument: every bias layer takes part. Each channel is
    rescaled before it is upsampled, as in the authors' code and
    pytorch-grad-cam (the paper lists upsampling before rescaling; the two
    orders differ slightly, since a bilinear upsampling need not reach the
    grid's extremes), which lets the channels be summed before one
    upsampling per layer.

    Differences from pytorch-grad-cam's ``FullGrad``: it takes only layers of
    the exact types ``Conv2d`` and ``BatchNorm2d``, and adds 1e-7 to every
    min-max denominator, which is not small next to bias terms of about
    1e-4. The authors' code rescales each layer's whole tensor at once
    instead of each channel, and upsamples with ``align_corners=True``.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    input_term, terms, _ = full_gradient_decomposition(model, x, target)
    size = x.shape[-2:]
    total = _psi(input_term, size)
    for term in terms:
        if term.ndim == 4:
            total = total + _psi(term, size)
    return normalize_per_image(total)
