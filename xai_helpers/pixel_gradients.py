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

from .batches import Scorer, check_positive_int, progress_bar
from .core import Target, check_input, normalize_per_image, select_output, target_scores
from .hooks import evaluating

__all__ = [
    "input_gradient",
    "saliency",
    "saliency_heatmap",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "path_rule",
    "PATH_RULES",
    "evidence_heatmap",
    "make_baseline",
]


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target = None):
    """dy^c/dx for each image, in one forward and one backward pass.

    Returns ``(gradient, classes, output)``: the (N, C, H, W) gradient of each
    image's target score with respect to its own pixels (images are independent
    in eval mode, so the N scores are summed for one backward pass), the (N,)
    class indices (None for a callable target) and the detached output.
    The gradient is taken with ``torch.autograd.grad`` on a private copy of the
    input, so ``x`` and every parameter's ``.grad`` stay untouched.
    """
    check_input(model, x)
    # The caller may be inside no_grad() or inference_mode(): neither must reach the graph.
    with torch.inference_mode(False), torch.enable_grad(), evaluating(model):
        leaf = x.detach().clone().requires_grad_(True)
        # A clone of the leaf goes in, so an in-place first layer cannot write into the leaf.
        output = select_output(model(leaf.clone()))
        scores, classes = target_scores(target, output)
        if not scores.requires_grad:
            raise ValueError("the target's score does not depend on the input; check the model and the target")
        (gradient,) = torch.autograd.grad(scores.sum(), leaf)
    return gradient, classes, output.detach()


def saliency(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Image-specific class saliency, raw (Simonyan, Vedaldi & Zisserman 2014, Sec. 3.1, Eq. 2-3).

    .. math::
        w = \\frac{\\partial S_c}{\\partial I}\\Big|_{I_0}

    the gradient of the class score S_c (the logit, before softmax) at the
    image I_0: the weights of the first-order Taylor expansion
    S_c(I) ~ w^T I + b (Eq. 2).

    Args:
        model: any differentiable model; its output goes through ``core.select_output``.
        x: (N, C, H, W) input batch.
        target: as :func:`xai_helpers.grad_cam`.

    Returns:
        the signed (N, C, H, W) gradient, on the model's device. The saliency
        map of the paper is :func:`saliency_heatmap` of it.
    """
    gradient, _, _ = input_gradient(model, x, target)
    return gradient


def saliency_heatmap(gradient: torch.Tensor) -> torch.Tensor:
    """Simonyan et al. 2014, Sec. 3.1: M_ij = max_c |w_h(i,j,c)|, then min-max scaled per image: (N, H, W)."""
    return normalize_per_image(gradient.detach().abs().amax(1))


def evidence_heatmap(attribution: torch.Tensor) -> torch.Tensor:
    """Additive attributions -> heatmap: sum over colour channels (a pixel's total
    contribution), keep the evidence *for* the class (ReLU, as the CAM maps do),
    min-max scale per image: (N, C, H, W) or (N, H, W) -> (N, H, W)."""
    a = attribution.detach()
    if a.ndim == 4:
        a = a.sum(1)
    return normalize_per_image(a.clamp_min(0))


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
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017, Eq. 2), raw (N, C, H, W).

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
    """
    check_input(model, x)
    check_positive_int("samples", samples)
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"noise must be a non-negative number (a fraction of the image's value range), got {noise!r}")
    with evaluating(model):
        scorer = Scorer(model, x, target, score="logit", batch_size=batch_size)
        n = x.shape[0]
        total = torch.zeros_like(x, dtype=torch.float64)
        per_batch = scorer.batch_size
        with progress_bar(progress, n * samples, "SmoothGrad samples") as advance:
            for i in range(n):
                # A CPU generator: the same noise, and so the same map, on every device.
                generator = torch.Generator().manual_seed(seed)
                sigma = noise * float(x[i].max() - x[i].min())
                rows = torch.full((per_batch,), i, device=x.device)
                for start in range(0, samples, per_batch):
                    k = min(per_batch, samples - start)
                    eps = torch.randn((k, *x.shape[1:]), generator=generator, dtype=x.dtype).to(x.device)
                    grad, _ = scorer.gradients(x[i : i + 1] + sigma * eps, rows[:k])
                    total[i] += grad.double().sum(0)
                    advance(k)
    return (total / samples).to(x.dtype)


def make_baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    """``baseline`` as a tensor of x's shape: None or a number is a constant
    image (0 = the mean colour in the model's normalised space); a tensor must
    broadcast to (N, C, H, W), e.g. (C, H, W), (1, C, H, W) or (C, 1, 1)."""
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise ValueError(f"baseline must be None, a number or a tensor broadcastable to {tuple(x.shape)}, "
                         f"got {type(baseline).__name__}")
    try:
        return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape).clone()
    except RuntimeError as exc:
        raise ValueError(f"a baseline of shape {tuple(baseline.shape)} does not broadcast to the input's "
                         f"shape {tuple(x.shape)}; give (C, H, W), (1, C, H, W), (N, C, H, W) or a number") from exc


PATH_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def path_rule(steps: int, method: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature of int_0^1 g(alpha) d alpha: (alphas, weights), float64, ``steps`` points.

    Riemann sums with the left, right or middle point of ``steps`` equal
    intervals (weights 1/steps), the trapezoid rule on ``steps`` equally spaced
    points including both ends, or Gauss-Legendre (exact for polynomials of
    degree 2 steps - 1; captum's default). The same points and weights as captum.
    """
    check_positive_int("steps", steps)
    if method not in PATH_RULES:
        raise ValueError(f"method must be one of {PATH_RULES}, got {method!r}")
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
    baseline=None,
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
        baseline: x', see :func:`make_baseline` (default: zeros, the mean
            colour in normalised space; captum's default too).
        steps: points on the path; ``method``: one of ``PATH_RULES``.
        batch_size: path points per forward/backward pass (memory is bounded by it).
    """
    check_input(model, x)
    x0 = make_baseline(x, baseline)
    alphas, weights = path_rule(steps, method)
    n = x.shape[0]
    with evaluating(model):
        scorer = Scorer(model, x, target, score="logit", batch_size=batch_size)
        integral = torch.zeros_like(x, dtype=torch.float64)
        per_batch = scorer.batch_size
        # Every (image, step) pair is one row; rows are cut into batches across images.
        pairs = [(i, k) for i in range(n) for k in range(steps)]
        with progress_bar(progress, len(pairs), "Integrated Gradients steps") as advance:
            for start in range(0, len(pairs), per_batch):
                chunk = pairs[start : start + per_batch]
                rows = torch.tensor([i for i, _ in chunk], device=x.device)
                a = alphas[[k for _, k in chunk]].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
                points = x0[rows] + a * (x[rows] - x0[rows])
                grad, _ = scorer.gradients(points, rows)
                w = weights[[k for _, k in chunk]].to(x.device).view(-1, 1, 1, 1)
                integral.index_add_(0, rows, grad.double() * w)
                advance(len(chunk))
        attribution = ((x - x0).double() * integral).to(x.dtype)
        if not return_delta:
            return attribution
        with torch.inference_mode():
            f_x0 = scorer.scores(x0, torch.arange(n, device=x.device))
        delta = attribution.double().flatten(1).sum(1) - (scorer.base.double() - f_x0.double())
    return attribution, delta
