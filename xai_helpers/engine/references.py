"""The reference input: what "absent" means for a method.

One name, ``reference``, for one idea, in every method that needs it:

* Integrated Gradients' x' (the start of the path) and DeepLIFT's x^0;
* what Occlusion puts under its window, and what RISE, LIME and Kernel SHAP
  put where a mask or coalition hides the image.

The metrics use the same word for what removed pixels become
(``deletion_reference="mean"``, ``"blur"``, ``"noise"``:
:func:`xai_helpers.metrics.reference_image`). The *null baselines* of
lessons 06-07, such as the random map, are methods, not inputs.
"""

from __future__ import annotations

from numbers import Real

import torch

from .inputs import check_finite

__all__ = ["make_reference"]


def make_reference(x: torch.Tensor, reference) -> torch.Tensor:
    """``reference`` as a private tensor of x's shape.

    None or a number is a constant image (0 is the colour whose normalised
    value is 0: mid-grey for this package's EfficientNet, whose inputs are
    (x - 0.5) / 0.5); a tensor must broadcast to (N, C, H, W), e.g. (C, H, W),
    (1, C, H, W) or (C, 1, 1). Non-finite values are refused.
    """
    if reference is None:
        return torch.zeros_like(x)
    if isinstance(reference, Real) and not isinstance(reference, bool):
        value = float(reference)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"reference must be a finite number or tensor, got {reference!r}")
        return torch.full_like(x, value)
    if not isinstance(reference, torch.Tensor):
        raise ValueError(f"reference must be None, a number or a tensor broadcastable to {tuple(x.shape)}, "
                         f"got {type(reference).__name__}")
    check_finite("reference", reference)
    try:
        return torch.broadcast_to(reference.to(device=x.device, dtype=x.dtype), x.shape).clone()
    except RuntimeError as exc:
        raise ValueError(f"a reference of shape {tuple(reference.shape)} does not broadcast to the input's "
                         f"shape {tuple(x.shape)}; give (C, H, W), (1, C, H, W), (N, C, H, W) or a number") from exc
