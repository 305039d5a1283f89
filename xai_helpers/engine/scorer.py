"""The one batched scorer: every multi-pass method and every metric scores its inputs here.

Score-CAM's masked images, Occlusion's windows, RISE's masks, LIME's and
Kernel SHAP's coalitions, the metrics' deletion, insertion and ROAD images,
SmoothGrad's noisy copies and Integrated Gradients' path points are all
*jobs*: image i has ``counts[i]`` of them, and ``build(rows, cols)`` makes the
inputs of the jobs (image ``rows[r]``, job ``cols[r]``). :class:`Scorer` owns
everything around that:

* **targets**, resolved once on the model's output for the real images, so
  every job of image i is scored for image i's class (``class_scores``);
* **batching**: at most ``batch_size`` jobs per pass, across images, so
  memory is bounded by the batch size, never by the number of jobs
  (:func:`default_batch_size` when None);
* **the batch-statistics rule**: a model whose BatchNorm uses batch
  statistics in eval mode gets one input per pass, the real images included;
* **progress**: a tqdm bar, a ``progress(done, total)`` callback, or nothing;
* **the fast copy** (:mod:`~xai_helpers.engine.fast_copy`): used when an image
  has at least :data:`FAST_COPY_MIN_PASSES` jobs, on any device; the cached
  copy costs one checking pass per call;
* **side effects**: eval mode, the caller's input never reaches the model
  (the model sees private tensors), gradients only with respect to the
  inputs (``torch.autograd.grad``), so no parameter's ``.grad`` is touched.

``passes`` counts the model calls the scorer made (the checking pass of the
fast copy excluded), so a test can count the real passes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .fast_copy import fast_copy
from .model_traits import breaks_ties, uses_batch_statistics
from .forward import check_output, model_output
from .hooks import evaluating
from .inputs import batch_size_value, check_input, choice
from .progress import check_progress, progress_bar
from .targets import SCORES, Target, class_scores, is_callable_target, resolve_targets, select_output, target_scores

__all__ = ["Scorer", "default_batch_size", "FAST_COPY_MIN_PASSES", "SCORES"]

# An image needs this many jobs before a pass on the fast copy pays for the copy's checking pass.
FAST_COPY_MIN_PASSES = 8

Build = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_batch_size(device: torch.device) -> int:
    """Inputs per pass: 8 on CPUs (within a few percent of the best for EfficientNet-Lite0 on
    Occlusion, Score-CAM and Integrated Gradients; benchmarks/RESULTS.md), 128 on GPUs."""
    return 128 if device.type == "cuda" else 8


class Scorer:
    """The target's score (or its gradient) on many inputs made from each image of ``x``.

    ``score``: ``"probability"`` (the softmax probability of the class, the
    perturbation papers' choice) or ``"logit"`` (the gradient papers' choice,
    for which Integrated Gradients' completeness holds). A callable target is
    its own score whatever ``score`` says. ``who`` names the method in warnings.
    ``output`` is the model's selected output on ``x`` in eval mode, when the
    caller has computed it already (a layer method's pass); otherwise the
    scorer computes it.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, target: Target = None, *, score: str = "probability",
                 batch_size: int | None = None, progress=False, desc: str = "passes", fast: bool = True,
                 who: str = "xai_helpers", output: torch.Tensor | None = None):
        check_input(model, x)
        choice("score", score, SCORES)
        check_progress(progress)
        self.model, self.x, self.target, self.score = model, x, target, score
        self.progress, self.desc, self.fast, self.who = progress, desc, fast, who
        self.per_image = uses_batch_statistics(model)
        size = batch_size_value(batch_size)
        # An image's output would depend on the rest of its batch: one input per pass.
        self.batch_size = 1 if self.per_image else (size or default_batch_size(x.device))
        self.dtype = torch.promote_types(x.dtype, torch.float32)
        self.passes = 0
        if output is None:
            with torch.inference_mode(), evaluating(model):
                output = model_output(model, x, per_image=self.per_image)
            self.passes += x.shape[0] if self.per_image else 1
        self._output = check_output(output.detach(), x.shape[0])
        if is_callable_target(target):
            target_scores(target, self._output)  # checks the callable's shape once
            self.classes = None
        else:
            target_scores(target, self._output)
            self.classes = resolve_targets(target, self._output)
        #: (N,) the score of each real image.
        self.base = self._scores(self._output, torch.arange(x.shape[0], device=x.device), score).detach().clone()

    # ------------------------------------------------------------------ internals

    def _scores(self, output: torch.Tensor, rows: torch.Tensor, kind: str) -> torch.Tensor:
        classes = None if self.classes is None else self.classes[rows]
        return class_scores(output, classes, kind, self.target).to(self.dtype)

    def _network(self, counts: Sequence[int], differentiable: bool) -> nn.Module:
        if not self.fast or max(counts, default=0) < FAST_COPY_MIN_PASSES:
            return self.model
        return fast_copy(self.model, self.x[:1], self._output[:1], differentiable=differentiable, who=self.who)

    def _jobs(self, counts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(counts) != self.x.shape[0] or any(int(c) < 0 for c in counts):
            raise ValueError(f"counts must give a job count >= 0 for each of the {self.x.shape[0]} images")
        device = self.x.device
        counts_t = torch.as_tensor([int(c) for c in counts], device=device)
        rows = torch.repeat_interleave(torch.arange(len(counts), device=device), counts_t)
        cols = torch.cat([torch.arange(int(c), device=device) for c in counts]) if len(counts) else rows
        return rows, cols

    def _private(self, inputs: torch.Tensor) -> torch.Tensor:
        # build() usually makes fresh tensors; one that shares the caller's storage is copied.
        if inputs.untyped_storage().data_ptr() == self.x.untyped_storage().data_ptr():
            return inputs.clone()
        return inputs

    # ------------------------------------------------------------------ the two loops

    def run(self, counts: Sequence[int], build: Build, kinds: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Score every job without gradients; one (counts[i],) tensor per image, or (counts[i], K)
        for K score ``kinds`` taken from the same passes."""
        for kind in kinds or ():
            choice("score", kind, SCORES)
        names = tuple(kinds) if kinds else (self.score,)
        rows_all, cols_all = self._jobs(counts)
        total = rows_all.numel()
        net = self._network(counts, differentiable=False)
        channels_last = net is not self.model
        values = torch.empty(total, len(names), dtype=self.dtype, device=self.x.device)
        with progress_bar(self.progress, total, self.desc) as advance, evaluating(net), torch.inference_mode():
            for start in range(0, total, self.batch_size):
                rows, cols = rows_all[start : start + self.batch_size], cols_all[start : start + self.batch_size]
                inputs = self._private(build(rows, cols))
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                output = check_output(select_output(net(inputs)), rows.numel())
                self.passes += 1
                for j, kind in enumerate(names):
                    values[start : start + rows.numel(), j] = self._scores(output, rows, kind)
                advance(rows.numel())
        parts = list(values.split([int(c) for c in counts]))
        return parts if kinds else [p[:, 0] for p in parts]

    def gradient_sum(self, counts: Sequence[int], build: Build,
                     weight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     squares: bool = False):
        """sum_j weight(i, j) * d score(input_ij) / d input_ij for each image i: (N, C, H, W) float64.

        ``weight(rows, cols) -> (B,)`` defaults to 1. Only the gradient with
        respect to the inputs is taken, a batch at a time. ``squares=True``
        also accumulates sum_j weight(i, j) * (d score / d input_ij)^2 and
        returns both sums.
        """
        rows_all, cols_all = self._jobs(counts)
        total = rows_all.numel()
        net = self._network(counts, differentiable=True)
        # Gradients through max pooling keep the contiguous layout (engine.model_traits.breaks_ties).
        layout = torch.channels_last if net is not self.model and not breaks_ties(self.model) else torch.contiguous_format
        with progress_bar(self.progress, total, self.desc) as advance, evaluating(net), \
                torch.inference_mode(False), torch.enable_grad():
            acc = torch.zeros(self.x.shape, dtype=torch.float64, device=self.x.device)
            acc_sq = torch.zeros_like(acc) if squares else None
            for start in range(0, total, self.batch_size):
                rows, cols = rows_all[start : start + self.batch_size], cols_all[start : start + self.batch_size]
                leaf = build(rows, cols).detach().clone().requires_grad_(True)
                # A copy of the leaf goes in, so a model that writes into its input cannot write into the leaf.
                output = check_output(select_output(net(leaf.clone(memory_format=layout))), rows.numel())
                self.passes += 1
                values = self._scores(output, rows, self.score)
                if not values.requires_grad:
                    raise ValueError("the target's score does not depend on the input; check the model and the target")
                (grad,) = torch.autograd.grad(values.sum(), leaf)
                w = torch.ones(rows.numel(), dtype=torch.float64, device=acc.device) if weight is None \
                    else weight(rows, cols).to(device=acc.device, dtype=torch.float64)
                grad = grad.double()
                acc.index_add_(0, rows, grad * w.view(-1, 1, 1, 1))
                if squares:
                    acc_sq.index_add_(0, rows, grad.square() * w.view(-1, 1, 1, 1))
                advance(rows.numel())
        return (acc, acc_sq) if squares else acc
