"""Many inputs through one model, in bounded batches: the engine of the multi-pass methods.

Occlusion, RISE, LIME and Kernel SHAP score hundreds of perturbed copies of
an image; SmoothGrad and Integrated Gradients differentiate the score at
dozens of points. All of them go through :class:`Scorer`, which

* resolves ``target`` once, on the model's output for the real images, so a
  perturbed copy is always scored for its own image's class;
* runs at most ``batch_size`` inputs per pass, so memory is bounded by the
  batch size and not by the number of samples;
* reports progress (a tqdm bar or a ``progress(done, total)`` callback);
* keeps the model in eval mode and leaves parameters' ``.grad`` alone
  (gradients are taken with ``torch.autograd.grad`` on the inputs only);
* runs one input per pass when a BatchNorm uses batch statistics in eval mode
  (``track_running_stats=False``), where batching would change the scores;
* for forward-only methods, can run on Score-CAM's verified fast copy of the
  model (:func:`xai_helpers.score_method.fast_inference_copy`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from .core import Target, check_input, is_callable_target, select_output, target_scores
from .hooks import evaluating
from .score_method import fast_inference_copy, uses_batch_statistics

__all__ = ["SCORES", "Scorer", "default_batch_size", "check_batch_size", "progress_bar"]

SCORES = ("probability", "logit")


def default_batch_size(device: torch.device) -> int:
    """Inputs per pass: 8 on CPUs (Occlusion reaches 0.98 of its limit there, benchmarks/RESULTS.md),
    128 on GPUs. Score-CAM's masked images, behind a folded copy, do best at 4
    (:func:`xai_helpers.score_method.default_batch_size`)."""
    return 128 if device.type == "cuda" else 8


def check_batch_size(batch_size) -> None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@contextmanager
def progress_bar(progress, total: int, desc: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)``: a tqdm bar for ``progress=True``, the callback for a callable, nothing for False."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)
        try:
            yield bar.update
        finally:
            bar.close()
        return
    if progress not in (False, None) and not callable(progress):
        raise ValueError(f"progress must be True, False or a callable progress(done, total), got {progress!r}")
    done = [0]

    def advance(k: int) -> None:
        done[0] += k
        if callable(progress):
            progress(done[0], total)

    yield advance


class Scorer:
    """The target's score of perturbed or interpolated copies of each image.

    ``score="probability"`` (the perturbation papers' choice: Zeiler & Fergus,
    RISE, LIME) is the softmax probability of the class; ``"logit"`` is the
    pre-softmax value (the gradient papers' choice, and the one for which
    Integrated Gradients' completeness and DeepLIFT's summation-to-delta hold).
    A callable target is used as it is, whatever ``score`` says.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, target: Target = None, score: str = "probability",
                 batch_size: int | None = None, fast_copy: str | None = None):
        check_input(model, x)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        check_batch_size(batch_size)
        self.model, self.x, self.target, self.score = model, x, target, score
        self.batch_size = batch_size or default_batch_size(x.device)
        if uses_batch_statistics(model):
            # An image's output would depend on the rest of its batch: one input per pass.
            self.batch_size = 1
        # float32 at least (half-precision models), float64 for float64 inputs.
        self.dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.inference_mode(), evaluating(model):
            output = select_output(model(x))
        if output.shape[0] != x.shape[0]:
            raise ValueError(f"the model's output has shape {tuple(output.shape)}; expected a first dimension of {x.shape[0]}")
        self.callable = is_callable_target(target)
        scores, self.classes = target_scores(target, output)
        self.output = output
        self.base = self._from_output(output, torch.arange(x.shape[0], device=x.device)).detach()
        # Forward-only methods may run on Score-CAM's verified fast copy (BatchNorm folded,
        # in-place activations, channels_last); ``fast_copy`` names the method for its warnings.
        # On a CPU that makes each pass 1.5-2x faster; on a GPU building the copy (tens of
        # milliseconds) costs more than a few hundred passes take, so the model runs as it is.
        self.net = fast_inference_copy(model, x, output, who=fast_copy) if fast_copy and x.device.type == "cpu" else model

    def _from_output(self, output: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores of a batch whose row r belongs to image ``rows[r]``."""
        if self.callable:
            return target_scores(self.target, output)[0].to(self.dtype)
        values = output.to(self.dtype)
        if self.score == "probability":
            values = values.softmax(-1)
        return values.gather(1, self.classes[rows][:, None])[:, 0]

    def scores(self, inputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B,) scores of ``inputs`` (B, C, H, W), row r scored for image ``rows[r]``; one batch, no grad."""
        if self.net is not self.model:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._from_output(select_output(self.net(inputs)), rows)

    def gradients(self, inputs: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d score / d input, score) for one batch: (B, C, H, W) and (B,)."""
        with torch.inference_mode(False), torch.enable_grad():
            leaf = inputs.detach().clone().requires_grad_(True)
            # A clone goes in, so an in-place first layer cannot write into the leaf.
            values = self._from_output(select_output(self.model(leaf.clone())), rows)
            if not values.requires_grad:
                raise ValueError("the target's score does not depend on the input; check the model and the target")
            (grad,) = torch.autograd.grad(values.sum(), leaf)
        return grad, values.detach()
