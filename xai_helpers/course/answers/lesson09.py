"""Lesson 09's interpretation exercises.

* ``09-completeness``: which of the lesson's additive maps meet Sundararajan et
  al.'s completeness criterion (the attributions add up to within 5 % of the
  score difference they explain), and Integrated Gradients' gap in percent. The
  context is ``{method: (sum of the attributions, score difference)}``.
* ``09-which-maps-pass``: which of the lesson's methods pass lesson 07's
  randomisation test (the same protocol and rule, :mod:`xai_helpers.metrics.sanity`),
  on which measure Integrated Gradients fails, and its mean there. The context is
  the table of :func:`xai_helpers.metrics.sanity.summarise`.
"""

from __future__ import annotations

from .base import AnswerExercise, register
from .lesson07 import _names, canonical_name, failing_measures, pass_measure_exercise

__all__ = ["COMPLETENESS_TOLERANCE", "completeness_gap"]

COMPLETENESS_TOLERANCE = 0.05   # Sundararajan et al. 2017, Sec. 5: within 5 % of F(x) - F(x')
GAP_TOL = 0.15                  # percentage points: the sums are printed with 2 decimals


def completeness_gap(total: float, difference: float) -> float:
    """|sum of the attributions - score difference| / |score difference|."""
    return abs(total - difference) / abs(difference)


def _expected(context) -> dict:
    gaps = {name: completeness_gap(*pair) for name, pair in context.items()}
    return {"meet": {n for n, g in gaps.items() if g <= COMPLETENESS_TOLERANCE},
            "gap": 100 * gaps["Integrated Gradients"], "gaps": gaps, "names": list(context)}


def _shape_ok(answer) -> bool:
    return isinstance(answer, dict) and {"meet", "ig_gap_percent"} <= set(answer)


def _compare(answer, want) -> bool:
    if not _shape_ok(answer):
        return False
    named, unknown = _names(answer["meet"], want["names"])
    return not unknown and named == want["meet"] and abs(abs(float(answer["ig_gap_percent"])) - want["gap"]) <= GAP_TOL


def _mistakes(answer, want, context):
    if not _shape_ok(answer):
        return 'answer with a dict: {"meet": [method names], "ig_gap_percent": a number}.'
    named, unknown = _names(answer["meet"], want["names"])
    if unknown:
        return f"{', '.join(map(str, unknown))}: the two additive maps are {' and '.join(want['names'])}."
    for name in sorted(named - want["meet"]):
        total, difference = context[name]
        return (f"{name}'s attributions add up to {total:.2f}, and the difference they explain is {difference:.2f}: "
                f"a gap of {100 * want['gaps'][name]:.1f} %, above 5 %. With more steps (or a better rule) it shrinks.")
    for name in sorted(want["meet"] - named):
        total, difference = context[name]
        exact = " Summation-to-delta is exact: there is no quadrature." if canonical_name(name) == "deeplift" else ""
        return (f"{name} meets it: its attributions add up to {total:.3f} against {difference:.3f}, "
                f"a gap of {100 * want['gaps'][name]:.2g} %.{exact}")
    try:
        value = abs(float(answer["ig_gap_percent"]))
    except (TypeError, ValueError):
        return "the gap is a number, in percent of F(x) - F(x')."
    total, difference = context["Integrated Gradients"]
    if abs(100 * value - want["gap"]) <= GAP_TOL:
        return f"{value} is the gap as a fraction; the question asks for percent (× 100)."
    if abs(value - abs(total - difference)) <= 0.015:
        return (f"{value} is the gap in logits, |sum - (F(x) - F(x'))|; divide it by F(x) - F(x') = {difference:.2f} "
                "and give it in percent.")
    if abs(value - 100 * abs(total - difference) / abs(total)) <= GAP_TOL and abs(total) != abs(difference):
        return f"divide by the difference IG explains, F(x) - F(x') = {difference:.2f}, not by the sum of IG."
    return "the gap is |sum of IG - (F(x) - F(x'))| divided by F(x) - F(x'), in percent."


register(AnswerExercise(
    id="09-completeness",
    lesson="09",
    question=("Sundararajan et al. ask that the attributions add up to within 5 % of F(x) - F(x'). Which of the "
              "lesson's two additive maps, Integrated Gradients (32 midpoint steps) and DeepLIFT (Rescale), both "
              "with the mid-grey reference 0, meet it, and what is Integrated Gradients' gap, in percent?"),
    answer_format='{"meet": [method names], "ig_gap_percent": a number}',
    expected=_expected,
    compare=_compare,
    mistakes=_mistakes,
))

pass_measure_exercise(
    id="09-which-maps-pass",
    lesson="09",
    question=("Run with lesson 07's protocol and rule, which of this lesson's maps pass the classifier step of the "
              "randomisation test? On which measure(s) does Integrated Gradients fail, and what is its mean there?"),
    focus="Integrated Gradients",
    measure_of=lambda table: failing_measures(table, "Integrated Gradients"),
)
