"""Lessons 06 and 15's interpretation exercises: the right answer passes, each named mistake gets its hint,
and the expected answer follows the lesson's values (the context), not a hard-coded key."""

from __future__ import annotations

import numpy as np
import pytest

from xai_helpers import check
from xai_helpers.course.answers import ANSWERS

CENTRE = "Centre Gaussian (baseline)"


def feedback(capsys, exercise_id, answer, *context):
    ok = check(exercise_id, answer, *context)
    return ok, capsys.readouterr().out


def test_exercises_are_registered():
    assert ANSWERS["06-below-the-centre-blob"].lesson == "06"
    for exercise_id in ("15-kendall-by-hand", "15-most-moving-setting"):
        assert ANSWERS[exercise_id].lesson == "15"


# ---------------------------------------------------------------- 06-below-the-centre-blob
# Photos 0..3; the blob's areas are 0.2, 0.4, 0.6, 0.8 (mean 0.5; on photos 2 and 3 alone, 0.7).
# "Fast" (all photos): 0.45 < 0.5, fails.  "Even" (all photos): exactly 0.5, a tie, fails.
# "Slow" (photos 2, 3): 0.6 beats the blob's 0.5 overall but not its 0.7 on those photos, fails.
# "Good" (all photos): 0.7 beats it.  "Random (baseline)": left out of the answer.

AREAS = {"Fast": [0.4, 0.3, 0.5, 0.6], "Even": [0.5, 0.5, 0.5, 0.5], "Slow": [0.6, 0.6], "Good": [0.7] * 4,
         CENTRE: [0.2, 0.4, 0.6, 0.8], "Random (baseline)": [0.1, 0.1, 0.1, 0.1]}
ROWS = {"Fast": [0, 1, 2, 3], "Even": [0, 1, 2, 3], "Slow": [2, 3], "Good": [0, 1, 2, 3], CENTRE: [0, 1, 2, 3],
        "Random (baseline)": [0, 1, 2, 3]}
RIGHT_06 = ["Even", "Fast", "Slow"]


def test_06_expected_is_computed_from_the_context():
    assert ANSWERS["06-below-the-centre-blob"].expected(AREAS, ROWS, CENTRE) == RIGHT_06
    better = {**AREAS, "Fast": [0.9, 0.9, 0.9, 0.9]}
    assert ANSWERS["06-below-the-centre-blob"].expected(better, ROWS, CENTRE) == ["Even", "Slow"]


def test_06_right_answer_passes(capsys):
    ok, out = feedback(capsys, "06-below-the-centre-blob", ["slow", "Fast", "even"], AREAS, ROWS, CENTRE)
    assert ok and out.startswith("✓ 06-below-the-centre-blob: right."), out


@pytest.mark.parametrize("answer,hint", [
    (["Fast", "Even", "Slow", "Random (baseline)"], "leave the null baselines out"),
    (["Good"], "that *do* beat the centre blob"),
    (["Fast", "Even"], "over all its 4 photos (0.50)"),
    (["Fast", "Slow"], "a tie is not a win"),
    (["Fast", "Nonsense"], "not one of the lesson's method names"),
    (["Fast"], "2 method(s) missing and 0 too many"),
])
def test_06_mistakes_are_named(capsys, answer, hint):
    ok, out = feedback(capsys, "06-below-the-centre-blob", answer, AREAS, ROWS, CENTRE)
    assert not ok and hint in out, out


def test_06_not_attempted(capsys):
    ok, out = feedback(capsys, "06-below-the-centre-blob", None, AREAS, ROWS, CENTRE)
    assert not ok and "not attempted yet" in out


# ---------------------------------------------------------------- 15-kendall-by-hand
# a = [1, 2, 3, 4, 4], b = [1, 3, 2, 4, 5]: of the 10 pairs, 8 concordant, 1 discordant (2-3), 1 tied in a (4-5).
A, B = [1.0, 2.0, 3.0, 4.0, 4.0], [1.0, 3.0, 2.0, 4.0, 5.0]
TAU_B = (8 - 1) / np.sqrt((10 - 1) * (10 - 0))
RIGHT_15A = {"concordant": 8, "discordant": 1, "tau": round(TAU_B, 2)}


