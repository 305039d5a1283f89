"""Null baselines: maps that know nothing about the model's decision.

An evaluation table means little until it shows what *chance* scores. Each
function here has the method protocol of :mod:`xai_helpers.methods` (it
checks ``x`` and ``target`` with one forward pass, and leaves the model as it
found it), but its map ignores the class, and all but one ignore the model:

* :func:`random_map`: uniform noise from a seeded generator (Hooker et al.
  2019, Sec. 4.1, "a random assignment of importance");
* :func:`centre_gaussian`: a Gaussian blob in the middle of the image, the
  centre bias of photos (Judd et al. 2009, Sec. 4);
* :func:`sobel_edges`: the image's edge magnitude (Hooker et al. 2019,
  Sec. 4.1; Adebayo et al. 2018, Sec. 3, Fig. 1), a map that *looks* like an
  explanation;
* :func:`all_ones`: every pixel relevant, the "fake" map with which Poppi et
  al. 2021 (Sec. 3) show that Average Drop rewards maps that keep everything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import Target, check_input, evaluating, model_output, normalize_per_image, target_scores
from ..engine.inputs import number, seed_value

__all__ = ["random_map", "centre_gaussian", "sobel_edges", "all_ones"]


@torch.inference_mode()
def _check(model: nn.Module, x: torch.Tensor, target: Target) -> None:
    """The protocol's checks: a valid batch, and valid class indices or a callable's scores (one forward pass)."""
    check_input(model, x)
    with evaluating(model):
        target_scores(target, model_output(model, x))


def random_map(model: nn.Module, x: torch.Tensor, target: Target = None, seed: int = 0) -> torch.Tensor:
    """(N, H, W) uniform noise, scaled to [0, 1], the same for every image and call with the same ``seed``.

    Hooker, Erhan, Kindermans, Kim 2019, Sec. 4.1: the control that ranks the
    pixels at random. Drawn from a CPU generator, so every device gives the
    same map; one map for the whole batch, so a batch equals its images one
    by one.
    """
    seed = seed_value(seed)
    _check(model, x, target)
    n, _, h, w = x.shape
    noise = torch.rand(h, w, generator=torch.Generator().manual_seed(seed))
    return normalize_per_image(noise.to(x.device).expand(n, h, w))


def centre_gaussian(model: nn.Module, x: torch.Tensor, target: Target = None, sigma: float = 0.25) -> torch.Tensor:
    """(N, H, W) exp(-((u - 1/2)^2 + (v - 1/2)^2) / (2 sigma^2)) on coordinates u, v in [0, 1].

    The centre bias of Judd, Ehinger, Durand, Torralba 2009, Sec. 4: photographers
    put the object in the middle, so a blob there scores well on any metric
    that rewards the middle. ``sigma`` is a fraction of the image side.
    """
    sigma = number("sigma", sigma, low=0.0, low_open=True, hint=" (a fraction of the image side, e.g. 0.25)")
    _check(model, x, target)
    n, _, h, w = x.shape
    v = (torch.arange(h, dtype=torch.float64, device=x.device) + 0.5) / h - 0.5
    u = (torch.arange(w, dtype=torch.float64, device=x.device) + 0.5) / w - 0.5
    d2 = v[:, None] ** 2 + u[None, :] ** 2
    # Measured from the pixels nearest the centre, so a tiny sigma still peaks there instead of
    # underflowing to an all-zero map (a positive factor, which the min-max step removes anyway).
    blob = torch.exp(-(d2 - d2.min()) / (2 * sigma**2)).float()
    return normalize_per_image(blob.expand(n, h, w))


def sobel_edges(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """(N, H, W) Sobel gradient magnitude of the image, sqrt(G_x^2 + G_y^2) summed over channels, scaled to [0, 1].

    Adebayo et al. 2018, Sec. 3 and Fig. 1; Hooker et al. 2019, Sec. 4.1: an
    edge detector, which depends on the image only. Computed on ``x`` as given
    (edges in the normalised space are the pixel edges scaled per channel),
    replicate padding at the border.
    """
    _check(model, x, target)
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([gx, gx.T])[:, None]  # (2, 1, 3, 3)
    with torch.no_grad():
        n, c, h, w = x.shape
        padded = F.pad(x.detach().reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        g = F.conv2d(padded, kernels).reshape(n, c, 2, h, w)
        magnitude = g.pow(2).sum(2).sqrt().sum(1)
    return normalize_per_image(magnitude)


def all_ones(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """(N, H, W) ones: every pixel equally relevant.

    Poppi, Cornia, Baraldi, Cucchiara 2021, Sec. 3 ("Fake-CAM"): multiplying the
    image by this map changes nothing, so it gets a perfect Average Drop
    (Chattopadhay et al. 2018, Sec. 5.1) while explaining nothing. The one map
    of the package that is constant and not zero: the constant *is* the point.
    Metrics that rank pixels see it in raster order (ties broken by position).
    """
    _check(model, x, target)
    n, _, h, w = x.shape
    return torch.ones(n, h, w, device=x.device)
