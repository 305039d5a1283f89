"""Lessons 08 and 10's interpretation exercises: the right answer passes, each named mistake gets its hint,
and the expected answer follows the lesson's values (the context), never a hard-coded number."""

import math

import pytest
import torch

from xai_helpers import check
from xai_helpers.course.answers import ANSWERS

# The values the lessons print (section 3 of 08, section 4 of 08; sections 3-4 of 10).
PASSES = {(64, 32): 37, (32, 16): 170, (16, 16): 197}
CORRELATIONS = {"Eq. 6": 0.2788, "centred": 0.6924}
SIGMA = 0.25
SUMS = {"LIME": 0.5193, "Kernel SHAP": 0.7723}
DELTA = 0.7723
BRUTE = torch.tensor([0.104, 0.079, 0.155, 0.109, 0.083, 0.033, 0.145, 0.063], dtype=torch.float64)
V_EMPTY, V_FULL = 0.001, 0.773


def feedback(capsys, exercise_id, answer, *context):
    ok = check(exercise_id, answer, *context)
    return ok, capsys.readouterr().out


def test_the_exercises_are_registered_for_their_lessons():
    for exercise_id, lesson in [("08-finest-window", "08_occlusion_and_rise.ipynb"),
                                ("08-stable-estimator", "08_occlusion_and_rise.ipynb"),
                                ("10-half-weight-and-sum", "10_lime_and_kernel_shap.ipynb"),
                                ("10-largest-block", "10_lime_and_kernel_shap.ipynb")]:
        assert ANSWERS[exercise_id].lesson == lesson


# ---------------------------------------------------------------- 08-finest-window


def test_finest_window_right_answer(capsys):
    ok, out = feedback(capsys, "08-finest-window", {"window": 16, "passes": 197}, PASSES)
    assert ok and out.startswith("✓ 08-finest-window: right.")


@pytest.mark.parametrize("answer,hint", [
    ({"window": 64, "passes": 37}, "coarsest"),
    ({"window": 32, "passes": 170}, "smallest window of the lesson's settings, 16 pixels"),
    ({"window": 16, "passes": 196}, "positions + 1"),
    ({"window": 16, "passes": 170}, "cost of the 32-pixel window"),
    ({"window": 16, "passes": 14}, "along one axis"),
])
def test_finest_window_mistakes_are_named(capsys, answer, hint):
    ok, out = feedback(capsys, "08-finest-window", answer, PASSES)
    assert not ok and "not quite" in out and hint in out, out


def test_finest_window_follows_the_context():
    other = {(48, 24): 82, (24, 12): 290, (24, 24): 82}
    assert ANSWERS["08-finest-window"].expected(other) == {"window": 24, "passes": 290}  # smaller stride breaks the tie
    assert ANSWERS["08-finest-window"].expected(PASSES) == {"window": 16, "passes": 197}


def test_not_attempted_and_wrong_form_are_feedback(capsys):
    ok, out = feedback(capsys, "08-finest-window", None, PASSES)
    assert not ok and "not attempted yet" in out
    ok, out = feedback(capsys, "08-finest-window", "sixteen", PASSES)
    assert not ok and "not quite" in out


# ---------------------------------------------------------------- 08-stable-estimator


@pytest.mark.parametrize("answer", [{"estimator": "centred", "correlation": 0.69},
                                    {"estimator": "Centered", "correlation": 0.685}])
def test_stable_estimator_right_answer(capsys, answer):
    ok, out = feedback(capsys, "08-stable-estimator", answer, CORRELATIONS)
    assert ok, out


@pytest.mark.parametrize("answer,hint", [
    ({"estimator": "Eq. 6", "correlation": 0.28}, "mostly the masks' own density"),
    ({"estimator": "eq6", "correlation": 0.69}, "correlate at only 0.28"),
    ({"estimator": "centred", "correlation": 0.5}, "two decimals"),
    ({"estimator": "median", "correlation": 0.69}, "name one of the two estimators"),
])
def test_stable_estimator_mistakes_are_named(capsys, answer, hint):
    ok, out = feedback(capsys, "08-stable-estimator", answer, CORRELATIONS)
    assert not ok and hint in out, out


