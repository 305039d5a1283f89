"""What is explained: the model's output, the target, and the score of the target.

**What the model returns.** :func:`select_output` is the one selector every
method and metric uses: a tensor is taken as it is; a mapping gives its
``"logits"`` entry, else its ``"out"`` entry (torchvision's segmentation
models); an object with a ``.logits`` attribute (Hugging Face outputs) gives
that; a tuple or list gives its first element.

**What is explained (``target``).** ``None`` is each image's top-1 class, an
int the same class for every image, a sequence, array or integer tensor one
class per image, and a callable ``f(output) -> (N,)`` any differentiable
score of the selected output: a sum of classes, one sigmoid output of a
multi-label model, a segmentation model's class score summed over a region.
The callable must score each row of the batch on its own (the multi-pass
methods call it on batches of perturbed copies of one image). Floats and
bools are refused, never truncated.

**Which score of the target.** :func:`class_scores` is the one place where a
class index becomes a number: ``"logit"`` (the pre-softmax value, the
gradient papers' choice) or ``"probability"`` (the softmax, the perturbation
papers' choice). A callable target is its own score whatever the kind says.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Callable, Sequence, Union

import numpy as np
import torch

__all__ = [
    "Target",
    "SCORES",
    "select_output",
    "is_callable_target",
    "resolve_targets",
    "target_scores",
    "callable_scores",
    "class_scores",
]

Target = Union[None, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]
SCORES = ("probability", "logit")


def select_output(output) -> torch.Tensor:
    """The tensor that targets refer to, from whatever the model's forward returned (see the module doc)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if key in output and isinstance(output[key], torch.Tensor):
                return output[key]
        raise ValueError(
            f"the model returned a mapping with keys {list(output)}; the selector takes 'logits' or 'out'. "
            "Wrap the model so that it returns the tensor to explain"
        )
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ValueError(
        f"the model returned {type(output).__name__}; expected a tensor, a mapping with 'logits' or 'out', "
        "an object with .logits, or a tuple whose first element is the tensor to explain"
    )


def is_callable_target(target: Target) -> bool:
    return callable(target) and not isinstance(target, torch.Tensor)


def _check_logits(output: torch.Tensor, n: int) -> None:
    if output.ndim != 2 or output.shape[0] != n:
        raise ValueError(
            f"a class-index target needs logits of shape ({n}, classes), but the model's output has shape "
            f"{tuple(output.shape)}; pass a callable target f(output) -> ({n},) scores instead, "
            "e.g. a segmentation class summed over a region"
        )


def _integer_values(target, n: int, valid: str) -> list[int]:
    """The class indices of a sequence, array or tensor target; floats and bools are refused."""
    usage = f"target must be None, an int, a sequence of {n} ints or a callable f(output) -> ({n},); {valid}"
    if isinstance(target, (str, bytes)):
        raise ValueError(usage)
    if isinstance(target, torch.Tensor):
        if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
            raise ValueError(f"target must hold integer class indices, got a {target.dtype} tensor; {valid}")
        return [int(t) for t in target.reshape(-1).tolist()] if target.ndim <= 1 else _too_deep(target, usage)
    if isinstance(target, np.ndarray):
        if target.dtype.kind not in "iu":
            raise ValueError(f"target must hold integer class indices, got an array of {target.dtype}; {valid}")
        return [int(t) for t in target.reshape(-1).tolist()] if target.ndim <= 1 else _too_deep(target, usage)
    try:
        items = list(target)
    except TypeError as exc:
        raise ValueError(usage) from exc
    for t in items:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, Integral):
            kind = "a bool" if isinstance(t, (bool, np.bool_)) else type(t).__name__
            raise ValueError(f"target {t!r} is {kind}, not an int class index; {valid}")
    return [int(t) for t in items]


def _too_deep(target, usage: str):
    raise ValueError(f"{usage}; got an array of shape {tuple(target.shape)}")


def resolve_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Turn ``target`` into one class index per image, as a (N,) long tensor on the logits' device.

    ``None`` means each image's top-1 class, an int the same class for every
    image, and a sequence one class per image.
    """
    n, classes = logits.shape[0], logits.shape[-1]
    valid = f"valid classes are 0..{classes - 1}"
    if is_callable_target(target):
        raise ValueError("this method explains class indices only; target must be None, an int or a sequence of ints")
    if target is None:
        return logits.argmax(-1)
    if isinstance(target, (torch.Tensor, np.ndarray)) and target.ndim == 0:
        target = target.item() if isinstance(target, torch.Tensor) else target[()]
    if isinstance(target, (bool, np.bool_)):
        raise ValueError(f"target must be an int class index, not a bool; {valid}")
    if isinstance(target, Integral):
        if not 0 <= int(target) < classes:
            raise ValueError(f"target {int(target)} is out of range; {valid}")
        return torch.full((n,), int(target), dtype=torch.long, device=logits.device)
    if isinstance(target, float):
        raise ValueError(f"target {target!r} is a float, not an int class index; {valid}")
    values = _integer_values(target, n, valid)
    if len(values) != n:
        raise ValueError(f"got {len(values)} targets for a batch of {n} images; give one per image, or a single int")
    bad = [t for t in values if not 0 <= t < classes]
    if bad:
        raise ValueError(f"target {bad[0]} is out of range; {valid}")
    return torch.tensor(values, dtype=torch.long, device=logits.device)


def target_scores(target: Target, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scores, classes): the (N,) logits y^c to explain and the (N,) class indices.

    ``classes`` is None for a callable target, whose value is the score itself.
    """
    n = output.shape[0]
    if is_callable_target(target):
        return callable_scores(target, output), None
    _check_logits(output, n)
    classes = resolve_targets(target, output)
    return output.gather(1, classes[:, None])[:, 0], classes


def callable_scores(target: Callable, output: torch.Tensor) -> torch.Tensor:
    """A callable target's (N,) scores of ``output``, checked for shape."""
    n = output.shape[0]
    scores = target(output)
    if not isinstance(scores, torch.Tensor) or scores.shape not in ((n,), (n, 1)):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"a callable target must return one score per image, shape ({n},); got {got}")
    return scores.reshape(n)


def class_scores(output: torch.Tensor, classes: torch.Tensor | None, kind: str = "logit",
                 target: Target = None) -> torch.Tensor:
    """(B,) score of each row of ``output``: row r's class ``classes[r]`` as ``kind`` ("logit" or
    "probability", the softmax computed in at least float32); with ``classes=None`` the callable
    ``target`` scores the rows itself."""
    if classes is None:
        return callable_scores(target, output)
    values = output.to(torch.promote_types(output.dtype, torch.float32))
    if kind == "probability":
        values = values.softmax(-1)
    return values.gather(1, classes[:, None].to(values.device))[:, 0]
