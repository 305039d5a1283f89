"""Lesson 12's interpretation exercises: the right answer passes, each named mistake gets its hint,
and the expected answer follows the lesson's values (the context), not a hard-coded key."""

from __future__ import annotations

import numpy as np
import pytest

from xai_helpers import check
from xai_helpers.course.answers import ANSWERS
from xai_helpers.methods.tabular import PermutationImportance


def result(baseline, top_importance):
    """A PermutationImportance whose largest mean drop is top_importance (three features, one repeat)."""
    drops = np.array([[top_importance], [top_importance / 2], [0.0]])
    return PermutationImportance(drops, drops.mean(1), drops.std(1), baseline)


def feedback(capsys, exercise_id, answer, *context):
    ok = check(exercise_id, answer, *context)
    return ok, capsys.readouterr().out


def test_lesson_12_exercises_are_registered():
    for exercise_id in ("12-reliance-ranking", "12-copy-shares", "12-largest-shap-gap"):
        assert ANSWERS[exercise_id].lesson == "12"


def test_not_attempted_is_feedback(capsys):
    ok, out = feedback(capsys, "12-copy-shares", None, {"alone": [0.1], "original": [0.0], "copy": [0.0],
                                                          "together": [0.1]})
    assert not ok and "not attempted yet" in out


# ---------------------------------------------------------------- 12-reliance-ranking

# The lesson's values: XGBoost errs on 5 of 114 rows, its top drop 3.6 rows; the MLP on 2 rows, its top drop 2.8 rows.
LESSON_MODELS = {"XGBoost": result(1 - 5 / 114, 3.6 / 114), "MLP": result(1 - 2 / 114, 2.8 / 114)}
RIGHT = {"by_difference": "XGBoost", "by_ratio": "MLP", "reliance": {"XGBoost": 1.72, "MLP": 2.40}}


def test_reliance_right_answer_passes(capsys):
    ok, out = feedback(capsys, "12-reliance-ranking", RIGHT, LESSON_MODELS)
    assert ok and out.startswith("✓ 12-reliance-ranking: right."), out


@pytest.mark.parametrize("mlp_value,hint", [
    (2.8 / 114, "permutation importance I = 0.025, the difference"),     # the difference, not the ratio
    (1 + (2.8 / 114) / (1 - 2 / 114), "divided by the accuracy"),
    ((2.8 / 114) / (2 / 114), "model reliance minus 1"),
    ((2 / 114) / (4.8 / 114), "upside down"),
    (3.5, "compute (e + I) / e"),
])
def test_reliance_wrong_values_are_named(capsys, mlp_value, hint):
    answer = {**RIGHT, "reliance": {"XGBoost": 1.72, "MLP": round(mlp_value, 3)}}
    ok, out = feedback(capsys, "12-reliance-ranking", answer, LESSON_MODELS)
    assert not ok and "for MLP" in out and hint in out, out


def test_reliance_same_ranking_for_both_is_named(capsys):
    answer = {**RIGHT, "by_ratio": "XGBoost"}
    ok, out = feedback(capsys, "12-reliance-ranking", answer, LESSON_MODELS)
    assert not ok and "the two rankings differ here" in out and "own* error" in out, out


def test_reliance_expected_follows_the_context(capsys):
    # Give the MLP XGBoost's error: now the MLP's smaller drop is the smaller ratio too.
    models = {"XGBoost": LESSON_MODELS["XGBoost"], "MLP": result(1 - 5 / 114, 2.8 / 114)}
    expected = ANSWERS["12-reliance-ranking"].expected(models)
    assert expected["by_difference"] == "XGBoost" and expected["by_ratio"] == "XGBoost"
    assert expected["reliance"]["MLP"] == pytest.approx(1 + 2.8 / 5)
    ok, out = feedback(capsys, "12-reliance-ranking", RIGHT, models)
    assert not ok


def test_reliance_of_an_errorless_model_is_reported_not_raised(capsys):
    ok, out = feedback(capsys, "12-reliance-ranking", RIGHT, {"XGBoost": result(1.0, 0.1), "MLP": LESSON_MODELS["MLP"]})
    assert not ok and "could not be read" in out and "makes no error" in out


# ---------------------------------------------------------------- 12-copy-shares

RUNS = {"alone": np.array([0.016, 0.020]), "original": np.array([0.006, 0.008]), "copy": np.array([0.002, 0.003]),
        "together": np.array([0.019, 0.021])}
