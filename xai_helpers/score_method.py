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
* the masked passes use a private copy of the model, made afresh for each
  call, with BatchNorm folded into the preceding convolutions (exact in eval
  mode up to float rounding) and in-place activations, checked against the
  original's output on the real input before use, with announced fallbacks
  (:func:`fast_inference_copy`);
* by linearity of bilinear upsampling, sum_k s_k Up(A^k) = Up(sum_k s_k A^k),
  so the weighted sum is taken at the layer's resolution.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .core import (
    ReshapeTransform,
    Target,
    check_input,
    finish,
    forward_with_capture,
    is_callable_target,
    select_output,
    target_scores,
    to_feature_map,
)
from .hooks import evaluating, iter_modules

__all__ = [
    "score_cam",
    "score_cam_weights",
    "fold_batchnorm",
    "fast_inference_copy",
    "copy_without_hooks",
    "live_channels",
    "uses_batch_statistics",
    "SCORES",
]

SCORES = ("probability", "logit-softmax")


def live_channels(activation: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: True where a channel is not constant over its h x w map.

    A constant channel stays constant after bilinear upsampling, so its
    min-max mask is 0/0: it carries no spatial information and is skipped.
    """
    flat = activation.flatten(2)
    return flat.amax(-1) > flat.amin(-1)


def _foldable(module: nn.Module) -> bool:
    # Only a BatchNorm2d that normalises with stored statistics in eval mode is a
    # fixed affine map; without running stats it uses each batch's statistics.
    return type(module) is nn.BatchNorm2d and module.track_running_stats and module.running_mean is not None


def uses_batch_statistics(model: nn.Module) -> bool:
    """True if some BatchNorm normalises with the batch's own statistics even in eval mode
    (``track_running_stats=False``): then an image's output depends on the rest of its batch."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None for m in iter_modules(model)
    )


