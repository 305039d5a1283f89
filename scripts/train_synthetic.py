"""Train xai_helpers.synthetic.SyntheticCNN and write data/synthetic_cnn.pt.

Seeded and deterministic on one machine; about a minute on two CPU cores.
Run: python scripts/train_synthetic.py [--epochs 6] [--train 6000]
"""

import argparse
import time

import torch
from torch import nn

from xai_helpers.synthetic import CHECKPOINT, SyntheticCNN, make_dataset

SEED = 2018


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--out", default=str(CHECKPOINT))
    args = parser.parse_args()
    torch.manual_seed(SEED)
    x, y, _ = make_dataset(args.train, seed=SEED)
    x_val, y_val, _ = make_dataset(600, seed=SEED + 1)  # never the evaluation seed used by the lessons
    model = SyntheticCNN()
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
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
