"""Overlays and figures: colour-blind-safe colormaps, always with a colourbar.

Heatmaps are drawn at the photo's own size: the (H, W) map in [0, 1] is
resized (bilinearly) to the photo, coloured with a perceptually uniform
colormap and alpha-blended onto it.

Signed attributions (Gradient x Input, Integrated Gradients, DeepLIFT,
Occlusion, LIME, Kernel SHAP, ...) are drawn as signed: :func:`signed_overlay`
and :func:`plot_signed` use a diverging colour-blind-safe colormap centred on
zero (orange for the class, purple against it, nothing at zero), clip the
scale at a percentile of the absolute values (as captum's
``visualize_image_attr(sign="all")`` does), and label the colourbar with the
map's units.
"""

from __future__ import annotations

import math

from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..course.images import load_image

__all__ = ["overlay", "plot_overlays", "heat_to_numpy", "SAFE_CMAPS", "SIGNED_CMAP", "signed_map", "signed_limit",
           "signed_overlay", "plot_signed"]

# Perceptually uniform and readable with the common colour-vision deficiencies.
SAFE_CMAPS = ("viridis", "cividis", "magma", "inferno", "plasma")
# Diverging and colour-blind safe (ColorBrewer's purple-orange): orange for the class, purple against, white at 0.
SIGNED_CMAP = "PuOr_r"


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
        columns: panels per row (default: all in one row, at most 5; from 11
            panels on, enough columns to keep the grid wider than tall).

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    photo = load_image(image)
    panels = 1 + len(heats)
    columns = columns or (min(panels, 5) if panels <= 10 else math.ceil(math.sqrt(1.6 * panels)))
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


# ---------------------------------------------------------------- signed attributions


def signed_map(attribution) -> np.ndarray:
    """A signed attribution as one float64 (H, W) map: (H, W) as it is, (C, H, W) or (1, C, H, W) summed over
    colour channels (a pixel's total contribution). Refuses NaN and inf."""
    if isinstance(attribution, torch.Tensor):
        attribution = attribution.detach().double().cpu().numpy()
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a.sum(0)
    if a.ndim != 2:
        raise ValueError(f"a signed attribution must be (H, W), (C, H, W) or (1, C, H, W), got shape {a.shape}; "
                         "index the batch, e.g. raw[0]")
    if not np.isfinite(a).all():
        raise ValueError("the attribution contains NaN or inf; there is nothing meaningful to draw")
    return a


def signed_limit(a: np.ndarray, clip: float = 99.0) -> float:
    """The symmetric colour limit v: the ``clip``-th percentile of |a| (outliers saturate); 1 for an all-zero map."""
    if not 0 < clip <= 100:
        raise ValueError(f"clip must be a percentile in (0, 100], got {clip!r}")
    v = float(np.percentile(np.abs(a), clip))
    if v == 0:
        v = float(np.abs(a).max())
    return v if v > 0 else 1.0


def signed_overlay(image, attribution, clip: float = 99.0, alpha: float = 0.85, cmap: str = SIGNED_CMAP) -> Image.Image:
    """A signed attribution on a greyscale copy of the photo, at the photo's size.

    The map is scaled to [-1, 1] by :func:`signed_limit` (values beyond saturate),
    coloured with the diverging ``cmap`` centred on zero, and blended with an
    opacity that grows with |value|: zero leaves the photo as it is.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    photo = load_image(image)
    a = signed_map(attribution)
    scaled = np.clip(a / signed_limit(a, clip), -1, 1).astype(np.float32)
    resized = np.asarray(Image.fromarray(scaled).resize(photo.size, Image.BILINEAR))
    coloured = _colormap(cmap)((resized + 1) / 2)[..., :3]
    grey = np.asarray(photo.convert("L").convert("RGB"), dtype=np.float32) / 255.0
    weight = (alpha * np.abs(resized))[..., None]
    blended = (1 - weight) * grey + weight * coloured
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def plot_signed(
    image,
    attributions: Mapping[str, object],
    units: str | Mapping[str, str] = "attribution",
    clip: float = 99.0,
    overlay_on_photo: bool = True,
    cmap: str = SIGNED_CMAP,
    title: str | None = None,
    columns: int | None = None,
    panel_size: float = 3.2,
):
    """Grid figure of signed attributions, one panel and one colourbar per map.

    Args:
        image: the photo.
        attributions: ``{panel title: attribution}``, each (H, W), (C, H, W) or (1, C, H, W).
        units: the colourbar label, one for all or one per title (e.g. "logit", "probability").
        clip: percentile of |value| at which the colour saturates.
        overlay_on_photo: draw on a greyscale copy of the photo; False draws the map alone.

    Each map is scaled by its own limit ±v (the colourbar shows it): signed maps
    of different methods have different units, so one shared scale would hide
    most of them.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    photo = load_image(image)
    panels = len(attributions)
    if panels == 0:
        raise ValueError("attributions is empty: give at least one name -> signed map")
    columns = columns or min(panels, 4)
    rows = -(-panels // columns)
    # constrained layout keeps room for each colourbar's label, so it never runs into the next panel's title
    fig, axes = plt.subplots(rows, columns, figsize=(panel_size * columns * 1.25, panel_size * rows), squeeze=False,
                             layout="constrained")
    flat: Sequence = axes.ravel()
    for ax, (name, attribution) in zip(flat, attributions.items()):
        a = signed_map(attribution)
        v = signed_limit(a, clip)
        if overlay_on_photo:
            ax.imshow(signed_overlay(photo, a, clip=clip, cmap=cmap))
        else:
            ax.imshow(a, cmap=_colormap(cmap), vmin=-v, vmax=v)
        ax.set_title(name, fontsize=10)
        mappable = cm.ScalarMappable(norm=colors.Normalize(-v, v), cmap=_colormap(cmap))
        label = units.get(name, "attribution") if isinstance(units, Mapping) else units
        bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(f"{label}\n±{v:.2g}, clipped at {clip:g}%", fontsize=8)
    for ax in flat:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig
