"""How good is a heatmap? Faithfulness (ask the model again) and localisation (ask the ground truth).

* ``confidence_kept``: the dashboard's figure, confidence with the top 50% kept;
* ``average_drop``, ``increase_in_confidence``: Chattopadhay et al. 2018, Sec. 5.1;
* ``deletion_auc``, ``insertion_auc``: Petsiuk et al. 2018 (RISE);
* ``pointing_game``, ``energy_pointing_game``: Wang et al. 2020 (Score-CAM), Sec. 5.2;
* ``spearman``, ``ssim``: map similarity for the sanity checks of Adebayo et al. 2018.
"""

from __future__ import annotations

import torch
from torch import nn

from torchvision.transforms.v2 import functional as TF

from .core import Target, check_input, resolve_targets, select_output
from .hooks import evaluating
from .score_method import default_batch_size, fast_inference_copy, uses_batch_statistics

__all__ = [
    "keep_top_mask",
    "confidence_kept",
    "explanation_scores",
    "average_drop",
    "increase_in_confidence",
    "gaussian_blur",
    "auc",
    "deletion_insertion_curves",
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "energy_pointing_game",
    "average_ranks",
    "spearman",
    "ssim",
]


def keep_top_mask(heat: torch.Tensor, keep: float = 0.5) -> torch.Tensor:
    """(N, H, W) bool mask of each map's ``keep`` fraction of most relevant pixels.

    Exactly round(keep * H * W) pixels per map; ties are broken by position, so
    the result is deterministic even for a constant map.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if not isinstance(heat, torch.Tensor) or heat.ndim != 3:
        got = tuple(heat.shape) if isinstance(heat, torch.Tensor) else type(heat).__name__
        raise ValueError(f"heat must be a (N, H, W) tensor of maps, got {got}")
    n, h, w = heat.shape
    count = max(1, round(keep * h * w))
    order = heat.flatten(1).argsort(dim=1, descending=True, stable=True)[:, :count]
    # Out-of-place scatter: works on tensors made under inference_mode too.
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=heat.device).scatter(1, order, True)
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
    before, after = explanation_scores(model, x, keep_top_mask(heat.to(x.device), keep).to(x.dtype), target)
    return after / before


def _check_heat(model: nn.Module, x: torch.Tensor, heat: torch.Tensor) -> None:
    check_input(model, x)
    if not isinstance(heat, torch.Tensor):
        raise ValueError(f"heat must be a (N, H, W) tensor, got {type(heat).__name__}")
    if heat.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"heat must have shape {(x.shape[0], *x.shape[-2:])}, got {tuple(heat.shape)}")


# --- Chattopadhay et al. 2018, Sec. 5: Average Drop and Increase in Confidence ----------


def _class_probability(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    out = []
    for start in range(0, x.shape[0], batch_size):
        logits = select_output(model(x[start : start + batch_size]))
        out.append(logits.softmax(-1).gather(1, targets[start : start + batch_size, None])[:, 0])
    return torch.cat(out)


@torch.inference_mode()
def explanation_scores(model: nn.Module, x: torch.Tensor, heat: torch.Tensor, target: Target = None):
    """(Y, O): the class probability on the image and on the "explanation map" image * heat.

    Chattopadhay et al. 2018, Sec. 5.1: E = I o L^c. The product is taken in the
    model's normalised input space, so a heat of 0 gives the mean colour.
    """
    _check_heat(model, x, heat)
    with evaluating(model):
        logits = select_output(model(x))
        targets = resolve_targets(target, logits)
        y = logits.softmax(-1).gather(1, targets[:, None])[:, 0]
        o = _class_probability(model, x * heat.to(x.device, x.dtype).unsqueeze(1), targets)
    return y, o


def average_drop(y: torch.Tensor, o: torch.Tensor) -> float:
    """Average Drop % = 100/N * sum_i max(0, Y_i - O_i) / Y_i  (lower is better)."""
    return float(((y - o).clamp_min(0) / y).mean() * 100)


def increase_in_confidence(y: torch.Tensor, o: torch.Tensor) -> float:
    """% Increase in Confidence = 100/N * sum_i 1[Y_i < O_i]  (higher is better)."""
    return float((y < o).float().mean() * 100)


# --- Petsiuk et al. 2018 (RISE): deletion and insertion --------------------------------


def gaussian_blur(x: torch.Tensor, sigma: float = 5.0, kernel: int = 11) -> torch.Tensor:
    """Gaussian blur with reflection padding (torchvision's): RISE's insertion start image."""
    return TF.gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def auc(scores: torch.Tensor) -> torch.Tensor:
    """Normalised trapezoid area under curves sampled at equal steps on [0, 1]: (..., S) -> (...)."""
    if scores.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got {scores.shape[-1]}")
    return torch.trapezoid(scores, dx=1.0 / (scores.shape[-1] - 1), dim=-1)


@torch.inference_mode()
def deletion_insertion_curves(
    model: nn.Module,
    x: torch.Tensor,
    heat: torch.Tensor,
    target: Target = None,
    mode: str = "deletion",
    step: int = 224,
    batch_size: int | None = None,
) -> torch.Tensor:
    """RISE's curves: the class probability as pixels are removed (deletion) or added (insertion)
    in order of decreasing saliency, ``step`` pixels at a time.

    Deletion starts from the image and sets pixels to 0 (the mean colour in
    normalised space); insertion starts from a blurred copy (Gaussian, sigma 5,
    kernel 11) and restores the image's pixels. Returns (N, S) probabilities,
    S = ceil(H*W / step) + 1, the first point before any change.

    The S passes per image run, ``batch_size`` images at a time, on the same
    checked private copy of the model that Score-CAM uses
    (``score_method.fast_inference_copy``): same result, about half the time.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive number of pixels, got {step!r}")
    _check_heat(model, x, heat)
    n, _, h, w = x.shape
    pixels = h * w
    counts = list(range(0, pixels, step)) + [pixels]
    with evaluating(model):
        logits = select_output(model(x))
        targets = resolve_targets(target, logits)
        if uses_batch_statistics(model):
            net, batch_size = model, 1  # an image's score must not depend on the rest of its batch
        else:
            net = fast_inference_copy(model, x[:1], logits[:1])
        # Twice Score-CAM's batch: measured fastest on a 2-core CPU for 224 x 224 inputs.
        batch_size = batch_size or 2 * default_batch_size(x.device)
        start = x if mode == "deletion" else gaussian_blur(x)
        finish_image = torch.zeros_like(x) if mode == "deletion" else x
        order = heat.to(x.device).flatten(1).argsort(dim=1, descending=True, stable=True)
        # rank[n, p] = position of pixel p in the saliency order
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(pixels, device=x.device).expand(n, -1))
        curves = torch.empty(n, len(counts), device=x.device)
        for i in range(n):
            for s in range(0, len(counts), batch_size):
                ks = torch.tensor(counts[s : s + batch_size], device=x.device)
                changed = (rank[i][None, :] < ks[:, None]).view(-1, 1, h, w).to(x.dtype)
                images = start[i] * (1 - changed) + finish_image[i] * changed
                images = images.contiguous(memory_format=torch.channels_last)
                probs = select_output(net(images)).float().softmax(-1)[:, targets[i]]
                curves[i, s : s + len(ks)] = probs
    return curves


