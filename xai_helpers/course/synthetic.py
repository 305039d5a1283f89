"""A synthetic data set where the evidence is known, and a small CNN trained on it.

Each 64x64 image shows three coloured shapes on a textured background. Exactly
one of them is a *class object*: a red circle (class 0), a green square
(class 1) or a blue triangle (class 2). The other two are distractors that
share either the class object's colour or its shape, never both, so the
network must look at the class object itself to be right. The generator
returns that object's exact pixel mask: the ground truth for pointing games.

Two small CNNs share the same four convolutional blocks (16x16 maps at
``features.block4``) and differ in the head:

* ``SyntheticCNN``: global average pooling -> Linear, so CAM applies and, by
  construction, Grad-CAM equals CAM (lesson 02);
* ``SyntheticMLP``: flatten -> Linear -> ReLU -> Linear, a VGG-style head in
  which every position has its own weights. CAM does not apply, and Grad-CAM,
  Grad-CAM++ and Score-CAM genuinely differ: the model for comparing methods.

``scripts/train_synthetic.py --model gap|mlp`` trains either (seeded, about a
minute on two CPU cores) and writes ``data/synthetic_cnn.pt`` or
``data/synthetic_mlp.pt``; :func:`load_synthetic_model` loads them with
``weights_only=True``.

**The harder benchmark** (:func:`make_hard_dataset`, lesson 06), in which
methods can actually differ:

* class objects of radius 3 to 12 pixels, so some cover only a few cells of a
  16x16 map;
* two instances of the class in a third of the images (Grad-CAM++'s
  motivating case, Chattopadhay et al. 2018, Sec. 3); the mask covers both;
* a *cue*: a small white tag in one of three corners, in the corner of the
  class for a fraction ``cue`` of the images and in a random corner otherwise.
  It is never part of the mask, so a map that points at it misses.

The models trained on it (``"gap-hard"``, ``"mlp-hard"``, checkpoints
``data/synthetic_*_hard.pt``) come from the same script and seed.

**The shortcut models** (``"gap-shortcut"``, ``"mlp-shortcut"``, checkpoints
``data/synthetic_*_shortcut.pt``, lesson 14): the same architectures trained
on the harder benchmark with the tag in its class's corner in a fraction
:data:`SHORTCUT_CUE` of the images, so the tag predicts the class almost
always (a planted Clever Hans). ``make_hard_dataset(n, seed, cue=0.0)``
gives a test set in which the tag's corner is random, and ``cue=1.0`` one in
which it always agrees with the class.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .images import DATA_DIR

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "SIZE",
    "make_dataset",
    "make_hard_dataset",
    "HARD_CUE",
    "SyntheticCNN",
    "SyntheticMLP",
    "MODELS",
    "load_synthetic_model",
    "CHECKPOINTS",
    "SHORTCUT_CUE",
]

SIZE = 64
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230)}
SHAPES = ("circle", "square", "triangle")
CLASSES = (("red", "circle"), ("green", "square"), ("blue", "triangle"))
CLASS_NAMES = tuple(f"{c} {s}" for c, s in CLASSES)
CHECKPOINTS = {
    "gap": DATA_DIR / "synthetic_cnn.pt",
    "mlp": DATA_DIR / "synthetic_mlp.pt",
    "gap-hard": DATA_DIR / "synthetic_cnn_hard.pt",
    "mlp-hard": DATA_DIR / "synthetic_mlp_hard.pt",
    "gap-shortcut": DATA_DIR / "synthetic_cnn_shortcut.pt",
    "mlp-shortcut": DATA_DIR / "synthetic_mlp_shortcut.pt",
}
# How often the corner tag of the harder benchmark sits in its class's corner (else in a random one).
HARD_CUE = 0.5
# The same for the shortcut models' training set: the tag then agrees with the class in 0.95 + 0.05 / 3 of the images.
SHORTCUT_CUE = 0.95
CORNERS = ((1, 1), (1, 55), (55, 1))  # top-left corner of the 8 x 8 tag, one per class
# Normalisation of the synthetic images: pixels in [0, 1] -> (x - 0.5) / 0.25.
MEAN, STD = 0.5, 0.25


def _shape_mask(shape: str, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if shape == "square":
        return (abs(yy - cy) <= r * 0.85) & (abs(xx - cx) <= r * 0.85)
    # An upward triangle with its base at cy + r and apex at cy - r.
    top, bottom = cy - r, cy + r
    half_width = (yy - top) / max(bottom - top, 1) * r
    return (yy >= top) & (yy <= bottom) & (abs(xx - cx) <= half_width)


def _background(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.uniform(0.25, 0.75, size=(8, 8, 3))
    smooth = np.kron(coarse, np.ones((SIZE // 8, SIZE // 8, 1)))
    stripes = 0.08 * np.sin(np.arange(SIZE) * rng.uniform(0.3, 1.2) + rng.uniform(0, 6.3))
    texture = smooth + stripes[None, :, None] * rng.choice([-1, 1]) + rng.normal(0, 0.04, (SIZE, SIZE, 3))
    # Muted, grey-ish backgrounds so that no background colour reads as a class colour.
    grey = texture.mean(-1, keepdims=True)
    return np.clip(0.7 * grey + 0.3 * texture, 0, 1)


def _distractors(label: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    colour, shape = CLASSES[label]
    options = [(c, s) for c in COLOURS for s in SHAPES if (c == colour) != (s == shape)]
    picks = rng.choice(len(options), size=2, replace=False)
    return [options[i] for i in picks]


def _draw_object(image, colour, shape, radii, placed, rng, tries):
    """Paint one shape where it keeps 2 pixels from the ``placed`` ones (the last try if none does).

    Draws the radius from ``rng.integers(*radii)`` and the centre on each try, then the
    shade: the order of the draws fixes the data sets, and the shipped checkpoints with them.
    Returns the shape's mask and radius; appends (cy, cx, r) to ``placed``.
    """
    for _ in range(tries):
        r = int(rng.integers(*radii))
        cy, cx = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, size=2))
        if all((cy - py) ** 2 + (cx - px) ** 2 > (r + pr + 2) ** 2 for py, px, pr in placed):
            break
    placed.append((cy, cx, r))
    region = _shape_mask(shape, cy, cx, r)
    image[region] = np.array(COLOURS[colour]) / 255 * rng.uniform(0.85, 1.0)
    return region, r


def make_image(label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (64, 64, 3) float image in [0, 1] and the (64, 64) bool mask of its class object."""
    image = _background(rng)
    objects = [CLASSES[label]] + _distractors(label, rng)
    placed: list[tuple[int, int, int]] = []
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for index, (colour, shape) in enumerate(objects):
        region, _ = _draw_object(image, colour, shape, (7, 11), placed, rng, tries=200)
        if index == 0:
            mask = region
    return image.astype(np.float32), mask


