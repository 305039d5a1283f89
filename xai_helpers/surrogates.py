"""Surrogate methods on superpixels: LIME and Kernel SHAP, and exact Shapley values.

The image is cut into M superpixels (scikit-image's SLIC, or the caller's own
``segments``). A *coalition* z in {0, 1}^M keeps the superpixels with z_j = 1
and replaces the others by ``baseline``; the model scores each such image.
Both methods then fit a linear model g(z) = phi_0 + sum_j phi_j z_j to those
scores by weighted least squares; they differ in the weights and the
constraints. Each pixel of the returned map holds its superpixel's phi_j.

The coalitions are sampled from a generator seeded with ``seed`` for each
image, so a batch gives the same values as its images one by one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .batches import Scorer, check_positive_int, progress_bar
from .core import Target, check_input
from .hooks import evaluating
from .pixel_gradients import make_baseline

__all__ = [
    "SegmentAttribution",
    "superpixels",
    "lime",
    "kernel_shap",
    "shapley_kernel",
    "shapley_values",
]


class SegmentAttribution(NamedTuple):
    """What ``return_segments=True`` gives.

    maps: (N, H, W), each pixel its superpixel's value; segments: (N, H, W)
    int64 labels 0..M_i - 1; values: one (M_i,) tensor per image;
    intercept: (N,) phi_0; fit: (N,) weighted R^2 of the surrogate on its samples.
    """

    maps: torch.Tensor
    segments: torch.Tensor
    values: list
    intercept: torch.Tensor
    fit: torch.Tensor


def superpixels(x: torch.Tensor, n_segments: int = 50, compactness: float = 10.0, sigma: float = 1.0) -> torch.Tensor:
    """SLIC superpixels (Achanta et al. 2012) of each image, via ``skimage.segmentation.slic``: (N, H, W) int64.

    SLIC clusters pixels in (colour, position) space; ``compactness`` trades
    colour for position. Each image is min-max scaled to [0, 1] first, so the
    model's normalisation does not matter. Labels are 0..M - 1.
    """
    from skimage.segmentation import slic

    check_positive_int("n_segments", n_segments)
    images = x.detach().float().cpu()
    lo = images.amin((1, 2, 3), keepdim=True)
    span = (images.amax((1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    images = ((images - lo) / span).permute(0, 2, 3, 1).numpy()
    colour = images.shape[-1] > 1  # a single channel is a grey image, not a 3-D volume
    labels = [slic(np.ascontiguousarray(im if colour else im[..., 0], dtype=np.float64), n_segments=n_segments,
                   compactness=compactness, sigma=sigma, start_label=0, channel_axis=-1 if colour else None)
              for im in images]
    return torch.from_numpy(np.stack(labels).astype(np.int64)).to(x.device)


def _segments(x: torch.Tensor, segments) -> torch.Tensor:
    n, H, W = x.shape[0], x.shape[2], x.shape[3]
    if segments is None:
        return superpixels(x)
    seg = torch.as_tensor(np.asarray(segments) if not isinstance(segments, torch.Tensor) else segments)
    if seg.is_floating_point() or seg.dtype == torch.bool:
        raise ValueError(f"segments must hold integer labels, got {seg.dtype}")
    if seg.shape == (H, W):
        seg = seg.expand(n, H, W)
    if seg.shape != (n, H, W):
        raise ValueError(f"segments must have shape ({H}, {W}) or ({n}, {H}, {W}), got {tuple(seg.shape)}")
    # Consecutive labels 0..M-1 per image, whatever the caller numbered them.
    return torch.stack([torch.unique(s, return_inverse=True)[1] for s in seg]).to(x.device, torch.int64)


def _scores_of_coalitions(scorer: Scorer, x, fill, i: int, seg: torch.Tensor, z: torch.Tensor, advance) -> torch.Tensor:
    """f(h_x(z)) for coalitions z (S, M) of image i: (S,) float64."""
    out = torch.empty(z.shape[0], dtype=torch.float64, device=x.device)
    per_batch = scorer.batch_size
    rows = torch.full((per_batch,), i, device=x.device)
    for start in range(0, z.shape[0], per_batch):
        keep = z[start : start + per_batch][:, seg].unsqueeze(1).to(x.dtype)  # (B, 1, H, W)
        images = x[i : i + 1] * keep + fill[i : i + 1] * (1 - keep)
        out[start : start + keep.shape[0]] = scorer.scores(images, rows[: keep.shape[0]]).double()
        advance(keep.shape[0])
    return out


def _weighted_r2(y, pred, w) -> float:
    mean = y[0] + (w * (y - y[0])).sum() / w.sum()
    total = (w * (y - mean) ** 2).sum()
    return float(1 - (w * (y - pred) ** 2).sum() / total) if total > 0 else 1.0


def _result(values, intercepts, fits, seg, return_segments, dtype):
    maps = torch.stack([v.to(dtype)[s] for v, s in zip(values, seg)])
    if not return_segments:
        return maps
    return SegmentAttribution(maps, seg, values, torch.stack(intercepts), torch.tensor(fits))


def lime(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    segments=None,
    samples: int = 1000,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    baseline=None,
    score: str = "probability",
    seed: int = 0,
    batch_size: int | None = None,
    return_segments: bool = False,
    progress=False,
):
    """LIME on superpixels (Ribeiro, Singh & Guestrin 2016, Eqs. 1-2, Sec. 3.3-3.4), raw (N, H, W).

    .. math::
        \\xi(x) = \\arg\\min_{g} \\sum_{z} \\pi_x(z) \\big(f(z) - g(z)\\big)^2 + \\alpha \\lVert \\phi \\rVert^2,
        \\qquad \\pi_x(z) = \\exp\\big(-D(x, z)^2 / \\sigma^2\\big)

    with g(z) = phi_0 + phi^T z, D the cosine distance between the coalition
    z and the all-ones coalition (the image itself), sigma = ``kernel_width``
    and a ridge penalty ``alpha`` (not on phi_0). Sampling as the authors'
    ``lime_image``: the first sample is the image itself, each other keeps
    every superpixel with probability 1/2. ``return_segments=True`` gives a
    :class:`SegmentAttribution` with the weighted R^2 of the fit.

    Variants: ``lime_image`` uses the square root of this kernel and
    scikit-learn's Ridge (alpha = 1); captum's ``Lime`` uses
    exp(-D^2 / (2 sigma^2)) with sigma = 1 and a Lasso by default. Pass
    ``kernel_width``/``alpha`` to match; the lesson shows how much they matter.
    """
    check_input(model, x)
    check_positive_int("samples", samples)
    if not kernel_width > 0 or not alpha >= 0:
        raise ValueError(f"kernel_width must be > 0 and alpha >= 0, got {kernel_width!r} and {alpha!r}")
    seg = _segments(x, segments)
    fill = make_baseline(x, baseline)
    values, intercepts, fits = [], [], []
    work = torch.promote_types(x.dtype, torch.float32)
    with evaluating(model):
        scorer = Scorer(model, x, target, score=score, batch_size=batch_size, fast_copy="lime")
        with progress_bar(progress, x.shape[0] * samples, "LIME samples") as advance:
            for i in range(x.shape[0]):
                m = int(seg[i].max()) + 1
                generator = torch.Generator().manual_seed(seed)
                z = torch.randint(0, 2, (samples, m), generator=generator).to(x.device)
                z[0] = 1
                y = _scores_of_coalitions(scorer, x, fill, i, seg[i], z, advance)
                zd = z.double()
                cosine = zd.sum(1).sqrt() / math.sqrt(m)  # cos(z, 1) = |z| / (sqrt|z| sqrt M)
                w = torch.exp(-((1 - cosine) ** 2) / kernel_width**2)
                # Centring by the weighted means removes phi_0 from the ridge system.
                # (Offset by y[0], so that a constant y gives exactly zero residuals and phi = 0.)
                zm, ym = (w[:, None] * zd).sum(0) / w.sum(), y[0] + (w * (y - y[0])).sum() / w.sum()
                zc, yc = zd - zm, y - ym
                gram = zc.T @ (w[:, None] * zc) + alpha * torch.eye(m, dtype=torch.float64, device=x.device)
                phi = torch.linalg.lstsq(gram, zc.T @ (w * yc)).solution if alpha == 0 else torch.linalg.solve(gram, zc.T @ (w * yc))
                phi0 = ym - zm @ phi
                values.append(phi.to(work))
                intercepts.append(phi0.to(work))
                fits.append(_weighted_r2(y, phi0 + zd @ phi, w))
    return _result(values, intercepts, fits, seg, return_segments, x.dtype)


def shapley_kernel(m: int, size: torch.Tensor) -> torch.Tensor:
    """The Shapley kernel (Lundberg & Lee 2017, Theorem 2): pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)).

    Infinite for |z| = 0 and |z| = M; those two coalitions enter as constraints instead.
    """
    size = size.double()
    binom = torch.exp(torch.lgamma(torch.tensor(m + 1.0, dtype=torch.float64)) - torch.lgamma(size + 1) - torch.lgamma(m - size + 1))
    return (m - 1) / (binom * size * (m - size))


def _all_coalitions(m: int) -> torch.Tensor:
    """Every z with 0 < |z| < M: (2^M - 2, M)."""
    codes = torch.arange(1, 2**m - 1)
    return ((codes[:, None] >> torch.arange(m)) & 1).to(torch.int64)


def _sample_coalitions(m: int, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Paired sampling: sizes drawn with probability proportional to the kernel's mass
    C(M, s) pi(s) = (M - 1) / (s (M - s)), each z followed by its complement (equal weights)."""
    sizes = torch.arange(1, m)
    mass = (m - 1) / (sizes * (m - sizes)).double()
    pairs = (samples + 1) // 2
    chosen = sizes[torch.multinomial(mass / mass.sum(), pairs, replacement=True, generator=generator)]
    order = torch.rand(pairs, m, generator=generator).argsort(1)
    z = (order < chosen[:, None]).to(torch.int64)
    return torch.stack([z, 1 - z], 1).reshape(-1, m)[:samples]


