"""Gradient-weighted CAMs: Grad-CAM, Grad-CAM++ and Smooth Grad-CAM++, each one ``combine`` of the template.

Both need g = dy^c/dA, the gradient of the pre-softmax logit y^c with respect
to the layer's activation A (:mod:`xai_helpers.methods.cam_template`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..engine import ReshapeTransform, Target, finish, layer_pass
from ..engine.inputs import (
    batch_size_value,
    check_input,
    flag,
    number,
    positive_int,
    seed_value,
)
from ..engine.progress import check_progress, progress_bar
from ..engine.scorer import default_batch_size
from .aug_smooth import with_aug_smooth
from .cam_template import layer_heatmap, reduce_channels, weighted_sum

__all__ = [
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_cam_plus_plus_weights",
    "grad_cam_sum",
    "grad_cam_terms",
    "smooth_grad_cam_plus_plus",
    "smooth_grad_cam_plus_plus_weights",
]


def grad_cam_terms(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """alpha_k^c A^k with alpha_k^c the spatial mean of the gradient (Eq. 1): the (N, C, h, w) terms of the map."""
    return grads.mean((2, 3), keepdim=True) * activation


def grad_cam_sum(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_k alpha_k^c A^k (Eqs. 1-2, before the ReLU): (N, h, w)."""
    return grad_cam_terms(activation, grads).sum(1)


