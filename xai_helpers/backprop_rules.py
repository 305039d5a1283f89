"""Modified backpropagation: DeepLIFT (Rescale), Guided Backpropagation, Guided Grad-CAM.

These methods run the ordinary backward pass but change the local derivative
of every element-wise nonlinearity. Instead of hooks on ``nn.ReLU`` modules
(captum's way, which misses ``ReLU6``, ``SiLU`` and functional calls, and
fails on in-place activations), the rule is applied to the *function call*:
while the model runs, a ``TorchFunctionMode`` routes each call of the
functions in :data:`NONLINEARITIES` (``F.relu``, ``F.hardtanh``, which
``nn.ReLU6`` calls, ``F.silu``, ``torch.sigmoid``, ``torch.tanh``, ...) through
a custom ``autograd.Function`` whose backward implements the rule. Module or
functional, in place or not, the rule applies; nothing is registered on the
model, so nothing can be left behind. In-place calls are computed out of
place and written back, so the model's own values are those of the ordinary
forward pass.
"""

from __future__ import annotations

import inspect
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .core import ReshapeTransform, Target, check_input, select_output, target_scores
from .gradient_methods import activation_and_gradient, grad_cam_sum
from .hooks import evaluating
from .pixel_gradients import input_gradient, make_baseline

__all__ = ["NONLINEARITIES", "RULES", "rule_mode", "deeplift", "guided_backprop", "guided_grad_cam"]

RULES = ("rescale", "guided")

# Functions that act element-wise; each maps to its out-of-place twin.
NONLINEARITIES = {
    F.relu: F.relu, torch.relu: torch.relu, torch.Tensor.relu: torch.relu,
    F.relu_: F.relu, torch.relu_: torch.relu, torch.Tensor.relu_: torch.relu,
    F.relu6: F.relu6, F.hardtanh: F.hardtanh, F.hardtanh_: F.hardtanh,
    F.leaky_relu: F.leaky_relu, F.leaky_relu_: F.leaky_relu, F.elu: F.elu, F.elu_: F.elu,
    F.silu: F.silu, F.mish: F.mish, F.gelu: F.gelu, F.softplus: F.softplus,
    F.hardswish: F.hardswish, F.hardsigmoid: F.hardsigmoid,
    F.sigmoid: torch.sigmoid, torch.sigmoid: torch.sigmoid, torch.Tensor.sigmoid: torch.sigmoid,
    torch.sigmoid_: torch.sigmoid, torch.Tensor.sigmoid_: torch.sigmoid,
    F.tanh: torch.tanh, torch.tanh: torch.tanh, torch.Tensor.tanh: torch.tanh,
    torch.tanh_: torch.tanh, torch.Tensor.tanh_: torch.tanh,
}
_IN_PLACE = {F.relu_, torch.relu_, torch.Tensor.relu_, F.hardtanh_, F.leaky_relu_, F.elu_,
             torch.sigmoid_, torch.Tensor.sigmoid_, torch.tanh_, torch.Tensor.tanh_}


_SIGNATURES: dict = {}


def _signature(function):
    """inspect.signature, cached (it is slow, and runs for every activation call); None for C builtins."""
    if function not in _SIGNATURES:
        try:
            _SIGNATURES[function] = inspect.signature(function)
        except (TypeError, ValueError):
            _SIGNATURES[function] = None
    return _SIGNATURES[function]


def _derivative(f, z: torch.Tensor) -> torch.Tensor:
    """f'(z) for an element-wise f, by autograd on a private leaf."""
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        out = f(leaf)
        if not out.requires_grad:
            return torch.zeros_like(z)
        (d,) = torch.autograd.grad(out.sum(), leaf)
    return d


def _slope_function(twin, bound):
    """z -> f'(z): closed forms for the rectifiers (the common case, and cheap), autograd otherwise."""
    if twin in (F.relu, torch.relu):
        return lambda z: (z > 0).to(z.dtype)
    if twin in (F.relu6, F.hardtanh):
        if twin is F.relu6:
            lo, hi = 0.0, 6.0
        else:
            args = bound.arguments if bound is not None else {}
            lo, hi = float(args.get("min_val", -1.0)), float(args.get("max_val", 1.0))
        return lambda z: ((z > lo) & (z < hi)).to(z.dtype)
    return None


class _Rule(torch.autograd.Function):
    """y = f(z) forward; backward multiplies the incoming gradient by a precomputed multiplier m."""

    @staticmethod
    def forward(ctx, z, f, rule, half, eps, slope_fn):
        y = f(z)
        slope = slope_fn or (lambda t: _derivative(f, t))
        if rule == "guided":
            m = slope(z)
        else:  # rescale: the input rows [:half] against their references [half:]
            dz = z[:half] - z[half:]
            dy = y[:half] - y[half:]
            small = dz.abs() < eps
            m_in = dy / torch.where(small, torch.ones_like(dz), dz)
            if small.any():  # the fallback where dz ~ 0 is the ordinary derivative (the limit of dy/dz)
                m_in = torch.where(small, slope(z[:half]), m_in)
            m = torch.cat([m_in, m_in])
        ctx.save_for_backward(m)
        ctx.rule = rule
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (m,) = ctx.saved_tensors
        if ctx.rule == "guided":
            grad_y = grad_y.clamp_min(0)  # Springenberg et al. 2015, Fig. 1: only positive signals go back
        return m * grad_y, None, None, None, None, None


