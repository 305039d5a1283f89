"""Re-running only the part of a network after a layer, with the layer's output replaced.

A method that scores many versions of one layer's activation (Ablation-CAM
scores one per channel) does not need the part of the network before the
layer more than once. :class:`LayerReplay` calls the model on the single
image, and a forward hook on the layer returns a batch of B replacement
activations instead of the layer's output, so only the layers after it run
on B rows ("tail" mode). A tensor computed before the layer and reused after
it (a skip connection around the layer) still has one row and broadcasts
over the B rows, which is exact: it is the same for every replacement.

Where the part after the layer cannot take a batch of a size other than the
input's (it concatenates such a tensor, or reshapes with the input's batch
size), the replay runs the whole model on B copies of the image instead
("full" mode, the cost of re-running everything), and ``mode`` says which.
Either way the first call scores the unchanged activation as an extra row,
which must reproduce the model's output on the image: a tail that does not
treat rows independently is caught there, not trusted.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from .forward import check_output
from .hooks import evaluating
from .targets import select_output

__all__ = ["REPLAY_MODES", "LayerReplay"]

REPLAY_MODES = ("tail", "full")


class LayerReplay:
    """``replay(replacements) -> output``: the model's output with ``layer``'s output replaced, one row each.

    ``image``: the (1, C, H, W) input; ``activation``: the layer's output on
    it (its own layout, batch 1); ``output``: the model's selected output on
    it (1, K). ``per_image``: the model mixes the rows of a batch (BatchNorm
    with batch statistics in eval mode), so the caller passes one
    replacement per call and the check row gets a call of its own. ``mode`` is None until the first call, then ``"tail"`` or
    ``"full"``; ``prefix_passes`` counts the model calls, ``rows`` the rows
    that went through the part after the layer.
    """

    def __init__(self, model: nn.Module, image: torch.Tensor, layer: nn.Module, activation: torch.Tensor,
                 output: torch.Tensor, *, per_image: bool = False):
        if image.shape[0] != 1 or activation.shape[0] != 1:
            raise ValueError("LayerReplay works on one image at a time: pass x[i : i + 1] and its activation")
        self.model, self.image, self.layer = model, image, layer
        self.activation, self.output = activation, output.detach()
        self.per_image = per_image
        self.mode: str | None = None
        self.prefix_passes = 0
        self.rows = 0

    def _run(self, replacements: torch.Tensor, mode: str) -> torch.Tensor:
        thread, calls = threading.get_ident(), []

        def hook(module, inputs, out):
            if threading.get_ident() != thread:
                return None
            calls.append(1)
            if tuple(out.shape[1:]) != tuple(replacements.shape[1:]):
                raise ValueError(f"the layer's output is {tuple(out.shape)}; the replacements must be "
                                 f"(B, {', '.join(map(str, out.shape[1:]))}), got {tuple(replacements.shape)}")
            return replacements.to(out.dtype)

        inputs = self.image.clone() if mode == "tail" else self.image.expand(len(replacements), -1, -1, -1).clone()
        with torch.inference_mode(), evaluating(self.model):  # holds the model's lock while the hook is on
            handle = self.layer.register_forward_hook(hook)
            try:
                output = select_output(self.model(inputs))
            finally:
                handle.remove()
        self.prefix_passes += 1
        if len(calls) != 1:
            raise ValueError(f"the layer {type(self.layer).__name__} ran {len(calls)} times in one forward pass; "
                             "choose a module that runs once")
        return check_output(output, len(replacements))

    def _matches(self, row: torch.Tensor) -> bool:
        scale = 1.0 + float(self.output.abs().max())
        return bool(torch.allclose(row.to(self.output.dtype), self.output[0], rtol=1e-4, atol=1e-4 * scale))

    def __call__(self, replacements: torch.Tensor) -> torch.Tensor:
        if tuple(replacements.shape[1:]) != tuple(self.activation.shape[1:]):
            raise ValueError(f"the layer's output is {tuple(self.activation.shape)}; the replacements must be "
                             f"(B, {', '.join(map(str, self.activation.shape[1:]))}), got {tuple(replacements.shape)}")
        if self.mode is not None:
            self.rows += len(replacements)
            return self._run(replacements, self.mode)
        checked = self.activation if self.per_image else torch.cat([self.activation, replacements])
        for mode in REPLAY_MODES:
            try:
                output = self._run(checked, mode)
            except (RuntimeError, ValueError):
                if mode == "full":
                    raise
                continue
            if self._matches(output[0]):
                self.mode = mode
                self.rows += len(checked)
                if self.per_image:
                    return self(replacements)
                return output[1:]
            if mode == "full":
                raise ValueError("re-running the model with the layer's own output replayed does not reproduce "
                                 "its output; the model is not deterministic in eval mode")
        raise AssertionError("unreachable")  # pragma: no cover