COPY_RIGHT = {"separate_sum": 0.0095, "together": 0.020, "closer_to_alone": "together"}


def test_copy_right_answer_passes(capsys):
    ok, out = feedback(capsys, "12-copy-shares", COPY_RIGHT, RUNS)
    assert ok and out.startswith("✓ 12-copy-shares: right."), out


@pytest.mark.parametrize("change,hint", [
    ({"separate_sum": 0.007}, "the original's importance only"),
    ({"separate_sum": 0.018}, "model without a copy"),
    ({"separate_sum": 0.020}, "both permuted together"),
    ({"separate_sum": 0.05}, "add the mean importances"),
    ({"separate_sum": 1.1}, "not numbers of rows"),
    ({"together": 0.018}, "together: that is the model without a copy"),
    ({"together": 0.03}, "one permutation"),
    ({"closer_to_alone": "separate_sum"}, "compare the distance"),
])
def test_copy_wrong_answers_are_named(capsys, change, hint):
    ok, out = feedback(capsys, "12-copy-shares", {**COPY_RIGHT, **change}, RUNS)
    assert not ok and hint in out, out


def test_copy_expected_follows_the_context():
    # If permuting together lost much more than the feature alone, the separate sum would be closer.
    runs = {**RUNS, "together": np.array([0.05, 0.06])}
    expected = ANSWERS["12-copy-shares"].expected(runs)
    assert expected["closer_to_alone"] == "separate_sum"
    assert expected["together"] == pytest.approx(0.055) and expected["separate_sum"] == pytest.approx(0.0095)


# ---------------------------------------------------------------- 12-largest-shap-gap

NAMES = ["mean radius", "mean texture", "mean perimeter", "mean area", "mean concave points"]
INTERVENTIONAL = np.array([0.000, -0.646, 0.303, 1.007, 1.695])
PATH = np.array([-0.029, -0.906, 0.258, 0.898, 2.912])
GAP_RIGHT = {"feature": "mean concave points", "larger": "path-dependent", "gap": 1.217}


def test_gap_right_answer_passes(capsys):
    ok, out = feedback(capsys, "12-largest-shap-gap", GAP_RIGHT, NAMES, INTERVENTIONAL, PATH)
    assert ok and out.startswith("✓ 12-largest-shap-gap: right."), out
    variant = {"feature": "Mean Concave Points", "larger": "path dependent", "gap": 1.22}
    assert check("12-largest-shap-gap", variant, NAMES, INTERVENTIONAL, PATH)


@pytest.mark.parametrize("change,hint", [
    ({"feature": "mean area"}, "most correlated features"),
    ({"feature": "mean texture"}, "feature by feature"),
    ({"feature": "tumour size"}, "one of the lesson's feature names"),
    ({"larger": "interventional"}, "direction reversed"),
    ({"gap": 4.607}, "do not add them"),
    ({"gap": 1.718}, "not their ratio"),
    ({"gap": 0.5}, "absolute difference"),
])
def test_gap_wrong_answers_are_named(capsys, change, hint):
    ok, out = feedback(capsys, "12-largest-shap-gap", {**GAP_RIGHT, **change}, NAMES, INTERVENTIONAL, PATH)
    assert not ok and hint in out, out


def test_gap_largest_value_is_not_the_largest_gap(capsys):
    # Mean concave points has the largest values here, but mean texture the largest gap.
    interventional, path = np.array([0.0, 0.1, 0.0, 0.0, 2.0]), np.array([0.0, 1.0, 0.0, 0.0, 2.1])
    expected = ANSWERS["12-largest-shap-gap"].expected(NAMES, interventional, path)
    assert expected == {"feature": "mean texture", "larger": "path-dependent", "gap": pytest.approx(0.9)}
    answer = {"feature": "mean concave points", "larger": "path-dependent", "gap": 0.1}
    ok, out = feedback(capsys, "12-largest-shap-gap", answer, NAMES, interventional, path)
    assert not ok and "largest value, not necessarily the largest difference" in out, out


def test_gap_expected_follows_the_context():
    flipped = ANSWERS["12-largest-shap-gap"].expected(NAMES, PATH, INTERVENTIONAL)
    assert flipped == {"feature": "mean concave points", "larger": "interventional", "gap": pytest.approx(1.217)}
    other = ANSWERS["12-largest-shap-gap"].expected(NAMES[::-1], INTERVENTIONAL, PATH)
    assert other["feature"] == "mean radius"
