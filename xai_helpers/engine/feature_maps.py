"""A layer's output as an (N, C, h, w) feature map, guessing the layout only where it is unambiguous.

``reshape_transform`` turns a layer's output into a feature map; ``None``
detects the common cases:

* (N, T, C) transformer tokens on a square grid, with or without a class
  token (ViT, DeiT), see :func:`tokens_to_grid`;
* a 4-D output is PyTorch's (N, C, h, w), unless only the channels-last
  reading (N, h, w, C) (Swin's stages) fits the input's size.

"Fits" means that the two spatial sides are the input's H and W divided by one
integer stride s and rounded the same way, floor or ceil:
(floor(H / s), floor(W / s)) or (ceil(H / s), ceil(W / s)). A convolutional
network at 224 x 224 gives (N, 1280, 7, 7): only (7, 7) fits, so it is used
as it is; Swin gives (N, 7, 7, 768), where only the channels-last reading
fits. When both readings fit (a 16-channel map of 16 x 16 from a 32 x 32
input), the shape alone cannot tell: an output of the input's own shape is
read like the input (channels first), and otherwise the layer's type decides
if it is a convolution, normalisation or pooling layer (always channels
first); failing that, the caller is asked for ``reshape_transform``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["ReshapeTransform", "to_feature_map", "tokens_to_grid", "nhwc_to_nchw", "fits_input"]

ReshapeTransform = Optional[Callable[[torch.Tensor], torch.Tensor]]

# Modules whose 4-D output is channels-first by construction.
_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def _square(count: int) -> int | None:
    side = math.isqrt(count)
    return side if side * side == count and side > 0 else None


def tokens_to_grid(tokens: torch.Tensor, prefix: int | None = None, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, T, C) transformer tokens -> (N, C, h, w) feature map.

    ``prefix`` tokens (a class token, distillation tokens) are dropped first;
    ``None`` detects a square grid of T or T - 1 tokens. ``grid`` gives (h, w)
    for non-square layouts.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (N, tokens, C), got shape {tuple(tokens.shape)}")
    count = tokens.shape[1]
    if prefix is None:
        if grid is not None:
            prefix = count - grid[0] * grid[1]
        elif _square(count):
            prefix = 0
        elif _square(count - 1):
            prefix = 1
        else:
            raise ValueError(
                f"cannot lay {count} tokens out on a square grid (with or without one class token); "
                "pass reshape_transform=lambda t: xh.tokens_to_grid(t, prefix=..., grid=(h, w))"
            )
    patches = tokens[:, prefix:]
    if grid is None:
        side = _square(patches.shape[1])
        if side is None:
            raise ValueError(f"{patches.shape[1]} tokens after dropping {prefix} do not form a square grid; pass grid=(h, w)")
        grid = (side, side)
    if grid[0] * grid[1] != patches.shape[1] or prefix < 0:
        raise ValueError(f"grid {grid} does not hold the {count - prefix} tokens left after dropping {prefix}")
    return patches.reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[2]).permute(0, 3, 1, 2)


def nhwc_to_nchw(t: torch.Tensor) -> torch.Tensor:
    """(N, h, w, C) channels-last maps (Swin, ConvNeXt blocks) -> (N, C, h, w)."""
    return t.permute(0, 3, 1, 2)


def fits_input(side: tuple[int, int], size: tuple[int, int]) -> bool:
    """True if (h, w) is (H, W) divided by one integer stride and rounded the same way (floor or ceil)."""
    (h, w), (H, W) = side, size
    if h < 1 or w < 1:
        return False
    for s in range(1, max(H, W) + 1):
        if (H // s, W // s) == (h, w) or (-(-H // s), -(-W // s)) == (h, w):
            return True
    return False


def _layout_of(shape: tuple[int, ...], input_shape: tuple[int, ...] | None, layer: nn.Module | None) -> str:
    _, a, b, c = shape
    if input_shape is None:
        return "nchw"
    size = tuple(input_shape[-2:])
    first, last = fits_input((b, c), size), fits_input((a, b), size)
    if last and not first:
        return "nhwc"
    if first and last and (tuple(shape[1:]) == tuple(input_shape[1:]) or isinstance(layer, _CHANNELS_FIRST)):
        return "nchw"
    if first and last:
        return "ambiguous"
    return "nchw"


def to_feature_map(activation: torch.Tensor, reshape_transform: ReshapeTransform = None,
                   input_shape: tuple[int, ...] | None = None, layer: nn.Module | None = None) -> torch.Tensor:
    """A layer's output as an (N, C, h, w) feature map (see the module doc for what ``None`` detects).

    ``input_shape`` is the model input's (N, C, H, W), against which a 4-D
    layout is read; without it a 4-D output is taken as (N, C, h, w). ``layer`` is the
    module that produced the output, consulted when the shape is ambiguous.
    """
    if reshape_transform is not None:
        out = reshape_transform(activation)
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != activation.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"reshape_transform must return an (N, C, h, w) feature map, got {got}")
        return out
    if activation.ndim == 4:
        layout = _layout_of(tuple(activation.shape), input_shape, layer)
        if layout == "nhwc":
            return nhwc_to_nchw(activation)
        if layout == "ambiguous":
            _, a, b, c = activation.shape
            raise ValueError(
                f"the layer's output {tuple(activation.shape)} could be channels-first ({a} channels of {b} x {c}) "
                f"or channels-last ({a} x {b} with {c} channels) for an input of {input_shape[-2]} x {input_shape[-1]}; "
                "say which with reshape_transform=lambda t: t (channels first) or "
                "reshape_transform=xh.nhwc_to_nchw (channels last)"
            )
        return activation
    if activation.ndim == 3:
        return tokens_to_grid(activation)
    raise ValueError(
        f"the layer's output has shape {tuple(activation.shape)}; CAM methods need a (N, C, h, w) feature map "
        "(or transformer tokens with a reshape_transform)"
    )
