"""Faithfulness: ask the model again, with the pixels a map calls relevant kept or removed.

* ``confidence_kept``: the dashboard's figure, confidence with the top 50% kept;
* ``average_drop``, ``increase_in_confidence``: Chattopadhay et al. 2018, Sec. 5.1
  (relative, as the paper and torchcam); ``absolute_drop``: pytorch-grad-cam's
  ``DropInConfidence`` (not divided by the score);
* ``deletion_auc``, ``insertion_auc``: Petsiuk et al. 2018 (RISE), Sec. 4.1;
* ``road``: Rong et al. 2022, removal by noisy linear imputation, most- and
  least-relevant first;
* ``faithfulness``: all of the above for many maps at once, each distinct
  masked image scored once, through the engine's one batched scorer.

Pinned definitions, the same in every function here unless its arguments say otherwise:

=================  ==========================================================
score              the softmax **probability** of the class (``score="logit"``
                   for the raw logit); ``target`` as in the method protocol,
                   callables included
space              masking happens in the model's **normalised** input space,
                   so 0 is the colour whose normalised value is 0 (mid-grey
                   for this package's EfficientNet)
drop               **relative**, divided by the score on the full image
                   (Average Drop); ``absolute_drop`` is not divided
deletion           removes ``step`` pixels at a time (224 at 224 x 224 in
                   RISE), most relevant first, replacing them with the
                   ``"mean"`` reference image (``deletion_reference``: "blur", "noise")
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
from torch import nn

from ..engine import Scorer, Target, check_input
from ..engine.inputs import batch_size_value, choice, number, positive_int
from ..engine.progress import check_progress
from ..engine.targets import SCORES
from .removal import REFERENCES, keep_top_mask, noisy_linear_imputation, reference_image

__all__ = [
    "METRICS",
    "confidence_kept",
    "explanation_scores",
    "average_drop",
    "increase_in_confidence",
    "absolute_drop",
    "auc",
    "deletion_insertion_curves",
    "deletion_auc",
    "insertion_auc",
    "road",
    "faithfulness",
]

METRICS = ("drop", "deletion", "insertion", "road")


def _check_heat(model: nn.Module, x: torch.Tensor, heat: torch.Tensor) -> None:
    check_input(model, x)
    if not isinstance(heat, torch.Tensor):
        raise ValueError(f"heat must be a (N, H, W) tensor, got {type(heat).__name__}")
    if heat.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"heat must have shape {(x.shape[0], *x.shape[-2:])}, got {tuple(heat.shape)}")
    if heat.is_floating_point() and not bool(torch.isfinite(heat).all()):
        raise ValueError("heat contains NaN or inf; a map must be finite to rank its pixels")


def confidence_kept(
    model: nn.Module, x: torch.Tensor, heat: torch.Tensor, target: Target = None, keep: float = 0.5
) -> torch.Tensor:
    """p_c(x restricted to the map's top ``keep`` pixels) / p_c(x), per image.

    Removed pixels are set to 0 (the ``"mean"`` reference image). Returns a (N,)
    tensor; 1 means the kept half carries all the model's confidence, above 1
    that the removed half argued against the class.
    """
    _check_heat(model, x, heat)
    mask = keep_top_mask(heat.to(x.device), keep).to(x.dtype)
    before, after = explanation_scores(model, x, mask, target)
    return after / before


# --- Chattopadhay et al. 2018, Sec. 5: Average Drop and Increase in Confidence ----------


def explanation_scores(model: nn.Module, x: torch.Tensor, heat: torch.Tensor, target: Target = None,
                       score: str = "probability"):
    """(Y, O): the class score on the image and on the "explanation map" image * heat.

    Chattopadhay et al. 2018, Sec. 5.1: E = I o L^c. The product is taken in the
    model's normalised input space, so a heat of 0 gives the ``"mean"``
    reference colour; the score is the softmax probability (``score="logit"``: the logit).
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
    reference: str | None = None,
) -> torch.Tensor:
    """RISE's curves: the class score as pixels are removed (deletion) or added (insertion)
    in order of decreasing saliency, ``step`` pixels at a time (Petsiuk et al. 2018, Sec. 4.1).

    Deletion starts from the image and replaces pixels by the ``reference``
    image (default "mean"); insertion starts from the ``reference`` (default
    "blur": Gaussian, sigma 5, kernel 11) and restores the image's pixels.
    Returns (N, S) scores (softmax probabilities unless ``score="logit"``),
    S = ceil(H*W / step) + 1, the first point before any change.
    """
    choice("mode", mode, ("deletion", "insertion"))
    options = {f"{mode}_reference": reference} if reference is not None else {}
    found = faithfulness(model, x, {"map": heat}, target, metrics=(mode,), step=step, batch_size=batch_size,
                         score=score, **options)
    return found["map"][mode]