def _fold_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where a foldable BatchNorm2d reads a Conv2d's output *unchanged*.

    Found by running ``x`` once: each conv's output tensor is kept (so its
    identity cannot be reused by another tensor) with its version counter, and a
    BatchNorm is paired only with the very tensor a conv produced, not modified
    in place since (an in-place ReLU between them would make folding wrong).
    """
    names = {m: n for n, m in model.named_modules()}
    produced: list[tuple[nn.Module, torch.Tensor, int]] = []
    pairs: list[tuple[str, str]] = []

    def on_conv(module, inputs, output):
        produced.append((module, output, output._version))

    def on_bn(module, inputs):
        for conv, tensor, version in reversed(produced):
            if tensor is inputs[0]:
                if tensor._version == version:
                    pairs.append((names[conv], names[module]))
                return

    handles = []
    try:
        for m in iter_modules(model):
            if _foldable(m):
                handles.append(m.register_forward_pre_hook(on_bn))
            elif isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(on_conv))
        # no_grad, not inference_mode: inference tensors have no version counter.
        with torch.inference_mode(False), torch.no_grad():
            output = model(x)
    finally:
        for h in handles:
            h.remove()
    del output, produced
    convs = [c for c, _ in pairs]
    bns = [b for _, b in pairs]
    # A conv feeding two BatchNorms (or a module called twice) cannot be folded.
    return [(c, b) for c, b in pairs if convs.count(c) == 1 and bns.count(b) == 1]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _agree(reference: torch.Tensor, other: nn.Module, x: torch.Tensor) -> bool:
    """True if ``other`` reproduces the ``reference`` output on ``x`` up to float rounding."""
    with torch.inference_mode():
        result = select_output(other(x))
    if result.shape != reference.shape:
        return False
    reference = reference.float()
    scale = reference.abs().max().clamp_min(1.0)
    return torch.allclose(result.float(), reference, rtol=1e-3, atol=1e-3 * float(scale))


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
    A hook that *changes* outputs is caught by the agreement check of
    :func:`fast_inference_copy`, which then falls back to the model itself.
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
    """A hook-free eval-mode copy of ``model`` with each Conv2d -> BatchNorm2d pair folded into one conv.

    In eval mode BN(conv(x)) = gamma (W*x + b - mu) / sqrt(var + eps) + beta is
    itself a convolution. Pairs are found by running ``x`` once (any forward,
    not just ``nn.Sequential``); see :func:`_fold_pairs` for what counts as a
    pair. The caller's model is not modified. The result is *not* checked
    here: :func:`fast_inference_copy` checks it against the model's output.
    """
    folded = copy_without_hooks(model)
    for conv_name, bn_name in _fold_pairs(folded, x):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        _set(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set(folded, bn_name, nn.Identity())
    return folded


# Activations that can overwrite their input: in the private copy nothing else
# reads a pre-activation tensor, which the agreement check confirms on the real input.
_INPLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU)


def _set_inplace(model: nn.Module, inplace: bool) -> list[nn.Module]:
    """Switch the activations of a private copy to (or back from) in-place; returns the ones changed."""
    changed = [m for m in model.modules() if isinstance(m, _INPLACE_ACTIVATIONS) and m.inplace != inplace]
    for module in changed:
        module.inplace = inplace
    return changed


def fast_inference_copy(model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None,
                        who: str = "score_cam") -> nn.Module:
    """The fastest model that provably computes what ``model`` computes, for many inference passes.

    Candidates, fastest first, each checked against ``reference`` (the model's
    selected output on ``x``; computed when None) on the real input:

    1. a private copy with BatchNorm folded into the convolutions, in-place
       activations and ``channels_last`` weights;
    2. the folded copy without in-place activations;
    3. a plain private copy (no hooks);
    4. ``model`` itself, hooks and all.

    The fast path applies to models whose only changes are those above: a
    BatchNorm2d with running statistics reading a Conv2d's output, activations
    whose input nothing else reads, no forward hook that changes an output.
    Each fallback is announced with a ``RuntimeWarning`` saying why, naming
    ``who`` (the method that asked) and its "masked passes".
    """
    if reference is None:
        with torch.inference_mode(), evaluating(model):
            reference = select_output(model(x))
    # One private copy serves every candidate but the last: its activations are
    # switched back if in-place ones disagree (weights in channels_last are fine either way).
    fast = fold_batchnorm(model, x).to(memory_format=torch.channels_last)
    changed = _set_inplace(fast, True)
    if _agree(reference, fast, x.contiguous(memory_format=torch.channels_last)):
        return fast
    for module in changed:
        module.inplace = False
    if changed and _agree(reference, fast, x):
        warnings.warn(
            f"{who}: making the activations in-place changed the model's output (an activation's input is "
            "read again later), so the masked passes run without in-place activations",
            RuntimeWarning,
            stacklevel=3,
        )
        return fast
    plain = copy_without_hooks(model)
    if _agree(reference, plain, x):
        warnings.warn(
            f"{who}: folding BatchNorm into the convolutions changed the model's output, so the masked "
            "passes run on an unfolded copy (slower, same result)",
            RuntimeWarning,
            stacklevel=3,
        )
        return plain
    warnings.warn(
        f"{who}: a copy of the model does not reproduce its output (a forward hook that changes outputs?), "
        "so the masked passes run on the model itself, hooks included",
        RuntimeWarning,
        stacklevel=3,
    )
    return model


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
    targets,
    batch_size: int | None = None,
    score: str = "probability",
    subtract_baseline: bool = False,
    progress=False,
    fold_bn: bool = True,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score-CAM channel weights s (N, C); 0 for skipped constant channels.

    For each live channel k of image n (Wang et al. 2020, Eq. 3 and Algorithm 1)::

        H^k = s(Up(A^k)),  s(M) = (M - min M) / (max M - min M)
        C(A^k) = f^c(X * H^k) [- f^c(X_b)]

    ``targets`` is a (N,) tensor of class indices or a callable target.
    ``score="probability"``: f^c is the softmax probability of class c and
    the weight is C(A^k) itself, as in the authors' code (the default).
    ``score="logit-softmax"``: f^c is the logit, and the weights are a softmax
    of C(A^k) over the channels, as Algorithm 1 prints it and pytorch-grad-cam
    does; there the baseline term is a constant that cancels.
    A callable target's value is f^c as it is, under either setting.
    ``subtract_baseline`` subtracts f^c(X_b) for an all-zero X_b (the mean image
    in normalised space), Eq. 3's "increase of confidence".
    ``reference`` is the model's selected output on ``x``, for checking the
    fast copy without another pass through the caller's model.
    """
    _check_options(batch_size, score)
    batch_size = batch_size if batch_size is not None else default_batch_size(x.device)
    per_image = uses_batch_statistics(model)
    if per_image:
        # Batch statistics would mix the masked images: score each one on its own.
        batch_size = 1
    n, channels = activation.shape[:2]
    size = x.shape[-2:]
    if fold_bn:
        first = None if reference is None or (per_image and n > 1) else reference[:1]
        net = fast_inference_copy(model, x[:1], first)
    else:
        net = model
    live = live_channels(activation)
    total = int(live.sum())
    raw = torch.zeros(n, channels, device=x.device, dtype=torch.float32)

    def class_score(images: torch.Tensor, i: int) -> torch.Tensor:
        output = select_output(net(images))
        if is_callable_target(targets):
            return target_scores(targets, output)[0].float()
        logits = output.float()
        c = targets[i]
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
                    raw[i, chunk] = class_score(masked, i)
                    done += chunk.numel()
                    if bar is not None:
                        bar.update(chunk.numel())
                    elif callable(progress):
                        progress(done, total)
                if subtract_baseline and score == "probability":
                    raw[i, idx] -= class_score(torch.zeros_like(image), i)
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
    reshape_transform: ReshapeTransform = None,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, Algorithm 1, weights as in the authors' code).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k s_k^c\\, \\mathrm{Up}(A^k)\\Big),
        \\qquad s_k^c = \\mathrm{softmax}\\big(f(X \\circ H^k)\\big)_c

    The ReLU is applied after upsampling, as in Algorithm 1, then each map is
    min-max scaled. See :func:`score_cam_weights` for the variants.

    Args:
        model, x, layer, target, reshape_transform: as :func:`xai_helpers.grad_cam`.
        batch_size: masked images per forward pass (memory grows with it);
            None picks 4 on CPU and 128 on CUDA. Models whose BatchNorm uses
            batch statistics in eval mode always run one image at a time.
        score: ``"probability"`` (default) or ``"logit-softmax"``.
        subtract_baseline: subtract the score of an all-zero input.
        progress: True for a tqdm progress bar over the masked passes, or a
            callable ``progress(done, total)`` called after each batch.
        fold_bn: run the masked passes on the fastest private copy that
            reproduces the model's output (see :func:`fast_inference_copy`);
            False runs them on the model itself.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    check_input(model, x, layer)
    _check_options(batch_size, score)
    activation, output = forward_with_capture(model, x, layer, grad=False)
    activation = to_feature_map(activation, reshape_transform)
    _, classes = target_scores(target, output)
    targets = target if classes is None else classes
    weights = score_cam_weights(
        model, x, activation, targets, batch_size, score, subtract_baseline, progress, fold_bn, reference=output
    )
    with torch.inference_mode():
        maps = torch.einsum("nc,nchw->nhw", weights, activation.float())
    return finish(maps, x.shape[-2:], relu_first=False)
