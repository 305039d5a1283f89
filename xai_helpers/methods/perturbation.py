"""Perturbation methods: hide part of the image, watch the score. Occlusion and RISE.

No gradients: only forward passes, so they work on any model, including
non-differentiable ones, and their cost is a number of forward passes that
the lesson (08) counts. Every masked copy is a job of the engine's
:class:`xai_helpers.engine.Scorer`, ``batch_size`` at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import Scorer, Target, check_input, make_reference
from ..engine.inputs import flag, fraction, positive_int, seed_value

__all__ = ["occlusion", "occlusion_positions", "default_window", "rise", "rise_masks"]


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints (height, width), got {value!r}")
    return int(value[0]), int(value[1])


def _as_pixels(name: str, value, size: tuple[int, int]):
    """A window or stride given as a fraction of the image side (a float in (0, 1], or a pair) -> pixels."""
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) == 2 and any(isinstance(v, float) for v in pair):
        if any(isinstance(v, float) and not 0 < v <= 1 for v in pair):
            raise ValueError(f"{name} as a fraction of the image side must lie in (0, 1], got {value!r}")
        return tuple(max(1, round(v * s)) if isinstance(v, float) else v for v, s in zip(pair, size))
    return value


def default_window(size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(window, stride) when none is given: a seventh of the image, half-overlapping
    (32 and 16 at 224 x 224, the settings of the benchmarks)."""
    window = tuple(max(1, round(s / 7)) for s in size)
    return window, tuple(max(1, w // 2) for w in window)


def occlusion_positions(size: tuple[int, int], window, stride) -> tuple[int, int]:
    """Window positions along (H, W): ceil((H - h) / s) + 1, as in captum; the
    last window is cut at the image's border where the stride does not fit."""
    (H, W), (h, w), (sh, sw) = size, _pair("window", window), _pair("stride", stride)
    if h > H or w > W:
        raise ValueError(f"the window {(h, w)} is larger than the image {(H, W)}; choose window <= {(H, W)}")
    if (sh > h and H > h) or (sw > w and W > w):
        raise ValueError(f"the stride {(sh, sw)} is larger than the window {(h, w)}, so some pixels would never be "
                         "occluded; choose stride <= window")
    return math.ceil((H - h) / sh) + 1, math.ceil((W - w) / sw) + 1


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    window=None,
    stride=None,
    reference=None,
    score: str = "probability",
    batch_size: int | None = None,
    progress=False,
) -> torch.Tensor:
    r"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2, Fig. 7), raw (N, C, H, W).

    A ``window`` (h, w) slides over the image with ``stride``; at each position
    p the pixels under it, all channels, are replaced by ``reference`` and the
    drop of the class score is recorded. A pixel's attribution is the mean
    drop over the windows that cover it:

    .. math::
        a_{ij} = \frac{1}{|P_{ij}|} \sum_{p \in P_{ij}} \big(f_c(x) - f_c(x_{\setminus p})\big)

    (the same value in every colour channel, captum's ``Occlusion`` output).
    Cost: one forward pass per position, ``occlusion_positions`` of them, plus one.

    Args:
        window, stride: int or (h, w) pixels, or a float (or pair) in (0, 1]: a
            fraction of the image's side, so that one setting suits any size
            (0.25 is 56 pixels at 224 x 224, 16 at 64 x 64); None gives :func:`default_window`.
        reference: what hides a window (see :func:`xai_helpers.engine.make_reference`;
            default 0, mid-grey in this package's normalised space).
        score: ``"probability"`` (the paper's) or ``"logit"``.
        batch_size: occluded images per forward pass (memory is bounded by it).
        progress: True for a progress bar, or a callable ``progress(done, total)``.
    """
    check_input(model, x)
    size = tuple(x.shape[-2:])
    window, stride = _as_pixels("window", window, size), _as_pixels("stride", stride, size)
    if window is None:
        window, default_stride = default_window(size)
        stride = default_stride if stride is None else stride
    elif stride is None:
        stride = tuple(max(1, w // 2) for w in _pair("window", window))
    (h, w), (sh, sw) = _pair("window", window), _pair("stride", stride)
    ph, pw = occlusion_positions(size, (h, w), (sh, sw))
    fill = make_reference(x, reference)
    n, positions = x.shape[0], ph * pw
    scorer = Scorer(model, x, target, score=score, batch_size=batch_size, progress=progress,
                    desc="Occlusion windows", who="occlusion")
    # Window position p covers rows [top_p, top_p + h) and columns [left_p, left_p + w) of the image.
    tops = (torch.arange(ph, device=x.device) * sh).repeat_interleave(pw)
    lefts = (torch.arange(pw, device=x.device) * sw).repeat(ph)
    rows_, cols_ = torch.arange(size[0], device=x.device), torch.arange(size[1], device=x.device)

    def build(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        top, left = tops[cols, None], lefts[cols, None]
        # (k, 1, H, W) window masks, built at once: inside rows [top, top + h) and columns [left, left + w).
        inside = ((rows_ >= top) & (rows_ < top + h))[:, :, None] & ((cols_ >= left) & (cols_ < left + w))[:, None, :]
        return torch.where(inside.unsqueeze(1), fill[rows], x[rows])

    scores = scorer.run([positions] * n, build)
    drops = torch.stack([scorer.base[i] - scores[i] for i in range(n)])
    # Spreading each position's drop over its window is a transposed convolution with a box.
    box = torch.ones(1, 1, h, w, device=x.device, dtype=drops.dtype)
    grid = drops.view(n, 1, ph, pw)
    total = F.conv_transpose2d(grid, box, stride=(sh, sw))[:, 0, : size[0], : size[1]]
    count = F.conv_transpose2d(torch.ones_like(grid[:1]), box, stride=(sh, sw))[:, 0, : size[0], : size[1]]
    mean = total / count.clamp_min(1)
    return mean.unsqueeze(1).expand(-1, x.shape[1], -1, -1).to(x.dtype).contiguous()


def rise_masks(
    count: int,
    size: tuple[int, int],
    grid: int = 7,
    p: float = 0.5,
    seed: int = 0,
    device: torch.device | str = "cpu",
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """RISE's masks (Petsiuk, Das & Saenko 2018, Sec. 3.2): masks ``start..stop`` of ``count``, (k, H, W) in [0, 1].

    1. sample a ``grid`` x ``grid`` binary grid, each cell 1 with probability ``p``;
    2. upsample it bilinearly to (grid + 1) * cell, with cell = ceil(H / grid);
    3. crop H x W at a random shift in [0, cell) in each direction.

    The grids and shifts of all ``count`` masks are drawn first from one
    generator seeded with ``seed``, so a slice is the same whatever the batch
    size that asks for it.
    """
    count, grid, seed = positive_int("count", count), positive_int("grid", grid), seed_value(seed)
    p = fraction("p", p)
    cells, shifts = _rise_draws(count, size, grid, p, seed)
    stop = count if stop is None else stop
    return _rise_crop(cells, shifts, torch.arange(start, stop), size, grid, device)


def _rise_draws(count: int, size: tuple[int, int], grid: int, p: float, seed: int):
    """The grids (count, 1, grid, grid) and shifts (count, 2) of all masks, from one generator seeded ``seed``."""
    H, W = size
    ch, cw = math.ceil(H / grid), math.ceil(W / grid)
    generator = torch.Generator().manual_seed(seed)
    cells = (torch.rand(count, 1, grid, grid, generator=generator) < p).float()
    shifts = torch.stack([torch.randint(0, ch, (count,), generator=generator),
                          torch.randint(0, cw, (count,), generator=generator)], 1)
    return cells, shifts


def _rise_crop(cells, shifts, index: torch.Tensor, size, grid: int, device) -> torch.Tensor:
    """Masks ``index`` (k,): grids upsampled bilinearly to (grid + 1) * cell and cropped at their shifts."""
    H, W = size
    ch, cw = math.ceil(H / grid), math.ceil(W / grid)
    index = index.cpu()
    up = F.interpolate(cells[index].to(device), size=((grid + 1) * ch, (grid + 1) * cw),
                       mode="bilinear", align_corners=False)
    return torch.stack([up[k, 0, dy : dy + H, dx : dx + W] for k, (dy, dx) in enumerate(shifts[index].tolist())])


def rise(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    masks: int = 1000,
    grid: int = 7,
    p: float = 0.5,
    reference=None,
    score: str = "probability",
    centre: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    progress=False,
) -> torch.Tensor:
    r"""RISE (Petsiuk, Das & Saenko 2018, Eqs. 5-6), raw (N, H, W).

    .. math::
        S_{I,f}(\lambda) = \mathbb E_M\big[f(I \odot M) \mid M(\lambda) = 1\big]
        \approx \frac{1}{\mathbb E[M] \cdot N} \sum_{i=1}^{N} f(I \odot M_i)\, M_i(\lambda) \qquad (6)

    with the random masks :func:`rise_masks` and E[M] = p. ``I ⊙ M`` blends
    towards ``reference`` (default 0, mid-grey in this package's normalised
    space) where M < 1.

    ``centre=True`` (default) uses the control variate
    S = f̄ + (1 / (N p)) sum_i (f_i - f̄) M_i, with f̄ the mean score. Since
    E[M_i(λ)] = p at every pixel, it estimates the same S as Eq. 6, with less
    variance: Eq. 6 adds f̄ times the masks' own sampling noise, so a model
    that ignores its input would get a blotchy map instead of a flat one.
    ``centre=False`` is Eq. 6 as printed. The paper uses 4000 masks of a
    7 x 7 grid for ResNet-50 (``masks=4000``); the same masks serve every
    image of the batch. Cost: ``masks`` + 1 forward passes.
    """
    check_input(model, x)
    masks = positive_int("masks", masks)
    grid, p, seed = positive_int("grid", grid), fraction("p", p), seed_value(seed)
    flag("centre", centre)
    fill = make_reference(x, reference)
    size = tuple(x.shape[-2:])
    n = x.shape[0]
    scorer = Scorer(model, x, target, score=score, batch_size=batch_size, progress=progress,
                    desc="RISE masks", who="rise")
    cells, shifts = _rise_draws(masks, size, grid, p, seed)

    def build(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        m = _rise_crop(cells, shifts, cols, size, grid, x.device).unsqueeze(1).to(x.dtype)
        return x[rows] * m + fill[rows] * (1 - m)

    values = torch.stack(scorer.run([masks] * n, build)).double()
    mean = values.mean(1)
    weights = values - mean[:, None] if centre else values
    saliency = torch.zeros(n, *size, device=x.device, dtype=torch.float64)
    # The masks are drawn again rather than kept: (masks, H, W) would not be bounded by the batch size.
    for start in range(0, masks, 256):
        index = torch.arange(start, min(masks, start + 256))
        m = _rise_crop(cells, shifts, index, size, grid, x.device).double()
        saliency += torch.einsum("nk,khw->nhw", weights[:, index.to(x.device)], m)
    saliency = saliency / (masks * p)
    if centre:
        saliency = saliency + mean[:, None, None]
    return saliency.to(torch.promote_types(x.dtype, torch.float32))
