"""Hooks as resources that are always released.

Every method in this package runs the model inside :func:`evaluating` and
captures the chosen layer with :class:`LayerCapture`; both undo everything
they changed in ``__exit__``, exceptions included, so the caller's model comes
back exactly as it went in: same train/eval flags, no hooks left behind,
parameters' ``.grad`` and ``requires_grad`` untouched.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["evaluating", "model_lock", "LayerCapture", "check_submodule", "iter_modules"]

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that serialises this package's passes over one model.

    Switching train/eval flags and registering a hook are changes to a shared
    object: two threads explaining one model at once would see each other's
    hooks and restore each other's flags. Holding this lock for the duration
    makes concurrent calls safe; they run one after the other.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def iter_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Every module of ``model`` once, like ``model.modules()`` but without building
    the dotted names, which costs more than the rest of a CAM's bookkeeping."""
    seen: set[int] = set()
    stack = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        yield module
        stack.extend(child for child in reversed(module._modules.values()) if child is not None)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own flag.

    Restoring per module (not just ``model.train(was_training)``) keeps mixed
    set-ups intact, such as a training model with frozen BatchNorm layers.
    Only the modules that were training are touched (the flag is what
    ``Module.train`` sets), so a model already in eval mode costs nothing.
    The model's :func:`model_lock` is held throughout, so another thread
    cannot flip the flags half-way through a pass.
    """
    with model_lock(model):
        training = [m for m in iter_modules(model) if m.training]
        for module in training:
            module.training = False
        try:
            yield model
        finally:
            for module in training:
                module.training = True


def check_submodule(model: nn.Module, layer: nn.Module) -> None:
    """ValueError unless ``layer`` is ``model`` or one of its submodules."""
    if not any(module is layer for module in iter_modules(model)):
        raise _not_a_submodule(layer)


def _not_a_submodule(layer: nn.Module) -> ValueError:
    return ValueError(
        f"layer {type(layer).__name__} is not a submodule of the model; pass one of the model's modules, "
        "e.g. model.features[-1] or model.layer4"
    )


class LayerCapture:
    """Record the output A of ``layer`` during one forward pass.

    With ``grad=True`` the forward pass is meant to run under ``torch.no_grad()``:
    the hook then detaches A, marks it as requiring grad and switches grad mode
    on for the rest of the pass. Only the layers *after* A build an autograd
    graph, so ``torch.autograd.grad(score, capture.activation)`` costs a backward
    pass through the head alone, works on frozen models (A is a fresh leaf),
    and never writes parameter ``.grad``.

    Either way A is kept apart from the tensor the rest of the network sees
    (a clone), so an in-place operation after the layer (``ReLU(inplace=True)``)
    cannot overwrite the recorded values.

    Example::

        with torch.no_grad(), LayerCapture(model.features.head, grad=True) as cap:
            logits = model(x)
        grads, = torch.autograd.grad(logits[:, c].sum(), cap.activation)
    """

    def __init__(self, layer: nn.Module, grad: bool = False):
        self.layer = layer
        self.grad = grad
        self.activation: torch.Tensor | None = None
        self.calls = 0
        self._handle = None
        self._grad_mode = None
        self._thread = threading.get_ident()

    def _hook(self, module, inputs, output):
        if threading.get_ident() != self._thread:
            # Another thread's forward pass through a shared model is not ours to record.
            return None
        self.calls += 1
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"the layer returns {type(output).__name__}, not a tensor; choose a layer whose output is (N, C, h, w)"
            )
        if self.calls > 1:
            # The second call would silently replace the first: refuse instead.
            return None
        if self.grad:
            self.activation = output.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
            return self.activation.clone()
        # Keep a private copy: an in-place op downstream must not change it.
        self.activation = output.detach().clone()
        return None

    def __enter__(self) -> "LayerCapture":
        self._thread = threading.get_ident()
        self._grad_mode = torch.is_grad_enabled()
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        # Never swallows the exception: returns None.
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        torch.set_grad_enabled(self._grad_mode)

    def check(self) -> torch.Tensor:
        """The captured activation, or a ValueError saying why there is none.

        It is the layer's raw output; ``core.to_feature_map`` makes it (N, C, h, w)."""
        if self.calls == 0 or self.activation is None:
            raise ValueError(
                f"the layer {type(self.layer).__name__} never ran in the forward pass; "
                "choose a module that the model's forward actually calls"
            )
        if self.calls > 1:
            raise ValueError(
                f"the layer {type(self.layer).__name__} ran {self.calls} times in one forward pass, "
                "so its activation is ambiguous; choose a module that runs once"
            )
        return self.activation
