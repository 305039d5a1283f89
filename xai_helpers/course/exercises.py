"""Auto-checked exercises: ``check(exercise_id, fn)`` runs a learner's function on hidden cases.

Each lesson's exercise cell holds its solution between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` and then calls :func:`check`. The learner's copy
(``python3 dev.py student``) replaces the solution with a stub that raises
``NotImplementedError``, which :func:`check` reports as "not attempted yet".

:func:`check` never raises on a wrong answer: it prints the first failing case,
what was expected and what came back, and, when the answer matches a mistake
that people actually make (the pytorch-grad-cam and torchcam trackers are full
of them), names that mistake with a hint. It returns True or False. The cases
are small, deterministic tensors and a tiny CNN on the CPU: a check takes well
under a second.

>>> from xai_helpers.exercises import check                     # doctest: +SKIP
>>> check("02-grad-cam-weights", lambda g: g.mean((1, 2)))      # doctest: +SKIP
✓ 02-grad-cam-weights: all 3 cases pass
"""

from __future__ import annotations

import copy
import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import evaluating, iter_modules
from ..metrics import average_ranks as _average_ranks

__all__ = ["Exercise", "EXERCISES", "check", "TIME_LIMIT"]

# Seconds a learner's function may take on one case: the reference solutions take milliseconds.
TIME_LIMIT = 10.0


@dataclass(frozen=True)
class Exercise:
    """One checked exercise: where it is, what to write, and how it is checked."""

    id: str
    lesson: str
    statement: str
    signature: str
    # each case: {"args": tuple, "expected": value, "mistakes": {name: (value, hint)}, and optionally
    # "no_hooks", "train_mode", "zero_denominator" (extra checks) and "crash_hints": [(type, words, hint)]}
    cases: Callable[[], list[dict]]
    compare: Callable[[object, object], bool]


class _Feedback(Exception):
    """A wrong answer, with the message to print (never escapes :func:`check`).

    ``wrong_values`` is True when the values differ from the expected ones
    (rather than, say, a hook left behind)."""

    def __init__(self, message: str, wrong_values: bool = False):
        super().__init__(message)
        self.wrong_values = wrong_values


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(a, b, tol: float = 1e-4) -> bool:
    if isinstance(a, (str, bytes, bool)):
        return False
    if isinstance(b, torch.Tensor):
        if not isinstance(a, torch.Tensor) or a.shape != b.shape:
            return False
        a, b = a.detach().double(), b.detach().double()
        if not torch.isfinite(a).all():
            return False
        return bool(torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max()))))
    try:
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    except (TypeError, ValueError):
        return False


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        flat = value.detach().double().flatten()
        head = ", ".join(f"{v:.4g}" for v in flat[:4].tolist())
        more = ", ..." if flat.numel() > 4 else ""
        return f"tensor of shape {tuple(value.shape)} [{head}{more}]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


# --- 01: the class activation map -----------------------------------------------------------


def _cam_cases() -> list[dict]:
    cases = []
    for seed, (k, classes, h, w, c) in enumerate([(4, 3, 2, 3, 1), (5, 5, 3, 3, 2), (6, 4, 4, 2, 0)]):
        g = _gen(seed)
        a = torch.rand(k, h, w, generator=g) * 3
        weight = torch.randn(classes, k, generator=g)
        expected = torch.einsum("k,khw->hw", weight[c], a)
        mistakes = {
            "the ReLU applied too early": (expected.clamp_min(0), "the exercise asks for M_c before the ReLU: the ReLU is the first step of the heatmap pipeline, applied afterwards"),
            "the weights averaged over all classes": (torch.einsum("k,khw->hw", weight.mean(0), a), "use row c of the weight matrix, w^c = W[c], the weights of the one class you explain"),
        }
        for other in range(classes):
            if other != c:
                mistakes[f"the row of class {other} instead of class {c}"] = (
                    torch.einsum("k,khw->hw", weight[other], a),
                    "W has one row per class: W[c] is the (K,) weight vector of class c",
                )
        if classes == k:  # only then does the transposed matrix have the right shape
            mistakes["the transposed weight matrix"] = (
                torch.einsum("k,khw->hw", weight[:, c], a),
                "W is (classes, K): the weights of class c are the row W[c], not the column W[:, c]",
            )
        cases.append({"args": (a.clone(), weight.clone(), c), "expected": expected, "mistakes": mistakes})
    return cases