def make_hard_image(label: int, rng: np.random.Generator, cue: float = HARD_CUE):
    """One image of the harder benchmark: (image (64, 64, 3), object mask, tag mask, two instances?, smallest radius)."""
    image = _background(rng)
    instances = 2 if rng.random() < 1 / 3 else 1
    objects = [CLASSES[label]] * instances + _distractors(label, rng)
    corner = label if rng.random() < cue else int(rng.integers(len(CORNERS)))
    ty, tx = CORNERS[corner]
    tag = np.zeros((SIZE, SIZE), dtype=bool)
    tag[ty + 2 : ty + 6, tx : tx + 8] = True  # a white bar, 4 x 8 pixels
    placed: list[tuple[int, int, int]] = [(ty + 4, tx + 4, 6)]  # keep shapes off the tag
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    radii = []
    for index, (colour, shape) in enumerate(objects):
        radii_range = (3, 13) if index < instances else (4, 12)
        region, r = _draw_object(image, colour, shape, radii_range, placed, rng, tries=500)
        if index < instances:
            mask |= region
            radii.append(r)
    image[tag] = 0.95
    return image.astype(np.float32), mask & ~tag, tag, instances == 2, min(radii)


def make_hard_dataset(n: int, seed: int = 0, cue: float = HARD_CUE) -> dict[str, torch.Tensor]:
    """``n`` images of the harder benchmark with balanced labels, as a dict of tensors:

    ``x`` (n, 3, 64, 64) normalised, ``y`` (n,), ``mask`` (n, 64, 64) bool
    (every class instance), ``tag`` (n, 64, 64) bool (the corner cue),
    ``two`` (n,) bool (two instances), ``radius`` (n,) the smallest instance's radius.
    """
    if not 0 <= cue <= 1:
        raise ValueError(f"cue must be a probability in [0, 1], got {cue}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images, masks, tags, two, radius = zip(*(make_hard_image(int(label), rng, cue) for label in labels))
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - MEAN) / STD
    return {
        "x": x.contiguous(),
        "y": torch.from_numpy(labels).long(),
        "mask": torch.from_numpy(np.stack(masks)),
        "tag": torch.from_numpy(np.stack(tags)),
        "two": torch.tensor(two),
        "radius": torch.tensor(radius),
    }


