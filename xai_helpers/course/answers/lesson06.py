"""Lesson 06's interpretation exercises.

* ``06-below-the-centre-blob``: which methods do *not* beat the centre-Gaussian
  baseline on insertion AUC, each compared with the baseline on the same photos
  (the lesson's rule); context ``(areas, rows_of, baseline)``: the lesson's
  per-photo insertion areas ``{name: [area, ...]}``, the photos behind each
  list ``{name: [photo index, ...]}``, and the centre baseline's registry name.
"""

from __future__ import annotations

import numpy as np

from .base import AnswerExercise, register
from .base import name_key as _name

def _names(answer) -> set[str]:
    if isinstance(answer, str):
        answer = [answer]
    return {_name(a) for a in answer}


def _is_baseline(name: str) -> bool:
    return "(baseline)" in name


def _mean(values) -> float:
    """The mean at the precision the lesson prints (2 decimals), so that a printed tie is a tie."""
    return round(float(np.mean(np.asarray(values, dtype=np.float64))), 2)


def paired_means(areas: dict, rows_of: dict, baseline: str) -> dict[str, tuple[float, float]]:
    """{method: (its mean, the baseline's mean on the same photos)}, for every method that is not a baseline."""
    if baseline not in areas:
        raise ValueError(f"the context has no {baseline!r} entry")
    position = {photo: k for k, photo in enumerate(rows_of[baseline])}
    out = {}
    for name, values in areas.items():
        if _is_baseline(name):
            continue
        if len(values) != len(rows_of[name]):
            raise ValueError(f"{name}: {len(values)} areas for {len(rows_of[name])} photos")
        same = [areas[baseline][position[photo]] for photo in rows_of[name]]
        out[name] = (_mean(values), _mean(same))
    return out


def _below_expected(areas: dict, rows_of: dict, baseline: str) -> list[str]:
    return sorted(name for name, (own, base) in paired_means(areas, rows_of, baseline).items() if own <= base)


def _below_compare(answer, expected) -> bool:
    return _names(answer) == {_name(n) for n in expected}


def _below_mistakes(answer, expected, areas, rows_of, baseline) -> str | None:
    given = _names(answer)
    known = {_name(n): n for n in areas}
    unknown = sorted(g for g in given if g not in known)
    if unknown:
        return f"{unknown[0]!r} is not one of the lesson's method names (copy them as the table prints them)"
    if any(_is_baseline(known[g]) for g in given):
        return "leave the null baselines out: the question asks which *methods* fail to beat the centre blob"
    pairs = paired_means(areas, rows_of, baseline)
    beats = {_name(n) for n, (own, base) in pairs.items() if own > base}
    if given and given == beats:
        return ("you listed the methods that *do* beat the centre blob; insertion is better when higher, "
                "so a method fails when its area is at most the blob's")
    whole = _mean(areas[baseline])
    unpaired = {_name(n) for n in pairs if pairs[n][0] <= whole}
    if given == unpaired and unpaired != {_name(n) for n in expected}:
        return (f"you compared with the blob's mean over all its {len(areas[baseline])} photos ({whole:.2f}); "
                "the rule compares on the same photos: for a method with n = 3, the blob's mean on those 3 photos")
    lower = {_name(n) for n, (own, base) in pairs.items() if own < base}
    if given == lower and lower != {_name(n) for n in expected}:
        return "a tie is not a win: a method whose mean equals the blob's does not beat it"
    missing = len({_name(n) for n in expected} - given)
    extra = len(given - {_name(n) for n in expected})
    return (f"{missing} method(s) missing and {extra} too many; compare each method's mean insertion area with the "
            "centre blob's mean on the same photos")


register(AnswerExercise(
    id="06-below-the-centre-blob",
    lesson="06",
    question=("On insertion AUC (higher is better), which methods do not beat the centre-Gaussian baseline, "
              "each compared with the baseline's mean on the same photos?"),
    answer_format='["method name", ...] (registry names, e.g. "Score-CAM", without the null baselines)',
    expected=_below_expected,
    compare=_below_compare,
    mistakes=_below_mistakes,
))
