"""The fast copy: a private model that provably computes what the caller's model computes, only faster.

Multi-pass methods and metrics run hundreds of passes through one model. A
private copy can make each pass cheaper without touching the caller's model:

* each Conv2d -> BatchNorm2d pair folded into one convolution (exact in eval
  mode up to float rounding; :func:`fold_batchnorm`);
* weights in ``channels_last`` layout;
* for inference passes, activations switched to in-place;
* none of the caller's hooks (a logger must not fire hundreds of times).

**Cached and verified.** Building the copy costs a deep copy and two passes,
so one copy per model and variant is kept by :mod:`~xai_helpers.engine.model_cache`,
which checks before every reuse that nothing it was built from has changed
(the module tree, the modules' attributes, the parameters' and buffers'
identities, versions and values). Anything changed: the copy is rebuilt.

**Checked on every call.** Whatever the cache says, the copy's output on the
call's real input is compared with the model's own output before any pass
uses it (the check is one pass of the copy). If they disagree, the next
candidate is tried, each fallback announced with a ``RuntimeWarning``:

1. folded, ``channels_last``, in-place activations (inference only);
2. folded, ``channels_last``, out-of-place activations;
3. a plain private copy without hooks;
4. the model itself, hooks and all.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import model_cache
from .hooks import evaluating, iter_modules, model_lock
from .model_traits import breaks_ties, uses_batch_statistics
from .targets import select_output

__all__ = [
    "uses_batch_statistics",
    "copy_without_hooks",
    "fold_batchnorm",
    "fast_copy",
    "clear_fast_copies",
    "fast_copy_stats",
]


def _foldable(module: nn.Module) -> bool:
    # Only a BatchNorm2d that normalises with stored statistics in eval mode is a
    # fixed affine map; without running stats it uses each batch's statistics.
    return type(module) is nn.BatchNorm2d and module.track_running_stats and module.running_mean is not None


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
            output = model(x.clone())
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
    A hook that *changes* outputs is caught by the per-call agreement check.
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
    pair. The caller's model is not modified, and the result is not checked here.
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
    changed = [m for m in model.modules() if isinstance(m, _INPLACE_ACTIVATIONS) and m.inplace != inplace]
    for module in changed:
        module.inplace = inplace
    return changed


def _agree(reference: torch.Tensor, other: nn.Module, x: torch.Tensor) -> bool:
    """True if ``other`` reproduces the ``reference`` output on ``x`` up to float rounding."""
    with torch.inference_mode():
        result = select_output(other(x))
    if not isinstance(result, torch.Tensor) or result.shape != reference.shape:
        return False
    reference = reference.float()
    scale = reference.abs().max().clamp_min(1.0)
    return torch.allclose(result.float(), reference, rtol=1e-3, atol=1e-3 * float(scale))


# ---------------------------------------------------------------- building and caching


def clear_fast_copies() -> None:
    """Forget every cached copy (and everything else derived from models; see ``engine.model_cache``)."""
    model_cache.clear()


def fast_copy_stats() -> dict[str, int]:
    """How many fast copies were built and how many reused since the start (for tests and benchmarks)."""
    return dict(_STATS)


_STATS = {"built": 0, "reused": 0}


def _build(model: nn.Module, x: torch.Tensor, reference: torch.Tensor, variant: str, who: str):
    """The fastest candidate that agrees with ``reference``, and whether it may be cached."""
    fast = fold_batchnorm(model, x)
    if variant == "inference" or not breaks_ties(model):
        # Not for gradients through max pooling: which of equal maxima gets the gradient depends on the layout.
        fast = fast.to(memory_format=torch.channels_last)
    changed = _set_inplace(fast, variant == "inference")
    channels_last = x.contiguous(memory_format=torch.channels_last)
    if _agree(reference, fast, channels_last):
        return fast, True
    if variant == "inference" and changed:
        _set_inplace(fast, False)
        if _agree(reference, fast, channels_last):
            warnings.warn(
                f"{who}: making the activations in-place changed the model's output (an activation's input is "
                "read again later), so the passes run without in-place activations",
                RuntimeWarning, stacklevel=4)
            return fast, True
    plain = copy_without_hooks(model)
    if _agree(reference, plain, x):
        warnings.warn(
            f"{who}: folding BatchNorm into the convolutions changed the model's output, so the passes run on "
            "an unfolded copy (slower, same result)", RuntimeWarning, stacklevel=4)
        return plain, True
    warnings.warn(
        f"{who}: a copy of the model does not reproduce its output (a forward hook that changes outputs?), "
        "so the passes run on the model itself, hooks included", RuntimeWarning, stacklevel=4)
    return model, False


def fast_copy(model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None, *,
              differentiable: bool = False, who: str = "xai_helpers") -> nn.Module:
    """The fastest model that reproduces ``model``'s output ``reference`` on the real input ``x``.

    ``reference`` is ``select_output(model(x))`` in eval mode (computed when
    None). ``differentiable=True`` asks for a copy whose passes can be
    backpropagated to the input (no in-place activations). ``who`` names the
    method in the fallback warnings. See the module doc for the cache and the
    checks; the result is a private copy unless every candidate failed.
    """
    variant = "differentiable" if differentiable else "inference"
    key = ("fast copy", variant)
    with model_lock(model):
        if reference is None:
            with torch.inference_mode(), evaluating(model):
                reference = select_output(model(x.clone()))
        built = []

        def derive():
            built.append(True)
            return _build(model, x, reference, variant, who)

        net = model_cache.cached(model, key, derive)
        if built:
            _STATS["built"] += 1
            return net
        # Reused: the per-call check, on this call's real input.
        probe = x.contiguous(memory_format=torch.channels_last) if net is not model else x
        if _agree(reference, net, probe):
            _STATS["reused"] += 1
            return net
        model_cache.forget(model, key)
        _STATS["built"] += 1
        return model_cache.cached(model, key, lambda: _build(model, x, reference, variant, who))