def make_dataset(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images with balanced labels: (x (n, 3, 64, 64) normalised, labels (n,), masks (n, 64, 64) bool)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images, masks = zip(*(make_image(int(label), rng) for label in labels))
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - MEAN) / STD
    return x.contiguous(), torch.from_numpy(labels).long(), torch.from_numpy(np.stack(masks))


def to_pil(x: torch.Tensor):
    """A normalised (3, 64, 64) synthetic image back to a PIL image, for figures and overlays."""
    from PIL import Image

    arr = (x.detach().cpu() * STD + MEAN).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((arr * 255).round().astype(np.uint8))


def _features() -> nn.Sequential:
    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(
        OrderedDict(block1=block(3, 16, 1), block2=block(16, 32, 2), block3=block(32, 64, 1), block4=block(64, 64, 2))
    )


class SyntheticCNN(nn.Module):
    """conv blocks -> global average pooling -> Linear, 16x16 feature maps at the last block."""

    def __init__(self, classes: int = len(CLASSES)):
        super().__init__()
        self.features = _features()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class SyntheticMLP(nn.Module):
    """The same conv blocks -> flatten -> Linear(16384, 32) -> ReLU -> Linear(32, classes).

    Like VGG-16's head, the first Linear layer gives every position of every
    channel its own weight, so the gradient at ``features.block4`` varies over
    space and the CAM methods disagree.
    """

    def __init__(self, classes: int = len(CLASSES), hidden: int = 32):
        super().__init__()
        self.features = _features()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 16 * 16, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS = {"gap": SyntheticCNN, "mlp": SyntheticMLP, "gap-hard": SyntheticCNN, "mlp-hard": SyntheticMLP,
          "gap-shortcut": SyntheticCNN, "mlp-shortcut": SyntheticMLP}


def load_synthetic_model(kind: str = "gap", path: str | Path | None = None) -> nn.Module:
    """A trained synthetic model in eval mode, loaded with ``weights_only=True``.

    Args:
        kind: ``"gap"`` (:class:`SyntheticCNN`) or ``"mlp"`` (:class:`SyntheticMLP`), trained
            on :func:`make_dataset`; ``"gap-hard"`` or ``"mlp-hard"``, trained on :func:`make_hard_dataset`;
            ``"gap-shortcut"`` or ``"mlp-shortcut"``, trained on it with ``cue=SHORTCUT_CUE``.
        path: a checkpoint to load instead of the shipped one.
    """
    if kind not in MODELS:
        raise ValueError(f"unknown synthetic model {kind!r}; choose from {', '.join(MODELS)}")
    path = Path(path) if path is not None else CHECKPOINTS[kind]
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; create it with `python scripts/train_synthetic.py --model {kind}`"
        )
    model = MODELS[kind]()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