# --- 02: Grad-CAM's channel weights ---------------------------------------------------------


def _grad_cam_cases() -> list[dict]:
    cases = []
    for seed, (k, h, w) in enumerate([(3, 2, 2), (4, 3, 5), (2, 7, 7)]):
        g = torch.randn(k, h, w, generator=_gen(10 + seed))
        expected = g.mean((1, 2))
        cases.append({
            "args": (g.clone(),),
            "expected": expected,
            "mistakes": {
                "a sum instead of the average": (
                    g.sum((1, 2)),
                    f"Eq. 1 averages over the Z = h·w = {h * w} positions, so these weights are {h * w} times too large. "
                    "Every weight is off by the same factor, so the final min-max-scaled map is identical; "
                    "the weights themselves are not what Eq. 1 defines",
                ),
                "a ReLU on the gradients before averaging": (
                    g.clamp_min(0).mean((1, 2)),
                    "Grad-CAM averages the signed gradient; keeping only the positive part is what Grad-CAM++ does",
                ),
                "the absolute value of the gradients": (
                    g.abs().mean((1, 2)),
                    "a negative gradient means the channel argues against the class: keep its sign",
                ),
            },
        })
    return cases


# --- 03: Grad-CAM++'s alphas ---------------------------------------------------------------


def _alpha(a: torch.Tensor, g: torch.Tensor, power: int = 3, use_sum: bool = True) -> torch.Tensor:
    s = a.sum((1, 2), keepdim=True) if use_sum else torch.ones_like(a)
    den = 2 * g**2 + s * g**power
    ok = den != 0
    return torch.where(ok, g**2 / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))


def _grad_cam_pp_cases() -> list[dict]:
    cases = []
    for seed in range(3):
        gen = _gen(20 + seed)
        a = torch.rand(3, 3, 4, generator=gen)
        g = torch.randn(3, 3, 4, generator=gen)
        g[0, 0, 0] = 0.0  # a zero gradient: the denominator is 0
        if seed == 1:
            g[1] = 0.0  # a whole channel without gradient
        if seed == 2:
            g[2, 1, 1] = -2 / float(a[2].sum())  # 2 g^2 + sum(A) g^3 = 0 with g != 0
        expected = _alpha(a, g)
        cases.append({
            "args": (a.clone(), g.clone()),
            "expected": expected,
            "mistakes": {
                "g² where g³ belongs": (_alpha(a, g, power=2), "Eq. 19's denominator is 2 g² + (Σ_ab A_ab) g³: the third power"),
                "the activations' spatial sum dropped": (
                    _alpha(a, g, use_sum=False),
                    "the g³ term is multiplied by Σ_ab A^k_ab, the sum of the channel's activations over all positions",
                ),
                "alpha left at g² (torchcam 0.5's silent no-op)": (
                    g**2,
                    "alpha is g² divided by the denominator; a division applied to a copy (alpha[mask].div_(...)) changes nothing",
                ),
            },
            "zero_denominator": True,
        })
    return cases


# --- 04: Score-CAM's channel weights -------------------------------------------------------


