"""pytorch-grad-cam's ``aug_smooth``: a layer method's map averaged over six test-time augmentations.

The image x is flipped left-right or not and its (normalised) values are
multiplied by 0.9, 1 or 1.1: the six transforms T of pytorch-grad-cam's
default ``tta.Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])])``. Each
map is flipped back (T^{-1}; the factor changes nothing spatial), and

.. math::
    L_{aug} = \\mathrm{minmax}\\Big(\\frac{1}{6} \\sum_T T^{-1}\\big(L(T(x))\\big)\\Big)

It is not in any method's paper: pytorch-grad-cam's README offers it "to
make the CAMs look nice". Lesson 11 measures whether it is also more
faithful, against the null baselines.

Differences from pytorch-grad-cam (1.5.7):

* ``target=None`` explains the clean image's top-1 class in all six
  copies (one extra forward pass finds it). pytorch-grad-cam takes each
  copy's own top-1, so a copy whose top class changes averages in a map of
  another class.
* The six copies run as one batch of 6N images (pytorch-grad-cam: six calls).
  Every method here gives each image the same map whatever its batch, so
  this changes no value (the seeded noise of SS-CAM and Smooth Grad-CAM++ is
  per image, the same for each copy).
* The mean is min-max scaled, as every heatmap of the package;
  pytorch-grad-cam returns the mean of six maps in [0, 1] unscaled. The
  scaling is increasing and affine, so the order of the pixels, and with it
  every deletion, insertion and ROAD score, is the same.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from ..engine import (
    check_input,
    evaluating,
    model_output,
    normalize_per_image,
    resolve_targets,
)
from ..engine.inputs import flag
from ..engine.targets import is_callable_target

__all__ = ["AUGMENTATIONS", "augment", "deaugment_mean", "with_aug_smooth"]

#: (flip left-right, factor) of each of the six copies, in pytorch-grad-cam's (ttach's) order.
AUGMENTATIONS = tuple((flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))


def augment(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (6N, C, H, W): the six copies T(x), copy by copy (rows t*N .. t*N + N - 1 are copy t)."""
    return torch.cat([(x.flip(-1) if flip else x) * factor for flip, factor in AUGMENTATIONS])


def deaugment_mean(maps: torch.Tensor) -> torch.Tensor:
    """(6N, H, W) maps of :func:`augment`'s copies -> (N, H, W): each flipped back, averaged, min-max scaled."""
    copies = maps.view(len(AUGMENTATIONS), -1, *maps.shape[1:])
    back = [m.flip(-1) if flip else m for m, (flip, _) in zip(copies, AUGMENTATIONS)]
    return normalize_per_image(torch.stack(back).mean(0))


def _copies_target(model, x: torch.Tensor, target):
    """The target of every copy: the clean image's classes (top-1 for None), repeated; a callable as it is."""
    if is_callable_target(target):
        return target
    with evaluating(model), torch.inference_mode():
        logits = model_output(model, x)
    return resolve_targets(target, logits).repeat(len(AUGMENTATIONS))


def with_aug_smooth(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Give ``function(model, x, ..., target=None, ...)`` the keyword ``aug_smooth=False`` (see the module)."""
    signature = inspect.signature(function)
    smoothed_signature = signature.replace(parameters=[
        *signature.parameters.values(),
        inspect.Parameter("aug_smooth", inspect.Parameter.KEYWORD_ONLY, default=False),
    ])

    @functools.wraps(function)
    def method(*args, aug_smooth: bool = False, **kwargs) -> torch.Tensor:
        if not flag("aug_smooth", aug_smooth):
            return function(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        check_input(given["model"], given["x"], given.get("layer"))
        n = given["x"].shape[0]
        given["target"] = _copies_target(given["model"], given["x"], given["target"])
        given["x"] = augment(given["x"])
        maps = function(*bound.args, **bound.kwargs)
        if maps.shape[0] != len(AUGMENTATIONS) * n:
            raise ValueError(f"aug_smooth needs one map per image, got {maps.shape[0]} maps for "
                             f"{len(AUGMENTATIONS) * n} augmented images")
        return deaugment_mean(maps)

    method.__signature__ = smoothed_signature
    return method
