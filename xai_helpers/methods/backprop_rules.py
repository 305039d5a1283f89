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

import hashlib
import inspect
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..engine import ReshapeTransform, Target, check_input, evaluating, input_gradient, layer_pass, make_reference
from ..engine import model_cache
from ..engine.model_traits import uses_batch_statistics
from ..engine.forward import check_output, readable_model_errors, with_input_layout
from ..engine.inputs import flag, number
from ..engine.targets import class_scores, select_output, target_scores
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
    """z -> f'(z) for the rectifiers, by PyTorch's fused backward kernels applied to ones (one pass);
    None for other functions (autograd then differentiates them)."""
    times_slope, _ = _times_slope_function(twin, bound, None)
    if twin not in (F.relu, torch.relu, F.relu6, F.hardtanh):
        return None
    return lambda z: times_slope(torch.ones((), dtype=z.dtype, device=z.device).expand_as(z), z)


def _times_slope_function(twin, bound, f):
    """((grad, saved) -> grad * f'(z), whether ``saved`` is the output y rather than z).

    The rectifiers use PyTorch's own fused backward kernels on their output
    (0 < y < 6 exactly where 0 < z < 6); other functions differentiate f by
    autograd at z.
    """
    if twin in (F.relu, torch.relu):
        return (lambda grad, y: torch.ops.aten.threshold_backward(grad, y, 0.0)), True
    if twin in (F.relu6, F.hardtanh):
        if twin is F.relu6:
            lo, hi = 0.0, 6.0
        else:
            args = bound.arguments if bound is not None else {}
            lo, hi = float(args.get("min_val", -1.0)), float(args.get("max_val", 1.0))
        return (lambda grad, y: torch.ops.aten.hardtanh_backward(grad, y, lo, hi)), True
    return (lambda grad, z: grad * _derivative(f, z)), False


class _Guided(torch.autograd.Function):
    """y = f(z); backward: f'(z) * ReLU(grad_y) (Springenberg et al. 2015, Fig. 1)."""

    @staticmethod
    def forward(ctx, z, f, times_slope, from_output):
        y = f(z)
        # z itself may be overwritten next (an in-place activation): keep y, or a copy of z.
        ctx.save_for_backward(y if from_output else z.detach().clone())
        ctx.times_slope, ctx.rectifier = times_slope, from_output
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (saved,) = ctx.saved_tensors
        if ctx.rectifier:
            # A rectifier's f' is 0 or 1, so f'(z) * ReLU(g) = ReLU(f'(z) * g): masked, then clamped in place.
            return ctx.times_slope(grad_y, saved).clamp_min_(0), None, None, None
        return ctx.times_slope(grad_y.clamp_min(0), saved), None, None, None


class _Rescale(torch.autograd.Function):
    """y = f(z); backward: (f(z) - f(z0)) / (z - z0) * grad_y, with f'(z) where |z - z0| < eps."""

    @staticmethod
    def forward(ctx, z, z0, y0, f, slope, eps):
        y = f(z)
        dz = z - z0
        m = (y - y0).div_(dz)  # inf or NaN where dz = 0: replaced below
        # The limit of dy/dz as dz -> 0 is the ordinary derivative. Such units are common (a channel
        # that is constant on both inputs), so the fix is one pass, with no test for whether it is needed.
        torch.where(dz.abs_() < eps, slope(z), m, out=m)
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
        y = self.apply(z, f, twin, bound, in_place)
        return z.copy_(y) if in_place else y

    def apply(self, z, f, twin, bound, in_place):  # pragma: no cover - overridden
        raise NotImplementedError


class guided_mode(_Calls):
    """Within this context, every nonlinearity backpropagates by Guided Backpropagation's rule,
    grad_in = f'(z) * ReLU(grad_out)."""

    def apply(self, z, f, twin, bound, in_place):
        return _Guided.apply(z, f, *_times_slope_function(twin, bound, f))


class _record_mode(_Calls):
    """Keeps (z, f(z), twin) of every nonlinearity call, in order, during the reference pass."""

    def __init__(self):
        super().__init__()
        self.records: list[tuple[torch.Tensor, torch.Tensor, object]] = []

    def apply(self, z, f, twin, bound, in_place):
        y = f(z)
        # An in-place call overwrites z next: keep a copy; otherwise keep z and its version, to notice a
        # later in-place change of it (which would make the recorded reference wrong).
        kept = z.detach().clone() if in_place else z.detach()
        self.records.append((kept, kept._version, y.detach(), twin))
        return y


