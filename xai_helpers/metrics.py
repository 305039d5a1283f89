"""How good is a heatmap? Faithfulness (ask the model again) and localisation (ask the ground truth).

* ``confidence_kept``: the dashboard's figure, confidence with the top 50% kept;
* ``average_drop``, ``increase_in_confidence``: Chattopadhay et al. 2018, Sec. 5.1
  (relative, as the paper and torchcam); ``absolute_drop``: pytorch-grad-cam's
  ``DropInConfidence`` (not divided by the score);
* ``deletion_auc``, ``insertion_auc``: Petsiuk et al. 2018 (RISE);
* ``road``: Rong et al. 2022, removal by noisy linear imputation, most- and
  least-relevant first;
* ``faithfulness``: all of the above for many maps at once, each distinct
  masked image scored once;
* ``pointing_game``, ``energy_pointing_game``: Wang et al. 2020 (Score-CAM), Sec. 5.2;
* ``spearman``, ``ssim``: map similarity for the sanity checks of Adebayo et al. 2018;
* ``bootstrap_ci``, ``kendall_tau``: how sure a mean is, and how far two rankings agree.

Pinned definitions, the same in every function here unless its arguments say otherwise:

=================  ==========================================================
score              the softmax **probability** of the class (``score="logit"``
                   for the raw logit); ``target`` as in the method protocol
space              masking happens in the model's **normalised** input space,
                   so 0 is the data set's mean colour
drop               **relative**, divided by the score on the full image
                   (Average Drop); ``absolute_drop`` is not divided
deletion           removes ``step`` pixels at a time (224 at 224 x 224 in
                   RISE), most relevant first, replacing them with the
                   **mean colour** (``deletion_baseline``: "blur", "noise")
insertion          starts from the image blurred (Gaussian, sigma 5, kernel
                   11) and puts pixels back most relevant first
ROAD               removes a fraction of the pixels and fills them by noisy
                   linear imputation (noise std 0.01 in normalised space)
ties               broken by position (row-major), so a constant map is
                   scored in raster order
=================  ==========================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
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
    "absolute_drop",
    "SCORES",
    "REMOVAL_BASELINES",
    "removal_image",
    "noisy_linear_imputation",
    "road",
    "faithfulness",
    "bootstrap_ci",
    "kendall_tau",
    "gaussian_blur",
    "auc",
    "deletion_insertion_curves",
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "energy_pointing_game",
    "average_ranks",
    "spearman",
    "unit_signed",
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


SCORES = ("probability", "logit")
REMOVAL_BASELINES = ("mean", "blur", "noise")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _class_score(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    logits = logits.float()
    values = logits.softmax(-1) if score == "probability" else logits
    return values.gather(1, targets[:, None].to(values.device))[:, 0]


def removal_image(x: torch.Tensor, baseline: str = "mean", seed: int = 0) -> torch.Tensor:
    """What removed pixels become, in the model's normalised input space.

    "mean": 0, the data set's mean colour; "blur": the image blurred (Gaussian,
    sigma 5, kernel 11: RISE's insertion start); "noise": standard normal noise
    (pixel noise with the data set's spread), from a CPU generator seeded ``seed``.
    """
    _check_choice("baseline", baseline, REMOVAL_BASELINES)
    if baseline == "mean":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x)
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)


# --- Chattopadhay et al. 2018, Sec. 5: Average Drop and Increase in Confidence ----------


@torch.inference_mode()
def explanation_scores(model: nn.Module, x: torch.Tensor, heat: torch.Tensor, target: Target = None,
                       score: str = "probability"):
    """(Y, O): the class score on the image and on the "explanation map" image * heat.

    Chattopadhay et al. 2018, Sec. 5.1: E = I o L^c. The product is taken in the
    model's normalised input space, so a heat of 0 gives the mean colour; the
    score is the softmax probability (``score="logit"``: the logit).
    """
    found = faithfulness(model, x, {"map": heat}, target, metrics=("drop",), score=score)["map"]
    return found["y"], found["o"]


def average_drop(y: torch.Tensor, o: torch.Tensor) -> float:
    """Average Drop % = 100/N * sum_i max(0, Y_i - O_i) / Y_i  (lower is better; Chattopadhay et al. 2018, Eq. 10).

    Relative: each drop is divided by the image's own score, as in the paper
    and torchcam's ``ClassificationMetric``.
    """
    return float(((y - o).clamp_min(0) / y).mean() * 100)


def increase_in_confidence(y: torch.Tensor, o: torch.Tensor) -> float:
    """% Increase in Confidence = 100/N * sum_i 1[Y_i < O_i]  (higher is better; Chattopadhay et al. 2018, Eq. 11)."""
    return float((y < o).float().mean() * 100)


def absolute_drop(y: torch.Tensor, o: torch.Tensor) -> float:
    """mean_i max(0, Y_i - O_i): pytorch-grad-cam's ``DropInConfidence``, *not* divided by Y_i.

    In the score's own units (probability points, or logits). An image the
    model was unsure of counts less than in :func:`average_drop`.
    """
    return float((y - o).clamp_min(0).mean())


# --- Petsiuk et al. 2018 (RISE): deletion and insertion --------------------------------


def gaussian_blur(x: torch.Tensor, sigma: float = 5.0, kernel: int = 11) -> torch.Tensor:
    """Gaussian blur with reflection padding (torchvision's): RISE's insertion start image."""
    return TF.gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def auc(scores: torch.Tensor) -> torch.Tensor:
    """Normalised trapezoid area under curves sampled at equal steps on [0, 1]: (..., S) -> (...)."""
    if scores.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got {scores.shape[-1]}")
    return torch.trapezoid(scores, dx=1.0 / (scores.shape[-1] - 1), dim=-1)


def deletion_insertion_curves(
    model: nn.Module,
    x: torch.Tensor,
    heat: torch.Tensor,
    target: Target = None,
    mode: str = "deletion",
    step: int = 224,
    batch_size: int | None = None,
    score: str = "probability",
    baseline: str | None = None,
) -> torch.Tensor:
    """RISE's curves: the class score as pixels are removed (deletion) or added (insertion)
    in order of decreasing saliency, ``step`` pixels at a time (Petsiuk et al. 2018, Sec. 4.1).

    Deletion starts from the image and replaces pixels by ``baseline`` (default
    "mean": 0, the mean colour in normalised space); insertion starts from
    ``baseline`` (default "blur": Gaussian, sigma 5, kernel 11) and restores the
    image's pixels. Returns (N, S) scores (softmax probabilities unless
    ``score="logit"``), S = ceil(H*W / step) + 1, the first point before any change.
    """
    _check_choice("mode", mode, ("deletion", "insertion"))
    options = {f"{mode}_baseline": baseline} if baseline is not None else {}
    found = faithfulness(model, x, {"map": heat}, target, metrics=(mode,), step=step, batch_size=batch_size,
                         score=score, **options)
    return found["map"][mode]


def deletion_auc(model, x, heat, target: Target = None, step: int = 224) -> torch.Tensor:
    """Area under the deletion curve, per image (lower is better)."""
    return auc(deletion_insertion_curves(model, x, heat, target, "deletion", step))


def insertion_auc(model, x, heat, target: Target = None, step: int = 224) -> torch.Tensor:
    """Area under the insertion curve, per image (higher is better)."""
    return auc(deletion_insertion_curves(model, x, heat, target, "insertion", step))


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


def road(
    model: nn.Module,
    x: torch.Tensor,
    heat: torch.Tensor,
    target: Target = None,
    fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    order: str = "morf",
    score: str = "probability",
    noise: float = 0.01,
) -> torch.Tensor:
    """ROAD (Rong et al. 2022, Sec. 4): (N, F) class scores after removing each fraction of the pixels.

    ``order="morf"`` removes the most relevant pixels first (a faithful map
    makes the score fall: lower is better), ``"lerf"`` the least relevant
    first (the score should hold: higher is better). round(f * H * W) pixels
    are removed, chosen by rank (ties by position), and filled by
    :func:`noisy_linear_imputation`. pytorch-grad-cam's
    ``ROADMostRelevantFirst(percentile=p)`` keeps the pixels below the p-th
    percentile, that is removes the fraction 1 - p/100; its
    ``ROADLeastRelevantFirst(percentile=p)`` removes the fraction 1 - p/100
    least relevant.
    """
    _check_choice("order", order, ("morf", "lerf"))
    return faithfulness(model, x, {"map": heat}, target, metrics=("road",), road_fractions=fractions,
                        road_orders=(order,), score=score, road_noise=noise)["map"][order]


# --- All of them at once --------------------------------------------------------------

METRICS = ("drop", "deletion", "insertion", "road")


def _order_key(order: torch.Tensor) -> str:
    return hashlib.sha1(order.cpu().numpy().tobytes()).hexdigest()


@torch.inference_mode()
def faithfulness(
    model: nn.Module,
    x: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    target: Target = None,
    *,
    metrics=METRICS,
    step: int = 224,
    road_fractions=(0.2, 0.5, 0.8),
    road_orders=("morf", "lerf"),
    road_noise: float = 0.01,
    score: str | tuple[str, ...] = "probability",
    deletion_baseline: str = "mean",
    insertion_baseline: str = "blur",
    batch_size: int | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> dict:
    """Every faithfulness metric of this module for several maps of the same images, each masked image scored once.

    ``maps`` maps a name to its (N, H, W) heatmap of ``x``. Returns, per name,
    the (N,) or (N, points) tensors of the metrics asked for:

    * "drop": ``y`` (score on the image) and ``o`` (on image * map), for
      Average Drop and Increase in Confidence (Chattopadhay et al. 2018, Sec. 5.1);
    * "deletion", "insertion": the RISE curves (Petsiuk et al. 2018, Sec. 4.1), ``step`` pixels a point;
    * "road": ``morf`` and/or ``lerf``, (N, F) scores at ``road_fractions``
      (Rong et al. 2022, Sec. 4).

    ``score`` is "probability" or "logit"; a tuple of both returns
    ``{score: {name: {...}}}`` from the same passes (the logit and the
    probability come from one forward pass).

    Passes are shared where the masked images coincide: the image itself
    (every curve's start or end), the fully deleted and the blurred image (the
    same for every map), and every curve and ROAD point of maps that rank the
    pixels in the same order (CAM and Grad-CAM on a GAP head). Images go
    through the model ``batch_size`` at a time; when there are curves to
    score, on the checked inference copy that Score-CAM uses (one image at a
    time for a model with batch-statistics BatchNorm).
    """
    metrics = tuple(metrics)
    for m in metrics:
        _check_choice("metric", m, METRICS)
    scores = (score,) if isinstance(score, str) else tuple(score)
    for sc in scores:
        _check_choice("score", sc, SCORES)
    _check_choice("deletion_baseline", deletion_baseline, REMOVAL_BASELINES)
    _check_choice("insertion_baseline", insertion_baseline, REMOVAL_BASELINES)
    for o in road_orders:
        _check_choice("road order", o, ("morf", "lerf"))
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive number of pixels, got {step!r}")
    if any(not 0 < f < 1 for f in road_fractions):
        raise ValueError(f"road_fractions must lie strictly between 0 and 1, got {tuple(road_fractions)}")
    if not maps:
        raise ValueError("maps is empty: give at least one name -> (N, H, W) heatmap")
    for heat in maps.values():
        _check_heat(model, x, heat)
    n, _, h, w = x.shape
    pixels = h * w
    counts = list(range(0, pixels, step)) + [pixels]
    fractions = [float(f) for f in road_fractions]

    with evaluating(model):
        logits = select_output(model(x))
        targets = resolve_targets(target, logits)
        batch_size = batch_size or 2 * default_batch_size(x.device)
        baselines = {"deletion": deletion_baseline, "insertion": insertion_baseline}
        removed_by = {mode: removal_image(x, baselines[mode]) for mode in baselines if mode in metrics}

        # Which maps share a pixel order (curves and ROAD depend on the order only).
        orders, key_of = {}, {}
        for name, heat in maps.items():
            order = heat.to(x.device).flatten(1).argsort(dim=1, descending=True, stable=True)
            keys = []
            for i in range(n):
                key = _order_key(order[i])
                orders.setdefault((i, key), order[i])
                keys.append(key)
            key_of[name] = keys

        def jobs(i: int) -> Iterator[tuple[tuple, Callable[[], torch.Tensor]]]:
            """(key, make image) for every distinct masked copy of image i."""
            image = x[i]
            yield ("image",), lambda: image
            if "drop" in metrics:
                for name, heat in maps.items():
                    yield ("drop", name), lambda heat=heat: image * heat[i].to(x.device, x.dtype)
            for mode in ("deletion", "insertion"):
                if mode not in metrics:
                    continue
                # The image itself is deletion's first and insertion's last point: one pass for both.
                start, finish = (image, removed_by[mode][i]) if mode == "deletion" else (removed_by[mode][i], image)
                yield (mode, "end"), lambda end=removed_by[mode][i]: end
                for (j, key), order in orders.items():
                    if j != i:
                        continue
                    rank = torch.empty_like(order)
                    rank[order] = torch.arange(pixels, device=x.device)
                    for k in counts[1:-1]:
                        def make(rank=rank, k=k, start=start, finish=finish):
                            changed = (rank < k).view(1, h, w)
                            return torch.where(changed, finish, start)
                        yield (mode, key, k), make
            if "road" in metrics:
                for (j, key), order in orders.items():
                    if j != i:
                        continue
                    for o in road_orders:
                        for f in fractions:
                            def make(order=order, o=o, f=f):
                                count = min(round(f * pixels), pixels - 1)  # keep a pixel to impute from
                                chosen = order[:count] if o == "morf" else order[pixels - count:]
                                removed = torch.zeros(pixels, dtype=torch.bool, device=x.device)
                                removed[chosen] = True
                                return noisy_linear_imputation(image[None], removed.view(1, h, w), road_noise, seed=i)[0]
                            yield ("road", key, o, f), make

        total = sum(1 for i in range(n) for _ in jobs(i))
        if uses_batch_statistics(model):
            net, batch_size = model, 1  # an image's score must not depend on the rest of its batch
        elif total > 4 * n:
            # Folding BatchNorm costs a copy of the model and a check pass: worth it for curves, not for
            # the two passes per image of Average Drop or the dashboard's confidence figure.
            net = fast_inference_copy(model, x[:1], logits[:1], who="faithfulness")
        else:
            net = model
        report = _progress_reporter(progress, total)
        done = 0
        results: dict[tuple, float] = {}  # (score, image, *job key) -> value
        for i in range(n):
            pending = list(jobs(i))
            for start in range(0, len(pending), batch_size):
                chunk = pending[start : start + batch_size]
                images = torch.stack([make() for _, make in chunk]).contiguous(memory_format=torch.channels_last)
                logits_out = select_output(net(images))
                for sc in scores:
                    values = _class_score(logits_out, targets[i].expand(len(chunk)), sc)
                    for (key, _), value in zip(chunk, values.tolist()):
                        results[(sc, i, *key)] = value
                done += len(chunk)
                report(done)

    by_score = {sc: _collect(results, sc, maps, key_of, metrics, counts, fractions, road_orders, n) for sc in scores}
    return by_score[score] if isinstance(score, str) else by_score


def _collect(results, sc, maps, key_of, metrics, counts, fractions, road_orders, n):
    """The per-map tensors of one score from the flat table of scored images."""
    def get(*key):
        return results[(sc, *key)]

    out: dict[str, dict[str, torch.Tensor]] = {}
    for name in maps:
        found = {}
        if "drop" in metrics:
            found["y"] = torch.tensor([get(i, "image") for i in range(n)])
            found["o"] = torch.tensor([get(i, "drop", name) for i in range(n)])
        for mode in ("deletion", "insertion"):
            if mode in metrics:
                inner = [[get(i, mode, key_of[name][i], k) for k in counts[1:-1]] for i in range(n)]
                ends = [(get(i, "image"), get(i, mode, "end")) for i in range(n)]
                found[mode] = torch.tensor([
                    [image, *points, end] if mode == "deletion" else [end, *points, image]
                    for (image, end), points in zip(ends, inner)
                ])
        if "road" in metrics:
            for o in road_orders:
                found[o] = torch.tensor([[get(i, "road", key_of[name][i], o, f) for f in fractions] for i in range(n)])
        out[name] = found
    return out


def _progress_reporter(progress, total: int) -> Callable[[int], None]:
    if callable(progress):
        return lambda done: progress(done, total)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="faithfulness", unit="image")

        def update(done: int) -> None:
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update
    return lambda done: None


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


# --- How sure is a mean, and do two rankings agree? ------------------------------------


def bootstrap_ci(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (Efron & Tibshirani 1993, Sec. 13.3).

    Draws ``resamples`` samples of the same size with replacement (CPU
    generator seeded ``seed``, so every machine gets the same interval) and
    returns the (1 - level)/2 and (1 + level)/2 quantiles of their means. The
    values are taken in float64, so the interval does not depend on threads.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if v.numel() == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    index = torch.randint(0, v.numel(), (resamples, v.numel()), generator=torch.Generator().manual_seed(seed))
    means = v[index].mean(1)
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two score lists (Kendall 1945, Eq. 1): agreement of the orders they imply.

    (concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b)) over all
    n0 = n(n-1)/2 pairs, as ``scipy.stats.kendalltau``; 1 is the same ranking,
    -1 the reverse, 0 unrelated. 0 if either list is constant.
    """
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"kendall_tau needs two lists of the same length >= 2, got {a.numel()} and {b.numel()}")
    da = torch.sign(a[:, None] - a[None, :]).triu(1)
    db = torch.sign(b[:, None] - b[None, :]).triu(1)
    pairs_a, pairs_b = da.abs().sum(), db.abs().sum()  # pairs not tied in a, in b
    if pairs_a == 0 or pairs_b == 0:
        return 0.0
    return float((da * db).sum() / torch.sqrt(pairs_a * pairs_b))