def deletion_auc(model, x, heat, target: Target = None, step: int = 224) -> torch.Tensor:
    """Area under the deletion curve, per image (lower is better)."""
    return auc(deletion_insertion_curves(model, x, heat, target, "deletion", step))


def insertion_auc(model, x, heat, target: Target = None, step: int = 224) -> torch.Tensor:
    """Area under the insertion curve, per image (higher is better)."""
    return auc(deletion_insertion_curves(model, x, heat, target, "insertion", step))


# --- Wang et al. 2020 (Score-CAM), Sec. 5.2: pointing games -----------------------------


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


# --- Adebayo et al. 2018: similarity of maps for sanity checks ---------------------------


def average_ranks(t: torch.Tensor) -> torch.Tensor:
    """Ranks 0..P-1 of each row of (N, P) values, ties sharing their average rank (as scipy.stats.rankdata)."""
    flat = t.flatten(1).double()
    ordered = flat.sort(dim=1).values
    below = torch.searchsorted(ordered, flat, right=False)  # values strictly smaller
    up_to = torch.searchsorted(ordered, flat, right=True)  # values smaller or equal
    return (below + up_to - 1).double() / 2


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


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each pair of (H, W) maps, Gaussian window; (N,)."""
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x, y = a.double().unsqueeze(1), b.double().unsqueeze(1)
    grid = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
    g = torch.exp(-(grid**2) / (2 * sigma**2))
    g = (g / g.sum()).view(1, 1, 1, -1)

    def blur(t):
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(t, g), g.transpose(2, 3))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()