class _rescale_mode(_Calls):
    """Every nonlinearity backpropagates by DeepLIFT's Rescale rule against the recorded reference calls."""

    def __init__(self, records, eps: float):
        super().__init__()
        self.records, self.eps, self.position = records, eps, 0

    def apply(self, z, f, twin, bound, in_place):
        if self.position >= len(self.records):
            raise ValueError("the model's forward called more nonlinearities on the image than on the reference; "
                             "DeepLIFT needs the same path through the network for both")
        z0, version, y0, twin0 = self.records[self.position]
        self.position += 1
        if z0._version != version:
            raise ValueError("the model changed a nonlinearity's input in place after the call, so the reference's "
                             "values are lost; DeepLIFT needs a model that leaves those inputs alone")
        if twin0 is not twin or z0.shape[1:] != z.shape[1:] or z0.shape[0] not in (1, z.shape[0]):
            raise ValueError("the model's forward took a different path on the image than on the reference "
                             f"(call {self.position}: {getattr(twin, '__name__', twin)} on {tuple(z.shape)}); "
                             "DeepLIFT needs the same sequence of nonlinearities for both")
        slope = _slope_function(twin, bound) or (lambda t: _derivative(f, t))
        return _Rescale.apply(z, z0, y0, f, slope, self.eps)


# A reference's recorded pass is kept between calls if it takes at most this much memory (EfficientNet-Lite0
# at 224 x 224: 47 MB); larger ones are recorded afresh on every call.
_KEPT_REFERENCE_BYTES = 128 * 2**20


def _digest(t: torch.Tensor) -> tuple:
    """A key for a reference row: its shape, dtype, device, and its value (a constant) or content hash."""
    first = t.flatten()[0]
    if bool((t == first).all()):
        content = ("constant", float(first))
    else:
        content = ("sha1", hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest())
    return (tuple(t.shape), t.dtype, t.device, content)


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
    n = x.shape[0]
    per_image = n > 1 and uses_batch_statistics(model)
    chunks = [slice(i, i + 1) for i in range(n)] if per_image else [slice(0, n)]
    # One reference row serves a batch whose rows share it (the default zeros, a (C, H, W) reference), and
    # its recorded pass is kept for the next call while the model is unchanged (engine.model_cache).
    shared = not per_image and bool((x0 == x0[:1]).all())

    def record(inputs):
        recorder = _record_mode()
        with recorder:
            return select_output(model(inputs)), recorder.records

    def reference_pass(chunk):
        if not shared:
            return with_input_layout(model, x0[chunk], record)

        def derive():
            output, records = with_input_layout(model, x0[:1], record)
            size = sum(z.numel() * z.element_size() + y.numel() * y.element_size() for z, _, y, _ in records)
            return (output, records), size <= _KEPT_REFERENCE_BYTES

        return model_cache.cached(model, ("deeplift reference", _digest(x0[:1])), derive)

    def rescaled(records):
        def attempt(inputs):
            rescale = _rescale_mode(records, eps)
            with rescale:
                output = select_output(model(inputs))
            if rescale.position != len(records):
                raise ValueError("the model's forward called fewer nonlinearities on the image than on the "
                                 "reference; DeepLIFT needs the same path through the network for both")
            return output
        return attempt

    with evaluating(model), readable_model_errors(x):
        # The reference first, without autograd, recording every nonlinearity's input and output; then the
        # image, differentiated, each nonlinearity reading its reference back (image by image for a model
        # whose BatchNorm uses batch statistics, so that no image depends on its neighbours).
        with torch.inference_mode(False), torch.enable_grad():
            leaf = x.detach().clone().requires_grad_(True)
            outputs, references = [], []
            for chunk in chunks:
                with torch.no_grad():
                    reference_output, records = reference_pass(chunk)
                references.append(reference_output.expand(chunk.stop - chunk.start, *reference_output.shape[1:]))
                outputs.append(with_input_layout(model, leaf[chunk], rescaled(records)))
            output = check_output(torch.cat(outputs), n)
            reference_output = check_output(torch.cat(references), n)
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