def test_15_kendall_expected_follows_the_context():
    from scipy.stats import kendalltau

    expected = ANSWERS["15-kendall-by-hand"].expected(A, B)
    assert expected["concordant"] == 8 and expected["discordant"] == 1
    assert expected["tau"] == pytest.approx(kendalltau(A, B).statistic)
    other = ANSWERS["15-kendall-by-hand"].expected(A, B[::-1])
    assert other["tau"] == pytest.approx(kendalltau(A, B[::-1]).statistic)


def test_15_kendall_right_answer_passes(capsys):
    ok, out = feedback(capsys, "15-kendall-by-hand", RIGHT_15A, A, B)
    assert ok, out


@pytest.mark.parametrize("answer,hint", [
    ({"concordant": 1, "discordant": 8, "tau": -0.74}, "swapped"),
    ({"concordant": 16, "discordant": 2, "tau": 0.74}, "counted every pair twice"),
    ({"concordant": 9, "discordant": 1, "tau": 0.8}, "neither concordant nor discordant"),
    ({"concordant": 7, "discordant": 2, "tau": 0.5}, "count the 10 pairs"),
    ({"concordant": 8, "discordant": 1, "tau": 0.7}, "that is tau-a"),
    ({"concordant": 8, "discordant": 1, "tau": -0.74}, "sign is reversed"),
    ({"concordant": 8, "discordant": 1, "tau": 0.2}, "tau-b = (C - D)"),
])
def test_15_kendall_mistakes_are_named(capsys, answer, hint):
    ok, out = feedback(capsys, "15-kendall-by-hand", answer, A, B)
    assert not ok and hint in out, out


# ---------------------------------------------------------------- 15-most-moving-setting
NAMES = ["deletion, 7 points", "deletion, 4 points", "deletion, blur", "deletion, noise", "ROAD MoRF"]
TAU = np.array([[1.0, 0.9, 0.6, 0.7, -0.4],
                [0.9, 1.0, 0.5, 0.6, -0.3],
                [0.6, 0.5, 1.0, 0.4, 0.0],
                [0.7, 0.6, 0.4, 1.0, 0.1],
                [-0.4, -0.3, 0.0, 0.1, 1.0]])


def test_15_moving_expected_follows_the_context():
    assert ANSWERS["15-most-moving-setting"].expected(NAMES, TAU) == {"setting": "deletion, blur", "tau": 0.6}
    other = TAU.copy()
    other[0, 3] = other[3, 0] = 0.2
    assert ANSWERS["15-most-moving-setting"].expected(NAMES, other) == {"setting": "deletion, noise", "tau": 0.2}


def test_15_moving_right_answer_passes(capsys):
    ok, out = feedback(capsys, "15-most-moving-setting", {"setting": "Deletion, blur", "tau": 0.6}, NAMES, TAU)
    assert ok, out


@pytest.mark.parametrize("answer,hint", [
    ({"setting": "ROAD MoRF", "tau": -0.4}, "another metric"),
    ({"setting": "deletion, 4 points", "tau": 0.9}, "agrees *most*"),
    ({"setting": "deletion, noise", "tau": 0.7}, "smallest tau"),
    ({"setting": "deletion, 7 points", "tau": 1.0}, "the default deletion itself"),
    ({"setting": "deletion, blur", "tau": 0.4}, "not 1 - tau"),
    ({"setting": "deletion, blur", "tau": -0.6}, "sign is wrong"),
    ({"setting": "deletion, blur", "tau": 0.1}, "read the value in row 0"),
    ({"setting": "insertion", "tau": 0.6}, "one of the printed metric names"),
])
def test_15_moving_mistakes_are_named(capsys, answer, hint):
    ok, out = feedback(capsys, "15-most-moving-setting", answer, NAMES, TAU)
    assert not ok and hint in out, out