class rule_mode(TorchFunctionMode):
    """Within this context, every call in :data:`NONLINEARITIES` backpropagates by ``rule``.

    ``rule="guided"``: grad_in = f'(z) * ReLU(grad_out) (Guided Backpropagation).
    ``rule="rescale"``: the batch holds ``half`` inputs followed by their
    ``half`` references, and grad_in = (Delta y / Delta z) * grad_out, with
    f'(z) where |Delta z| < eps (DeepLIFT's Rescale rule).
    """

    def __init__(self, rule: str, half: int = 0, eps: float = 1e-10):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.rule, self.half, self.eps = rule, half, eps
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        twin = NONLINEARITIES.get(func)
        if twin is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return func(*args, **kwargs)
        z, rest = args[0], args[1:]
        in_place = func in _IN_PLACE
        signature = _signature(twin)
        bound = signature.bind(z, *rest, **kwargs) if signature is not None else None
        if bound is not None and "inplace" in bound.arguments:
            in_place = in_place or bool(bound.arguments["inplace"])
            bound.arguments["inplace"] = False
        f = partial(lambda b, t: twin(t, *b.args[1:], **b.kwargs), bound) if bound is not None else twin
        self.calls += 1
        y = _Rule.apply(z, f, self.rule, self.half, self.eps, _slope_function(twin, bound))
        return z.copy_(y) if in_place else y


def deeplift(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    baseline=None,
    eps: float = 1e-10,
    return_delta: bool = False,
):
    """DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje 2017, Secs. 3.2-3.5), raw (N, C, H, W).

    For every element-wise nonlinearity y = f(z) the multiplier (Sec. 3.3)

    .. math::
        m_{\\Delta z \\Delta y} = \\frac{\\Delta y}{\\Delta z} = \\frac{f(z) - f(z^0)}{z - z^0}

    replaces f'(z) in the chain rule (Eq. 3, the chain rule for multipliers),
    falling back to f'(z) where |Delta z| < ``eps``; linear layers keep their
    weights. The attribution is C_{Delta x_i Delta t} = m_{Delta x_i Delta t} * (x_i - x^0_i)
    and satisfies summation-to-delta (Eq. 1): sum_i C_i = t(x) - t(x^0), with t
    the logit, exactly for networks of linear layers and element-wise
    nonlinearities (ReLU, ReLU6, SiLU, sigmoid, tanh, ...: EfficientNet-Lite0
    among them). ``return_delta=True`` also returns sum_i C_i - (t(x) - t(x^0)).

    The input and the reference run as one batch of 2N (as in captum), so every
    nonlinearity sees z and z^0 together. Differences from captum: captum's
    ``DeepLift`` only modifies ``nn.Module`` activations of the types it knows
    (``ReLU6`` is not one; its summation-to-delta then fails silently) and
    gives max-pooling its own rule; here max-pooling keeps its gradient, so
    summation-to-delta is exact only for networks without max-pooling.

    Args:
        baseline: x^0, see :func:`xai_helpers.pixel_gradients.make_baseline` (default zeros).
    """
    check_input(model, x)
    x0 = make_baseline(x, baseline)
    n = x.shape[0]
    with torch.inference_mode(False), torch.enable_grad(), evaluating(model):
        leaf = torch.cat([x, x0]).detach().requires_grad_(True)
        with rule_mode("rescale", half=n, eps=eps):
            output = select_output(model(leaf.clone()))
        if output.shape[0] != 2 * n:
            raise ValueError(f"the model's output has shape {tuple(output.shape)}; expected a first dimension of {2 * n}")
        scores, classes = target_scores(target, output[:n])
        if not scores.requires_grad:
            raise ValueError("the target's score does not depend on the input; check the model and the target")
        (grad,) = torch.autograd.grad(scores.sum(), leaf)
    attribution = (x - x0).detach() * grad[:n]
    if not return_delta:
        return attribution
    with torch.no_grad():
        if classes is None:
            reference = target(output[n:].detach()).reshape(n)
        else:
            reference = output[n:].detach().gather(1, classes[:, None])[:, 0]
        delta = attribution.double().flatten(1).sum(1) - (scores.detach().double() - reference.double())
    return attribution, delta


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Guided Backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller 2015, Sec. 3.4, Fig. 1), raw (N, C, H, W).

    Backward through a ReLU with input z:

    .. math::
        R^{l} = \\mathbb 1[z > 0] \\cdot \\mathbb 1[R^{l+1} > 0] \\cdot R^{l+1}

    the gradient masked by the forward signal (backpropagation) *and* by the
    sign of the backward signal (the "deconvnet" part). For other activations
    the same rule reads f'(z) * ReLU(R^{l+1}), which for ReLU6 adds the mask
    z < 6; captum's ``GuidedBackprop`` only changes ``nn.ReLU`` modules.
    """
    # The ordinary input gradient, with the guided rule on every activation call of the forward pass.
    with rule_mode("guided"):
        gradient, _, _ = input_gradient(model, x, target)
    return gradient


def guided_grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    *,
    reshape_transform: ReshapeTransform = None,
) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017, Sec. 3, "Guided Grad-CAM"), raw (N, C, H, W).

    The element-wise product of Guided Backpropagation with the Grad-CAM map
    L^c = ReLU(sum_k alpha_k A^k) (Eqs. 1-2) upsampled bilinearly to the
    input's size, *before* min-max scaling (the paper's product, and captum's
    ``GuidedGradCam`` with ``interpolate_mode="bilinear"``; captum's default
    is nearest-neighbour upsampling).
    """
    check_input(model, x, layer)
    activation, grads, classes, _ = activation_and_gradient(model, x, layer, target, reshape_transform)
    cam = grad_cam_sum(activation, grads).unsqueeze(1).clamp_min(0)
    cam = F.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    # The same classes as the Grad-CAM pass (top-1 resolved once).
    gbp = guided_backprop(model, x, target if classes is None else classes)
    return gbp * cam.to(gbp.dtype)
