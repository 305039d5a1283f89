"""Lesson 12's interpretation exercises.

* ``12-reliance-ranking``: Breiman's permutation importance (a difference of
  scores) against Fisher, Rudin & Dominici's model reliance (a ratio of
  errors), across two models; context ``{label: PermutationImportance}``.
* ``12-copy-shares``: what happens to the permutation importances of a feature
  and its exact copy, separately and permuted together; context the lesson's
  ``runs`` (per-seed accuracy drops ``alone``, ``original``, ``copy``,
  ``together``).
* ``12-largest-shap-gap``: where interventional and path-dependent SHAP values
  of one row differ most; context ``(names, interventional, path_dependent)``.
"""

from __future__ import annotations

import numpy as np

from .base import AnswerExercise, register
from .base import close as _close
from .base import name_key as _name


# ---------------------------------------------------------------- 12-reliance-ranking


def _top_feature(result) -> tuple[float, float]:
    """(the largest mean accuracy drop I, the unpermuted error e = 1 - accuracy)."""
    return float(np.max(result.importances_mean)), 1.0 - float(result.baseline)


def _reliance_expected(models: dict) -> dict:
    rows = {}
    for label, result in models.items():
        importance, error = _top_feature(result)
        if error <= 0:
            raise ValueError(f"{label} makes no error, so its model reliance (a ratio of errors) is undefined")
        rows[label] = (importance, (error + importance) / error)
    return {"by_difference": max(rows, key=lambda k: rows[k][0]),
            "by_ratio": max(rows, key=lambda k: rows[k][1]),
            "reliance": {label: ratio for label, (_, ratio) in rows.items()}}


def _reliance_compare(answer, expected) -> bool:
    if _name(answer["by_difference"]) != _name(expected["by_difference"]):
        return False
    if _name(answer["by_ratio"]) != _name(expected["by_ratio"]):
        return False
    given = {_name(k): v for k, v in answer["reliance"].items()}
    return all(_close(given.get(_name(k)), v, 0.01) for k, v in expected["reliance"].items())


def _reliance_mistakes(answer, expected, models) -> str | None:
    given = {_name(k): v for k, v in dict(answer.get("reliance", {})).items()}
    for label, result in models.items():
        value = given.get(_name(label))
        importance, error = _top_feature(result)
        if value is None or _close(value, expected["reliance"][label], 0.01):
            continue
        if _close(value, importance, 0.002):
            return (f"for {label} you gave the permutation importance I = {importance:.3f}, the difference of scores; "
                    "model reliance is a ratio: the error with the feature permuted divided by the original error")
        if _close(value, 1 + importance / (1 - error), 0.01):
            return (f"for {label} you divided by the accuracy; model reliance divides errors: "
                    "(e + I) / e with e = 1 - accuracy")
        if _close(value, importance / error, 0.01):
            return (f"for {label} you gave I / e, the relative increase of the error, which is model reliance minus 1; "
                    "the permuted error is e + I")
        if _close(value, error / (error + importance), 0.01):
            return f"for {label} the ratio is upside down: the permuted error goes on top, the original error below"
        return f"for {label}, compute (e + I) / e from its test error e = 1 - accuracy and its top importance I"
    if (_name(answer.get("by_ratio")) == _name(answer.get("by_difference"))
            and expected["by_ratio"] != expected["by_difference"]):
        errors = ", ".join(f"{label} errs on {1 - float(r.baseline):.3f} of the rows" for label, r in models.items())
        return ("the two rankings differ here: the ratio divides each model's loss by its *own* error "
                f"({errors}), so a smaller drop can be a larger multiple")
    for key in ("by_difference", "by_ratio"):
        if _name(answer.get(key)) != _name(expected[key]):
            measure = "the largest accuracy drop I" if key == "by_difference" else "the largest ratio (e + I) / e"
            return f"{key}: compare each model's top feature by {measure}"
    return None


register(AnswerExercise(
    id="12-reliance-ranking",
    lesson="12",
    question=("Compute each model's model reliance on its most important feature, and say which model relies more on "
              "its most important feature by permutation importance (the difference) and by model reliance (the ratio)."),
    answer_format='{"by_difference": label, "by_ratio": label, "reliance": {label: ratio, ...}}',
    expected=_reliance_expected,
    compare=_reliance_compare,
    mistakes=_reliance_mistakes,
))


# ---------------------------------------------------------------- 12-copy-shares


def _copy_means(runs: dict) -> dict:
    means = {key: float(np.mean(runs[key])) for key in ("alone", "original", "copy", "together")}
    if not all(np.isfinite(list(means.values()))):
        raise ValueError("runs holds non-finite importances")
    return means


def _copy_expected(runs: dict) -> dict:
    m = _copy_means(runs)
    separate = m["original"] + m["copy"]
    closer = "together" if abs(m["together"] - m["alone"]) < abs(separate - m["alone"]) else "separate_sum"
    return {"separate_sum": separate, "together": m["together"], "closer_to_alone": closer}


def _copy_compare(answer, expected) -> bool:
    return (_close(answer["separate_sum"], expected["separate_sum"], 0.002)
            and _close(answer["together"], expected["together"], 0.002)
            and _name(answer["closer_to_alone"]) == _name(expected["closer_to_alone"]))


