"""Time xai_helpers' methods against pytorch-grad-cam, torchcam and captum, and against physical limits.

Everything runs in one process on the same model (EfficientNet-Lite0), layer
(the 1280-channel head), images and targets, with the runs interleaved so that
machine noise hits every contender alike; each figure is a median.

Physical limits:
  * CAM: one forward pass;
  * Grad-CAM / Grad-CAM++: one forward pass plus a backward pass through the head only;
  * Score-CAM: one forward pass per live (non-constant) channel, at the model's
    best per-image throughput (the unmodified model in channels_last batches).

The captum section (lessons 08-10) compares Occlusion, Integrated Gradients,
LIME, Kernel SHAP and the one-pass pixel methods with captum on the same
image, target, superpixels and settings. Limits there: passes x the best
per-image pass time (forward, or forward + backward to the input).

Usage:
    python benchmarks/bench_methods.py                 # CPU, writes benchmarks/RESULTS.md
    python benchmarks/bench_methods.py --captum-only   # only the captum section, replaced in RESULTS.md
    python benchmarks/bench_methods.py --variants-only # only lesson 11's CAM variants against the peers
    python benchmarks/bench_methods.py --later-only    # only lesson 11's Ablation-CAM, SS/IS-CAM, ... against the peers
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
from xai_helpers.engine import default_batch_size, layer_pass
from xai_helpers.methods.score_cam import live_channels

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
    activation = layer_pass(model, x, layer, gradient=False).activation
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
RSS_SAMPLER = r"""
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
"""

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
""" + RSS_SAMPLER + r"""if kind == "ours":
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


CAPTUM_MARKER = "## Lessons 08-10 against captum"

MEMORY_BATCH_CHILD = r"""
import json, os, sys, threading, time, torch
import xai_helpers as xh
kind, batch = sys.argv[1], int(sys.argv[2])
m = xh.load_model()
x = m.preprocess("chelsea")
with torch.no_grad():
    m.model(x)
""" + RSS_SAMPLER + r"""if kind == "occlusion":
    xh.occlusion(m.model, x, 285, window=32, stride=16, batch_size=batch)
else:
    xh.integrated_gradients(m.model, x, 285, steps=50, batch_size=batch)
