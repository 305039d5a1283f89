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
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .fast_copy import uses_batch_statistics
from .targets import select_output

__all__ = ["model_output", "check_output", "readable_model_errors"]

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
    with readable_model_errors(x):
        if per_image and x.shape[0] > 1:
            return torch.cat([select_output(model(x[i : i + 1].clone())) for i in range(x.shape[0])])
        return select_output(model(x.clone()))


def model_output(model: nn.Module, x: torch.Tensor, *, per_image: bool | None = None) -> torch.Tensor:
    """The model's selected output on a private copy of ``x``, checked (see the module doc).

    Runs under whatever grad mode the caller set; ``per_image=None`` decides by
    :func:`~xai_helpers.engine.fast_copy.uses_batch_statistics`.
    """
    if per_image is None:
        per_image = uses_batch_statistics(model)
    return check_output(_run(model, x, per_image), x.shape[0])