def deletion_auc(model, x, heat, target: Target = None, step: int = 224) -> torch.Tensor:
    """Area under the deletion curve, per image (lower is better)."""
    return auc(deletion_insertion_curves(model, x, heat, target, "deletion", step))


def insertion_auc(model, x, heat, target: Target = None, step: int = 224) -> torch.Tensor:
    """Area under the insertion curve, per image (higher is better)."""
    return auc(deletion_insertion_curves(model, x, heat, target, "insertion", step))


# --- Rong et al. 2022: ROAD --------------------------------------------------------------


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
    :func:`~xai_helpers.metrics.removal.noisy_linear_imputation`.
    pytorch-grad-cam's ``ROADMostRelevantFirst(percentile=p)`` keeps the
    pixels below the p-th percentile, that is removes the fraction 1 - p/100;
    its ``ROADLeastRelevantFirst(percentile=p)`` removes the fraction 1 - p/100
    least relevant.
    """
    choice("order", order, ("morf", "lerf"))
    return faithfulness(model, x, {"map": heat}, target, metrics=("road",), road_fractions=fractions,
                        road_orders=(order,), score=score, road_noise=noise)["map"][order]


# --- All of them at once --------------------------------------------------------------


def _order_key(order: torch.Tensor) -> str:
    return hashlib.sha1(order.cpu().numpy().tobytes()).hexdigest()


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
    road_tol: float = 1e-4,
    score: str | tuple[str, ...] = "probability",
    deletion_reference: str = "mean",
    insertion_reference: str = "blur",
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
      (Rong et al. 2022, Sec. 4); ``road_tol`` is the imputation's relative
      residual (:func:`~xai_helpers.metrics.removal.noisy_linear_imputation`).

    ``score`` is "probability" or "logit"; a tuple of both returns
    ``{score: {name: {...}}}`` from the same passes. ``target`` as for the
    methods (None, an int, N ints, or a callable, which is its own score).

    Passes are shared where the masked images coincide: the image itself
    (every curve's start or end), the fully deleted and the blurred image (the
    same for every map), and every curve and ROAD point of maps that rank the
    pixels in the same order (CAM and Grad-CAM on a GAP head). Every masked
    image is a job of the engine's :class:`~xai_helpers.engine.Scorer`, which
    batches them (``batch_size``), applies its fast copy and batch-statistics
    rules, and reports ``progress``.
    """
    metrics = tuple(metrics)
    for m in metrics:
        choice("metric", m, METRICS)
    scores = (score,) if isinstance(score, str) else tuple(score)
    for sc in scores:
        choice("score", sc, SCORES)
    choice("deletion_reference", deletion_reference, REFERENCES)
    choice("insertion_reference", insertion_reference, REFERENCES)
    for o in road_orders:
        choice("road order", o, ("morf", "lerf"))
    step = positive_int("step", step)
    fractions = [number("road fraction", f, low=0.0, high=1.0, low_open=True, high_open=True) for f in road_fractions]
    road_noise = number("road_noise", road_noise, low=0.0)
    road_tol = number("road_tol", road_tol, low=0.0, high=1.0, low_open=True, high_open=True)
    batch_size_value(batch_size)
    check_progress(progress)
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError("maps must be a non-empty mapping of name -> (N, H, W) heatmap")
    for heat in maps.values():
        _check_heat(model, x, heat)
    n, _, h, w = x.shape
    pixels = h * w
    counts = list(range(0, pixels, step)) + [pixels]

    scorer = Scorer(model, x, target, score=scores[0], batch_size=batch_size, progress=progress,
                    desc="faithfulness", who="faithfulness")
    references = {"deletion": deletion_reference, "insertion": insertion_reference}
    removed_by = {mode: reference_image(x, references[mode]) for mode in references if mode in metrics}

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
                        return torch.where((rank < k).view(1, h, w), finish, start)
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
                            return noisy_linear_imputation(image[None], removed.view(1, h, w), road_noise, seed=i,
                                                           tol=road_tol)[0]
                        yield ("road", key, o, f), make

    pending = [list(jobs(i)) for i in range(n)]
    values = scorer.run([len(p) for p in pending],
                        lambda rows, cols: torch.stack([pending[r][c][1]() for r, c in zip(rows.tolist(), cols.tolist())]),
                        kinds=scores)
    results = {(sc, i, *key): float(values[i][j, s]) for i in range(n) for j, (key, _) in enumerate(pending[i])
               for s, sc in enumerate(scores)}
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
