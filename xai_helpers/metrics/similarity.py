"""How alike are two maps? Rank correlation and structural similarity, for the sanity checks of Adebayo et al. 2018."""

from __future__ import annotations

import torch

__all__ = ["average_ranks", "spearman", "unit_signed", "ssim"]


def average_ranks(t: torch.Tensor) -> torch.Tensor:
    """Ranks 0..P-1 of each row of (N, P) values, ties sharing their average rank (as scipy.stats.rankdata)."""
    flat = t.flatten(1).double()
    n, p = flat.shape
    values, order = flat.sort(dim=1)
    # A run of equal values in sorted order shares the mean of its first and last position.
    start = torch.ones_like(values, dtype=torch.bool)
    start[:, 1:] = values[:, 1:] != values[:, :-1]
    start[:, 0] = True  # runs never cross rows
    run = start.flatten().cumsum(0) - 1
    position = torch.arange(p, dtype=torch.float64, device=flat.device).repeat(n)
    first = torch.full((int(run[-1]) + 1,), float(p), dtype=torch.float64, device=flat.device)
    first = first.scatter_reduce(0, run, position, "amin")
    last = torch.zeros_like(first).scatter_reduce(0, run, position, "amax")
    mean = ((first + last) / 2)[run].view(n, p)
    return torch.empty_like(mean).scatter_(1, order, mean)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between each pair of maps: (N, H, W) x (N, H, W) -> (N,).

    Pearson correlation of the ranks, ties given their average rank, as
    ``scipy.stats.spearmanr`` does. ReLU'd maps are full of tied zeros, so this
    matters. A constant map correlates 0 (scipy: NaN).
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = ra.norm(dim=1) * rb.norm(dim=1)
    rho = (ra * rb).sum(1) / denominator.clamp_min(1e-300)
    return torch.where(denominator > 0, rho, torch.zeros_like(rho)).float()


def unit_signed(raw: torch.Tensor) -> torch.Tensor:
    """A raw attribution as an (N, H, W) map in [-1, 1]: summed over channels if (N, C, H, W), divided by its max |value|.

    The scale on which Adebayo et al. 2018 (Sec. 3) compare maps with and
    without their sign; a map that is 0 everywhere stays 0.
    """
    raw = raw.detach().double()
    if raw.ndim == 4:
        raw = raw.sum(1)
    if raw.ndim != 3:
        raise ValueError(f"raw attributions must be (N, H, W) or (N, C, H, W), got {tuple(raw.shape)}")
    scale = raw.flatten(1).abs().amax(1).view(-1, 1, 1)
    return torch.where(scale > 0, raw / scale.clamp_min(1e-300), torch.zeros_like(raw))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0,
         uniform: bool = False) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, Eq. 13) of each pair of (H, W) maps, averaged over the valid windows; (N,).

    Gaussian window (``sigma``), population covariances, as Wang et al.;
    ``uniform=True``: a ``window`` x ``window`` box and sample covariances,
    scikit-image's defaults, which Adebayo et al. 2018 used with window 5 and
    data range 2 on maps scaled to [-1, 1] (see :func:`unit_signed`).
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ValueError(f"maps of {tuple(a.shape[-2:])} are smaller than the SSIM window {window}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x, y = a.double().unsqueeze(1), b.double().unsqueeze(1)
    grid = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
    g = torch.ones_like(grid) if uniform else torch.exp(-(grid**2) / (2 * sigma**2))
    g = (g / g.sum()).view(1, 1, 1, -1)
    cov_norm = window**2 / (window**2 - 1) if uniform else 1.0

    def blur(t):
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(t, g), g.transpose(2, 3))

    mu_x, mu_y = blur(x), blur(y)
    var_x = cov_norm * (blur(x * x) - mu_x**2)
    var_y = cov_norm * (blur(y * y) - mu_y**2)
    cov = cov_norm * (blur(x * y) - mu_x * mu_y)
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()