def kernel_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    segments=None,
    samples: int = 1000,
    baseline=None,
    score: str = "probability",
    seed: int = 0,
    batch_size: int | None = None,
    return_segments: bool = False,
    progress=False,
):
    """Kernel SHAP on superpixels (Lundberg & Lee 2017, Theorem 2), raw (N, H, W).

    .. math::
        \\phi = \\arg\\min_{\\phi} \\sum_{z} \\pi_x(z)\\big(f(z) - \\phi_0 - \\phi^T z\\big)^2,
        \\quad \\pi_x(z) = \\frac{M - 1}{\\binom{M}{|z|}\\, |z|\\, (M - |z|)}

    subject to phi_0 = f(empty) and sum_j phi_j = f(x) - f(empty) (local
    accuracy, Eq. 5: the infinite weights of the empty and full coalitions).
    The constraint is solved exactly by eliminating phi_M, as the shap package
    does. When ``samples`` >= 2^M - 2, every coalition is used once with its
    kernel weight, and the result *is* the Shapley values
    (:func:`shapley_values`). Otherwise coalitions are sampled in
    complementary pairs, their size drawn in proportion to the kernel's mass
    (each sample then has weight 1). Cost: the coalitions' forward passes + 2.
    """
    check_input(model, x)
    check_positive_int("samples", samples)
    seg = _segments(x, segments)
    fill = make_baseline(x, baseline)
    values, intercepts, fits = [], [], []
    work = torch.promote_types(x.dtype, torch.float32)
    with evaluating(model):
        scorer = Scorer(model, x, target, score=score, batch_size=batch_size, fast_copy="kernel_shap")
        with progress_bar(progress, x.shape[0] * samples, "Kernel SHAP samples") as advance:
            for i in range(x.shape[0]):
                m = int(seg[i].max()) + 1
                empty = _scores_of_coalitions(scorer, x, fill, i, seg[i], torch.zeros(1, m, dtype=torch.int64, device=x.device), lambda k: None)[0]
                full = scorer.base[i].double()
                if m == 1:
                    values.append((full - empty).reshape(1).to(work))
                    intercepts.append(empty.to(work))
                    fits.append(1.0)
                    continue
                z, w = kernel_shap_design(m, samples, seed)
                z, w = z.to(x.device), w.to(x.device)
                y = _scores_of_coalitions(scorer, x, fill, i, seg[i], z, advance)
                phi = _constrained_wls(z.double(), y - empty, w, full - empty)
                values.append(phi.to(work))
                intercepts.append(empty.to(work))
                fits.append(_weighted_r2(y, empty + z.double() @ phi, w))
    return _result(values, intercepts, fits, seg, return_segments, x.dtype)


