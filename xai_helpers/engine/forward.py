"""One checked pass of the caller's model: the way every method first looks at its input.

* The model gets a private copy of the input, so a model that writes into its
  input (``ReLU(inplace=True)`` first, ``x.mul_``) cannot change the caller's
  tensor or the next call's result.
* A model whose BatchNorm uses batch statistics in eval mode
  (``track_running_stats=False``) sees one image at a time, so an image's
  output never depends on the rest of its batch.
* The output goes through :func:`~xai_helpers.engine.targets.select_output`,
  must have one row per image and be finite.
* A model that cannot run on the input (wrong number of channels, a size it
  does not accept) gets a ``ValueError`` that says so, with PyTorch's message.
* On a CPU the private copy is laid out ``channels_last``: the same values,
  and convolutions about 15% faster in both directions (benchmarks/RESULTS.md).
  A model whose forward needs a contiguous input (a ``.view`` of a feature
  map) is run again with one, and remembered (:func:`with_input_layout`).
  Gradients through max pooling keep the contiguous layout: where a window
  holds equal maxima (zeros after a ReLU), which one gets the gradient depends
  on the layout, and with it on the batch size (:func:`breaks_ties`).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Callable, TypeVar

import torch
from torch import nn

from .model_traits import breaks_ties, uses_batch_statistics
from .targets import select_output

__all__ = ["model_output", "check_output", "readable_model_errors", "with_input_layout", "breaks_ties"]

T = TypeVar("T")
# Models whose forward failed on a channels_last input (a .view of a feature map): they get contiguous ones.
_NEEDS_CONTIGUOUS: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def _is_layout_error(exc: RuntimeError) -> bool:
    text = str(exc)
    return "view size is not compatible" in text or "contiguous" in text


def with_input_layout(model: nn.Module, x: torch.Tensor, attempt: Callable[[torch.Tensor], T],
                      differentiable: bool | None = None) -> T:
    """``attempt(private copy of x)``, the copy in the fastest layout the model accepts.

    ``attempt`` must be restartable (it makes its own hooks or records): when a
    channels_last copy makes the model fail with a layout error, it is called
    once more with a contiguous copy, and the model is remembered. When the
    pass will be differentiated (``differentiable``; default: ``x.requires_grad``),
    a model with max pooling gets a contiguous copy (see the module doc).
    """
    differentiable = x.requires_grad if differentiable is None else differentiable
    if (x.ndim != 4 or x.device.type != "cpu" or model in _NEEDS_CONTIGUOUS
            or (differentiable and breaks_ties(model))):
        return attempt(x.clone())
    try:
        return attempt(x.clone(memory_format=torch.channels_last))
    except RuntimeError as exc:
        if not _is_layout_error(exc):
            raise
        _NEEDS_CONTIGUOUS[model] = True
        return attempt(x.clone())

_SHAPE_WORDS = ("expected input", "channels", "shapes cannot be multiplied", "size mismatch", "must match the size",
                "sizes of tensors must match", "Expected", "kernel size can't be greater", "Input type", "dtype")


def check_output(output: torch.Tensor, n: int) -> torch.Tensor:
    if output.ndim == 0 or output.shape[0] != n:
        raise ValueError(f"the model's output has shape {tuple(output.shape)}; expected a first dimension of {n}")
    if output.is_floating_point() and not bool(torch.isfinite(output).all()):
        raise ValueError(
            "the model's output on this input contains NaN or inf, so there is no finite score to explain; "
            "check the model (an overflow, a log of a negative number) before explaining it"
        )
    return output


@contextmanager
def readable_model_errors(x: torch.Tensor):
    """Turn PyTorch's errors for an input the model cannot take (channels, size, dtype) into a ValueError."""
    try:
        yield
    except RuntimeError as exc:
        if any(word in str(exc) for word in _SHAPE_WORDS):
            raise ValueError(
                f"the model cannot run on an input of shape {tuple(x.shape)} and dtype {x.dtype} "
                f"(check its number of channels and the size it expects): {str(exc).splitlines()[0]}"
            ) from exc
        raise


def _run(model: nn.Module, x: torch.Tensor, per_image: bool):
    def forward(inputs: torch.Tensor):
        return select_output(model(inputs))

    with readable_model_errors(x):
        if per_image and x.shape[0] > 1:
            return torch.cat([with_input_layout(model, x[i : i + 1], forward) for i in range(x.shape[0])])
        return with_input_layout(model, x, forward)


def model_output(model: nn.Module, x: torch.Tensor, *, per_image: bool | None = None) -> torch.Tensor:
    """The model's selected output on a private copy of ``x``, checked (see the module doc).

    Runs under whatever grad mode the caller set; ``per_image=None`` decides by
    :func:`~xai_helpers.engine.fast_copy.uses_batch_statistics`.
    """
    if per_image is None:
        per_image = uses_batch_statistics(model)
    return check_output(_run(model, x, per_image), x.shape[0])