running[0] = False
thread.join()
print(json.dumps({"growth_mb": max(peak[0], rss_mb()) - before}))
"""


def memory_by_batch(kind: str, batch: int) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_BATCH_CHILD, kind, str(batch)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mb"]


def best_per_image_backward(model, x, device, repeats) -> tuple[float, int]:
    """Fastest time per image of one forward + backward to the input, over batch sizes."""
    sizes = (1, 2, 4, 8, 16) if device.type == "cpu" else (1, 8, 32, 64)
    best = (float("inf"), 1)
    for bs in sizes:
        xb = x.repeat(bs, 1, 1, 1)

        def step():
            leaf = xb.clone().requires_grad_(True)
            return torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)[0]

        step()
        t = statistics.median(timed(step, device)[0] for _ in range(repeats)) / bs
        best = min(best, (t, bs))
    return best


def captum_section(loaded, device, repeats: int, slow_repeats: int, quick: bool) -> list[str]:
    """Lessons 08-10's methods against captum on chelsea: times, limits, agreement; returns report lines."""
    import warnings

    try:
        import sklearn  # noqa: F401  (captum's Lime and KernelShap fit with scikit-learn)

        from captum._utils.models.linear_model import SkLearnRidge
    except ImportError:
        SkLearnRidge = None
    from captum.attr import (DeepLift, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
                             KernelShap, Lime, NoiseTunnel, Occlusion, Saliency)

    from xai_helpers.methods.surrogates import superpixels

    warnings.filterwarnings("ignore", module="captum")
    model, layer = loaded.model, loaded.target_layer
    # captum's hooks need out-of-place activations: it gets its own copy (same weights).
    cap_model = copy.deepcopy(model)
    for module in cap_model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    x = loaded.preprocess("chelsea")
    with torch.inference_mode():
        target = int(model(x).argmax())
    seg = superpixels(x)
    m = int(seg.max()) + 1
    samples = 1000
    batch = 8

    def prob(inp):
        return cap_model(inp).softmax(-1)

    def lime_similarity(original, perturbed, interpretable, **_):
        cosine = interpretable.sum().sqrt() / interpretable.numel() ** 0.5
        return torch.exp(-((1 - cosine) ** 2) / 0.25**2)

    cap_lime = Lime(prob, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=lime_similarity) if SkLearnRidge else None
    fast = {
        "Saliency": lambda: xh.saliency(model, x, target),
        "captum Saliency": lambda: Saliency(cap_model).attribute(x, target=target, abs=False),
        "Gradient × Input": lambda: xh.input_x_gradient(model, x, target),
        "captum InputXGradient": lambda: InputXGradient(cap_model).attribute(x, target=target),
        "DeepLIFT": lambda: xh.deeplift(model, x, target),
        "captum DeepLift": lambda: DeepLift(cap_model).attribute(x, baselines=torch.zeros_like(x), target=target),
        "Guided Backprop": lambda: xh.guided_backprop(model, x, target),
        "captum GuidedBackprop": lambda: GuidedBackprop(cap_model).attribute(x, target=target),
        "Guided Grad-CAM": lambda: xh.guided_grad_cam(model, x, layer, target),
        "captum GuidedGradCam": lambda: GuidedGradCam(cap_model, cap_model.features.head).attribute(
            x, target=target, interpolate_mode="bilinear"),
    }
    slow = {
        "Occlusion": lambda: xh.occlusion(model, x, target, window=32, stride=16),
        "captum Occlusion": lambda: Occlusion(prob).attribute(x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16),
                                                              baselines=0, target=target),
        f"captum Occlusion, {batch} per pass": lambda: Occlusion(prob).attribute(
            x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0, target=target,
            perturbations_per_eval=batch),
        "Integrated Gradients": lambda: xh.integrated_gradients(model, x, target, steps=50),
        "captum IntegratedGradients": lambda: IntegratedGradients(cap_model).attribute(x, target=target, n_steps=50),
        f"captum IntegratedGradients, {batch} per pass": lambda: IntegratedGradients(cap_model).attribute(
            x, target=target, n_steps=50, internal_batch_size=batch),
        "SmoothGrad": lambda: xh.smoothgrad(model, x, target, samples=50, noise=0.15),
        "captum NoiseTunnel(Saliency)": lambda: NoiseTunnel(Saliency(cap_model)).attribute(
            x, nt_type="smoothgrad", nt_samples=50, nt_samples_batch_size=batch,
            stdevs=0.15 * float(x.max() - x.min()), target=target, abs=False),
    }
    surrogate = {
        "LIME": lambda: xh.lime(model, x, target, segments=seg, samples=samples),
        "captum Lime": lambda: cap_lime.attribute(x, baselines=0, target=target, feature_mask=seg[:, None],
                                                  n_samples=samples),
        f"captum Lime, {batch} per pass": lambda: cap_lime.attribute(
            x, baselines=0, target=target, feature_mask=seg[:, None], n_samples=samples, perturbations_per_eval=batch),
        "Kernel SHAP": lambda: xh.kernel_shap(model, x, target, segments=seg, samples=samples),
        "captum KernelShap": lambda: KernelShap(prob).attribute(x, baselines=0, target=target, feature_mask=seg[:, None],
                                                                n_samples=samples),
        f"captum KernelShap, {batch} per pass": lambda: KernelShap(prob).attribute(
            x, baselines=0, target=target, feature_mask=seg[:, None], n_samples=samples, perturbations_per_eval=batch),
    }
    if cap_lime is None:  # no scikit-learn: time ours alone
        surrogate = {k: v for k, v in surrogate.items() if not k.startswith("captum")}
    for fn in fast.values():
        fn()
    if device.type == "cuda":  # the first call on a GPU pays for kernel selection: warm every entry up
        for fn in [*slow.values(), *surrogate.values()]:
            fn()
    times, outs = interleaved(fast, repeats, device)
    t, o = interleaved(slow, slow_repeats, device)
    times.update(t), outs.update(o)
    t, o = interleaved(surrogate, 1 if quick else slow_repeats, device)
    times.update(t), outs.update(o)
    best_fwd, fwd_bs = best_per_image_forward(model, x, device, repeats)
    best_bwd, bwd_bs = best_per_image_backward(model, x, device, repeats)
    _, delta = xh.deeplift(model, x, target, return_delta=True)
    _, cap_delta = DeepLift(cap_model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                 return_convergence_delta=True)
    positions = 13 * 13

    lines = [CAPTUM_MARKER, "",
             f"Measured {datetime.date.today().isoformat()} on {machine_details(device)}. `chelsea`, target {target} "
             f"'{loaded.categories[target]}', batch 1; {m} SLIC superpixels shared by both libraries; our batch size "
             f"{default_batch_size(device)}. Medians of {repeats} interleaved runs for one-pass methods, "
             f"{slow_repeats} for the others ({1 if quick else slow_repeats} for LIME and Kernel SHAP). captum runs on a copy "
             "with out-of-place activations, which its hooks need. Best per-image pass times: forward "
             f"{best_fwd * 1e3:.2f} ms (batch {fwd_bs}, channels_last), forward + backward to the input "
             f"{best_bwd * 1e3:.2f} ms (batch {bwd_bs}).", "",
             "| ours | time | captum (default settings) | captum time | speed-up | captum, same batch as ours | speed-up | correlation |",
             "|---|---|---|---|---|---|---|---|"]
    pairs = [
        ("Saliency", "captum Saliency", None), ("Gradient × Input", "captum InputXGradient", None),
        ("DeepLIFT", "captum DeepLift", None), ("Guided Backprop", "captum GuidedBackprop", None),
        ("Guided Grad-CAM", "captum GuidedGradCam", None),
        ("Occlusion", "captum Occlusion", f"captum Occlusion, {batch} per pass"),
        ("Integrated Gradients", "captum IntegratedGradients", f"captum IntegratedGradients, {batch} per pass"),
        ("SmoothGrad", "captum NoiseTunnel(Saliency)", None),
        ("LIME", "captum Lime", f"captum Lime, {batch} per pass"),
        ("Kernel SHAP", "captum KernelShap", f"captum KernelShap, {batch} per pass"),
    ]
    ratio = {}
    pairs = [p for p in pairs if p[1] in times]
    for ours, peer, same in pairs:
        ours_map = outs[ours].reshape(-1)
        corr = correlation(ours_map, outs[peer].reshape(-1)[: ours_map.numel()]) if outs[peer].numel() == outs[ours].numel() \
            else correlation(ours_map, outs[peer][:, 0].reshape(-1))
        ratio[ours] = times[peer] / times[ours]
        same_cells = f"{duration(times[same])} | {times[same] / times[ours]:.1f}x" if same else "– | –"
        if same:
            ratio[ours + " same"] = times[same] / times[ours]
        lines.append(f"| {ours} | {duration(times[ours])} | {peer} | {duration(times[peer])} | {ratio[ours]:.1f}x | "
                     f"{same_cells} | {corr:.4f} |")
    occ_limit = (positions + 1) * best_fwd
    ig_limit = best_fwd + 50 * best_bwd
    lines += ["",
              "Correlations below 1: DeepLIFT, because captum's DeepLift leaves `ReLU6` (this model's activation) "
              f"unmodified; summation-to-delta error, ours {float(delta.abs().max()):.1e}, captum "
              f"{float(cap_delta.abs().max()):.2f} (the logit itself is {float(model(x)[0, target]):.2f}). "
              "LIME and Kernel SHAP: the two libraries draw different coalitions (and captum's Kernel SHAP has no "
              "efficiency constraint), so the values agree only up to sampling noise; with the same coalitions they "
              "agree to 1e-7 (tests/test_captum_oracles.py). SmoothGrad: different noise draws.", "",
              "| limit | passes x best per-image time | ours | ours / limit |", "|---|---|---|---|",
              f"| Occlusion, window 32, stride 16 | {positions + 1} forwards = {duration(occ_limit)} | "
              f"{duration(times['Occlusion'])} | {times['Occlusion'] / occ_limit:.2f} |",
              f"| Integrated Gradients, 50 steps | 1 forward + 50 forward-backward = {duration(ig_limit)} | "
              f"{duration(times['Integrated Gradients'])} | {times['Integrated Gradients'] / ig_limit:.2f} |", ""]
    if not quick and device.type == "cpu":
        lines += ["Memory (peak RSS growth of one call, EfficientNet-Lite0, chelsea): it grows with the batch size, "
                  "not with the number of passes.", "", "| call | batch 4 | batch 32 |", "|---|---|---|"]
        for kind, label in (("occlusion", "Occlusion, 170 passes"), ("ig", "Integrated Gradients, 50 steps")):
            lines.append(f"| {label} | {memory_by_batch(kind, 4):.0f} MB | {memory_by_batch(kind, 32):.0f} MB |")
        lines.append("")
    lines += ["| target | measured | met |", "|---|---|---|"]
    checks = [c for c in [
        ("Occlusion >= 1.5x faster than captum's (default settings)", ratio["Occlusion"], ratio["Occlusion"] >= 1.5),
        ("Occlusion <= 1.3x its physical limit", times["Occlusion"] / occ_limit, times["Occlusion"] / occ_limit <= 1.3),
        ("Integrated Gradients >= 1.5x faster than captum's (default settings)", ratio["Integrated Gradients"],
         ratio["Integrated Gradients"] >= 1.5),
        ("Integrated Gradients <= 1.3x its physical limit", times["Integrated Gradients"] / ig_limit,
         times["Integrated Gradients"] / ig_limit <= 1.3),
        ("LIME >= 1.5x faster than captum's at 1000 samples", ratio.get("LIME"), ratio.get("LIME", 0) >= 1.5),
        ("Kernel SHAP >= 1.5x faster than captum's at 1000 samples", ratio.get("Kernel SHAP"),
         ratio.get("Kernel SHAP", 0) >= 1.5),
    ] if c[1] is not None]
    for label, value, ok in checks:
        lines.append(f"| {label} | {value:.2f} | {'yes' if ok else 'no'} |")
    lines.append("")
    return lines


