"""What a model's structure implies for how the engine may batch and lay out its inputs."""

from __future__ import annotations

from torch import nn

from .hooks import iter_modules

__all__ = ["uses_batch_statistics", "breaks_ties"]

_TIE_BREAKERS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.FractionalMaxPool2d,
                 nn.FractionalMaxPool3d)


def uses_batch_statistics(model: nn.Module) -> bool:
    """True if some BatchNorm normalises with the batch's own statistics even in eval mode
    (``track_running_stats=False``): then an image's output depends on the rest of its batch."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None for m in iter_modules(model)
    )


def breaks_ties(model: nn.Module) -> bool:
    """True if the model has a max-pooling module. Its gradient goes to one of several equal maxima
    (the zeros after a ReLU), and which one depends on the memory layout, and with it on the batch
    size: gradients through such a model keep the contiguous layout."""
    return any(isinstance(m, _TIE_BREAKERS) for m in iter_modules(model))
