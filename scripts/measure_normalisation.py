"""Which input normalisation do the converted EfficientNet-Lite0 weights expect?

Runs every sample photo through the model with TF-style scaling (mean = std = 0.5)
and with the ImageNet mean/std, and prints the top-1 class and its probability.
Run: python scripts/measure_normalisation.py
"""

import torch

import xai_helpers as xh
from xai_helpers.course.model import EFFICIENTNET_MEAN, EFFICIENTNET_STD, IMAGENET_MEAN, IMAGENET_STD, make_transform


def main() -> None:
    loaded = xh.load_model()
    options = {"TF (0.5, 0.5)": (EFFICIENTNET_MEAN, EFFICIENTNET_STD), "ImageNet mean/std": (IMAGENET_MEAN, IMAGENET_STD)}
    print(f"| sample | {' | '.join(options)} |")
    print("|---|" + "---|" * len(options))
    mean_top1 = {k: 0.0 for k in options}
    for name in xh.SAMPLES:
        image = xh.load_image(name)
        cells = []
        for label, (mean, std) in options.items():
            with torch.no_grad():
                probs = loaded.model(make_transform(mean, std)(image)[None]).softmax(-1)[0]
            p, i = probs.max(0)
            mean_top1[label] += float(p) / len(xh.SAMPLES)
            cells.append(f"{loaded.categories[int(i)]} {float(p):.1%}")
        print(f"| `{name}` | {' | '.join(cells)} |")
    print("| mean top-1 probability | " + " | ".join(f"{v:.1%}" for v in mean_top1.values()) + " |")


if __name__ == "__main__":
    main()
