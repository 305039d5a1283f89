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

DeepLIFT needs each nonlinearity's input on the reference, z^0, next to its
input z on the image. The reference runs first, without autograd, and a
recording mode keeps (z^0, f(z^0)) of every call in order; the image's pass
then reads them back call by call. Only the image's pass is differentiated:
one backward pass of N rows, where running image and reference as one batch
(captum's way) differentiates 2N.
"""

from __future__ import annotations

import inspect
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..engine import ReshapeTransform, Target, check_input, evaluating, input_gradient, layer_pass, make_reference
from ..engine.forward import model_output
from ..engine.inputs import flag, number
from ..engine.targets import class_scores, target_scores
from .grad_cam import grad_cam_sum

__all__ = ["NONLINEARITIES", "guided_mode", "deeplift", "guided_backprop", "guided_grad_cam"]

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


class _Guided(torch.autograd.Function):
    """y = f(z); backward: f'(z) * ReLU(grad_y) (Springenberg et al. 2015, Fig. 1)."""

    @staticmethod
    def forward(ctx, z, f, slope):
        y = f(z)
        ctx.save_for_backward(slope(z))
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (m,) = ctx.saved_tensors
        return m * grad_y.clamp_min(0), None, None


class _Rescale(torch.autograd.Function):
    """y = f(z); backward: (f(z) - f(z0)) / (z - z0) * grad_y, with f'(z) where |z - z0| < eps."""

    @staticmethod
    def forward(ctx, z, z0, y0, f, slope, eps):
        y = f(z)
        dz = z - z0
        small = dz.abs() < eps
        m = (y - y0) / torch.where(small, torch.ones_like(dz), dz)
        if bool(small.any()):  # the limit of dy/dz as dz -> 0 is the ordinary derivative
            m = torch.where(small, slope(z), m)
        ctx.save_for_backward(m)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (m,) = ctx.saved_tensors
        return m * grad_y, None, None, None, None, None


class _Calls(TorchFunctionMode):
    """Routes every call in :data:`NONLINEARITIES` to :meth:`apply` (its out-of-place twin, bound arguments)."""

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
        y = self.apply(z, f, twin, bound)
        return z.copy_(y) if in_place else y

    def apply(self, z, f, twin, bound):  # pragma: no cover - overridden
        raise NotImplementedError


class guided_mode(_Calls):
    """Within this context, every nonlinearity backpropagates by Guided Backpropagation's rule,
    grad_in = f'(z) * ReLU(grad_out)."""

    def apply(self, z, f, twin, bound):
        slope = _slope_function(twin, bound) or (lambda t: _derivative(f, t))
        return _Guided.apply(z, f, slope)


class _record_mode(_Calls):
    """Keeps (z, f(z), twin) of every nonlinearity call, in order, during the reference pass."""

    def __init__(self):
        super().__init__()
        self.records: list[tuple[torch.Tensor, torch.Tensor, object]] = []

    def apply(self, z, f, twin, bound):
        y = f(z)
        self.records.append((z.detach().clone(), y.detach(), twin))
        return y


class _rescale_mode(_Calls):
    """Every nonlinearity backpropagates by DeepLIFT's Rescale rule against the recorded reference calls."""

    def __init__(self, records, eps: float):
        super().__init__()
        self.records, self.eps, self.position = records, eps, 0

    def apply(self, z, f, twin, bound):
        if self.position >= len(self.records):
            raise ValueError("the model's forward called more nonlinearities on the image than on the reference; "
                             "DeepLIFT needs the same path through the network for both")
        z0, y0, twin0 = self.records[self.position]
        self.position += 1
        if twin0 is not twin or z0.shape != z.shape:
            raise ValueError("the model's forward took a different path on the image than on the reference "
                             f"(call {self.position}: {getattr(twin, '__name__', twin)} on {tuple(z.shape)}); "
                             "DeepLIFT needs the same sequence of nonlinearities for both")
        slope = _slope_function(twin, bound) or (lambda t: _derivative(f, t))
        return _Rescale.apply(z, z0, y0, f, slope, self.eps)


def deeplift(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    reference=None,
    eps: float = 1e-10,
    return_delta: bool = False,
):
    """DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje 2017, Secs. 3.2-3.5.2), raw (N, C, H, W).

    For every element-wise nonlinearity y = f(z) the multiplier (Sec. 3.5.2,
    the Rescale rule)

    .. math::
        m_{\\Delta z \\Delta y} = \\frac{\\Delta y}{\\Delta z} = \\frac{f(z) - f(z^0)}{z - z^0}

    replaces f'(z) in the chain rule (Eq. 3, the chain rule for multipliers),
    falling back to f'(z) where |Delta z| < ``eps``; linear layers keep their
    weights. The attribution is C_{Delta x_i Delta t} = m_{Delta x_i Delta t} * (x_i - x^0_i)
    and satisfies summation-to-delta (Eq. 1): sum_i C_i = t(x) - t(x^0), with t
    the logit, exactly for networks of linear layers and element-wise
    nonlinearities (ReLU, ReLU6, SiLU, sigmoid, tanh, ...: EfficientNet-Lite0
    among them). ``return_delta=True`` also returns sum_i C_i - (t(x) - t(x^0)).

    The reference runs first (no autograd), recording each nonlinearity's z^0;
    the image's pass then backpropagates the multipliers. Differences from
    captum: captum's ``DeepLift`` runs image and reference as one batch of 2N
    and backpropagates both, only modifies ``nn.Module`` activations of the
    types it knows (``ReLU6`` is not one; its summation-to-delta then fails
    silently) and gives max-pooling its own rule; here max-pooling keeps its
    gradient, so summation-to-delta is exact only for networks without max-pooling.

    Args:
        reference: x^0, see :func:`xai_helpers.engine.make_reference` (default zeros).
        eps: the |Delta z| below which the ordinary derivative is used.
    """
    check_input(model, x)
    x0 = make_reference(x, reference)
    eps = number("eps", eps, low=0.0, low_open=True)
    flag("return_delta", return_delta)
    with evaluating(model):
        recorder = _record_mode()
        with torch.inference_mode(False), torch.no_grad(), recorder:
            reference_output = model_output(model, x0)
        with torch.inference_mode(False), torch.enable_grad():
            leaf = x.detach().clone().requires_grad_(True)
            rescale = _rescale_mode(recorder.records, eps)
            with rescale:
                output = model_output(model, leaf)
            if rescale.position != len(recorder.records):
                raise ValueError("the model's forward called fewer nonlinearities on the image than on the "
                                 "reference; DeepLIFT needs the same path through the network for both")
            scores, classes = target_scores(target, output)
            if not scores.requires_grad:
                raise ValueError("the target's score does not depend on the input; check the model and the target")
            (grad,) = torch.autograd.grad(scores.sum(), leaf)
    attribution = (x - x0).detach() * grad
    if not return_delta:
        return attribution
    with torch.no_grad():
        reference_scores = class_scores(reference_output, classes, "logit", target)
        delta = attribution.double().flatten(1).sum(1) - (scores.detach().double() - reference_scores.double())
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
    with guided_mode():
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
    recorded = layer_pass(model, x, layer, target, reshape_transform=reshape_transform)
    cam = grad_cam_sum(recorded.activation, recorded.gradient).unsqueeze(1).clamp_min(0)
    cam = F.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    # The same classes as the Grad-CAM pass (top-1 resolved once).
    gbp = guided_backprop(model, x, target if recorded.classes is None else recorded.classes)
    return gbp * cam.to(gbp.dtype)
