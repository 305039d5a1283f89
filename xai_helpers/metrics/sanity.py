"""Sanity checks: does a map depend on what the model learned? (Adebayo et al. 2018, "Sanity Checks for Saliency Maps")

The model-parameter randomisation test re-initialises learned parameters and
measures how much each method's map changes, with the paper's three measures
(Sec. 3, Fig. 2): Spearman's rank correlation with and without absolute
values, and SSIM on maps scaled to [-1, 1] with a 5 x 5 window and data range 2.

Lesson 07 fixes the protocol and its verdict rule before measuring, and every
lesson that reports a sanity check uses this module, so two lessons cannot
reach different verdicts for the same method:

* :func:`comparable_map`: a signed method's raw attribution summed over colour
  channels and divided by its largest |value|; an unsigned method's heatmap;
* :func:`similarity`: the three measures between two such maps;
* :func:`verdict`: **a method passes if, averaged over the trials, each of the
  three measures is below** :data:`THRESHOLD` (0.5; the threshold is the
  lesson's, not the paper's, which shows curves);
* :func:`classifier_randomisation`: the decisive step, only the classifier
  re-initialised, over several images and seeds.
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .similarity import spearman, ssim, unit_signed

__all__ = ["MEASURES", "THRESHOLD", "reinitialise", "comparable_map", "similarity", "verdict",
           "classifier_randomisation", "summarise"]

MEASURES = ("spearman", "spearman |·|", "ssim")
THRESHOLD = 0.5


def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Draw fresh weights, as at the start of training: Kaiming-normal convolutions, a normal Linear
    (std 0.01, zero bias), BatchNorm reset to the identity. In place: call it on a copy."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d):
                fan_in = sub.weight[0].numel()
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            elif isinstance(sub, nn.Linear):
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * 0.01)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.BatchNorm2d):
                sub.reset_parameters()
                sub.reset_running_stats()


def comparable_map(method, model: nn.Module, x: torch.Tensor, layer: nn.Module, target, settings: dict | None = None):
    """(map on [-1, 1], heatmap) of one image: a signed method's raw attribution summed over channels and divided
    by its largest |value| (the paper compares with and without the sign); an unsigned method's heatmap."""
    raw = method.raw(model, x, layer, target=target, **(settings or {}))
    heat = (raw if method.to_heatmap is None else method.to_heatmap(raw))[0]
    signed = unit_signed(raw) if method.signed else heat[None].double()
    return signed, heat


def similarity(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Adebayo et al.'s three measures between two (1, H, W) maps on [-1, 1]."""
    return {
        "spearman": spearman(a, b).item(),
        "spearman |·|": spearman(a.abs(), b.abs()).item(),
        "ssim": ssim(a, b, window=5, data_range=2.0, uniform=True).item(),
    }


def verdict(means: Mapping[str, float], threshold: float = THRESHOLD) -> str:
    """"passes" if every measure's mean is below ``threshold``, else "FAILS"."""
    return "passes" if max(means[k] for k in MEASURES) < threshold else "FAILS"


def classifier_randomisation(
    model: nn.Module,
    classifier: Callable[[nn.Module], nn.Module],
    methods: Mapping[str, object],
    images: Sequence[tuple[torch.Tensor, int]],
    layer: Callable[[nn.Module], nn.Module],
    seeds: Sequence[int] = (0, 1, 2),
    settings: Callable[[object], dict] = lambda method: {},
    methods_for: Callable[[int], Sequence[str]] | None = None,
    trained_maps: Mapping[int, Mapping[str, torch.Tensor]] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """The classifier step of the cascading randomisation test, over images and seeds.

    For each image (x, target) and seed, a copy of ``model`` gets its
    ``classifier(copy)`` re-initialised (:func:`reinitialise`, a CPU generator
    seeded ``seed``), and each method's map on the copy is compared with its map
    on the trained model (:func:`similarity`). ``layer(model)`` is the layer the
    layer methods explain; ``methods_for(i)`` may restrict the methods run on
    image i (the multi-pass ones on fewer images). ``trained_maps[i][name]``
    may hand over maps of the trained model that the caller has computed already
    (the first output of :func:`comparable_map` with the same layer and
    settings); the others are computed. Returns ``{name: [measures of each trial]}``.
    """
    trials: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    for i, (x, target) in enumerate(images):
        names = list(methods_for(i)) if methods_for is not None else list(methods)
        known = (trained_maps or {}).get(i, {})
        before = {n: known[n] if n in known else
                  comparable_map(methods[n], model, x, layer(model), target, settings(methods[n]))[0] for n in names}
        for seed in seeds:
            randomised = copy.deepcopy(model)
            reinitialise(classifier(randomised), torch.Generator().manual_seed(seed))
            for n in names:
                after, _ = comparable_map(methods[n], randomised, x, layer(randomised), target, settings(methods[n]))
                trials[n].append(similarity(after, before[n]))
    return trials


def summarise(trials: Mapping[str, list[dict[str, float]]], threshold: float = THRESHOLD) -> dict[str, dict]:
    """Per method: the number of trials, each measure's mean, the range of Spearman's rho, and the verdict."""
    out = {}
    for name, rows in trials.items():
        if not rows:
            continue
        means = {k: sum(r[k] for r in rows) / len(rows) for k in MEASURES}
        rhos = [r["spearman"] for r in rows]
        out[name] = {"n": len(rows), "means": means, "rho_range": (min(rhos), max(rhos)),
                     "verdict": verdict(means, threshold)}
    return out