ENGINE_MARKER = "## The engine: one-pass rules, Integrated Gradients at equal accuracy, the cached fast copy"


def engine_section(loaded, device, repeats: int) -> list[str]:
    """DeepLIFT and Guided Backprop against captum, Integrated Gradients against captum's best setting at
    equal accuracy, and what the cached fast copy costs; one interleaved run, returns report lines."""
    import warnings

    from captum.attr import DeepLift, GuidedBackprop, IntegratedGradients

    from xai_helpers.course.images import photo_variant
    from xai_helpers.engine.fast_copy import clear_fast_copies, fast_copy

    warnings.filterwarnings("ignore", module="captum")
    model = loaded.model
    cap_model = copy.deepcopy(model)
    for module in cap_model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    # A photo outside the sample set: the cat, mirrored.
    x = loaded.preprocess(photo_variant("chelsea", "mirror"))
    with torch.inference_mode():
        target = int(model(x).argmax())
    zeros = torch.zeros_like(x)
    one_pass = {
        "DeepLIFT": lambda: xh.deeplift(model, x, target),
        "captum DeepLift": lambda: DeepLift(cap_model).attribute(x, baselines=zeros, target=target),
        "Guided Backprop": lambda: xh.guided_backprop(model, x, target),
        "captum GuidedBackprop": lambda: GuidedBackprop(cap_model).attribute(x, target=target),
    }
    ig = {
        "Integrated Gradients": lambda: xh.integrated_gradients(model, x, target, steps=50, return_delta=True),
        "captum IG, internal_batch_size=10": lambda: IntegratedGradients(cap_model).attribute(
            x, target=target, n_steps=50, internal_batch_size=10, return_convergence_delta=True),
        "captum IG, internal_batch_size=None": lambda: IntegratedGradients(cap_model).attribute(
            x, target=target, n_steps=50, return_convergence_delta=True),
    }
    for fn in [*one_pass.values(), *ig.values()]:
        fn()
    times, _ = interleaved(one_pass, repeats, device)
    ig_times, ig_outs = interleaved(ig, max(3, repeats // 4), device)
    gaps = {k: float(out[1].abs().max()) for k, out in ig_outs.items()}
    best_captum = min((k for k in ig if k.startswith("captum")), key=lambda k: ig_times[k])

    # The fast copy: built on the first call, checked and reused on the others.
    def build():
        clear_fast_copies()
        return fast_copy(model, x)

    def reuse():
        return fast_copy(model, x)

    reuse()
    copy_times, _ = interleaved({"build": build, "reuse": reuse}, repeats, device)
    clear_fast_copies()
    first, _ = timed(lambda: xh.score_cam(model, x, loaded.target_layer, target), device)
    again, _ = timed(lambda: xh.score_cam(model, x, loaded.target_layer, target), device)

    dl, gb = times["captum DeepLift"] / times["DeepLIFT"], times["captum GuidedBackprop"] / times["Guided Backprop"]
    ig_ratio = ig_times[best_captum] / ig_times["Integrated Gradients"]
    lines = [ENGINE_MARKER, "",
             f"Measured {datetime.date.today().isoformat()} on {machine_details(device)}. The mirrored `chelsea` "
             f"(a photo outside the sample set), target {target} '{loaded.categories[target]}', batch 1; medians of "
             f"{repeats} interleaved runs ({max(3, repeats // 4)} for Integrated Gradients). captum runs on a copy "
             "with out-of-place activations.", "",
             "| ours | time | captum | time | captum / ours |", "|---|---|---|---|---|",
             f"| DeepLIFT | {duration(times['DeepLIFT'])} | DeepLift | {duration(times['captum DeepLift'])} | {dl:.2f} |",
             f"| Guided Backprop | {duration(times['Guided Backprop'])} | GuidedBackprop | "
             f"{duration(times['captum GuidedBackprop'])} | {gb:.2f} |", "",
             "Integrated Gradients, 50 Gauss-Legendre points each (captum's default rule), zero reference; the "
             "completeness gap is max |sum(IG) - (F(x) - F(x'))| in logits:", "",
             "| call | time | completeness gap |", "|---|---|---|"]
    for name in ig:
        lines.append(f"| {name} | {duration(ig_times[name])} | {gaps[name]:.4f} |")
    lines += ["",
              f"Building the fast copy (deep copy, BatchNorm folded, checked): {duration(copy_times['build'])}; "
              f"reusing it (fingerprint, value comparison, one checking pass): {duration(copy_times['reuse'])}. "
              f"Score-CAM of the mirrored cat, first call {duration(first)}, second call {duration(again)}.", "",
              "| target | measured | met |", "|---|---|---|",
              f"| DeepLIFT at least as fast as captum's | {dl:.2f} | {'yes' if dl >= 1 else 'no'} |",
              f"| Guided Backprop at least as fast as captum's | {gb:.2f} | {'yes' if gb >= 1 else 'no'} |",
              f"| Integrated Gradients >= 1.25x faster than captum's best setting ({best_captum.split(', ')[1]}) | "
              f"{ig_ratio:.2f} | {'yes' if ig_ratio >= 1.25 else 'no'} |",
              f"| ... at an equal or smaller completeness gap | ours {gaps['Integrated Gradients']:.4f}, captum "
              f"{gaps[best_captum]:.4f} | {'yes' if gaps['Integrated Gradients'] <= gaps[best_captum] * 1.001 else 'no'} |",
              ""]
    return lines


VARIANTS_MARKER = "## Lesson 11: the CAM variants against pytorch-grad-cam and torchcam"


def variants_section(loaded, device, repeats: int) -> list[str]:
    """The one-pass CAM variants of lesson 11 against pytorch-grad-cam and torchcam, and against one forward
    pass; one interleaved run on each of IMAGES, returns report lines."""
    import pytorch_grad_cam as pgc_lib
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam import methods as tc_lib

    model, layer = loaded.model, loaded.target_layer
    pgc_model, tc_model = copy.deepcopy(model), copy.deepcopy(model)
    ours = {"LayerCAM": xh.layer_cam, "XGrad-CAM": xh.xgrad_cam, "HiResCAM": xh.hires_cam,
            "Grad-CAM element-wise": xh.grad_cam_elementwise, "EigenCAM": xh.eigen_cam, "Eigen-Grad-CAM": xh.eigen_grad_cam}
    pgc_names = {"LayerCAM": "LayerCAM", "XGrad-CAM": "XGradCAM", "HiResCAM": "HiResCAM",
                 "Grad-CAM element-wise": "GradCAMElementWise", "EigenCAM": "EigenCAM", "Eigen-Grad-CAM": "EigenGradCAM"}
    tc_names = {"LayerCAM": "LayerCAM", "XGrad-CAM": "XGradCAM"}
    lines = [VARIANTS_MARKER, "",
             f"Measured {datetime.date.today().isoformat()} on {machine_details(device)}. EfficientNet-Lite0, layer "
             f"`features.head`, batch 1, each photo's top-1 class; medians of {repeats} interleaved runs. Each library "
             "runs on its own copy of the network. \"vs forward\" is ours over one forward pass in inference mode "
             "(channels_last, the layout of the package's passes).", "",
             "| photo | method | ours | vs forward | pgc | pgc / ours | torchcam | torchcam / ours | corr. with pgc |",
             "|---|---|---|---|---|---|---|---|---|"]
    worst_forward, worst_pgc = 0.0, float("inf")
    for name in IMAGES:
        x = loaded.preprocess(name)
        with torch.inference_mode():
            target = int(model(x).argmax())
        pgc = {k: getattr(pgc_lib, v)(model=pgc_model, target_layers=[pgc_model.features.head]) for k, v in pgc_names.items()}

        def torchcam_call(cls):
            def run():
                with cls(tc_model, target_layer=tc_model.features.head) as extractor:
                    return extractor(class_idx=target, scores=tc_model(x))[0]
            return run

        x_cl = x.contiguous(memory_format=torch.channels_last)

        def forward_only():
            with torch.inference_mode():
                return model(x_cl)  # the layout the package's passes use, the faster one on CPU

        # Ours first, then the peers, in each round: pytorch-grad-cam's numpy SVD leaves OpenBLAS threads
        # spinning for a while, which would slow whichever torch call came right after it.
        entries = {"forward": forward_only}
        for k, f in ours.items():
            entries[k] = (lambda f=f: f(model, x, layer, target=target))
        for k in ours:
            entries["pgc " + k] = (lambda c=pgc[k]: c(input_tensor=x, targets=[ClassifierOutputTarget(target)]))
        for k in tc_names:
            entries["torchcam " + k] = torchcam_call(getattr(tc_lib, tc_names[k]))
        for fn in entries.values():
            fn()
        times, outs = interleaved(entries, repeats, device)
        for cam in pgc.values():
            cam.activations_and_grads.release()
        for k in ours:
            ratio_pgc = times["pgc " + k] / times[k]
            vs_forward = times[k] / times["forward"]
            if k != "EigenCAM":  # the gradient variants' targets
                worst_forward, worst_pgc = max(worst_forward, vs_forward), min(worst_pgc, ratio_pgc)
            corr = correlation(outs[k][0], to_map(outs["pgc " + k], x.shape[-2:], device))
            tc = (f"{duration(times['torchcam ' + k])} | {times['torchcam ' + k] / times[k]:.1f}x" if k in tc_names
                  else "– | –")
            lines.append(f"| {name} | {k} | {duration(times[k])} | {vs_forward:.2f}x | {duration(times['pgc ' + k])} | "
                         f"{ratio_pgc:.1f}x | {tc} | {corr:.4f} |")
    lines += ["",
              "| target | measured (worst photo) | met |", "|---|---|---|",
              f"| every gradient variant <= 1.25x one forward pass | {worst_forward:.2f}x | "
              f"{'yes' if worst_forward <= 1.25 else 'no'} |",
              f"| every gradient variant >= 2x faster than pgc | {worst_pgc:.1f}x | {'yes' if worst_pgc >= 2 else 'no'} |",
              ""]
    return lines


LATER_MARKER = "## Lesson 11: Ablation-CAM, Smooth Grad-CAM++, SS-CAM, IS-CAM and FullGrad against the peers"


def later_section(loaded, device, repeats: int) -> list[str]:
    """The multi-pass members of lesson 11 and FullGrad against pytorch-grad-cam and torchcam, on the same model,
    photos, targets and settings; one interleaved run per photo. pytorch-grad-cam's AblationCAM (1280 full
    passes) and the two libraries' SS-CAM and IS-CAM run once per photo, the rest ``repeats`` times."""
    import pytorch_grad_cam as pgc_lib
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam import methods as tc_lib

    model, layer = loaded.model, loaded.target_layer
    # pytorch-grad-cam keeps its hooks registered between calls, and each of its objects records every pass
    # through its model: AblationCAM's 1280 passes would pile up in FullGrad's records (tens of GB) on a
    # shared copy. So each peer object gets its own copy of the network.
    ablation_model, fullgrad_model, tc_model = (copy.deepcopy(model) for _ in range(3))
    lines = [LATER_MARKER, "",
             f"Measured {datetime.date.today().isoformat()} on {machine_details(device)}. EfficientNet-Lite0, layer "
             "`features.head`, batch 1, each photo's top-1 class. SS-CAM and IS-CAM run with 2 samples in both "
             "libraries; torchcam scores all 1280 channels, the package only the live ones (it leaves constant "
             "channels out of the softmax, a stated difference, docs/methods.md); the slow peers "
             f"run once per photo, everything else {repeats} times, medians. Each library has its own copy of the network.",
             "", "| photo | method | ours | vs forward | peer | peer time | peer / ours | corr. with the peer |",
             "|---|---|---|---|---|---|---|---|"]
    ratios = {}
    for name in IMAGES:
        x = loaded.preprocess(name)
        with torch.inference_mode():
            target = int(model(x).argmax())
        x_cl = x.contiguous(memory_format=torch.channels_last)

        def forward_only():
            with torch.inference_mode():
                return model(x_cl)

        def pgc_call(cls, net, **kw):
            cam = cls(model=net, target_layers=[net.features.head], **kw)
            def run():
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
            return cam, run

        def tc_call(cls, needs_grad, **kw):
            def run():
                with cls(tc_model, target_layer=tc_model.features.head, **kw) as extractor:
                    with torch.set_grad_enabled(needs_grad):
                        scores = tc_model(x)
                    return extractor(class_idx=target, scores=scores)[0]
            return run

        ablation_pgc, ablation_run = pgc_call(pgc_lib.AblationCAM, ablation_model)
        fullgrad_pgc = pgc_lib.FullGrad(model=fullgrad_model, target_layers=[])
        fast = {
            "forward": forward_only,
            "FullGrad": lambda: xh.full_grad(model, x, target=target),
            "Smooth Grad-CAM++": lambda: xh.smooth_grad_cam_plus_plus(model, x, layer, target=target, samples=4),
            "Ablation-CAM": lambda: xh.ablation_cam(model, x, layer, target=target),
            "pgc FullGrad": lambda: fullgrad_pgc(input_tensor=x, targets=[ClassifierOutputTarget(target)]),
            "torchcam SmoothGradCAMpp": tc_call(tc_lib.SmoothGradCAMpp, True, num_samples=4),
        }
        slow = {
            "SS-CAM": lambda: xh.ss_cam(model, x, layer, target=target, samples=2),
            "IS-CAM": lambda: xh.is_cam(model, x, layer, target=target, samples=2),
            "pgc AblationCAM": ablation_run,
            "torchcam SSCAM": tc_call(tc_lib.SSCAM, False, num_samples=2),
            "torchcam ISCAM": tc_call(tc_lib.ISCAM, False, num_samples=2),
        }
        for fn in fast.values():
            fn()
        fast_t, outs = interleaved(fast, repeats, device)
        xh.ss_cam(model, x, layer, target=target, samples=1, top_channels=8)  # builds the fast copy once
        slow_t, slow_outs = interleaved(slow, 1, device)
        ablation_pgc.activations_and_grads.release()
        fullgrad_pgc.activations_and_grads.release()
        times, outs = {**fast_t, **slow_t}, {**outs, **slow_outs}
        pairs = (("FullGrad", "pgc FullGrad"), ("Smooth Grad-CAM++", "torchcam SmoothGradCAMpp"),
                 ("Ablation-CAM", "pgc AblationCAM"), ("SS-CAM", "torchcam SSCAM"), ("IS-CAM", "torchcam ISCAM"))
        for ours, peer in pairs:
            ratio = times[peer] / times[ours]
            ratios.setdefault(ours, []).append(ratio)
            corr = correlation(outs[ours][0], to_map(outs[peer], x.shape[-2:], device))
            lines.append(f"| {name} | {ours} | {duration(times[ours])} | {times[ours] / times['forward']:.1f}x | {peer} | "
                         f"{duration(times[peer])} | {ratio:.1f}x | {corr:.4f} |")
    worst = {k: min(v) for k, v in ratios.items()}
    lines += ["", "| target | measured (worst photo) | met |", "|---|---|---|",
              f"| Ablation-CAM >= 5x faster than pgc's AblationCAM | {worst['Ablation-CAM']:.1f}x | "
              f"{'yes' if worst['Ablation-CAM'] >= 5 else 'no'} |",
              f"| SS-CAM >= 3x faster than torchcam's (same samples) | {worst['SS-CAM']:.1f}x | "
              f"{'yes' if worst['SS-CAM'] >= 3 else 'no'} |",
              f"| IS-CAM >= 3x faster than torchcam's (same samples) | {worst['IS-CAM']:.1f}x | "
              f"{'yes' if worst['IS-CAM'] >= 3 else 'no'} |", ""]
    return lines


def replace_section(path: Path, marker: str, lines: list[str]) -> None:
    """Put ``lines`` (starting with ``marker``) in place of that section of ``path``, or append them."""
    text = path.read_text() if path.exists() else ""
    section = "\n".join(lines)
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + len(marker))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the naive loop and memory test")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/RESULTS[-cuda].md)")
    parser.add_argument("--memory-only", action="store_true", help="only the Score-CAM memory test (printed, not written)")
    parser.add_argument("--captum-only", action="store_true", help="only the captum section, replaced in the results file")
    parser.add_argument("--engine-only", action="store_true", help="only the engine section, replaced in the results file")
    parser.add_argument("--variants-only", action="store_true", help="only lesson 11's CAM variants, replaced in the results file")
    parser.add_argument("--later-only", action="store_true",
                        help="only lesson 11's Ablation-CAM, Smooth Grad-CAM++, SS-CAM, IS-CAM and FullGrad, replaced in the results file")
    args = parser.parse_args(argv)
    if args.memory_only:
        print("\n".join(memory_table(torch.device("cpu"))))
        return 0
    device = torch.device(args.device)
    fast_repeats, slow_repeats = (3, 1) if args.quick else (7, 3)
    out = Path(args.out) if args.out else HERE / ("RESULTS.md" if device.type == "cpu" else f"RESULTS-{device.type}.md")
    if args.captum_only or args.engine_only or args.variants_only or args.later_only:
        loaded = xh.load_model(device=device)
        if args.captum_only:
            section, marker = captum_section(loaded, device, fast_repeats, slow_repeats - 1 or 1, args.quick), CAPTUM_MARKER
        elif args.variants_only:
            section, marker = variants_section(loaded, device, 5 if args.quick else 15), VARIANTS_MARKER
        elif args.later_only:
            section, marker = later_section(loaded, device, 3 if args.quick else 7), LATER_MARKER
        else:
            section, marker = engine_section(loaded, device, 5 if args.quick else 21), ENGINE_MARKER
        print("\n".join(section))
        replace_section(out, marker, section)
        print(f"wrote {out}")
        return 0

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
        activation = layer_pass(model, x, layer, gradient=False).activation
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
    for line in captum_section(loaded, device, fast_repeats, slow_repeats - 1 or 1, args.quick):
        report(line)
    for line in engine_section(loaded, device, 5 if args.quick else 21):
        report(line)
    for line in variants_section(loaded, device, 5 if args.quick else 15):
        report(line)
    for line in later_section(loaded, device, 3 if args.quick else 7):
        report(line)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