@with_aug_smooth
def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    *,
    reshape_transform: ReshapeTransform = None,
    eigen_smooth: bool = False,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2).

    .. math::
        \\alpha_k^c = \\frac{1}{Z} \\sum_i \\sum_j \\frac{\\partial y^c}{\\partial A^k_{ij}}
        \\qquad (1)

        L^c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big) \\qquad (2)

    with y^c the logit of class c (before softmax) and Z = h * w.

    Args:
        model: any differentiable model; its output goes through ``engine.select_output``.
        x: (N, 3, H, W) input batch.
        layer: the module whose output is explained.
        target: None (each image's top-1), an int, N ints, or a callable
            ``f(output) -> (N,)`` score (see ``xai_helpers.engine.targets``).
        reshape_transform: turns the layer's output into (N, C, h, w);
            None detects ViT tokens and Swin's channels-last maps where the
            layout is unambiguous (``xai_helpers.engine.feature_maps``).
        eigen_smooth: pytorch-grad-cam's setting: the first principal
            component of the terms alpha_k^c A^k instead of their sum
            (:func:`~xai_helpers.methods.cam_template.reduce_channels`); not
            in the paper. Every layer method has it where its map is a sum
            over channels, and every layer method has ``aug_smooth``
            (:mod:`xai_helpers.methods.aug_smooth`).

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    return layer_heatmap(model, x, layer, target,
                         lambda a, g: reduce_channels(grad_cam_terms(a, g), eigen_smooth),
                         reshape_transform=reshape_transform)


def grad_cam_plus_plus_weights(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights w_k (Chattopadhay et al. 2018, Eqs. 19 and 7).

    With Y^c = exp(S^c) the higher derivatives of Y become powers of
    g = dS^c/dA, and exp(S^c) cancels from alpha (Eq. 19):

    .. math::
        \\alpha^{kc}_{ij} = \\frac{g_{ij}^2}{2 g_{ij}^2 + \\sum_{a,b} A^k_{ab}\\, g_{ij}^3}

    alpha is 0 where the denominator is 0 (which includes g = 0). The weights
    are then w_k = sum_ij alpha_ij ReLU(g_ij) (Eq. 7); the positive factor
    exp(S^c) in dY/dA scales every w_k alike and vanishes in the min-max step.
    """
    g2 = grads.pow(2)
    return _plus_plus_weights(activation, grads, g2, g2 * grads)


def _plus_plus_weights(activation: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor) -> torch.Tensor:
    """w_k = sum_ij alpha_ij ReLU(g1_ij), alpha = g2 / (2 g2 + sum_ab A_ab g3), 0 where the denominator is 0."""
    sum_a = activation.sum((2, 3), keepdim=True)
    denominator = 2 * g2 + sum_a * g3
    nonzero = denominator != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0.0)
    return (alpha * g1.clamp_min(0)).sum((2, 3))


@with_aug_smooth
def grad_cam_plus_plus(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    *,
    reshape_transform: ReshapeTransform = None,
    eigen_smooth: bool = False,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19 with the exponential closed form, and Eq. 7).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c A^k\\Big), \\qquad
        w_k^c = \\sum_{i,j} \\alpha^{kc}_{ij}\\, \\mathrm{ReLU}\\Big(\\frac{\\partial S^c}{\\partial A^k_{ij}}\\Big)

    with alpha from :func:`grad_cam_plus_plus_weights`. This is the paper's
    alpha, as pytorch-grad-cam computes it, up to its +1e-6 in the
    denominator (1.5.7), which is not small where g^2 is below about 1e-5:
    on the small CNN of ``tests/test_cam_variants.py`` the maps differ by up
    to 0.2, and agree once the epsilon is written in. Variants in the wild:

    * the authors' code also divides alpha by its spatial sum where that is
      non-zero;
    * torchcam (0.5.0) sums A * g^3 instead of multiplying sum(A) by g^3, and
      its division of alpha writes into a copy made by boolean indexing, so
      alpha stays g^2: a silent no-op that only a test against Eq. 19 finds.

    Args and returns as :func:`grad_cam`.
    """
    return layer_heatmap(model, x, layer, target,
                         lambda a, g: weighted_sum(grad_cam_plus_plus_weights(a, g), a, eigen_smooth),
                         reshape_transform=reshape_transform)


def smooth_grad_cam_plus_plus_weights(activation: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """Smooth Grad-CAM++ channel weights (N, C) from the clean activation and the n noisy gradients.

    Grad-CAM++'s weights with each power of the gradient replaced by its mean
    over the noisy copies, D^p = (1/n) sum_m (g_m)^p (Omeiza et al. 2019):
    alpha = D^2 / (2 D^2 + sum_ab A_ab D^3), w_k = sum_ij alpha_ij ReLU(D^1_ij).
    """
    d1 = torch.stack(grads).mean(0)
    d2 = torch.stack([g.pow(2) for g in grads]).mean(0)
    d3 = torch.stack([g.pow(3) for g in grads]).mean(0)
    return _plus_plus_weights(activation, d1, d2, d3)


@with_aug_smooth
def smooth_grad_cam_plus_plus(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    *,
    samples: int = 4,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int | None = None,
    progress=False,
    reshape_transform: ReshapeTransform = None,
    eigen_smooth: bool = False,
) -> torch.Tensor:
    """Smooth Grad-CAM++ (Omeiza, Speakman, Cintas, Weldemariam 2019, arXiv:1908.01224; equation numbers not
    checked here): Grad-CAM++ on SmoothGrad's noisy copies.

    .. math::
        D^{p}_{k,ij} = \\frac{1}{n} \\sum_{m=1}^{n}
        \\Big(\\frac{\\partial y^c(x + \\epsilon_m)}{\\partial A^k_{ij}}\\Big)^p, \\quad
        \\alpha^{kc}_{ij} = \\frac{D^2_{k,ij}}{2 D^2_{k,ij} + \\sum_{a,b} A^k_{ab} D^3_{k,ij}}, \\quad
        w_k^c = \\sum_{i,j} \\alpha^{kc}_{ij}\\, \\mathrm{ReLU}(D^1_{k,ij})

    and L^c = ReLU(sum_k w_k^c A^k), with A the clean image's activation and
    epsilon_m ~ N(0, sigma^2), sigma = ``noise`` x (max(x) - min(x)) per
    image, as :func:`xai_helpers.smoothgrad`. With ``noise=0`` it is
    Grad-CAM++ exactly. Noise from a CPU generator seeded with ``seed`` per
    image, one (C, H, W) draw per copy, so the map does not depend on the
    batch size or the device. Cost: 1 forward + ``samples`` forwards and
    backwards from the output to the layer.

    Differences from torchcam's ``SmoothGradCAMpp`` (0.5.0, defaults n = 4,
    sigma = 0.3 in input units): torchcam's docstring says the paper's
    numerator of alpha is D^1 and corrects it to D^2, as here (D^2 is
    Grad-CAM++'s form, and the only one that gives Grad-CAM++ back without
    noise). It also sums A * D^3 instead of multiplying sum(A) by D^3 (as in
    its Grad-CAM++), takes ReLU of the *last* noisy copy's gradient instead
    of the mean D^1, and weights the last noisy copy's activation instead of
    the clean image's A (its hooks overwrite A on every copy); the test
    reproduces all four.

    Args:
        samples: the number n of noisy copies; noise, seed: as for SmoothGrad.
        batch_size: noisy copies per pass (None: 8 on CPU, 128 on CUDA).
        progress: True for a tqdm bar over the copies, or ``progress(done, total)``.
        Others as :func:`grad_cam`.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    check_input(model, x, layer)
    flag("eigen_smooth", eigen_smooth)
    samples = positive_int("samples", samples)
    noise = number("noise", noise, low=0.0, hint=" (a fraction of the image's value range, e.g. 0.15)")
    seed = seed_value(seed)
    size = batch_size_value(batch_size) or default_batch_size(x.device)
    check_progress(progress)
    clean = layer_pass(model, x, layer, target, gradient=False, reshape_transform=reshape_transform)
    targets = target if clean.classes is None else clean.classes
    n = x.shape[0]
    generators = [torch.Generator().manual_seed(seed) for _ in range(n)]
    sigmas = [noise * float(x[i].max() - x[i].min()) for i in range(n)]
    grads: list[list[torch.Tensor]] = [[] for _ in range(n)]
    jobs = [(i, m) for i in range(n) for m in range(samples)]
    with progress_bar(progress, len(jobs), "Smooth Grad-CAM++ noisy copies") as advance:
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            noisy = torch.cat([x[i : i + 1] + sigmas[i] * torch.randn((1, *x.shape[1:]), generator=generators[i],
                                                                        dtype=x.dtype).to(x.device)
                               for i, _ in chunk])
            rows = torch.tensor([i for i, _ in chunk], device=x.device)
            chunk_target = targets[rows] if isinstance(targets, torch.Tensor) else targets
            recorded = layer_pass(model, noisy, layer, chunk_target, reshape_transform=reshape_transform)
            for r, (i, _) in enumerate(chunk):
                grads[i].append(recorded.gradient[r : r + 1].double())
            advance(len(chunk))
    activation = clean.activation.double()
    weights = torch.cat([smooth_grad_cam_plus_plus_weights(activation[i : i + 1], grads[i]) for i in range(n)])
    return finish(weighted_sum(weights, activation, eigen_smooth).float(), x.shape[-2:])