class _TinyCNN(nn.Module):
    """A tiny CNN with BatchNorm and dropout, so that train mode visibly changes its output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x))).mean((2, 3))))


def _tiny_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = _TinyCNN()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.randn(4, generator=_gen(seed)) * 0.2)
        model.bn.running_var.copy_(torch.rand(4, generator=_gen(seed + 1)) + 0.5)
        model.fc.weight.mul_(6)
    return model.train()  # handed over in train mode, as a training script would


def _score_cam_weights(model, x, a, c, normalise=True, probability=True):
    with torch.no_grad(), evaluating(model):
        up = F.interpolate(a[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
        if normalise:
            lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
            up = (up - lo) / (hi - lo)
        out = model(x * up)
        return out.softmax(-1)[:, c] if probability else out[:, c]


def _score_cam_cases() -> list[dict]:
    cases = []
    for seed, (k, h, w, size, c) in enumerate([(3, 2, 2, 8, 1), (4, 3, 3, 12, 2), (2, 4, 4, 16, 0)]):
        gen = _gen(30 + seed)
        model = _tiny_cnn(seed)
        x = torch.randn(1, 3, size, size, generator=gen)
        a = torch.rand(k, h, w, generator=gen) * 2 + torch.arange(k).view(k, 1, 1) * 0.1
        expected = _score_cam_weights(model, x, a, c)
        cases.append({
            "args": (model, x.clone(), a.clone(), c),
            "expected": expected,
            "mistakes": {
                "logits instead of probabilities": (
                    _score_cam_weights(model, x, a, c, probability=False),
                    "the weight is the softmax probability of class c on the masked image (the authors' code), not its logit",
                ),
                "masks not scaled to [0, 1]": (
                    _score_cam_weights(model, x, a, c, normalise=False),
                    "scale each upsampled map with s(M) = (M - min M) / (max M - min M) before multiplying it into x",
                ),
            },
            "train_mode": True,
            "crash_hints": [(RuntimeError, "size", "Known mistake: an upsampling size other than the input's. "
                             "Hint: F.interpolate(..., size=x.shape[-2:]) so that each mask matches x.")],
        })
    return cases


# --- 05-07: smaller exercises ----------------------------------------------------------------


def _hook_cases() -> list[dict]:
    cases = []
    for seed in range(2):
        model = _tiny_cnn(seed).eval()
        x = torch.randn(2, 3, 8, 8, generator=_gen(40 + seed))
        with torch.no_grad():
            output = model.bn(model.conv(x))
        cases.append({
            "args": (model, model.bn, x.clone()),
            "expected": output,
            "mistakes": {"the output after the ReLU, not the layer's own output": (
                torch.relu(output), "capture the output of the module you were given, before anything that follows it")},
            "no_hooks": True,
        })
    return cases


def _average_drop_cases() -> list[dict]:
    cases = []
    for seed in range(3):
        gen = _gen(50 + seed)
        y = torch.rand(6, generator=gen) * 0.8 + 0.1
        o = (y + (torch.rand(6, generator=gen) - 0.6) * 0.3).clamp(0.01, 1)
        drop = (y - o).clamp_min(0) / y
        cases.append({
            "args": (y.clone(), o.clone()),
            "expected": float(drop.mean() * 100),
            "mistakes": {
                "an absolute drop (pytorch-grad-cam's DropInConfidence)": (
                    float((y - o).clamp_min(0).mean() * 100),
                    "Chattopadhay et al. divide each drop by the original score Y_i: a relative drop",
                ),
                "negative drops counted": (float(((y - o) / y).mean() * 100), "a rise in confidence counts as 0 drop: max(0, Y - O)"),
                "a fraction instead of a percentage": (float(drop.mean()), "Average Drop is reported in percent: multiply by 100"),
            },
        })
    return cases


def _spearman_cases() -> list[dict]:
    def average_ranks(v):
        return _average_ranks(v[None])[0]  # tested against scipy.stats.rankdata

    def pearson(p, q):
        p, q = p - p.mean(), q - q.mean()
        return float((p * q).sum() / (p.norm() * q.norm()))

    cases = []
    for seed in range(3):
        gen = _gen(60 + seed)
        a = torch.randn(20, generator=gen).clamp_min(0).round(decimals=1).double()  # many tied zeros, as in maps
        b = (a + torch.randn(20, generator=gen).double()).clamp_min(0).round(decimals=1)
        ordinal = lambda v: v.argsort(stable=True).argsort().double()  # noqa: E731
        cases.append({
            "args": (a.clone(), b.clone()),
            "expected": pearson(average_ranks(a), average_ranks(b)),
            "mistakes": {
                "ties broken by position": (pearson(ordinal(a), ordinal(b)), "tied values share the average of their ranks (scipy.stats.rankdata's default)"),
                "Pearson correlation of the values, not of their ranks": (pearson(a, b), "rank both maps first, then correlate the ranks"),
            },
        })
    return cases



def _rise_cases() -> list[dict]:
    cases = []
    for seed in range(3):
        gen = _gen(70 + seed)
        k, h, w, p = 12, 5, 6, 0.4 + 0.1 * seed
        masks = torch.rand(k, h, w, generator=gen)
        scores = torch.rand(k, generator=gen)
        expected = torch.einsum("k,khw->hw", scores, masks) / (k * p)
        cases.append({
            "args": (scores.clone(), masks.clone(), p),
            "expected": expected,
            "mistakes": {
                "no division by p": (expected * p, "Eq. 6 divides by E[M] = p as well as by N: without it the map "
                                     "is p times too small (the heatmap looks the same, the values do not)"),
                "divided by each pixel's mask total": (
                    torch.einsum("k,khw->hw", scores, masks) / masks.sum(0),
                    "a per-pixel normalisation by sum_i M_i(λ) is a variant; Eq. 6 divides by N E[M] = N p",
                ),
                "masks averaged without their scores": (masks.mean(0) / p, "each mask is weighted by the score f(I ⊙ M_i)"),
            },
        })
    return cases


def _ig_cases() -> list[dict]:
    cases = []
    for seed in range(3):
        gen = _gen(80 + seed)
        steps = 4 + seed
        grads = torch.randn(steps, 2, 3, 3, generator=gen)
        x, x0 = torch.randn(2, 3, 3, generator=gen), torch.randn(2, 3, 3, generator=gen) * 0.1
        expected = (x - x0) * grads.mean(0)
        cases.append({
            "args": (grads.clone(), x.clone(), x0.clone()),
            "expected": expected,
            "mistakes": {
                "x instead of x - x'": (x * grads.mean(0), "Eq. 1 multiplies by (x_i - x'_i): the path's length, not the point"),
                "a sum instead of the mean over steps": (
                    (x - x0) * grads.sum(0), "the Riemann sum weighs each step by 1/m (Sec. 5): divide by the number of steps"),
                "the gradient at x only": ((x - x0) * grads[-1], "integrate along the path: every step's gradient counts"),
            },
        })
    return cases


def _shapley_kernel_cases() -> list[dict]:
    cases = []
    for m in (4, 7, 10):
        s = torch.arange(1, m)
        binom = torch.tensor([math.comb(m, int(k)) for k in s], dtype=torch.float64)
        expected = (m - 1) / (binom * s * (m - s))
        cases.append({
            "args": (m, s.clone()),
            "expected": expected,
            "mistakes": {
                "the binomial coefficient left out": (
                    (m - 1) / (s * (m - s)).double(),
                    "that is the kernel's total mass on all coalitions of size |z|; one coalition gets it divided by C(M, |z|)"),
                "LIME's weights": (torch.ones_like(expected), "Kernel SHAP's weights depend on |z|: small and large coalitions weigh most"),
            },
        })
    return cases


def _permutation_drop_cases() -> list[dict]:
    import numpy as np

    def accuracy(y, p):
        return float(((np.asarray(p) > 0.5) == y).mean())

    cases = []
    for seed in range(3):
        rng = np.random.default_rng(90 + seed)
        X = rng.normal(size=(40, 3))
        w = np.array([2.0, -1.0, 0.5])
        y = (X @ w > 0).astype(int)
        model_fn = lambda A, w=w: 1 / (1 + np.exp(-(A @ w)))
        column = seed % 3
        perm = rng.permutation(40)
        shuffled = X.copy()
        shuffled[:, column] = X[perm, column]
        base, permuted = accuracy(y, model_fn(X)), accuracy(y, model_fn(shuffled))
        cases.append({
            "args": (model_fn, X.copy(), y.copy(), accuracy, column, perm.copy()),
            "expected": base - permuted,
            "mistakes": {
                "the permuted score instead of the drop": (permuted, "importance is the score on the data *minus* the score after shuffling"),
                "the sign flipped": (permuted - base, "a useful feature has a positive importance: baseline minus permuted"),
                "whole rows permuted": (base - accuracy(y, model_fn(X[perm])),
                                        "shuffle one column only; reordering whole rows breaks every feature's link to y"),
            },
        })
    return cases

# --- 11: LayerCAM's map ----------------------------------------------------------------------


def _layer_cam_cases() -> list[dict]:
    cases = []
    for seed, (k, h, w) in enumerate([(2, 2, 2), (3, 4, 3), (5, 7, 7)]):
        a = torch.randn(k, h, w, generator=_gen(60 + seed))  # signed, as after a BatchNorm
        g = torch.randn(k, h, w, generator=_gen(70 + seed))
        expected = (g.clamp_min(0) * a).sum(0)
        cases.append({
            "args": (a.clone(), g.clone()),
            "expected": expected,
            "mistakes": {
                "no ReLU on the gradient": (
                    (g * a).sum(0),
                    "that is HiResCAM: LayerCAM keeps only the positive gradients, ReLU(g), as the weights",
                ),
                "the ReLU on the product instead of the gradient": (
                    (g * a).clamp_min(0).sum(0),
                    "that is pytorch-grad-cam's Grad-CAM element-wise; LayerCAM's weight is ReLU(g), then times A",
                ),
                "the gradient averaged over the positions": (
                    (g.clamp_min(0).mean((1, 2), keepdim=True) * a).sum(0),
                    "averaging the weights over the map is Grad-CAM's step; LayerCAM keeps one weight per position",
                ),
                "a ReLU on the finished map": (
                    (g.clamp_min(0) * a).sum(0).clamp_min(0),
                    "the exercise asks for the map before the final ReLU, which the template applies afterwards",
                ),
            },
        })
    return cases


EXERCISES: dict[str, Exercise] = {
    e.id: e
    for e in (
        Exercise("01-cam-map", "01", "The class activation map M_c = sum_k w^c_k A^k, before ReLU and upsampling.",
                 "fn(activations (K, h, w), fc_weight (classes, K), c: int) -> (h, w)", _cam_cases, _close),
        Exercise("02-grad-cam-weights", "02", "Grad-CAM's channel weights, Eq. 1: the spatial mean of the gradients.",
                 "fn(gradients (K, h, w)) -> (K,)", _grad_cam_cases, _close),
        Exercise("03-grad-cam-pp-alphas", "03", "Grad-CAM++'s alphas, Eq. 19, with alpha = 0 where the denominator is 0.",
                 "fn(activations (K, h, w), gradients (K, h, w)) -> (K, h, w)", _grad_cam_pp_cases, _close),
        Exercise("04-score-cam-weights", "04",
                 "Score-CAM's weights: the softmax probability of class c on x masked by each upsampled, min-max-scaled map.",
                 "fn(model, x (1, 3, H, W), activations (K, h, w), c: int) -> (K,)", _score_cam_cases, _close),
        Exercise("05-capture-layer", "05", "Capture a layer's output with a forward hook, and leave no hook behind.",
                 "fn(model, layer, x (N, 3, H, W)) -> the layer's output", _hook_cases, _close),
        Exercise("06-average-drop", "06", "Average Drop % = 100/N sum_i max(0, Y_i - O_i) / Y_i (Chattopadhay et al. 2018).",
                 "fn(y (N,), o (N,)) -> float", _average_drop_cases, _close),
        Exercise("07-spearman", "07", "Spearman rank correlation of two flattened maps, ties given their average rank.",
                 "fn(a (P,), b (P,)) -> float", _spearman_cases, _close),
        Exercise("08-rise-saliency", "08", "RISE's Eq. 6: the score-weighted sum of the masks over N E[M] = N p.",
                 "fn(scores (N,), masks (N, H, W), p: float) -> (H, W)", _rise_cases, _close),
        Exercise("09-integrated-gradients", "09",
                 "Integrated Gradients by the midpoint Riemann sum, from the gradients at the m path points.",
                 "fn(gradients (m, C, H, W), x (C, H, W), baseline (C, H, W)) -> (C, H, W)", _ig_cases, _close),
        Exercise("10-shapley-kernel", "10", "The Shapley kernel pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)).",
                 "fn(M: int, sizes (K,) ints in 1..M-1) -> (K,) float64", _shapley_kernel_cases, _close),
        Exercise("11-layer-cam-map", "11", "LayerCAM's map before its final ReLU: sum_k ReLU(g^k) * A^k, position by position.",
                 "fn(activations (K, h, w), gradients (K, h, w)) -> (h, w)", _layer_cam_cases, _close),
        Exercise("12-permutation-drop", "12",
                 "Permutation importance of one column for one permutation: score(X) - score(X with the column reordered).",
                 "fn(model_fn, X (n, M), y (n,), metric, column: int, permutation (n,)) -> float",
                 _permutation_drop_cases, _close),
    )
}


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in iter_modules(model))


_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def _global_hooks() -> dict[str, set]:
    from torch.nn.modules import module as module_module

    return {name: set(getattr(module_module, name, {})) for name in _GLOBAL_HOOKS}


def _remove_new_global_hooks(before: dict[str, set]) -> int:
    from torch.nn.modules import module as module_module

    removed = 0
    for name, keys in before.items():
        hooks = getattr(module_module, name, {})
        for key in set(hooks) - keys:
            del hooks[key]
            removed += 1
    return removed


class _TimeUp(Exception):
    pass


@contextmanager
def _time_limit(seconds: float):
    """Raise _TimeUp in the learner's code after ``seconds`` (Unix main thread; elsewhere no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _snapshot(args) -> list:
    """Copies of every tensor argument and of every model argument's parameters and buffers."""
    out = []
    for arg in args:
        if isinstance(arg, torch.Tensor):
            out.append(("input", arg.detach().clone()))
        elif isinstance(arg, nn.Module):
            out.append(("weights", {k: v.detach().clone() for k, v in arg.state_dict().items()}))
        else:
            out.append((None, None))
    return out