def test_stable_estimator_follows_the_context():
    assert ANSWERS["08-stable-estimator"].expected({"Eq. 6": 0.9, "centred": 0.2}) == {"estimator": "Eq. 6",
                                                                                      "correlation": 0.9}
    assert ANSWERS["08-stable-estimator"].expected(CORRELATIONS)["correlation"] == pytest.approx(0.6924)


# ---------------------------------------------------------------- 10-half-weight-and-sum


@pytest.mark.parametrize("answer", [{"weight": 0.25, "adds_up": "Kernel SHAP"},
                                    {"weight": 0.253, "adds_up": "kernel_shap"}])
def test_half_weight_right_answer(capsys, answer):
    ok, out = feedback(capsys, "10-half-weight-and-sum", answer, SIGMA, SUMS, DELTA)
    assert ok, out


@pytest.mark.parametrize("answer,hint", [
    ({"weight": 0.50, "adds_up": "Kernel SHAP"}, "lime_image's kernel"),
    ({"weight": 0.018, "adds_up": "Kernel SHAP"}, "not 1 - |z| / M"),
    ({"weight": 0.0092, "adds_up": "Kernel SHAP"}, "square the distance"),
    ({"weight": 0.4, "adds_up": "Kernel SHAP"}, "D = 1 - sqrt(1/2)"),
    ({"weight": 0.25, "adds_up": "LIME"}, "add up to 0.5193"),
    ({"weight": 0.25, "adds_up": "both"}, "name one method"),
])
def test_half_weight_mistakes_are_named(capsys, answer, hint):
    ok, out = feedback(capsys, "10-half-weight-and-sum", answer, SIGMA, SUMS, DELTA)
    assert not ok and hint in out, out


def test_half_weight_follows_the_context():
    exercise = ANSWERS["10-half-weight-and-sum"]
    assert exercise.expected(SIGMA, SUMS, DELTA)["weight"] == pytest.approx(math.exp(-(1 - 0.5**0.5) ** 2 / 0.0625))
    assert exercise.expected(SIGMA, SUMS, DELTA)["weight"] == pytest.approx(0.2534, abs=1e-4)
    wide = exercise.expected(1.0, {"LIME": 0.3, "Kernel SHAP": 0.61}, 0.3)
    assert wide["weight"] == pytest.approx(0.918, abs=1e-3) and wide["adds_up"] == "LIME"


def test_half_weight_refuses_a_context_where_no_method_adds_up(capsys):
    ok, out = feedback(capsys, "10-half-weight-and-sum", {"weight": 0.25, "adds_up": "Kernel SHAP"},
                       SIGMA, {"LIME": 0.5, "Kernel SHAP": 0.6}, DELTA)
    assert not ok and "could not be read" in out


# ---------------------------------------------------------------- 10-largest-block


def test_largest_block_right_answer(capsys):
    ok, out = feedback(capsys, "10-largest-block", {"block": 2, "sum": 0.772}, BRUTE, V_EMPTY, V_FULL)
    assert ok, out


@pytest.mark.parametrize("answer,hint", [
    ({"block": 3, "sum": 0.772}, "numbered from 0"),
    ({"block": 5, "sum": 0.772}, "smallest Shapley value"),
    ({"block": 6, "sum": 0.772}, "largest of the printed Shapley values"),
    ({"block": 2, "sum": 0.773}, "v(F) - v(∅)"),
    ({"block": 2, "sum": 0.9}, "add up the printed Shapley values"),
])
def test_largest_block_mistakes_are_named(capsys, answer, hint):
    ok, out = feedback(capsys, "10-largest-block", answer, BRUTE, V_EMPTY, V_FULL)
    assert not ok and hint in out, out


def test_largest_block_follows_the_context():
    values = torch.tensor([0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05])
    assert ANSWERS["10-largest-block"].expected(values, 0.1, 0.55) == {"block": 0, "sum": pytest.approx(0.45)}
    assert ANSWERS["10-largest-block"].expected(BRUTE, torch.tensor(V_EMPTY), torch.tensor(V_FULL))["sum"] == \
        pytest.approx(0.772)
