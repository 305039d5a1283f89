"""Checks of what a caller passes in: the batch, the layer, and every setting.

Each check raises ``ValueError`` with one sentence that names the argument,
what was given and what is allowed, before any work is done. Non-finite
values are refused wherever they could enter a computation (the input, a
reference image, a noise level): a NaN that reached a map would otherwise be
indistinguishable from a normal-looking result.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Iterable

import torch
from torch import nn

from .hooks import check_submodule

__all__ = [
    "check_input",
    "check_layer",
    "check_finite",
    "positive_int",
    "seed_value",
    "flag",
    "number",
    "choice",
    "batch_size_value",
    "fraction",
]


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def check_finite(name: str, t: torch.Tensor) -> None:
    """ValueError unless every value of ``t`` is finite (no NaN, no inf)."""
    if t.is_floating_point() or t.is_complex():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            count = int(bad.sum())
            raise ValueError(
                f"{name} contains {count} non-finite value{'s' if count > 1 else ''} (NaN or inf); "
                "explanations of such an input are meaningless, so replace or remove those values first"
            )


def _parameter_dtype_device(model: nn.Module):
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    for tensor in model.buffers():
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return None, None


def check_input(model: nn.Module, x: torch.Tensor, layer: nn.Module | None = None) -> None:
    """ValueError unless ``x`` is a finite float (N, C, H, W) batch that matches the model's dtype and
    device, and ``layer`` (if given) belongs to ``model``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"x must be 4-D (N, 3, H, W), got shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)"
        )
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (N = 0)")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}; use the model's transform")
    dtype, device = _parameter_dtype_device(model)
    if dtype is not None and x.dtype != dtype:
        raise ValueError(
            f"x is {x.dtype} but the model's parameters are {dtype}; convert one of them, "
            f"e.g. x.to({dtype}) or model.to({x.dtype})"
        )
    if device is not None and x.device != device:
        raise ValueError(f"x is on {x.device} but the model is on {device}; move x with x.to({str(device)!r})")
    check_finite("x", x)
    if layer is not None:
        check_layer(model, layer)


def check_layer(model: nn.Module, layer) -> None:
    if not isinstance(layer, nn.Module):
        raise ValueError(f"layer must be a module of the model, got {type(layer).__name__}")
    check_submodule(model, layer)


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {_describe(value)}")
    return int(value)


def seed_value(value) -> int:
    """A seed for ``torch.Generator().manual_seed``: an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"seed must be a non-negative int, got {_describe(value)}")
    return int(value)


def flag(name: str, value) -> bool:
    """``value`` must be True or False (not a string such as 'no', which Python reads as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {_describe(value)}")
    return value


def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite float in the interval given (bools refused)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (low is None or (v > low if low_open else v >= low)) and (high is None or (v < high if high_open else v <= high))
    if not ok:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        where = f" {' and '.join(parts)}" if parts else ""
        raise ValueError(f"{name} must be a finite number{where}{hint}, got {_describe(value)}")
    return float(value)


def fraction(name: str, value) -> float:
    """A probability or fraction strictly between 0 and 1."""
    return number(name, value, low=0.0, high=1.0, low_open=True, high_open=True)


def choice(name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if not any(value == c and type(value) is type(c) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {_describe(value)}")


def batch_size_value(batch_size) -> int | None:
    """None (the engine picks) or an int >= 1."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {_describe(batch_size)}")
    return int(batch_size)
