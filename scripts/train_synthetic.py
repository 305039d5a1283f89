"""Train a synthetic model and write its checkpoint.

    python scripts/train_synthetic.py --model gap        # SyntheticCNN -> data/synthetic_cnn.pt
    python scripts/train_synthetic.py --model mlp        # SyntheticMLP -> data/synthetic_mlp.pt
    python scripts/train_synthetic.py --model gap-hard   # on the harder benchmark -> data/synthetic_cnn_hard.pt
    python scripts/train_synthetic.py --model mlp-hard   #                         -> data/synthetic_mlp_hard.pt
    python scripts/train_synthetic.py --model gap-shortcut   # the tag in its class's corner in 95% of the
    python scripts/train_synthetic.py --model mlp-shortcut   # images -> data/synthetic_{cnn,mlp}_shortcut.pt

Seeded and deterministic on one machine; one to two minutes each on two CPU cores.
"""

import argparse
import time

import torch
from torch import nn

from xai_helpers.course.synthetic import (
    CHECKPOINTS,
    HARD_CUE,
    MODELS,
    SHORTCUT_CUE,
    make_dataset,
    make_hard_dataset,
)

SEED = 2018


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="gap")
    parser.add_argument("--epochs", type=int, default=None, help="default: 6, or 10 for the harder benchmark")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--out", default=None, help="checkpoint path (default: the shipped one for --model)")
    args = parser.parse_args()
    out = args.out or str(CHECKPOINTS[args.model])
    torch.manual_seed(SEED)
    if args.model.endswith(("-hard", "-shortcut")):
        args.epochs = args.epochs or 10
        cue = SHORTCUT_CUE if args.model.endswith("-shortcut") else HARD_CUE
        train, val = make_hard_dataset(args.train, seed=SEED, cue=cue), make_hard_dataset(600, seed=SEED + 1, cue=cue)
        (x, y), (x_val, y_val) = (train["x"], train["y"]), (val["x"], val["y"])
    else:
        args.epochs = args.epochs or 6
        x, y, _ = make_dataset(args.train, seed=SEED)
        x_val, y_val, _ = make_dataset(600, seed=SEED + 1)  # never the evaluation seed used by the lessons
    model = MODELS[args.model]()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * (args.train // 64 + 1))
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(args.train)
        for i in range(0, args.train, 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x_val).argmax(1) == y_val).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, validation accuracy {acc:.3f}, {time.perf_counter() - start:.0f} s")
    torch.save(model.state_dict(), out)
    print(f"wrote {out}")
    if args.model.endswith(("-hard", "-shortcut")):
        # Does the model read the corner tag? Accuracy when the tag always agrees with the class, and when its
        # corner is random (agreeing by chance in a third of the images).
        with torch.no_grad():
            for cue in (1.0, 0.0):
                test = make_hard_dataset(600, seed=SEED + 2, cue=cue)
                acc = (model(test["x"]).argmax(1) == test["y"]).float().mean().item()
                print(f"accuracy with the tag's corner {'the class' if cue else 'random'}: {acc:.3f} (600 images)")


if __name__ == "__main__":
    main()
