"""Lesson 10's interpretation exercises."""

from __future__ import annotations

import math
import re

from .base import AnswerExercise, register

# Local accuracy holds to this tolerance (Kernel SHAP imposes it exactly; float32 values, summed).
_SUM_TOL = 1e-3


def _name(text) -> str:
    """'Kernel SHAP', 'kernel_shap', 'KernelSHAP' -> 'kernelshap'."""
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def _half_weight(kernel_width: float) -> float:
    """LIME's kernel exp(-D^2 / sigma^2) at |z| = M / 2, with the cosine distance D = 1 - sqrt(|z| / M)."""
    distance = 1 - math.sqrt(0.5)
    return math.exp(-(distance**2) / kernel_width**2)


# ---------------------------------------------------------------- 10-half-weight-and-sum


def _weight_sum_expected(kernel_width: float, sums: dict, delta: float) -> dict:
    adds_up = [name for name, total in sums.items() if abs(float(total) - float(delta)) < _SUM_TOL]
    if len(adds_up) != 1:
        raise ValueError(f"expected exactly one method whose values add up to f(x) - f(empty), got {adds_up}")
    return {"weight": _half_weight(float(kernel_width)), "adds_up": adds_up[0]}


def _weight_sum_compare(answer, expected) -> bool:
    return (math.isclose(float(answer["weight"]), expected["weight"], abs_tol=0.01)
            and _name(answer["adds_up"]) == _name(expected["adds_up"]))


def _weight_sum_mistakes(answer, expected, kernel_width, sums, delta) -> str | None:
    weight, sigma = float(answer["weight"]), float(kernel_width)
    right = expected["weight"]
    if not math.isclose(weight, right, abs_tol=0.01):
        if math.isclose(weight, math.sqrt(right), abs_tol=0.01):
            return ("that is the weight of lime_image's kernel, sqrt(exp(-D²/σ²)); the lesson's kernel (the paper's "
                    "and xh.lime's) is exp(-D²/σ²), without the square root.")
        if math.isclose(weight, math.exp(-(0.5**2) / sigma**2), abs_tol=0.005):
            return "the cosine distance to the image is D = 1 - sqrt(|z| / M), not 1 - |z| / M."
        if math.isclose(weight, math.exp(-(1 - math.sqrt(0.5)) / sigma**2), abs_tol=0.005):
            return "square the distance: the kernel is exp(-D² / σ²)."
        return (f"compute D = 1 - sqrt(1/2) for a coalition that keeps half the superpixels, then exp(-D² / σ²) "
                f"with σ = {sigma:g}; the plot of section 3 shows the curve.")
    chosen = _name(answer["adds_up"])
    by_name = {_name(name): (name, float(total)) for name, total in sums.items()}
    if chosen not in by_name:
        return f"name one method: {', '.join(map(repr, sums))}."
    name, total = by_name[chosen]
    return (f"{name}'s values add up to {total:.4f}, not f(x) - f(∅) = {float(delta):.4f}; only the method that "
            "imposes local accuracy as a constraint guarantees the sum.")


register(
    AnswerExercise(
        id="10-half-weight-and-sum",
        lesson="10_lime_and_kernel_shap.ipynb",
        question="With the lesson's kernel width, how much LIME weight does a coalition keeping half the superpixels "
                 "get, and which method's superpixel values add up to f(x) - f(∅)?",
        answer_format='{"weight": <to two decimals>, "adds_up": "LIME" or "Kernel SHAP"}',
        expected=_weight_sum_expected,
        compare=_weight_sum_compare,
        mistakes=_weight_sum_mistakes,
    )
)


# ---------------------------------------------------------------- 10-largest-block


def _block_expected(shapley, v_empty, v_full) -> dict:
    values = [float(v) for v in shapley]
    return {"block": max(range(len(values)), key=values.__getitem__), "sum": float(v_full) - float(v_empty)}


def _block_compare(answer, expected) -> bool:
    return int(answer["block"]) == expected["block"] and math.isclose(float(answer["sum"]), expected["sum"],
                                                                       abs_tol=0.001)


def _block_mistakes(answer, expected, shapley, v_empty, v_full) -> str | None:
    block, total = int(answer["block"]), float(answer["sum"])
    values = [float(v) for v in shapley]
    if block != expected["block"]:
        if block == expected["block"] + 1:
            return "the blocks are numbered from 0 (row 0 holds blocks 0-3, row 1 blocks 4-7), as the printout is."
        if 0 <= block < len(values) and values[block] == min(values):
            return "that block has the smallest Shapley value; the question asks for the largest."
        return "the largest of the printed Shapley values (Eq. 8); count its position from 0."
    if math.isclose(total, float(v_full), abs_tol=0.001):
        return "local accuracy: the values add up to v(F) - v(∅), the full image's score minus the empty one's."
    return "add up the printed Shapley values, or compute v(F) - v(∅) from the printout (to three decimals)."


register(
    AnswerExercise(
        id="10-largest-block",
        lesson="10_lime_and_kernel_shap.ipynb",
        question="In the 8-block game, which block has the largest Shapley value, and what do the eight values add "
                 "up to?",
        answer_format='{"block": <0 to 7>, "sum": <to three decimals>}',
        expected=_block_expected,
        compare=_block_compare,
        mistakes=_block_mistakes,
    )
)
