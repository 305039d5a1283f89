"""Surrogate methods on superpixels: LIME and Kernel SHAP, and exact Shapley values.

The image is cut into M superpixels (scikit-image's SLIC, or the caller's own
``segments``). A *coalition* z in {0, 1}^M keeps the superpixels with z_j = 1
and replaces the others by ``reference``; the model scores each such image.
Both methods then fit a linear model g(z) = phi_0 + sum_j phi_j z_j to those
scores by weighted least squares; they differ in the weights and the
constraints. Each pixel of the returned map holds its superpixel's phi_j.

The coalitions are sampled from a generator seeded with ``seed`` for each
image, so a batch gives the same values as its images one by one; every
coalition image is a job of the engine's :class:`~xai_helpers.engine.Scorer`.
The Shapley maths (kernel, design, constrained regression, exact values)
lives in :mod:`xai_helpers.methods.shapley`, shared with the tabular methods.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..engine import Scorer, Target, check_input, make_reference
from ..engine.inputs import flag, number, positive_int, seed_value
from .shapley import constrained_wls, kernel_shap_design, shapley_kernel, shapley_values

__all__ = ["SegmentAttribution", "superpixels", "lime", "kernel_shap", "shapley_kernel", "shapley_values"]


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

    n_segments = positive_int("n_segments", n_segments)
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
    if not isinstance(segments, (torch.Tensor, np.ndarray)):
        raise ValueError(f"segments must be None (SLIC superpixels) or an (H, W) or (N, H, W) array or tensor of "
                         f"integer labels, got {type(segments).__name__}")
    seg = torch.as_tensor(segments)
    if seg.is_floating_point() or seg.is_complex() or seg.dtype == torch.bool:
        raise ValueError(f"segments must hold integer labels, got {seg.dtype}")
    if seg.shape == (H, W):
        seg = seg.expand(n, H, W)
    if seg.shape != (n, H, W):
        raise ValueError(f"segments must have shape ({H}, {W}) or ({n}, {H}, {W}), got {tuple(seg.shape)}")
    # Consecutive labels 0..M-1 per image, whatever the caller numbered them.
    return torch.stack([torch.unique(s, return_inverse=True)[1] for s in seg]).to(x.device, torch.int64)


def _coalition_scores(scorer: Scorer, x, fill, seg: torch.Tensor, coalitions: list[torch.Tensor]) -> list[torch.Tensor]:
    """f(h_x(z)) for the coalitions z (S_i, M_i) of every image i, through the scorer: (S_i,) float64 each."""

    def build(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        keep = torch.stack([coalitions[r][c][seg[r]] for r, c in zip(rows.tolist(), cols.tolist())])
        keep = keep.unsqueeze(1).to(x.dtype)  # (B, 1, H, W)
        return x[rows] * keep + fill[rows] * (1 - keep)

    return [v.double() for v in scorer.run([z.shape[0] for z in coalitions], build)]


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
    reference=None,
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
    samples, seed = positive_int("samples", samples), seed_value(seed)
    kernel_width = number("kernel_width", kernel_width, low=0.0, low_open=True)
    alpha = number("alpha", alpha, low=0.0)
    flag("return_segments", return_segments)
    seg = _segments(x, segments)
    fill = make_reference(x, reference)
    work = torch.promote_types(x.dtype, torch.float32)
    scorer = Scorer(model, x, target, score=score, batch_size=batch_size, progress=progress,
                    desc="LIME samples", who="lime")
    coalitions = []
    for i in range(x.shape[0]):
        z = torch.randint(0, 2, (samples, int(seg[i].max()) + 1), generator=torch.Generator().manual_seed(seed))
        z[0] = 1
        coalitions.append(z.to(x.device))
    scores = _coalition_scores(scorer, x, fill, seg, coalitions)
    values, intercepts, fits = [], [], []
    for z, y in zip(coalitions, scores):
        m = z.shape[1]
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


def kernel_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    segments=None,
    samples: int = 1000,
    reference=None,
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
    samples, seed = positive_int("samples", samples), seed_value(seed)
    flag("return_segments", return_segments)
    seg = _segments(x, segments)
    fill = make_reference(x, reference)
    work = torch.promote_types(x.dtype, torch.float32)
    scorer = Scorer(model, x, target, score=score, batch_size=batch_size, progress=progress,
                    desc="Kernel SHAP samples", who="kernel_shap")
    # Job 0 of each image is the empty coalition, f(reference) = phi_0; the others are the design's.
    designs, coalitions = [], []
    for i in range(x.shape[0]):
        m = int(seg[i].max()) + 1
        z, w = kernel_shap_design(m, samples, seed) if m > 1 else (torch.zeros(0, 1, dtype=torch.int64), None)
        designs.append((z.to(x.device), None if w is None else w.to(x.device)))
        coalitions.append(torch.cat([torch.zeros(1, m, dtype=torch.int64), z]).to(x.device))
    scores = _coalition_scores(scorer, x, fill, seg, coalitions)
    values, intercepts, fits = [], [], []
    for i, ((z, w), y) in enumerate(zip(designs, scores)):
        empty, full = y[0], scorer.base[i].double()
        if w is None:  # one superpixel: its value is the whole difference
            values.append((full - empty).reshape(1).to(work))
            intercepts.append(empty.to(work))
            fits.append(1.0)
            continue
        phi = constrained_wls(z.double(), y[1:] - empty, w, full - empty)
        values.append(phi.to(work))
        intercepts.append(empty.to(work))
        fits.append(_weighted_r2(y[1:], empty + z.double() @ phi, w))
    return _result(values, intercepts, fits, seg, return_segments, x.dtype)
