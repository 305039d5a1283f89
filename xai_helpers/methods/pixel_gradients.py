"""Gradients at the pixel: attributions with the input's own shape, no layer needed.

These methods differentiate the target score with respect to the input image
itself. Their raw output is a signed (N, C, H, W) tensor, the input's shape;
the registry (``xai_helpers.methods``) turns it into the common (N, H, W)
heatmap in [0, 1] with each paper's own reduction.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..engine import Scorer, Target, check_input, input_gradient, make_reference
from ..engine.inputs import choice, flag, number, positive_int, seed_value

__all__ = [
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "path_rule",
    "PATH_RULES",
    "SMOOTHGRAD_AGGREGATES",
]

#: SmoothGrad's statistics of the noisy gradients: the mean (SmoothGrad), the mean square (SmoothGrad²), the variance (VarGrad).
SMOOTHGRAD_AGGREGATES = ("mean", "square", "variance")


def saliency(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Image-specific class saliency, raw (Simonyan, Vedaldi & Zisserman 2014, Sec. 3.1, Eq. 2-3).

    .. math::
        w = \\frac{\\partial S_c}{\\partial I}\\Big|_{I_0}

    the gradient of the class score S_c (the logit, before softmax) at the
    image I_0: the weights of the first-order Taylor expansion
    S_c(I) ~ w^T I + b (Eq. 2).

    Args:
        model: any differentiable model; its output goes through ``engine.select_output``.
        x: (N, C, H, W) input batch.
        target: as :func:`xai_helpers.grad_cam`.

    Returns:
        the signed (N, C, H, W) gradient, on the model's device. The saliency
        map of the paper is :func:`saliency_heatmap` of it.
    """
    gradient, _, _ = input_gradient(model, x, target)
    return gradient


