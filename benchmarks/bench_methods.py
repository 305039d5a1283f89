"""Time xai_helpers' four methods against pytorch-grad-cam and torchcam, and against physical limits.

Everything runs in one process on the same model (EfficientNet-Lite0), layer
(the 1280-channel head), images and targets, with the runs interleaved so that
machine noise hits every contender alike; each figure is a median.

Physical limits:
  * CAM: one forward pass;
  * Grad-CAM / Grad-CAM++: one forward pass plus a backward pass through the head only;
  * Score-CAM: one forward pass per live (non-constant) channel, at the model's
    best per-image throughput (the unmodified model in channels_last batches).

Usage:
    python benchmarks/bench_methods.py                 # CPU, writes benchmarks/RESULTS.md
    python benchmarks/bench_methods.py --device cuda   # GPU section (RESULTS-cuda.md)
    python benchmarks/bench_methods.py --quick         # fewer repeats, no memory test
Needs the [bench] extra: pip install -e ".[bench]"  (python3 dev.py bench does it).
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' progress bars would flood the log

import argparse
import copy
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import xai_helpers as xh
from xai_helpers.core import forward_with_capture
from xai_helpers.score_method import default_batch_size, live_channels

HERE = Path(__file__).resolve().parent
IMAGES = ("chelsea", "coffee")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def interleaved(entries: dict, repeats: int, device) -> tuple[dict, dict]:
    """Run every entry once per round, `repeats` rounds; return medians (s) and last outputs."""
    times = {k: [] for k in entries}
    outputs = {}
    for _ in range(repeats):
        for name, fn in entries.items():
            t, out = timed(fn, device)
            times[name].append(t)
            outputs[name] = out
    return {k: statistics.median(v) for k, v in times.items()}, outputs


def to_map(cam, size, device) -> torch.Tensor:
    """Any peer's output -> (H, W) float tensor on `device`, upsampled if needed."""
    if isinstance(cam, (list, tuple)):
        cam = cam[0]
    cam = torch.as_tensor(cam).float().to(device)
    cam = cam.reshape(-1, *cam.shape[-2:])[0]
    if tuple(cam.shape) != tuple(size):
        cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return cam


def duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float().to(a.device)]))[0, 1])


def best_per_image_forward(model, x, device, repeats) -> tuple[float, int]:
    """Fastest time per image of the unmodified model over small channels_last batches."""
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    sizes = (1, 2, 4, 8, 16, 32) if device.type == "cpu" else (1, 8, 32, 64, 128, 256)
    best = (float("inf"), 1)
    with torch.inference_mode():
        for bs in sizes:
            xb = x.repeat(bs, 1, 1, 1).contiguous(memory_format=torch.channels_last)
            cl(xb)
            t = statistics.median(timed(lambda: cl(xb), device)[0] for _ in range(repeats)) / bs
            best = min(best, (t, bs))
    return best


def naive_score_cam(model, x, layer, target) -> torch.Tensor:
    """The authors' loop: one channel at a time, no batching, no folding."""
    activation, _ = forward_with_capture(model, x, layer, grad=False)
    size = x.shape[-2:]
    cam = torch.zeros(size, device=x.device)
    with torch.inference_mode():
        for k in range(activation.shape[1]):
            up = F.interpolate(activation[:, k : k + 1], size=size, mode="bilinear", align_corners=False)
            if up.max() == up.min():
                continue
            mask = (up - up.min()) / (up.max() - up.min())
            cam += model(x * mask).softmax(-1)[0, target] * up[0, 0]
    cam = cam.clamp_min(0)
    return (cam - cam.min()) / (cam.max() - cam.min())


# Peak RSS is sampled from /proc/self/statm by a thread: ru_maxrss is inherited
# from the (large) parent process across fork and exec, so it cannot show growth.
MEMORY_CHILD = r"""
import json, os, sys, threading, time, torch
import xai_helpers as xh
from torchvision.models import resnet50
torch.manual_seed(0)
model = resnet50().eval()
x = torch.randn(1, 3, 224, 224)
with torch.no_grad():
    model(x)
kind = sys.argv[1]
page = os.sysconf("SC_PAGE_SIZE")
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
before = rss_mb()
peak = [before]
running = [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.002)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
if kind == "ours":
    xh.score_cam(model, x, model.layer4, target=0)
else:
    # pytorch-grad-cam's construction: all C masked inputs at once, in one tensor
    up = torch.nn.functional.interpolate(torch.rand(1, 2048, 7, 7), size=(224, 224), mode="bilinear")
    masked = x[:, None] * up[:, :, None]
    del masked
running[0] = False
thread.join()
print(json.dumps({"before_mb": before, "peak_mb": max(peak[0], rss_mb())}))
"""


def memory_growth(kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, kind], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_table(device) -> list[str]:
    ours_mem, pgc_mem = memory_growth("ours"), memory_growth("pgc")
    return [
        "## Score-CAM memory on ResNet-50 `layer4` (2048 channels, 224 x 224)",
        "",
        "| | peak RSS growth |",
        "|---|---|",
        f"| `xh.score_cam` (batch of {default_batch_size(device)}) | {ours_mem['peak_mb'] - ours_mem['before_mb']:.0f} MB |",
        f"| all 2048 masked inputs at once (pytorch-grad-cam's construction) | {pgc_mem['peak_mb'] - pgc_mem['before_mb']:.0f} MB |",
        "",
    ]


