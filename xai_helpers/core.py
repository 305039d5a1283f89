"""The pipeline every method shares: validate, run the model, pick what to explain, finish the map.

A CAM-family method only supplies its channel weights; everything else lives
here, the way pytorch-grad-cam's ``BaseCAM`` does it, but in torch on the
model's device.

**What the model returns.** :func:`select_output` is the one selector every
method and metric uses: a tensor is taken as it is; a mapping gives its
``"logits"`` entry, else its ``"out"`` entry (torchvision's segmentation
models); an object with a ``.logits`` attribute (Hugging Face outputs) gives
that; a tuple or list gives its first element.

**What is explained (``target``).** ``None`` is each image's top-1 class, an
int the same class for every image, a sequence or tensor one class per image,
and a callable ``f(output) -> (N,)`` any differentiable score of the selected
output: a sum of classes, one sigmoid output of a multi-label model, a
segmentation model's class score summed over a region. The callable must score
each row of the batch on its own (Score-CAM calls it on batches of masked
copies of one image).

**Layers that are not (N, C, h, w).** ``reshape_transform`` turns a layer's
output into a feature map; ``None`` detects the common cases (see
:func:`to_feature_map`): vision-transformer tokens on a square grid, with or
without a class token, and Swin's channels-last maps.

Finishing a map (``finish``) follows one order for every CAM method:

1. ReLU: keep the evidence *for* the class;
2. bilinear upsampling to the input's H x W (``align_corners=False``);
3. min-max scaling per image to [0, 1]; a constant map becomes all zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import LayerCapture, check_submodule, evaluating

__all__ = [
    "Target",
    "ReshapeTransform",
    "check_input",
    "check_layer",
    "select_output",
    "resolve_targets",
    "target_scores",
    "to_feature_map",
    "tokens_to_grid",
    "nhwc_to_nchw",
    "forward_with_capture",
    "finish",
    "normalize_per_image",
]

Target = Union[None, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]
ReshapeTransform = Optional[Callable[[torch.Tensor], torch.Tensor]]


def check_input(model: nn.Module, x: torch.Tensor, layer: nn.Module | None = None) -> None:
    """ValueError unless ``x`` is a float (N, C, H, W) tensor and ``layer`` (if given) belongs to ``model``."""
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
    if layer is not None:
        check_layer(model, layer)


def check_layer(model: nn.Module, layer) -> None:
    if not isinstance(layer, nn.Module):
        raise ValueError(f"layer must be a module of the model, got {type(layer).__name__}")
    check_submodule(model, layer)


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


def _check_logits(output: torch.Tensor, n: int) -> None:
    if output.ndim != 2 or output.shape[0] != n:
        raise ValueError(
            f"a class-index target needs logits of shape ({n}, classes), but the model's output has shape "
            f"{tuple(output.shape)}; pass a callable target f(output) -> ({n},) scores instead, "
            "e.g. a segmentation class summed over a region"
        )


def resolve_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Turn ``target`` into one class index per image, as a (N,) long tensor on the logits' device.

    ``None`` means each image's top-1 class, an int the same class for every
    image, and a sequence one class per image.
    """
    n, classes = logits.shape[0], logits.shape[-1]
    valid = f"valid classes are 0..{classes - 1}"
    if callable(target) and not isinstance(target, torch.Tensor):
        raise ValueError("this method explains class indices only; target must be None, an int or a sequence of ints")
    if target is None:
        return logits.argmax(-1)
    if isinstance(target, torch.Tensor) and target.ndim == 0:
        target = int(target)
    if isinstance(target, bool):
        raise ValueError(f"target must be an int class index, not a bool; {valid}")
    if isinstance(target, Integral):
        if not 0 <= int(target) < classes:
            raise ValueError(f"target {int(target)} is out of range; {valid}")
        return torch.full((n,), int(target), dtype=torch.long, device=logits.device)
    try:
        values = [int(t) for t in (target.tolist() if isinstance(target, torch.Tensor) else target)]
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"target must be None, an int, a sequence of {n} ints or a callable f(output) -> ({n},); {valid}"
        ) from exc
    if len(values) != n:
        raise ValueError(f"got {len(values)} targets for a batch of {n} images; give one per image, or a single int")
    bad = [t for t in values if not 0 <= t < classes]
    if bad:
        raise ValueError(f"target {bad[0]} is out of range; {valid}")
    return torch.tensor(values, dtype=torch.long, device=logits.device)


def is_callable_target(target: Target) -> bool:
    return callable(target) and not isinstance(target, torch.Tensor)


