"""From raw attributions to the common heatmap: one min-max scaling, one finishing order.

Finishing a layer map (:func:`finish`) follows one order for every CAM method:

1. ReLU: keep the evidence *for* the class;
2. bilinear upsampling to the input's H x W (``align_corners=False``);
3. min-max scaling per image to [0, 1] (:func:`normalize_per_image`).

A constant map carries no spatial evidence and becomes all zeros: that is the
one case where a 0/0 is defined away. Any other non-finite value is a bug
upstream (a model that produced NaN, an overflow) and raises ``ValueError``
instead of becoming a normal-looking map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["minmax", "normalize_per_image", "finish", "saliency_heatmap", "evidence_heatmap"]


def _refuse_non_finite(maps: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(
            f"{what} contains NaN or inf although the input was finite: the model (or the method's "
            "settings) produced non-finite values, so no map can be drawn from it"
        )


def minmax(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """(t - min) / (max - min) over ``dims``; where max == min (a constant slice) the result is 0."""
    lo = t.amin(dims, keepdim=True)
    span = t.amax(dims, keepdim=True) - lo
    tiny = torch.finfo(t.dtype).tiny if t.is_floating_point() else 1e-38
    return torch.where(span > 0, (t - lo) / span.clamp_min(tiny), torch.zeros_like(t))


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (H, W) map of a (N, H, W) tensor to [0, 1], in float32; constant maps become zeros."""
    maps = maps.detach().float()
    _refuse_non_finite(maps, "the map")
    return minmax(maps, (1, 2))


def finish(cam: torch.Tensor, size: tuple[int, int], relu_first: bool = True) -> torch.Tensor:
    """(N, h, w) weighted sum -> (N, H, W) float32 heatmap in [0, 1].

    ``relu_first=False`` upsamples before the ReLU, the order of Score-CAM's
    released code (its Eq. 4 and Algorithm 1 apply the ReLU at the layer's
    resolution, as ``relu_first=True`` does); the two differ only where the
    map crosses zero.
    """
    cam = cam.detach().float()
    _refuse_non_finite(cam, "the layer map")
    if relu_first:
        cam = cam.clamp_min(0)
    cam = F.interpolate(cam.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    if not relu_first:
        cam = cam.clamp_min(0)
    return normalize_per_image(cam)


def saliency_heatmap(gradient: torch.Tensor) -> torch.Tensor:
    """Simonyan et al. 2014, Sec. 3.1: M_ij = max_c |w_h(i,j,c)|, then min-max scaled per image: (N, H, W)."""
    return normalize_per_image(gradient.detach().abs().amax(1))


def evidence_heatmap(attribution: torch.Tensor) -> torch.Tensor:
    """Additive attributions -> heatmap: sum over colour channels (a pixel's total
    contribution), keep the evidence *for* the class (ReLU, as the CAM maps do),
    min-max scale per image: (N, C, H, W) or (N, H, W) -> (N, H, W)."""
    a = attribution.detach()
    if a.ndim == 4:
        a = a.sum(1)
    return normalize_per_image(a.clamp_min(0))
