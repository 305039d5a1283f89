"""How faithful is a heatmap to the model? Measured by asking the model again.

``confidence_kept`` keeps only the most relevant part of the image (by the
heatmap) and asks how much of the model's confidence in the class survives.
A faithful map keeps the evidence, so the ratio stays near (or above) 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import Target, check_input, resolve_targets
from .hooks import evaluating

__all__ = ["keep_top_mask", "confidence_kept"]


def keep_top_mask(heat: torch.Tensor, keep: float = 0.5) -> torch.Tensor:
    """(N, H, W) bool mask of each map's ``keep`` fraction of most relevant pixels.

    Exactly round(keep * H * W) pixels per map; ties are broken by position, so
    the result is deterministic even for a constant map.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    n, h, w = heat.shape
    count = max(1, round(keep * h * w))
    order = heat.flatten(1).argsort(dim=1, descending=True, stable=True)[:, :count]
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=heat.device)
    mask.scatter_(1, order, True)
    return mask.view(n, h, w)


@torch.inference_mode()
def confidence_kept(
    model: nn.Module, x: torch.Tensor, heat: torch.Tensor, target: Target = None, keep: float = 0.5
) -> torch.Tensor:
    """p_c(x restricted to the map's top ``keep`` pixels) / p_c(x), per image.

    Removed pixels are set to 0, the mean colour in the model's normalised
    input space. Returns a (N,) tensor; 1 means the kept half carries all the
    model's confidence, above 1 that the removed half argued against the class.
    """
    check_input(model, x, model)
    if heat.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"heat must have shape {(x.shape[0], *x.shape[-2:])}, got {tuple(heat.shape)}")
    with evaluating(model):
        logits = model(x)
        targets = resolve_targets(target, logits)
        kept = x * keep_top_mask(heat.to(x.device), keep).unsqueeze(1).to(x.dtype)
        before = logits.softmax(-1).gather(1, targets[:, None])[:, 0]
        after = model(kept).softmax(-1).gather(1, targets[:, None])[:, 0]
    return after / before
