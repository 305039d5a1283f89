"""Lesson 08's interpretation exercises."""

from __future__ import annotations

import math
import re

from .base import AnswerExercise, register


def _name(text) -> str:
    """'Eq. 6', 'eq6', 'EQ 6' -> 'eq6'; 'centered' -> 'centred'."""
    key = re.sub(r"[^a-z0-9]", "", str(text).lower())
    return "centred" if key == "centered" else key


def _finest(passes_by_setting: dict) -> tuple[int, int]:
    """The lesson's rule: the smallest window gives the finest map (ties: the smaller stride)."""
    return min(passes_by_setting, key=lambda setting: (setting[0], setting[1]))


# ---------------------------------------------------------------- 08-finest-window


def _finest_expected(passes_by_setting: dict) -> dict:
    window, stride = _finest(passes_by_setting)
    return {"window": window, "passes": int(passes_by_setting[(window, stride)])}


def _finest_compare(answer, expected) -> bool:
    return int(answer["window"]) == expected["window"] and int(answer["passes"]) == expected["passes"]


def _finest_mistakes(answer, expected, passes_by_setting) -> str | None:
    window, passes = int(answer["window"]), int(answer["passes"])
    windows = sorted({w for w, _ in passes_by_setting})
    if window == windows[-1] and window != expected["window"]:
        return (f"a {window}-pixel window is the coarsest setting: every pixel's value averages the drop of a "
                f"{window}-pixel square. The finest map has the smallest window.")
    if window != expected["window"]:
        return f"the finest map has the smallest window of the lesson's settings, {expected['window']} pixels."
    if passes == expected["passes"] - 1:
        return "count the pass on the full photo too: the cost is the window positions + 1."
    others = {p: w for (w, _), p in passes_by_setting.items() if w != expected["window"]}
    if passes in others:
        return f"{passes} passes is the cost of the {others[passes]}-pixel window, not of the {window}-pixel one."
    if passes**2 == expected["passes"] - 1:
        return ("that is the number of positions along one axis; the windows are rows x columns, and the cost "
                "adds one pass for the photo.")
    return "read the cost from the registry's printout in section 3: one pass per window position, plus one."


register(
    AnswerExercise(
        id="08-finest-window",
        lesson="08_occlusion_and_rise.ipynb",
        question="Of the window sizes in section 3, which makes the finest occlusion map, and how many forward "
                 "passes does it cost?",
        answer_format='{"window": <pixels>, "passes": <forward passes>}',
        expected=_finest_expected,
        compare=_finest_compare,
        mistakes=_finest_mistakes,
    )
)


# ---------------------------------------------------------------- 08-stable-estimator


def _stable_expected(correlations: dict) -> dict:
    best = max(correlations, key=lambda name: correlations[name])
    return {"estimator": best, "correlation": float(correlations[best])}


def _stable_compare(answer, expected) -> bool:
    return (_name(answer["estimator"]) == _name(expected["estimator"])
            and math.isclose(float(answer["correlation"]), expected["correlation"], abs_tol=0.01))


def _stable_mistakes(answer, expected, correlations) -> str | None:
    chosen = _name(answer["estimator"])
    by_name = {_name(name): (name, float(r)) for name, r in correlations.items()}
    if chosen not in by_name:
        return f"name one of the two estimators of section 4: {', '.join(map(repr, correlations))}."
    name, r = by_name[chosen]
    if chosen != _name(expected["estimator"]):
        return (f"the two {name} maps correlate at only {r:.2f}: with a few hundred masks that map is mostly the "
                "masks' own density, which a second set of masks redraws. The more stable estimator has the higher correlation.")
    return (f"the {name} estimator is right; its correlation between the two sets of masks is printed in "
            f"section 4 (give it to two decimals).")


register(
    AnswerExercise(
        id="08-stable-estimator",
        lesson="08_occlusion_and_rise.ipynb",
        question="Which RISE estimator gives the more similar maps from two independent sets of 250 masks, and "
                 "what is the correlation between its two maps?",
        answer_format='{"estimator": "Eq. 6" or "centred", "correlation": <to two decimals>}',
        expected=_stable_expected,
        compare=_stable_compare,
        mistakes=_stable_mistakes,
    )
)
