"""Overlays and figures: colour-blind-safe colormaps, always with a colourbar.

Heatmaps are drawn at the photo's own size: the (H, W) map in [0, 1] is
resized (bilinearly) to the photo, coloured with a perceptually uniform
colormap and alpha-blended onto it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..course.images import load_image

__all__ = ["overlay", "plot_overlays", "heat_to_numpy", "SAFE_CMAPS"]

# Perceptually uniform and readable with the common colour-vision deficiencies.
SAFE_CMAPS = ("viridis", "cividis", "magma", "inferno", "plasma")


def heat_to_numpy(heat) -> np.ndarray:
    """(H, W) or (1, H, W) tensor/array -> float32 (H, W) numpy array in [0, 1]."""
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().float().cpu().numpy()
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim == 3 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.ndim != 2:
        raise ValueError(f"heat must be one (H, W) map, got shape {heat.shape}; index the batch, e.g. heat[0]")
    return np.nan_to_num(np.clip(heat, 0.0, 1.0))


def _colormap(cmap: str):
    import matplotlib

    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; colour-blind-safe choices are {', '.join(SAFE_CMAPS)}") from None


def overlay(image, heat, alpha: float = 0.5, cmap: str = "viridis") -> Image.Image:
    """Blend a heatmap onto a photo, at the photo's own size.

    Args:
        image: a PIL image (or anything :func:`xai_helpers.load_image` takes).
        heat: (H, W) map in [0, 1], at any resolution.
        alpha: heatmap opacity, 0 (photo only) to 1 (heatmap only).
        cmap: a matplotlib colormap name.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    photo = load_image(image)
    heat = heat_to_numpy(heat)
    resized = Image.fromarray(heat).resize(photo.size, Image.BILINEAR)
    coloured = _colormap(cmap)(np.clip(np.asarray(resized), 0, 1))[..., :3]
    base = np.asarray(photo, dtype=np.float32) / 255.0
    blended = (1 - alpha) * base + alpha * coloured
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def plot_overlays(
    image,
    heats: Mapping[str, object],
    subtitles: Mapping[str, str] | None = None,
    alpha: float = 0.5,
    cmap: str = "viridis",
    title: str | None = None,
    columns: int | None = None,
    panel_size: float = 3.2,
):
    """Grid figure: the original photo, then one overlay per heatmap, with one shared colourbar.

    Args:
        image: the photo.
        heats: ``{panel title (e.g. the method): (H, W) heatmap}``.
        subtitles: optional extra line per panel (e.g. class and probability).
        title: figure title.
        columns: panels per row (default: all in one row, at most 5).

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    photo = load_image(image)
    panels = 1 + len(heats)
    columns = columns or min(panels, 5)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_size * columns + 0.8, panel_size * rows), squeeze=False)
    flat: Sequence = axes.ravel()
    flat[0].imshow(photo)
    flat[0].set_title("original")
    for ax, (name, heat) in zip(flat[1:], heats.items()):
        ax.imshow(overlay(photo, heat, alpha=alpha, cmap=cmap))
        sub = (subtitles or {}).get(name)
        ax.set_title(f"{name}\n{sub}" if sub else name, fontsize=10)
    for ax in flat:
        ax.axis("off")
    mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=_colormap(cmap))
    fig.colorbar(mappable, ax=list(flat), fraction=0.025, pad=0.02, label="relevance (min-max scaled)")
    if title:
        fig.suptitle(title)
    return fig
