"""Removing pixels: which ones (a map's ranking) and what they become (the reference image).

* :func:`keep_top_mask`: a map's most relevant fraction of pixels, ties broken by position;
* :func:`reference_image`: what removed pixels become, ``"mean"`` (0 in the
  model's normalised space, mid-grey for this package's EfficientNet),
  ``"blur"`` (RISE's insertion start) or ``"noise"``;
* :func:`noisy_linear_imputation`: ROAD's fill (Rong et al. 2022, Sec. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..engine.inputs import choice, number, seed_value

__all__ = ["keep_top_mask", "REFERENCES", "reference_image", "gaussian_blur", "noisy_linear_imputation"]

REFERENCES = ("mean", "blur", "noise")


def keep_top_mask(heat: torch.Tensor, keep: float = 0.5) -> torch.Tensor:
    """(N, H, W) bool mask of each map's ``keep`` fraction of most relevant pixels.

    Exactly round(keep * H * W) pixels per map; ties are broken by position, so
    the result is deterministic even for a constant map.
    """
    keep = number("keep", keep, low=0.0, high=1.0, low_open=True)
    if not isinstance(heat, torch.Tensor) or heat.ndim != 3:
        got = tuple(heat.shape) if isinstance(heat, torch.Tensor) else type(heat).__name__
        raise ValueError(f"heat must be a (N, H, W) tensor of maps, got {got}")
    n, h, w = heat.shape
    count = max(1, round(keep * h * w))
    order = heat.flatten(1).argsort(dim=1, descending=True, stable=True)[:, :count]
    # Out-of-place scatter: works on tensors made under inference_mode too.
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=heat.device).scatter(1, order, True)
    return mask.view(n, h, w)


def reference_image(x: torch.Tensor, kind: str = "mean", seed: int = 0) -> torch.Tensor:
    """What removed pixels become, in the model's normalised input space.

    "mean": 0 (for inputs normalised with a data set's mean and spread, its
    mean colour; for this package's EfficientNet, scaled as (x - 0.5) / 0.5,
    mid-grey); "blur": the image blurred (Gaussian, sigma 5, kernel 11:
    RISE's insertion start); "noise": standard normal noise, from a CPU
    generator seeded ``seed``.
    """
    choice("reference", kind, REFERENCES)
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "blur":
        return gaussian_blur(x)
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed_value(seed)), dtype=x.dtype).to(x.device)


def gaussian_blur(x: torch.Tensor, sigma: float = 5.0, kernel: int = 11) -> torch.Tensor:
    """Gaussian blur with reflection padding (torchvision's): RISE's insertion start image."""
    return TF.gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])



# --- Rong et al. 2022: ROAD, removal by noisy linear imputation ------------------------


def _neighbour_sum(t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_j w_j t(p + o_j) with ROAD's weights: 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones;
    outside the image counts as 0. Shifted slices: much faster than a 3 x 3 convolution on the CPU.

    Uses w = (a a^T) / 12 - delta / 3 with a = (1, 2, 1): two 1-D passes instead of eight shifts.
    """
    p = F.pad(t, (1, 1, 1, 1))
    rows = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # (1, 2, 1) down the columns
    both = rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]  # then along the rows
    if out is None:
        return both / 12 - t / 3
    return torch.sub(both.div_(12), t, alpha=1 / 3, out=out)


def _solve_imputation(x: torch.Tensor, removed: torch.Tensor, tol: float, start: torch.Tensor | None):
    """Jacobi-preconditioned conjugate gradients on the removed pixels of x (C, H, W)."""
    r = removed.to(x.dtype)[None]
    d = _neighbour_sum(torch.ones_like(r))  # the weight of the neighbours inside the image
    inverse_d = 1 / d
    b = r * _neighbour_sum(x * (1 - r))
    u = torch.zeros_like(x) if start is None else r * start
    ap = torch.empty_like(x)

    def apply(v, out):
        _neighbour_sum(r * v, out=out)
        return out.sub_(d * v).neg_().mul_(r)  # r * (d v - W (r v))

    residual = b - apply(u, ap)
    scale = b.flatten(1).norm(dim=1).clamp_min(1e-30)
    z = residual * inverse_d
    p = z.clone()
    rz = (residual * z).flatten(1).sum(1)
    for _ in range(20 * max(x.shape[-2:])):
        if (residual.flatten(1).norm(dim=1) / scale).max() < tol:
            break
        apply(p, ap)
        alpha = (rz / (p * ap).flatten(1).sum(1).clamp_min(1e-30))[:, None, None]
        u.addcmul_(alpha, p)
        residual.addcmul_(alpha, ap, value=-1)
        torch.mul(residual, inverse_d, out=z)
        rz_next = (residual * z).flatten(1).sum(1)
        p.mul_((rz_next / rz.clamp_min(1e-30))[:, None, None]).add_(z)
        rz = rz_next
    return u


def _impute(x: torch.Tensor, removed: torch.Tensor, tol: float) -> torch.Tensor:
    # Solve a half-size problem first and start from it: the smooth part of the
    # solution is then found in few iterations (a cascade, as in multigrid).
    h, w = x.shape[-2:]
    start = None
    if min(h, w) >= 32:
        coarse_x = F.avg_pool2d(x[None], 2, ceil_mode=True)[0]
        coarse_removed = F.avg_pool2d(removed[None, None].to(x.dtype), 2, ceil_mode=True)[0, 0] > 0.5
        coarse = _impute(coarse_x, coarse_removed, tol)
        start = F.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return x * ~removed + removed * _solve_imputation(x, removed, tol, start)


def noisy_linear_imputation(
    x: torch.Tensor, removed: torch.Tensor, noise: float = 0.01, seed: int = 0, tol: float = 1e-4
) -> torch.Tensor:
    """Fill the ``removed`` pixels of x (N, C, H, W) by ROAD's noisy linear imputation (Rong et al. 2022, Sec. 4).

    Each removed pixel becomes the weighted mean of its 8 neighbours (weight
    1/6 for the 4 sharing an edge, 1/12 for the diagonal ones, only those
    inside the image), removed or not: one sparse linear system per image, the
    same for every channel, solved here by preconditioned conjugate gradients
    to a relative residual of ``tol``. Then Gaussian noise of standard
    deviation ``noise`` (in x's units: 0.01 in the normalised space, as the
    paper's reference code) is added to the imputed pixels, from a CPU
    generator seeded ``seed``. ``removed`` is a (N, H, W) bool mask with at
    least one kept pixel per image.
    """
    if removed.shape != (x.shape[0], *x.shape[-2:]) or removed.dtype != torch.bool:
        raise ValueError(f"removed must be a bool mask of shape {(x.shape[0], *x.shape[-2:])}, got "
                         f"{removed.dtype} {tuple(removed.shape)}")
    if removed.flatten(1).all(1).any():
        raise ValueError("every pixel of an image is removed: imputation needs at least one kept pixel")
    filled = torch.stack([_impute(x[i], removed[i].to(x.device), tol) for i in range(x.shape[0])])
    if noise:
        jitter = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)
        filled = filled + noise * jitter * removed[:, None].to(x.device)
    return filled