def kernel_shap_design(m: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel SHAP's coalitions and weights for M players: every coalition with its Shapley
    kernel weight when ``samples`` >= 2^M - 2 (exact), else paired samples of weight 1."""
    if samples >= 2**m - 2:
        z = _all_coalitions(m)
        return z, shapley_kernel(m, z.sum(1))
    z = _sample_coalitions(m, samples, torch.Generator().manual_seed(seed))
    return z, torch.ones(z.shape[0], dtype=torch.float64)


def _constrained_wls(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """argmin sum w (y - z phi)^2 subject to sum phi = total, by substituting phi_M = total - sum_{j<M} phi_j."""
    xr = z[:, :-1] - z[:, -1:]
    yr = y - z[:, -1] * total
    sw = w.sqrt()
    head = torch.linalg.lstsq(xr * sw[:, None], (yr * sw)[:, None]).solution[:, 0]
    return torch.cat([head, (total - head.sum()).reshape(1)])


def shapley_values(value, m: int) -> torch.Tensor:
    """Exact Shapley values by enumeration (Shapley 1953; Lundberg & Lee 2017, Eq. 8): (M,) float64.

    .. math::
        \\phi_j = \\sum_{S \\subseteq F \\setminus \\{j\\}} \\frac{|S|!\\,(M - |S| - 1)!}{M!}
                  \\big(v(S \\cup \\{j\\}) - v(S)\\big)

    ``value`` maps a (K, M) 0/1 tensor of coalitions to their (K,) values
    v(S); it is called once, on all 2^M coalitions. Meant for small M (2^M
    model calls); M <= 16 is enforced.
    """
    check_positive_int("m", m)
    if m > 16:
        raise ValueError(f"enumerating 2^{m} coalitions is too many; use kernel_shap's sampling for M > 16")
    codes = torch.arange(2**m)
    z = ((codes[:, None] >> torch.arange(m)) & 1).to(torch.int64)
    v = torch.as_tensor(value(z), dtype=torch.float64).reshape(-1).cpu()
    phi = torch.zeros(m, dtype=torch.float64)
    fact = [math.factorial(k) for k in range(m + 1)]
    for j in range(m):
        without = z[:, j] == 0
        s = z[without].sum(1)
        weight = torch.tensor([fact[k] * fact[m - k - 1] / fact[m] for k in s.tolist()], dtype=torch.float64)
        phi[j] = (weight * (v[codes[without] | (1 << j)] - v[codes[without]])).sum()
    return phi
