"""What the engine derives from a model and keeps, verified before every reuse.

Some things cost a lot to derive from a model and are the same on every call
while the model is unchanged: a fast private copy, DeepLIFT's recorded pass of
a reference input. :func:`cached` keeps them per model (weakly: they go when
the model goes), and before handing one back checks that nothing they were
derived from has changed:

* the module tree: every submodule's name, type and identity;
* every module's public attributes (``inplace``, ``eps``, a patched ``forward``, ...);
* every parameter's and buffer's identity, storage, version counter, shape,
  dtype and device;
* every parameter's and buffer's *values*, against a snapshot taken when the
  first entry was derived, so that even a change through ``.data`` is seen.

Anything changed: every entry of that model is dropped and derived afresh.
The check costs a pass over the model's parameters (a few milliseconds for
EfficientNet-Lite0 on a CPU); the snapshot costs one copy of them.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Hashable

import torch
from torch import nn

from .hooks import model_lock

__all__ = ["cached", "forget", "clear", "stats"]

_PRIMITIVES = (int, float, str, bool, bytes, type(None))


def _attribute_key(value):
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, _PRIMITIVES) for v in value):
        return (type(value).__name__, tuple(value))
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value), value.data_ptr(), value._version)
    return ("object", id(value))


def fingerprint(model: nn.Module) -> tuple:
    """The model's tree, attributes and tensor identities: everything but the tensors' values."""
    parts = []
    for name, module in model.named_modules(remove_duplicate=False):
        attributes = tuple(sorted((k, _attribute_key(v)) for k, v in vars(module).items()
                                  if not k.startswith("_") and k != "training"))
        tensors = tuple(
            (key, id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) if t is not None else (key, None)
            for key, t in (*module._parameters.items(), *module._buffers.items())
        )
        parts.append((name, type(module), id(module), attributes, tensors))
    return tuple(parts)


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t for m in model.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]


def _values_unchanged(model: nn.Module, snapshot: list[torch.Tensor]) -> bool:
    current = _tensors(model)
    if len(current) != len(snapshot):
        return False
    with torch.no_grad():
        for now, then in zip(current, snapshot):
            # equal_nan: a NaN weight that was NaN before has not changed.
            if now.shape != then.shape or not torch.equal(now, then) and not (
                    now.is_floating_point() and torch.allclose(now, then, rtol=0, atol=0, equal_nan=True)):
                return False
    return True


class _State:
    """One model's verification data and the entries derived from it."""

    def __init__(self, model: nn.Module):
        self.fingerprint = fingerprint(model)
        self.snapshot = [t.detach().clone() for t in _tensors(model)]
        self.entries: dict[Hashable, object] = {}

    def still_valid(self, model: nn.Module) -> bool:
        return self.fingerprint == fingerprint(model) and _values_unchanged(model, self.snapshot)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, _State]" = weakref.WeakKeyDictionary()
_STATS = {"derived": 0, "reused": 0}
_STATS_LOCK = threading.Lock()


def _count(key: str) -> None:
    with _STATS_LOCK:
        _STATS[key] += 1


def stats() -> dict[str, int]:
    """How many entries were derived and how many reused since the start (for tests and benchmarks)."""
    return dict(_STATS)


def clear() -> None:
    """Forget everything derived from every model."""
    _CACHE.clear()


def forget(model: nn.Module, key: Hashable) -> None:
    """Drop one entry of ``model`` (it is derived again on the next call)."""
    state = _CACHE.get(model)
    if state is not None:
        state.entries.pop(key, None)


def cached(model: nn.Module, key: Hashable, derive: Callable[[], tuple[object, bool]]):
    """The entry ``key`` of ``model``: reused if the model is unchanged, else ``derive()``'s value.

    ``derive`` returns ``(value, keep)``; a value with ``keep=False`` is
    returned but not kept (a fallback that must be re-examined next time).
    """
    with model_lock(model):
        state = _CACHE.get(model)
        if state is not None and key in state.entries and state.still_valid(model):
            _count("reused")
            return state.entries[key]
        if state is not None and not state.still_valid(model):
            state = None
        value, keep = derive()
        _count("derived")
        if keep:
            if state is None:
                state = _CACHE[model] = _State(model)
            state.entries[key] = value
        return value
