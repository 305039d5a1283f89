"""Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for CNNs").

Gradient-free: each activation channel, upsampled and scaled to [0, 1],
becomes a soft mask H^k on the input, and the model's confidence in the class
on the masked image X * H^k is that channel's weight.

The cost is one forward pass per channel, so the implementation is built
around doing exactly those passes and nothing else:

* channels that are constant over the map give an undefined mask (0/0 in the
  min-max step); the authors' code skips them, so they cost nothing here;
* masked images are made a batch at a time (memory bounded by ``batch_size``,
  never by the number of channels) and run in ``channels_last`` layout;
* the masked passes use a private copy of the model with BatchNorm folded
  into the preceding convolutions (exact in eval mode up to float rounding)
  and in-place activations, checked against the original on the real input
  before use;
* by linearity of bilinear upsampling, sum_k s_k Up(A^k) = Up(sum_k s_k A^k),
  so the weighted sum is taken at the layer's resolution.
"""

from __future__ import annotations

import copy
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .core import Target, check_input, finish, forward_with_capture, resolve_targets
from .hooks import evaluating, iter_modules

__all__ = ["score_cam", "score_cam_weights", "fold_batchnorm", "fast_inference_copy", "live_channels", "SCORES"]

SCORES = ("probability", "logit-softmax")