def _changed_in_place(args, snapshot) -> str | None:
    for position, (arg, (kind, before)) in enumerate(zip(args, snapshot)):
        if kind == "input" and not torch.equal(arg.detach(), before):
            return (f"your function changed its argument {position + 1} in place. Known mistake: an in-place "
                    "operation on an input (x.mul_(...), x[...] = ..., x += ...). Hint: compute on a copy, "
                    "e.g. x = x.clone(), or use out-of-place operations")
        if kind == "weights":
            state = arg.state_dict()
            changed = [k for k, v in before.items() if k not in state or not torch.equal(state[k].detach(), v)]
            if changed:
                return (f"your function changed the model's weights or buffers ({changed[0]}). Known mistake: "
                        "writing into the model (an optimiser step, an in-place op on a weight, or BatchNorm "
                        "statistics updated by a pass in train mode). Hint: explain the model, never modify it")
    return None


def _run_case(exercise: Exercise, fn, case: dict, index: int) -> None:
    args = case["args"]
    models = [a for a in args if isinstance(a, nn.Module)]
    model = models[0] if models else None
    flags = {name: m.training for name, m in model.named_modules()} if model is not None else None
    hooks_before = [_hooks(m) for m in models]
    global_before = _global_hooks()
    snapshot = _snapshot(args)
    where = f"case {index + 1}"
    try:
        with _time_limit(TIME_LIMIT):
            got = fn(*args)
    except _TimeUp:
        raise _Feedback(f"{where}: your function was still running after {TIME_LIMIT:g} s, although the reference "
                        "takes milliseconds. Known mistake: a loop that never ends (a while whose condition never "
                        "changes) or a loop over every pixel in Python. Hint: use tensor operations") from None
    finally:
        leaked = _remove_new_global_hooks(global_before)
    if leaked:
        raise _Feedback(f"{where}: your function left {leaked} global module hook{'s' if leaked > 1 else ''} "
                        "(torch.nn.modules.module.register_module_forward_hook), which would fire on every model "
                        "in this notebook; check() removed it. Known mistake: a global hook instead of one on the "
                        "layer. Hint: layer.register_forward_hook(...), and handle.remove() in a finally block.")
    if any(_hooks(m) != before for m, before in zip(models, hooks_before)):
        raise _Feedback(f"{where}: a hook is still attached to the model after your function returned. "
                        "Known mistake: hooks left on the model. Hint: remove the handle in a finally block.")
    message = _changed_in_place(args, snapshot)
    if message is not None and not (case.get("train_mode") and message.startswith("your function changed the model")):
        raise _Feedback(f"{where}: {message}.")
    if isinstance(got, (str, bytes)):
        raise _Feedback(f"{where}: your function returned a string ({got!r}); return the number itself. "
                        "Known mistake: a formatted value such as f'{drop:.1f}'. Hint: format only when printing.")
    if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
        hint = ""
        if case.get("zero_denominator"):
            hint = (" Known mistake: NaN or inf where the denominator is 0. Hint: where 2g² + (Σ A) g³ == 0, "
                    "set alpha to 0, and divide by a guarded denominator (torch.where) so the unused branch cannot make NaN.")
        raise _Feedback(f"{where}: your result contains NaN or inf.{hint}")
    if not exercise.compare(got, case["expected"]):
        for name, (value, hint) in case["mistakes"].items():
            if exercise.compare(got, value):
                raise _Feedback(f"{where}: expected {_describe(case['expected'])}, got {_describe(got)}.\n"
                                f"  Known mistake: {name}. Hint: {hint}.")
        raise _Feedback(f"{where}: expected {_describe(case['expected'])}, got {_describe(got)}.", wrong_values=True)
    if flags is not None:
        after = {name: m.training for name, m in model.named_modules()}
        if after != flags:
            raise _Feedback(f"{where}: the values are right, but the model's train/eval mode was not restored. "
                            "Hint: remember each module's flag and set it back, or use xai_helpers.evaluating(model).")