def input_x_gradient(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Gradient x Input (Shrikumar et al. 2016; Ancona et al. 2018, Eq. 3): x * dS_c/dx, raw (N, C, H, W).

    For a linear model S_c = w^T x + b it is each input's exact share w_i x_i
    of S_c - b; for a ReLU network it equals DeepLIFT-Rescale with a zero
    baseline only where no unit crosses zero.
    """
    gradient, _, _ = input_gradient(model, x, target)
    return x.detach() * gradient


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    samples: int = 50,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int | None = None,
    progress=False,
    aggregate: str = "mean",
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017, Eq. 2), raw (N, C, H, W); with ``aggregate``, SmoothGrad² or VarGrad.

    .. math::
        \\hat M_c(x) = \\frac{1}{n} \\sum_{i=1}^{n} M_c\\big(x + \\mathcal N(0, \\sigma^2)\\big),
        \\qquad M_c = \\partial S_c / \\partial x

    with sigma = ``noise`` x (max(x) - min(x)) of each image (the paper's
    "noise level", 10-20 % works best, Sec. 4.1) and S_c the logit.

    The signed gradients are averaged, as in Eq. 2; the heatmap then takes
    max |.| over colour channels like Saliency. captum's
    ``NoiseTunnel(Saliency)`` averages |gradient| instead (its ``abs=True``
    default): a variant that cannot cancel noise. The noise comes from a
    generator seeded with ``seed`` per image, so a batch gives the same maps
    as its images one by one.

    ``aggregate`` chooses the statistic of the n noisy gradients g_i:

    * ``"mean"``: (1/n) sum_i g_i, SmoothGrad (Eq. 2);
    * ``"square"``: (1/n) sum_i g_i^2, SmoothGrad² (Hooker, Erhan, Kindermans
      & Kim 2019, "A Benchmark for Interpretability Methods in Deep Neural
      Networks", Sec. 3, "SG-SQ");
    * ``"variance"``: (1/n) sum_i g_i^2 - ((1/n) sum_i g_i)^2, VarGrad
      (Adebayo, Gilmer, Goodfellow & Kim 2018, "Local Explanation Methods for
      Deep Neural Networks Lack Sensitivity to Parameter Values"; Hooker et
      al. 2019, "VAR"), the population variance, as captum's
      ``NoiseTunnel(nt_type="vargrad")``. Both sums are accumulated in float64
      in the same passes.

    captum's ``nt_type`` names are ``"smoothgrad"``, ``"smoothgrad_sq"`` and ``"vargrad"``.
    """
    check_input(model, x)
    choice("aggregate", aggregate, SMOOTHGRAD_AGGREGATES)
    samples = positive_int("samples", samples)
    noise = number("noise", noise, low=0.0, hint=" (a fraction of the image's value range, e.g. 0.15)")
    seed = seed_value(seed)
    scorer = Scorer(model, x, target, score="logit", batch_size=batch_size, progress=progress,
                    desc="SmoothGrad samples", who="smoothgrad")
    # A CPU generator per image, one sample at a time: the same noise, and so the same map, on every
    # device and for every batch size.
    generators = [torch.Generator().manual_seed(seed) for _ in range(x.shape[0])]
    sigmas = [noise * float(x[i].max() - x[i].min()) for i in range(x.shape[0])]
    drawn = [0] * x.shape[0]

    def build(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        out = []
        for r, c in zip(rows.tolist(), cols.tolist()):
            if c != drawn[r]:
                raise RuntimeError("SmoothGrad's noise must be drawn in order")  # the scorer builds jobs in order
            drawn[r] += 1
            eps = torch.randn((1, *x.shape[1:]), generator=generators[r], dtype=x.dtype).to(x.device)
            out.append(x[r : r + 1] + sigmas[r] * eps)
        return torch.cat(out)

    if aggregate == "mean":
        total = scorer.gradient_sum([samples] * x.shape[0], build)
        return (total / samples).to(x.dtype)
    total, total_sq = scorer.gradient_sum([samples] * x.shape[0], build, squares=True)
    mean_sq = total_sq / samples
    if aggregate == "square":
        return mean_sq.to(x.dtype)
    return (mean_sq - (total / samples).square()).clamp_min(0).to(x.dtype)  # >= 0; rounding can dip below


PATH_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def path_rule(steps: int, method: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature of int_0^1 g(alpha) d alpha: (alphas, weights), float64, ``steps`` points.

    Riemann sums with the left, right or middle point of ``steps`` equal
    intervals (weights 1/steps), the trapezoid rule on ``steps`` equally spaced
    points including both ends, or Gauss-Legendre (exact for polynomials of
    degree 2 steps - 1; captum's default). The same points and weights as captum.
    """
    steps = positive_int("steps", steps)
    choice("method", method, PATH_RULES)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)
    k = torch.arange(steps, dtype=torch.float64)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs steps >= 2 (both ends of the path)")
        weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
        return k / (steps - 1), weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (k + offset) / steps, torch.full((steps,), 1 / steps, dtype=torch.float64)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    reference=None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    return_delta: bool = False,
    progress=False,
):
    """Integrated Gradients (Sundararajan, Taly & Yan 2017, Eq. 1 and its Riemann form, Sec. 5), raw (N, C, H, W).

    .. math::
        \\mathrm{IG}_i(x) = (x_i - x'_i) \\int_0^1
            \\frac{\\partial F\\big(x' + \\alpha (x - x')\\big)}{\\partial x_i}\\, d\\alpha
        \\approx (x_i - x'_i) \\sum_k w_k\\, \\frac{\\partial F(x' + \\alpha_k (x - x'))}{\\partial x_i}

    with F the logit of the class and (alpha_k, w_k) from :func:`path_rule`.
    Completeness (Prop. 1): sum_i IG_i = F(x) - F(x'), up to the quadrature
    error; ``return_delta=True`` also returns that error per image,
    sum_i IG_i - (F(x) - F(x')), which shrinks as ``steps`` grows.

    Args:
        reference: x', see :func:`xai_helpers.engine.make_reference` (default:
            zeros, mid-grey in this package's normalised space; captum's
            ``baselines`` default too).
        steps: points on the path; ``method``: one of ``PATH_RULES``.
        batch_size: path points per forward/backward pass (memory is bounded by it).
    """
    check_input(model, x)
    x0 = make_reference(x, reference)
    flag("return_delta", return_delta)
    alphas, weights = path_rule(steps, method)
    n = x.shape[0]
    scorer = Scorer(model, x, target, score="logit", batch_size=batch_size, progress=progress,
                    desc="Integrated Gradients steps", who="integrated_gradients")
    alphas, weights = alphas.to(x.device), weights.to(x.device)
    step = x - x0

    def build(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return x0[rows] + alphas[cols].to(x.dtype).view(-1, 1, 1, 1) * step[rows]

    integral = scorer.gradient_sum([steps] * n, build, weight=lambda rows, cols: weights[cols])
    attribution = (step.double() * integral).to(x.dtype)
    if not return_delta:
        return attribution
    f_x0 = torch.stack(scorer.run([1] * n, lambda rows, cols: x0[rows]))[:, 0]
    delta = attribution.double().flatten(1).sum(1) - (scorer.base.double() - f_x0.double())
    return attribution, delta
