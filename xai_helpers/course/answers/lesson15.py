"""Lesson 15's interpretation exercises (the appendix on evaluation).

* ``15-kendall-by-hand``: concordant and discordant pairs, and Kendall's tau-b,
  of two short score lists; context ``(a, b)``, the two lists the lesson prints.
* ``15-most-moving-setting``: which single change of deletion's settings moves
  the ranking of the methods furthest from the default deletion, and its tau;
  context ``(names, tau)``: the metric names and the matrix of Kendall's tau
  between their rankings, row and column 0 being the default deletion.
"""

from __future__ import annotations

import math

import numpy as np

from .base import AnswerExercise, register
from .base import close as _close
from .base import name_key as _name


# ---------------------------------------------------------------- 15-kendall-by-hand


def pair_counts(a, b) -> dict:
    """Concordant, discordant and tied pairs of two score lists (each unordered pair once)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError("a and b must be two lists of the same length, at least 2")
    counts = {"concordant": 0, "discordant": 0, "tied_a": 0, "tied_b": 0}
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
            counts["concordant"] += int(s > 0)
            counts["discordant"] += int(s < 0)
            counts["tied_a"] += int(a[i] == a[j])
            counts["tied_b"] += int(b[i] == b[j])
    counts["pairs"] = len(a) * (len(a) - 1) // 2
    return counts


def _kendall_expected(a, b) -> dict:
    c = pair_counts(a, b)
    denominator = math.sqrt((c["pairs"] - c["tied_a"]) * (c["pairs"] - c["tied_b"]))
    tau = (c["concordant"] - c["discordant"]) / denominator if denominator else 0.0
    return {"concordant": c["concordant"], "discordant": c["discordant"], "tau": tau}


def _kendall_compare(answer, expected) -> bool:
    return (int(answer["concordant"]) == expected["concordant"] and int(answer["discordant"]) == expected["discordant"]
            and _close(answer["tau"], expected["tau"], 0.01))


def _kendall_mistakes(answer, expected, a, b) -> str | None:
    c = pair_counts(a, b)
    given_c, given_d = answer.get("concordant"), answer.get("discordant")
    if (given_c, given_d) == (expected["discordant"], expected["concordant"]) and given_c != given_d:
        return "concordant and discordant are swapped: a pair is concordant when both lists order it the same way"
    if given_c == 2 * expected["concordant"] and given_d == 2 * expected["discordant"]:
        return "you counted every pair twice, (i, j) and (j, i); count each unordered pair once, i < j"
    if given_c == expected["concordant"] + c["tied_a"] + c["tied_b"] or given_c == expected["concordant"] + c["tied_a"]:
        return "a pair tied in one of the lists is neither concordant nor discordant; leave it out of both counts"
    if given_c != expected["concordant"] or given_d != expected["discordant"]:
        return (f"count the {c['pairs']} pairs i < j: concordant when a and b order them the same way, discordant "
                "when opposite, neither when either list has a tie")
    tau = answer.get("tau")
    if c["pairs"] and _close(tau, (c["concordant"] - c["discordant"]) / c["pairs"], 0.005) and not _close(
            tau, expected["tau"], 0.01):
        return ("that is tau-a, which divides by all pairs; tau-b (scipy's and the package's) divides by "
                "sqrt((n0 - ties in a)(n0 - ties in b))")
    if _close(tau, -expected["tau"], 0.01):
        return "the sign is reversed: (concordant - discordant), not the other way round"
    return "tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)), with n0 = n(n-1)/2 and n1, n2 the pairs tied in a and in b"


register(AnswerExercise(
    id="15-kendall-by-hand",
    lesson="15",
    question="Count the concordant and discordant pairs of the two printed score lists, and compute Kendall's tau-b.",
    answer_format='{"concordant": int, "discordant": int, "tau": number}',
    expected=_kendall_expected,
    compare=_kendall_compare,
    mistakes=_kendall_mistakes,
))


# ---------------------------------------------------------------- 15-most-moving-setting


def _settings(names) -> list[int]:
    """Indices of the deletion variants other than the default (index 0)."""
    return [j for j, n in enumerate(names) if j > 0 and str(n).startswith("deletion")]


def _moving_expected(names, tau) -> dict:
    tau = np.asarray(tau, dtype=np.float64)
    if tau.shape != (len(names), len(names)) or not str(names[0]).startswith("deletion"):
        raise ValueError("pass the metric names (the default deletion first) and their square tau matrix")
    j = min(_settings(names), key=lambda k: tau[0, k])
    return {"setting": str(names[j]), "tau": float(tau[0, j])}


def _moving_compare(answer, expected) -> bool:
    return _name(answer["setting"]) == _name(expected["setting"]) and _close(answer["tau"], expected["tau"], 0.01)


def _moving_mistakes(answer, expected, names, tau) -> str | None:
    tau = np.asarray(tau, dtype=np.float64)
    lookup = {_name(n): j for j, n in enumerate(names)}
    setting = _name(answer.get("setting"))
    if setting not in lookup:
        return f"setting: give one of the printed metric names, e.g. {str(names[1])!r}"
    j = lookup[setting]
    if j == 0:
        return "that is the default deletion itself (tau = 1 with itself); compare it with its variants"
    if j not in _settings(names):
        return ("that is another metric, not a change of deletion's settings; the question is which deletion "
                "variant (step, reference, logit) moves furthest from the default")
    if setting != _name(expected["setting"]):
        most_alike = max(_settings(names), key=lambda k: tau[0, k])
        if j == most_alike:
            return "that variant agrees *most* with the default (the largest tau); the one that moves the ranking most has the smallest tau"
        return "read row 0 of the matrix (the default deletion) and take the deletion variant with the smallest tau"
    given = answer.get("tau")
    if _close(given, 1 - expected["tau"], 0.01) and not _close(given, expected["tau"], 0.01):
        return "give tau itself, as the matrix prints it, not 1 - tau"
    if _close(given, -expected["tau"], 0.01):
        return "the sign is wrong: read the value as printed"
    return "tau: read the value in row 0, in that variant's column, at the printed precision"


register(AnswerExercise(
    id="15-most-moving-setting",
    lesson="15",
    question=("Which single change of deletion's settings moves the ranking of the methods furthest from the default "
              "deletion, and what is Kendall's tau between the two rankings?"),
    answer_format='{"setting": metric name as printed, "tau": number}',
    expected=_moving_expected,
    compare=_moving_compare,
    mistakes=_moving_mistakes,
))