def _train_mode_hint(exercise: Exercise, fn, case: dict, pristine: nn.Module) -> str | None:
    """If the answer is right on an eval-mode model, the learner forgot to switch the model to eval mode.

    ``pristine`` is a copy taken before the learner's call: a pass in train mode
    has already updated the model's BatchNorm statistics."""
    _, *rest = case["args"]
    try:
        got = fn(pristine.eval(), *rest)
    except Exception:  # noqa: BLE001
        return None
    if exercise.compare(got, case["expected"]):
        return ("Known mistake: the model left in train mode (dropout and BatchNorm's batch statistics change every pass). "
                "Hint: run the masked passes in eval mode, e.g. with xai_helpers.evaluating(model), and restore the mode afterwards.")
    return None


def check(exercise_id: str, fn, *context) -> bool:
    """Check an exercise; print feedback; return True if it is right.

    A formula exercise (``EXERCISES``): ``fn`` is the learner's function, run on
    the exercise's hidden cases. An interpretation exercise
    (``xai_helpers.course.answers.ANSWERS``): ``fn`` is the learner's answer, and
    ``context`` the lesson's measured values it is checked against.

    Never raises on a wrong answer (a stub's ``NotImplementedError``, or an
    answer left at ``None``, is reported as "not attempted yet"). An unknown
    ``exercise_id`` raises ``ValueError``.
    """
    from .answers import ANSWERS, run

    if exercise_id in ANSWERS:
        return run(ANSWERS[exercise_id], fn, context)
    if exercise_id not in EXERCISES:
        known = [*EXERCISES, *ANSWERS]
        raise ValueError(f"unknown exercise {exercise_id!r}; the exercises are: {', '.join(known)}")
    exercise = EXERCISES[exercise_id]
    if not callable(fn):
        print(f"✗ {exercise_id}: pass your function itself, e.g. check({exercise_id!r}, my_function)")
        return False
    cases = exercise.cases()
    for index, case in enumerate(cases):
        pristine = copy.deepcopy(case["args"][0]) if case.get("train_mode") else None
        try:
            _run_case(exercise, fn, case, index)
        except NotImplementedError:
            print(f"… {exercise_id}: not attempted yet. Write the function ({exercise.signature}), then run this cell again.")
            return False
        except _Feedback as feedback:
            message = str(feedback)
            if pristine is not None and feedback.wrong_values:
                message += "\n  " + (_train_mode_hint(exercise, fn, case, pristine) or "")
            print(f"✗ {exercise_id}: {message.rstrip()}")
            return False
        except Exception as error:  # noqa: BLE001 - a crash in the learner's code is feedback, not an error
            hints = [hint for kind, words, hint in case.get("crash_hints", []) if isinstance(error, kind) and words in str(error)]
            extra = "".join(f"\n  {hint}" for hint in hints)
            print(f"✗ {exercise_id}: case {index + 1} raised {type(error).__name__}: {error}{extra}")
            return False
    print(f"✓ {exercise_id}: all {len(cases)} cases pass")
    return True
