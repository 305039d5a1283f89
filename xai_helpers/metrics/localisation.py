"""Does the map point at the object? Localisation against ground-truth masks (Wang et al. 2020, Sec. 5.2)."""

from __future__ import annotations

import torch

__all__ = ["pointing_game", "energy_pointing_game"]


def pointing_game(heat: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """1.0 where the map's maximum falls inside the ground-truth mask, else 0.0; (N,).

    ``tolerance`` grows the mask by that many pixels first (a square neighbourhood),
    as the pointing game of Zhang et al. 2018 does with 15 px at 224 x 224.
    """
    if heat.shape != mask.shape:
        raise ValueError(f"heat {tuple(heat.shape)} and mask {tuple(mask.shape)} must have the same shape")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    region = mask.bool()
    if tolerance:
        kernel = 2 * tolerance + 1
        region = torch.nn.functional.max_pool2d(region[:, None].float(), kernel, 1, tolerance)[:, 0] > 0
    peak = heat.flatten(1).argmax(1)
    return region.flatten(1).gather(1, peak[:, None].to(region.device))[:, 0].float()


def energy_pointing_game(heat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the map's energy inside the ground-truth mask, sum(L * B) / sum(L); (N,).

    A map with no energy at all scores 0.
    """
    if heat.shape != mask.shape:
        raise ValueError(f"heat {tuple(heat.shape)} and mask {tuple(mask.shape)} must have the same shape")
    total = heat.flatten(1).sum(1)
    inside = (heat * mask.to(heat.dtype)).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(heat.dtype).tiny), torch.zeros_like(total))