def target_scores(target: Target, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scores, classes): the (N,) scores y^c to explain and the (N,) class indices.

    ``classes`` is None for a callable target, whose value is the score itself.
    """
    n = output.shape[0]
    if is_callable_target(target):
        scores = target(output)
        if not isinstance(scores, torch.Tensor) or scores.shape not in ((n,), (n, 1)):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"a callable target must return one score per image, shape ({n},); got {got}")
        return scores.reshape(n), None
    _check_logits(output, n)
    classes = resolve_targets(target, output)
    return output.gather(1, classes[:, None])[:, 0], classes


def _square(count: int) -> int | None:
    side = math.isqrt(count)
    return side if side * side == count and side > 0 else None


def tokens_to_grid(tokens: torch.Tensor, prefix: int | None = None, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, T, C) transformer tokens -> (N, C, h, w) feature map.

    ``prefix`` tokens (a class token, distillation tokens) are dropped first;
    ``None`` detects a square grid of T or T - 1 tokens. ``grid`` gives (h, w)
    for non-square layouts.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (N, tokens, C), got shape {tuple(tokens.shape)}")
    count = tokens.shape[1]
    if prefix is None:
        if grid is not None:
            prefix = count - grid[0] * grid[1]
        elif _square(count):
            prefix = 0
        elif _square(count - 1):
            prefix = 1
        else:
            raise ValueError(
                f"cannot lay {count} tokens out on a square grid (with or without one class token); "
                "pass reshape_transform=lambda t: xh.tokens_to_grid(t, prefix=..., grid=(h, w))"
            )
    patches = tokens[:, prefix:]
    if grid is None:
        side = _square(patches.shape[1])
        if side is None:
            raise ValueError(f"{patches.shape[1]} tokens after dropping {prefix} do not form a square grid; pass grid=(h, w)")
        grid = (side, side)
    if grid[0] * grid[1] != patches.shape[1] or prefix < 0:
        raise ValueError(f"grid {grid} does not hold the {count - prefix} tokens left after dropping {prefix}")
    return patches.reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[2]).permute(0, 3, 1, 2)


def nhwc_to_nchw(t: torch.Tensor) -> torch.Tensor:
    """(N, h, w, C) channels-last maps (Swin, ConvNeXt blocks) -> (N, C, h, w)."""
    return t.permute(0, 3, 1, 2)


def to_feature_map(activation: torch.Tensor, reshape_transform: ReshapeTransform = None) -> torch.Tensor:
    """A layer's output as an (N, C, h, w) feature map.

    With ``reshape_transform`` given, it is applied. With ``None``:

    * (N, C, h, w) is used as it is;
    * (N, h, h, C) with C != h (a square channels-last map, Swin's layout) is permuted;
    * (N, T, C) tokens are laid out on a square grid, dropping a class token if
      T - 1 is square (ViT, DeiT without distillation).
    """
    if reshape_transform is not None:
        out = reshape_transform(activation)
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != activation.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"reshape_transform must return an (N, C, h, w) feature map, got {got}")
        return out
    if activation.ndim == 4:
        n, a, b, c = activation.shape
        if a == b and c != a:
            return nhwc_to_nchw(activation)
        return activation
    if activation.ndim == 3:
        return tokens_to_grid(activation)
    raise ValueError(
        f"the layer's output has shape {tuple(activation.shape)}; CAM methods need a (N, C, h, w) feature map "
        "(or transformer tokens with a reshape_transform)"
    )


def forward_with_capture(model: nn.Module, x: torch.Tensor, layer: nn.Module, grad: bool):
    """Run ``model(x)`` in eval mode, capturing ``layer``'s output A.

    Returns ``(A, output)`` with ``output`` passed through :func:`select_output`.
    With ``grad=True``, A is a leaf that requires grad and ``output`` depends on
    it, so ``torch.autograd.grad(..., A)`` works; nothing before the layer is
    recorded by autograd. With ``grad=False`` the pass runs under
    ``torch.inference_mode``. A is the layer's raw output: apply
    :func:`to_feature_map` to it (and to its gradient).
    """
    with evaluating(model):
        if grad:
            # inference_mode(False) lets the methods run inside a caller's inference_mode block.
            with torch.inference_mode(False), torch.no_grad(), LayerCapture(layer, grad=True) as cap:
                output = model(x)
        else:
            with torch.inference_mode(), LayerCapture(layer) as cap:
                output = model(x)
    activation = cap.check()
    output = select_output(output)
    if output.shape[0] != x.shape[0]:
        raise ValueError(f"the model's output has shape {tuple(output.shape)}; expected a first dimension of {x.shape[0]}")
    return activation, output


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (H, W) map of a (N, H, W) tensor to [0, 1]; constant maps become zeros."""
    maps = torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    span = flat.max(1).values.view(-1, 1, 1) - lo
    # A constant map carries no spatial evidence: zeros, never 0/0 = NaN.
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def finish(cam: torch.Tensor, size: tuple[int, int], relu_first: bool = True) -> torch.Tensor:
    """(N, h, w) weighted sum -> (N, H, W) float32 heatmap in [0, 1].

    ``relu_first=False`` upsamples before the ReLU, the order of Score-CAM's
    Algorithm 1 (the two differ only where the map crosses zero).
    """
    cam = torch.nan_to_num(cam.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    if relu_first:
        cam = cam.clamp_min(0)
    cam = F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    if not relu_first:
        cam = cam.clamp_min(0)
    return normalize_per_image(cam)
