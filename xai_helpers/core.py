"""The pipeline every CAM method shares: validate, run to the layer, pick targets, finish the map.

A method only supplies its channel weights; everything else lives here, the
way pytorch-grad-cam's ``BaseCAM`` does it, but in torch on the model's device.

Finishing a map (``finish``) follows one order for every method:

1. ReLU: keep the evidence *for* the class;
2. bilinear upsampling to the input's H x W (``align_corners=False``);
3. min-max scaling per image to [0, 1]; a constant map becomes all zeros.
"""

from __future__ import annotations

from numbers import Integral
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import LayerCapture, check_submodule, evaluating

__all__ = ["Target", "check_input", "resolve_targets", "forward_with_capture", "finish", "normalize_per_image"]

Target = Union[None, int, Sequence[int], torch.Tensor]


def check_input(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> None:
    """ValueError unless ``x`` is a float (N, 3|C, H, W) tensor and ``layer`` belongs to ``model``."""
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
    if not isinstance(layer, nn.Module):
        raise ValueError(f"layer must be a module of the model, got {type(layer).__name__}")
    check_submodule(model, layer)


def resolve_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Turn ``target`` into one class index per image, as a (N,) long tensor on the logits' device.

    ``None`` means each image's top-1 class, an int the same class for every
    image, and a sequence one class per image.
    """
    n, classes = logits.shape[0], logits.shape[-1]
    valid = f"valid classes are 0..{classes - 1}"
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
        raise ValueError(f"target must be None, an int or a sequence of {n} ints; {valid}") from exc
    if len(values) != n:
        raise ValueError(f"got {len(values)} targets for a batch of {n} images; give one per image, or a single int")
    bad = [t for t in values if not 0 <= t < classes]
    if bad:
        raise ValueError(f"target {bad[0]} is out of range; {valid}")
    return torch.tensor(values, dtype=torch.long, device=logits.device)


def forward_with_capture(model: nn.Module, x: torch.Tensor, layer: nn.Module, grad: bool):
    """Run ``model(x)`` in eval mode, capturing ``layer``'s output A.

    Returns ``(A, logits)``. With ``grad=True``, A is a leaf that requires grad
    and ``logits`` depends on it, so ``torch.autograd.grad(..., A)`` works;
    nothing before the layer is recorded by autograd. With ``grad=False`` the
    pass runs under ``torch.inference_mode``.
    """
    with evaluating(model):
        if grad:
            # inference_mode(False) lets the methods run inside a caller's inference_mode block.
            with torch.inference_mode(False), torch.no_grad(), LayerCapture(layer, grad=True) as cap:
                logits = model(x)
        else:
            with torch.inference_mode(), LayerCapture(layer) as cap:
                logits = model(x)
    activation = cap.check()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, classes), got {shape}")
    return activation, logits


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (H, W) map of a (N, H, W) tensor to [0, 1]; constant maps become zeros."""
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