def live_channels(activation: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: True where a channel is not constant over its h x w map.

    A constant channel stays constant after bilinear upsampling, so its
    min-max mask is 0/0: it carries no spatial information and is skipped.
    """
    flat = activation.flatten(2)
    return flat.amax(-1) > flat.amin(-1)


def _fold_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where a BatchNorm2d directly consumes a Conv2d's output."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, nn.Module] = {}
    pairs: list[tuple[str, str]] = []

    def on_conv(module, inputs, output):
        produced[id(output)] = module

    def on_bn(module, inputs):
        conv = produced.get(id(inputs[0]))
        if conv is not None and not isinstance(module, nn.SyncBatchNorm):
            pairs.append((names[conv], names[module]))

    handles = []
    try:
        for m in model.modules():
            if type(m) is nn.BatchNorm2d:
                handles.append(m.register_forward_pre_hook(on_bn))
            elif isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(on_conv))
        with torch.inference_mode():
            output = model(x)
    finally:
        for h in handles:
            h.remove()
    del output
    convs = [c for c, _ in pairs]
    # A conv feeding two BatchNorms (or called twice) cannot be folded into both.
    return [(c, b) for c, b in pairs if convs.count(c) == 1]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _agree(reference_model: nn.Module, other: nn.Module, x: torch.Tensor) -> bool:
    """True if ``other`` reproduces ``reference_model``'s output on ``x`` up to float rounding."""
    with torch.inference_mode():
        reference, result = reference_model(x), other(x)
    scale = reference.abs().max().clamp_min(1.0)
    return torch.allclose(result, reference, rtol=1e-3, atol=1e-3 * float(scale))


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def copy_without_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode, frozen, with none of its hooks.

    Hooks the caller registered (a logger, another CAM library) must not fire
    hundreds of times in our private passes, and deep-copying the objects they
    belong to would be slow; the memo hands the copy empty hook dicts instead.
    """
    memo = {}
    for module in model.modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()
    clone = copy.deepcopy(model, memo).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def fold_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """An eval-mode copy of ``model`` with each Conv2d -> BatchNorm2d pair folded into one conv.

    In eval mode BN(conv(x)) = gamma (W*x + b - mu) / sqrt(var + eps) + beta is
    itself a convolution. The pairs are found by running ``x`` once (so any
    forward, not just ``nn.Sequential``, works) and the folded copy is compared
    with the original on ``x``; if they disagree the unfolded copy is returned.
    The caller's model is not modified, and the copy carries none of its hooks.
    """
    plain = copy_without_hooks(model)
    folded = copy.deepcopy(plain)
    for conv_name, bn_name in _fold_pairs(folded, x):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        _set(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set(folded, bn_name, nn.Identity())
    return folded if _agree(plain, folded, x) else plain


# Activations that can overwrite their input: in the private copy nothing else
# reads a pre-activation tensor, which _agree() confirms on the real input.
_INPLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU)


def fast_inference_copy(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A private copy of ``model`` for many inference passes: BatchNorm folded,
    activations in place, weights in ``channels_last``; checked against ``model`` on ``x``."""
    folded = fold_batchnorm(model, x)
    fast = copy.deepcopy(folded)
    for module in fast.modules():
        if isinstance(module, _INPLACE_ACTIVATIONS):
            module.inplace = True
    fast = fast.to(memory_format=torch.channels_last)
    return fast if _agree(folded, fast, x.contiguous(memory_format=torch.channels_last)) else folded


_FOLDED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    # In-place updates (an optimiser step, load_state_dict) bump _version; a
    # swapped submodule (even one without parameters) changes the structure.
    tensors = list(model.parameters()) + list(model.buffers())
    structure = tuple((id(m), type(m)) for m in iter_modules(model))
    return structure + tuple((id(t), t._version, t.device, t.dtype) for t in tensors)


def _fast_copy(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """:func:`fast_inference_copy` of ``model``, cached until its weights change."""
    key = _fingerprint(model)
    cached = _FOLDED.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    fast = fast_inference_copy(model, x[:1])
    _FOLDED[model] = (key, fast)
    return fast


def default_batch_size(device: torch.device) -> int:
    """Masked images per forward pass: small on CPUs, where 2-8 images fit the caches
    best (benchmarks/RESULTS.md), large on GPUs."""
    return 128 if device.type == "cuda" else 4


def _check_options(batch_size, score) -> None:
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


@torch.inference_mode()
def score_cam_weights(
    model: nn.Module,
    x: torch.Tensor,
    activation: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int | None = None,
    score: str = "probability",
    subtract_baseline: bool = False,
    progress=False,
    fold_bn: bool = True,
) -> torch.Tensor:
    """Score-CAM channel weights s (N, C); 0 for skipped constant channels.

    For each live channel k of image n (Wang et al. 2020, Eq. 3 and Algorithm 1)::

        H^k = s(Up(A^k)),  s(M) = (M - min M) / (max M - min M)
        C(A^k) = f^c(X * H^k) [- f^c(X_b)]

    ``score="probability"``: f^c is the softmax probability of class c and
    the weight is C(A^k) itself, as in the authors' code (the default).
    ``score="logit-softmax"``: f^c is the logit, and the weights are a softmax
    of C(A^k) over the channels, as Algorithm 1 prints it and pytorch-grad-cam
    does; there the baseline term is a constant that cancels.
    ``subtract_baseline`` subtracts f^c(X_b) for an all-zero X_b (the mean image
    in normalised space), Eq. 3's "increase of confidence".
    """
    _check_options(batch_size, score)
    batch_size = batch_size if batch_size is not None else default_batch_size(x.device)
    n, channels = activation.shape[:2]
    size = x.shape[-2:]
    net = _fast_copy(model, x) if fold_bn else model
    live = live_channels(activation)
    total = int(live.sum())
    raw = torch.zeros(n, channels, device=x.device, dtype=torch.float32)

    def class_score(logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.softmax(-1)[:, c] if score == "probability" else logits[:, c]

    bar = None
    done = 0
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="Score-CAM masked passes", unit="ch", leave=False)
    try:
        with evaluating(net):
            for i in range(n):
                idx = live[i].nonzero().squeeze(1)
                image = x[i : i + 1]
                for start in range(0, idx.numel(), batch_size):
                    chunk = idx[start : start + batch_size]
                    masks = F.interpolate(activation[i, chunk].unsqueeze(1).float(), size=size,
                                          mode="bilinear", align_corners=False)
                    lo = masks.amin((2, 3), keepdim=True)
                    masks = (masks - lo) / (masks.amax((2, 3), keepdim=True) - lo)
                    masked = (image * masks.to(x.dtype)).contiguous(memory_format=torch.channels_last)
                    raw[i, chunk] = class_score(net(masked), targets[i])
                    done += chunk.numel()
                    if bar is not None:
                        bar.update(chunk.numel())
                    elif callable(progress):
                        progress(done, total)
                if subtract_baseline and score == "probability":
                    base = class_score(net(torch.zeros_like(image)), targets[i])
                    raw[i, idx] -= base
    finally:
        if bar is not None:
            bar.close()
    if score == "logit-softmax":
        raw = raw.masked_fill(~live, float("-inf")).softmax(-1)
        raw = torch.nan_to_num(raw, nan=0.0)  # an image with no live channel
    return raw


def score_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    target: Target = None,
    batch_size: int | None = None,
    *,
    score: str = "probability",
    subtract_baseline: bool = False,
    progress=False,
    fold_bn: bool = True,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, Algorithm 1, weights as in the authors' code).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k s_k^c\\, \\mathrm{Up}(A^k)\\Big),
        \\qquad s_k^c = \\mathrm{softmax}\\big(f(X \\circ H^k)\\big)_c

    The ReLU is applied after upsampling, as in Algorithm 1, then each map is
    min-max scaled. See :func:`score_cam_weights` for the variants.

    Args:
        model, x, layer, target: as :func:`xai_helpers.grad_cam`.
        batch_size: masked images per forward pass (memory grows with it);
            None picks 4 on CPU and 128 on CUDA.
        score: ``"probability"`` (default) or ``"logit-softmax"``.
        subtract_baseline: subtract the score of an all-zero input.
        progress: True for a tqdm progress bar over the masked passes, or a
            callable ``progress(done, total)`` called after each batch.
        fold_bn: run the masked passes on a BatchNorm-folded copy (faster,
            same result up to float rounding).

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    check_input(model, x, layer)
    _check_options(batch_size, score)
    activation, logits = forward_with_capture(model, x, layer, grad=False)
    targets = resolve_targets(target, logits)
    weights = score_cam_weights(
        model, x, activation, targets, batch_size, score, subtract_baseline, progress, fold_bn
    )
    with torch.inference_mode():
        maps = torch.einsum("nc,nchw->nhw", weights, activation.float())
    return finish(maps, x.shape[-2:], relu_first=False)
