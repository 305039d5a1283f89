"""Command line: ``python -m xai_helpers explain IMAGE_OR_SAMPLE [options]`` (``xai-explain`` once installed).

Prints the top-5 predictions and the time each method took, and writes a
figure with the original and one overlay per method. The methods are the
registry's (``python -m xai_helpers methods`` lists them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..methods import METHODS, SMOOTHING, TABULAR_METHODS, by_slug


def build_parser() -> argparse.ArgumentParser:
    slugs = list(by_slug())  # read now, so a method registered later is offered too
    parser = argparse.ArgumentParser(prog="python -m xai_helpers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    explain = sub.add_parser("explain", help="explain one image with the registered methods")
    explain.add_argument("image", help="a path, or a sample name (see `python -m xai_helpers samples`)")
    explain.add_argument(
        "--method",
        action="append",
        choices=["all", *slugs],
        help="a method to run; repeat it for several (default: all, without the null baselines)",
    )
    explain.add_argument("--baselines", action="store_true",
                         help="add the null baselines (random, centre, edges, all ones) to the figure")
    explain.add_argument("--target", type=int, default=None, help="class index to explain (default: top-1)")
    explain.add_argument("--model", default="efficientnet_lite0", help="efficientnet_lite0 (default) or resnet50")
    explain.add_argument("--out", default=None, help="figure to write (default: IMAGE_explained.png)")
    explain.add_argument("--cmap", default="viridis", help="colormap (default: viridis)")
    explain.add_argument("--alpha", type=float, default=0.5, help="overlay opacity 0..1 (default: 0.5)")
    explain.add_argument("--preview", action="store_true",
                         help="run the slow methods with their preview settings (fewer samples or steps)")
    explain.add_argument("--aug-smooth", action="store_true",
                         help="average each CAM over 6 copies, flipped or not, values x 0.9, 1 or 1.1 (pytorch-grad-cam's aug_smooth)")
    explain.add_argument("--eigen-smooth", action="store_true",
                         help="first principal component instead of the channel sum, for the CAMs that sum "
                              "channels (pytorch-grad-cam's eigen_smooth)")
    sub.add_parser("samples", help="list the sample photos")
    sub.add_parser("methods", help="list the registered methods")
    return parser


def chosen_methods(chosen: list[str], baselines: bool = False) -> list:
    """The entries for ``--method`` slugs: "all" is every method but the null baselines, which ``--baselines`` adds."""
    slugs = by_slug()
    if "all" in chosen:
        picked = [m for m in slugs.values() if not m.baseline]
    else:
        picked = [slugs[s] for s in dict.fromkeys(chosen)]
    if baselines:
        picked += [m for m in slugs.values() if m.baseline and m not in picked]
    return picked


# Formats matplotlib's Agg backend writes.
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".webp", ".tif", ".tiff")


def output_path(out: str | None, image: str) -> Path:
    """Where the figure goes, checked before any method runs.

    None: ``IMAGE_explained.png`` here; an existing directory: that file inside it;
    otherwise a file whose directory exists and whose suffix matplotlib can write.
    """
    default = f"{Path(str(image)).stem}_explained.png"
    if out is None:
        return Path(default)
    path = Path(out).expanduser()
    if path.is_dir():
        return path / default
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--out {out!r}: the directory {str(path.parent)!r} does not exist")
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out {out!r}: the figure must end in one of {', '.join(FIGURE_SUFFIXES)}")
    return path


def explain(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..course.images import load_image
    from ..course.model import load_model
    from .figures import plot_overlays

    out = output_path(args.out, args.image)
    image = load_image(args.image)
    loaded = load_model(args.model)
    x = loaded.preprocess(image)
    print(f"{args.image}: {image.width}x{image.height}, model {loaded.name}")
    print("top-5 predictions:")
    probs = {}
    for rank, (index, name, p) in enumerate(loaded.predict(x, k=5), start=1):
        probs[index] = p
        print(f"  {rank}. {name:<32} (class {index:>3})  {p:6.1%}")
    if args.target is not None and not 0 <= args.target < len(loaded.categories):
        raise ValueError(f"--target {args.target} is out of range; valid classes are 0..{len(loaded.categories) - 1}")
    target = args.target if args.target is not None else loaded.predict(x, k=1)[0][0]
    if target not in probs:
        with torch.no_grad():
            probs[target] = float(loaded.model(x).softmax(-1)[0, target])
    label = f"{loaded.categories[target]} ({probs[target]:.1%})"
    methods = chosen_methods(args.method or ["all"], args.baselines)
    heats = {}
    print(f"explaining class {target} '{loaded.categories[target]}':")
    width = max(len(m.name) for m in methods)
    asked = [s for s in SMOOTHING if getattr(args, s)]
    for s in asked:
        without = [m.name for m in methods if s not in m.smoothing]
        if without:
            verb = "it runs" if len(without) == 1 else "they run"
            print(f"  ({s} is not a setting of {', '.join(without)}; {verb} without it)")
    for method in methods:
        start = time.perf_counter()
        settings = dict(method.preview) if args.preview else {}
        settings.update({s: True for s in asked if s in method.smoothing})
        heats[method.name] = method(loaded.model, x, loaded.target_layer, target=target, **settings)[0]
        print(f"  {method.name:<{width}} {(time.perf_counter() - start) * 1000:8.0f} ms")
    fig = plot_overlays(image, heats, subtitles={n: label for n in heats}, alpha=args.alpha, cmap=args.cmap)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "samples":
            from ..course.images import SAMPLES

            print("\n".join(SAMPLES))
            return 0
        if args.command == "methods":
            width = max(len(m.name) for m in METHODS.values())
            for method in METHODS.values():
                print(f"{method.slug:<21} {method.name:<{width}} {method.family:<15} {method.summary}")
            print("\nfor models of tables (lesson 12; xai_helpers.tabular):")
            for method in TABULAR_METHODS.values():
                print(f"  {method.slug:<23} {method.name:<22} {method.scope:<7} {method.models}")
            return 0
        return explain(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

