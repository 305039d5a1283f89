"""Lesson 11's interpretation exercise.

``11-same-as-cam`` asks which CAM variants give CAM's heatmap on a GAP -> Linear
head. It is checked against the lesson's measured differences, ``{variant:
largest |map - CAM's map| over the photos}``: by the lesson's rule a variant
equals CAM when that difference is below :data:`SAME`, so the expected answer
follows the numbers if a re-run moves them.
"""

from __future__ import annotations

from .base import AnswerExercise, name_key, register

__all__ = ["SAME", "same_as_cam"]

SAME = 1e-5  # float32 maps in [0, 1]: equal up to rounding


def same_as_cam(differences) -> set[str]:
    """The variants whose largest difference from CAM's map is below :data:`SAME`."""
    return {name for name, d in differences.items() if float(d) < SAME}


def _answer_set(answer) -> set[str]:
    if isinstance(answer, str):
        raise TypeError("a list of names")
    return {name_key(a) for a in answer}


def _compare(answer, expected) -> bool:
    return _answer_set(answer) == {name_key(e) for e in expected}


def _mistakes(answer, expected, differences) -> str | None:
    given = _answer_set(answer)
    right = {name_key(e) for e in expected}
    if "layercam" in given and "layercam" not in right:
        return ("LayerCAM keeps only the positive gradients; on this head the gradient of channel k is W_ck / Z, "
                "so every channel with a negative class weight drops out of LayerCAM's sum but not out of CAM's")
    if any("eigen" in g for g in given - right):
        return "EigenCAM never reads the class, and Eigen-Grad-CAM projects on a principal direction, not on the class weights"
    missing = right - given
    if "xgrad cam" in missing:
        return ("XGrad-CAM averages the gradient with the activation as weights; the average of a constant is that "
                "constant, so its weights are CAM's W_ck / Z")
    if "hirescam" in missing:
        return "HiResCAM's map is sum_k g^k ⊙ A^k, and with g^k = W_ck / Z everywhere that is CAM's map divided by Z"
    if "grad cam" in missing:
        return "Grad-CAM's weights are the mean gradient, W_ck / Z on this head: lesson 02's identity"
    return None


register(AnswerExercise(
    id="11-same-as-cam",
    lesson="11",
    question="Which variants give exactly CAM's heatmap on this GAP -> Linear model?",
    answer_format='["variant name", ...]',
    expected=same_as_cam,
    compare=_compare,
    mistakes=_mistakes,
))