def machine_details(device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the naive loop and memory test")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/RESULTS[-cuda].md)")
    parser.add_argument("--memory-only", action="store_true", help="only the Score-CAM memory test (printed, not written)")
    args = parser.parse_args(argv)
    if args.memory_only:
        print("\n".join(memory_table(torch.device("cpu"))))
        return 0
    device = torch.device(args.device)
    fast_repeats, slow_repeats = (3, 1) if args.quick else (7, 3)

    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam import GradCAMPlusPlus as PgcGradCAMPlusPlus
    from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import CAM as TcCAM
    from torchcam.methods import GradCAM as TcGradCAM
    from torchcam.methods import GradCAMpp as TcGradCAMpp
    from torchcam.methods import ScoreCAM as TcScoreCAM

    loaded = xh.load_model(device=device)
    model, layer = loaded.model, loaded.target_layer
    # Each library gets its own copy of the network (same weights), so that one
    # library's hooks (pytorch-grad-cam keeps its hooks registered between calls)
    # never fire inside another library's timed passes.
    pgc_model, tc_model = copy.deepcopy(model), copy.deepcopy(model)
    pgc_layer, tc_layer = pgc_model.features.head, tc_model.features.head
    lines = []

    def report(text=""):
        print(text, flush=True)
        lines.append(text)

    report(f"# Benchmark results ({device.type})")
    report()
    report(f"Measured {datetime.date.today().isoformat()} on {machine_details(device)}.")
    report(f"Model EfficientNet-Lite0, layer `features.head` (1280 x 7 x 7), input 224 x 224, batch 1; "
           f"medians of {fast_repeats} interleaved runs ({slow_repeats} for Score-CAM).")
    report()

    rows = []  # (image, method, ours_s, peer, peer_s, corr)
    limits = {}
    for name in IMAGES:
        x = loaded.preprocess(name)
        with torch.inference_mode():
            target = int(model(x).argmax())
        activation, _ = forward_with_capture(model, x, layer, grad=False)
        live = int(live_channels(activation).sum())
        size = x.shape[-2:]

        pgc = {
            "GradCAM": PgcGradCAM(model=pgc_model, target_layers=[pgc_layer]),
            "GradCAMPlusPlus": PgcGradCAMPlusPlus(model=pgc_model, target_layers=[pgc_layer]),
            "ScoreCAM": PgcScoreCAM(model=pgc_model, target_layers=[pgc_layer]),
        }
        pgc_target = [ClassifierOutputTarget(target)]

        def torchcam_call(cls, needs_grad, **kw):
            def run():
                with cls(tc_model, target_layer=tc_layer, **kw) as extractor:
                    with torch.set_grad_enabled(needs_grad):
                        scores = tc_model(x)
                    return extractor(class_idx=target, scores=scores)[0]
            return run

        def forward_only():
            with torch.inference_mode():
                return model(x)

        fast = {
            "forward": forward_only,
            "CAM": lambda: xh.cam(model, x, layer, target=target),
            "Grad-CAM": lambda: xh.grad_cam(model, x, layer, target=target),
            "Grad-CAM++": lambda: xh.grad_cam_plus_plus(model, x, layer, target=target),
            "pgc GradCAM": lambda: pgc["GradCAM"](input_tensor=x, targets=pgc_target),
            "pgc GradCAMPlusPlus": lambda: pgc["GradCAMPlusPlus"](input_tensor=x, targets=pgc_target),
            "torchcam CAM": torchcam_call(TcCAM, False, fc_layer=tc_model.classifier.fc),
            "torchcam GradCAM": torchcam_call(TcGradCAM, True),
            "torchcam GradCAMpp": torchcam_call(TcGradCAMpp, True),
        }

        for fn in fast.values():  # warm-up
            fn()
        fast_t, fast_out = interleaved(fast, fast_repeats, device)

        slow = {
            "Score-CAM": lambda: xh.score_cam(model, x, layer, target=target),
            "pgc ScoreCAM": lambda: pgc["ScoreCAM"](input_tensor=x, targets=pgc_target),
            "torchcam ScoreCAM": torchcam_call(TcScoreCAM, False),
        }
        slow["Score-CAM"]()  # warm-up (folds BatchNorm once)
        slow_t, slow_out = interleaved(slow, slow_repeats, device)
        for cam in pgc.values():
            cam.activations_and_grads.release()
        best, best_bs = best_per_image_forward(model, x, device, fast_repeats)

        times = {**fast_t, **slow_t}
        outs = {**fast_out, **slow_out}
        fwd = times["forward"]
        limits[name] = {"forward": fwd, "best": best, "best_bs": best_bs, "live": live}
        ours_of = {"pgc GradCAM": "Grad-CAM", "pgc GradCAMPlusPlus": "Grad-CAM++", "pgc ScoreCAM": "Score-CAM",
                   "torchcam CAM": "CAM", "torchcam GradCAM": "Grad-CAM", "torchcam GradCAMpp": "Grad-CAM++",
                   "torchcam ScoreCAM": "Score-CAM"}
        for peer, ours in ours_of.items():
            corr = correlation(outs[ours][0], to_map(outs[peer], size, device))
            rows.append((name, ours, times[ours], peer, times[peer], corr))
        report(f"## `{name}` (target {target} '{loaded.categories[target]}', {live} live of 1280 channels)")
        report()
        report("| method | ours | vs one forward | physical limit | ours / limit |")
        report("|---|---|---|---|---|")
        report(f"| one forward pass (inference_mode) | {fwd * 1e3:.1f} ms | 1.00x | | |")
        for method in ("CAM", "Grad-CAM", "Grad-CAM++"):
            report(f"| {method} | {times[method] * 1e3:.1f} ms | {times[method] / fwd:.2f}x | one forward, {fwd * 1e3:.1f} ms | {times[method] / fwd:.2f} |")
        limit = live * best
        report(f"| Score-CAM | {duration(times['Score-CAM'])} | {times['Score-CAM'] / fwd:.0f}x | {live} x {best * 1e3:.2f} ms "
               f"(best per-image forward, batch {best_bs}) = {duration(limit)} | {times['Score-CAM'] / limit:.2f} |")
        report()
        report("| peer | peer time | ours | peer / ours (speed-up) | correlation with ours |")
        report("|---|---|---|---|---|")
        for img, ours, t_ours, peer, t_peer, corr in rows:
            if img == name:
                report(f"| {peer} | {duration(t_peer)} | {ours} {duration(t_ours)} | {t_peer / t_ours:.1f}x | {corr:.4f} |")
        report()

    # A batch of N images costs about one batched forward pass.
    n = 8
    xb = torch.cat([loaded.preprocess(s) for s in (xh.SAMPLES * 2)[:n]])

    def batched_forward():
        with torch.inference_mode():
            return model(xb)

    batch = {"batched forward": batched_forward, "Grad-CAM batch": lambda: xh.grad_cam(model, xb, layer),
             "Grad-CAM++ batch": lambda: xh.grad_cam_plus_plus(model, xb, layer), "CAM batch": lambda: xh.cam(model, xb, layer)}
    for fn in batch.values():
        fn()
    bt, _ = interleaved(batch, fast_repeats, device)
    report(f"## A batch of {n} images")
    report()
    report("| call | time | vs one batched forward |")
    report("|---|---|---|")
    for k, t in bt.items():
        report(f"| {k} | {t * 1e3:.1f} ms | {t / bt['batched forward']:.2f}x |")
    report()

    if not args.quick:
        x = loaded.preprocess("chelsea")
        target = int(model(x).argmax())
        naive = naive_score_cam(model, x, layer, target)
        ours = xh.score_cam(model, x, layer, target=target)[0]
        report("## Score-CAM is unchanged by the speed-ups")
        report()
        report(f"Correlation of `xh.score_cam` with the naive one-channel-at-a-time loop on `chelsea`: "
               f"**{correlation(ours, naive):.6f}** (max abs difference {float((ours - naive).abs().max()):.1e}).")
        report()
        if device.type == "cpu":
            for line in memory_table(device):
                report(line)

    report("## Ratios against the targets")
    report()
    report("| target | measured (chelsea; coffee) | met |")
    report("|---|---|---|")

    def both(fn):
        vals = [fn(img) for img in IMAGES]
        return vals, "; ".join(f"{v:.2f}" for v in vals)

    def row(label, vals_text, ok):
        report(f"| {label} | {vals_text} | {'yes' if ok else 'no'} |")

    def get(img, method, peer=None):
        for r in rows:
            if r[0] == img and r[1] == method and (peer is None or r[3] == peer):
                return r
        raise KeyError((img, method, peer))

    for method, peer in (("Grad-CAM", "pgc GradCAM"), ("Grad-CAM++", "pgc GradCAMPlusPlus")):
        v, t = both(lambda img: get(img, method)[2] / limits[img]["forward"])
        row(f"{method} <= 1.25x one forward", t, max(v) <= 1.25)
        v, t = both(lambda img: get(img, method, peer)[4] / get(img, method, peer)[2])
        row(f"{method} >= 2x faster than {peer}", t, min(v) >= 2)
    v, t = both(lambda img: get(img, "CAM")[2] / limits[img]["forward"])
    row("CAM <= 1.1x one forward", t, max(v) <= 1.1)
    v, t = both(lambda img: get(img, "Score-CAM", "pgc ScoreCAM")[4] / get(img, "Score-CAM")[2])
    row("Score-CAM >= 3.5x faster than pgc ScoreCAM", t, min(v) >= 3.5)
    v, t = both(lambda img: get(img, "Score-CAM")[2] / (limits[img]["live"] * limits[img]["best"]))
    row("Score-CAM <= 1.25x its physical limit", t, max(v) <= 1.25)
    report()
    out = Path(args.out) if args.out else HERE / ("RESULTS.md" if device.type == "cpu" else f"RESULTS-{device.type}.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