def _copy_mistakes(answer, expected, runs) -> str | None:
    m = _copy_means(runs)
    given = answer.get("separate_sum")
    for key in ("separate_sum", "together"):
        try:
            if float(answer.get(key)) > 1:
                return f"{key}: give accuracy drops (fractions of the test rows, as printed), not numbers of rows"
        except (TypeError, ValueError):
            return f"{key} must be a number, the mean accuracy drop over the seeds"
    if not _close(given, expected["separate_sum"], 0.002):
        hints = {  # the nearest of the values a learner may confuse with the sum, if it is within the tolerance
            "original": f"separate_sum: you gave the original's importance only ({m['original']:.3f}); add the copy's",
            "alone": "separate_sum: that is the importance in the model without a copy; add the two separate importances",
            "together": "separate_sum: that is the importance with both permuted together, not the sum of the separate ones",
        }
        nearest = min(hints, key=lambda key: abs(float(given) - m[key]))
        if _close(given, m[nearest], 0.002):
            return hints[nearest]
        return "separate_sum: add the mean importances of the original and of the copy, each permuted alone"
    if not _close(answer.get("together"), expected["together"], 0.002):
        if _close(answer.get("together"), m["alone"], 0.002):
            return "together: that is the model without a copy; give the model with the copy, both columns permuted at once"
        return "together: the mean importance when the original and the copy are permuted with one permutation"
    if _name(answer.get("closer_to_alone")) != _name(expected["closer_to_alone"]):
        return (f"closer_to_alone: compare the distance of each to the importance alone ({m['alone']:.3f}); "
                'answer "separate_sum" or "together"')
    return None


register(AnswerExercise(
    id="12-copy-shares",
    lesson="12",
    question=("With colsample_bynode=0.5, add the original's and the copy's mean importances, permuted separately; "
              "give their importance permuted together; which is closer to the feature's importance without a copy?"),
    answer_format='{"separate_sum": accuracy drop, "together": accuracy drop, "closer_to_alone": "separate_sum" or "together"}',
    expected=_copy_expected,
    compare=_copy_compare,
    mistakes=_copy_mistakes,
))


# ---------------------------------------------------------------- 12-largest-shap-gap

_LARGER = {"interventional": "interventional", "path dependent": "path-dependent", "path": "path-dependent",
           "tree path dependent": "path-dependent"}


def _gap_expected(names, interventional, path) -> dict:
    interventional = np.asarray(interventional, dtype=np.float64)
    path = np.asarray(path, dtype=np.float64)
    if interventional.shape != path.shape or len(names) != len(path):
        raise ValueError("names, interventional and path-dependent values must have one entry per feature")
    k = int(np.argmax(np.abs(path - interventional)))
    return {"feature": str(names[k]), "larger": "path-dependent" if path[k] > interventional[k] else "interventional",
            "gap": float(abs(path[k] - interventional[k]))}


def _gap_compare(answer, expected) -> bool:
    return (_name(answer["feature"]) == _name(expected["feature"])
            and _LARGER.get(_name(answer["larger"])) == expected["larger"]
            and _close(answer["gap"], expected["gap"], 0.01))


def _gap_mistakes(answer, expected, names, interventional, path) -> str | None:
    interventional = np.asarray(interventional, dtype=np.float64)
    path = np.asarray(path, dtype=np.float64)
    lookup = {_name(n): i for i, n in enumerate(names)}
    feature = _name(answer.get("feature"))
    if feature not in lookup:
        return f"feature: give one of the lesson's feature names, e.g. {str(names[0])!r}"
    if feature != _name(expected["feature"]):
        size = [i for i, n in enumerate(names) if any(w in str(n) for w in ("radius", "perimeter", "area"))]
        if lookup[feature] in size:
            largest = float(np.abs(path - interventional)[size].max())
            return ("radius, perimeter and area are the most correlated features, but their two values differ "
                    f"by at most {largest:.3f}; compare |path-dependent - interventional| feature by feature")
        if lookup[feature] in (int(np.argmax(np.abs(interventional))), int(np.argmax(np.abs(path)))):
            return "that feature has the largest value, not necessarily the largest difference between the two values"
        return "compare |path-dependent - interventional| feature by feature and take the largest"
    if _LARGER.get(_name(answer.get("larger"))) != expected["larger"]:
        return ('larger: answer "interventional" or "path-dependent"; you have the direction reversed, or look again '
                "at the two bars of that feature")
    k = lookup[feature]
    given = answer.get("gap")
    if _close(given, abs(path[k]) + abs(interventional[k]), 0.01):
        return "gap: subtract the two values, do not add them"
    if interventional[k] != 0 and _close(given, path[k] / interventional[k], 0.01):
        return "gap: give the difference of the two values, not their ratio"
    return "gap: the absolute difference of the two values, at the printed precision"


register(AnswerExercise(
    id="12-largest-shap-gap",
    lesson="12",
    question=("For test row 3, which feature's interventional and path-dependent SHAP values differ most, "
              "which of the two is larger, and by how much?"),
    answer_format='{"feature": name, "larger": "interventional" or "path-dependent", "gap": |difference|}',
    expected=_gap_expected,
    compare=_gap_compare,
    mistakes=_gap_mistakes,
))
