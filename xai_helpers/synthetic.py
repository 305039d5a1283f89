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
    "SyntheticCNN",
    "SyntheticMLP",
    "MODELS",
    "load_synthetic_model",
    "CHECKPOINT",
    "CHECKPOINTS",
]

SIZE = 64
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230)}
SHAPES = ("circle", "square", "triangle")
CLASSES = (("red", "circle"), ("green", "square"), ("blue", "triangle"))
CLASS_NAMES = tuple(f"{c} {s}" for c, s in CLASSES)
CHECKPOINT = DATA_DIR / "synthetic_cnn.pt"
CHECKPOINTS = {"gap": CHECKPOINT, "mlp": DATA_DIR / "synthetic_mlp.pt"}
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


def make_image(label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (64, 64, 3) float image in [0, 1] and the (64, 64) bool mask of its class object."""
    image = _background(rng)
    objects = [CLASSES[label]] + _distractors(label, rng)
    placed: list[tuple[int, int, int]] = []
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for index, (colour, shape) in enumerate(objects):
        for _ in range(200):
            r = int(rng.integers(7, 11))
            cy, cx = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, size=2))
            if all((cy - py) ** 2 + (cx - px) ** 2 > (r + pr + 2) ** 2 for py, px, pr in placed):
                break
        placed.append((cy, cx, r))
        region = _shape_mask(shape, cy, cx, r)
        shade = np.array(COLOURS[colour]) / 255 * rng.uniform(0.85, 1.0)
        image[region] = shade
        if index == 0:
            mask = region
    return image.astype(np.float32), mask


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


MODELS = {"gap": SyntheticCNN, "mlp": SyntheticMLP}


def load_synthetic_model(kind: str = "gap", path: str | Path | None = None) -> nn.Module:
    """A trained synthetic model in eval mode, loaded with ``weights_only=True``.

    Args:
        kind: ``"gap"`` (:class:`SyntheticCNN`) or ``"mlp"`` (:class:`SyntheticMLP`).
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
