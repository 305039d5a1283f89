"""Lessons 07 and 09's interpretation exercises, and the two lessons' agreement on sanity checks.

The exercises: the right answer passes, each named mistake gets its hint, and the
expected answer follows the lesson's values (the context), not a hard-coded key.
The agreement: lesson 09 runs lesson 07's protocol (the same function, photos,
classes, seeds, layer and settings), so its verdict table must repeat lesson 07's
rows for the same methods, number for number.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from xai_helpers import check
from xai_helpers.course.answers import ANSWERS
from xai_helpers.metrics import sanity

ROOT = Path(__file__).resolve().parent.parent
LESSON_07 = ROOT / "notebooks" / "07_sanity_checks.ipynb"
LESSON_09 = ROOT / "notebooks" / "09_pixel_gradients.ipynb"


def feedback(capsys, exercise_id, answer, *context):
    ok = check(exercise_id, answer, *context)
    return ok, capsys.readouterr().out


def row(n, rho, rho_abs, ssim, low, high):
    means = {"spearman": rho, "spearman |·|": rho_abs, "ssim": ssim}
    return {"n": n, "means": means, "rho_range": (low, high), "verdict": sanity.verdict(means)}


# Lesson 07's verdict table (the means over the trials, as it prints them).
TABLE_07 = {
    "CAM": row(9, 0.33, 0.33, 0.46, -0.35, 0.84),
    "Grad-CAM": row(9, 0.33, 0.33, 0.46, -0.35, 0.84),
    "Grad-CAM++": row(9, 0.98, 0.98, 0.97, 0.95, 0.99),
    "Score-CAM": row(3, 0.95, 0.95, 0.96, 0.95, 0.96),
    "Saliency": row(9, 0.10, 0.38, 0.43, -0.16, 0.52),
    "Gradient × Input": row(9, 0.10, 0.54, 0.62, -0.14, 0.48),
    "SmoothGrad": row(3, 0.18, 0.16, 0.18, -0.00, 0.34),
    "Integrated Gradients": row(3, 0.17, 0.37, 0.55, -0.05, 0.35),
    "DeepLIFT": row(9, 0.01, 0.53, 0.54, -0.41, 0.52),
    "Guided Backprop": row(9, 1.00, 1.00, 1.00, 1.00, 1.00),
    "Guided Grad-CAM": row(9, 0.80, 0.48, 0.86, 0.45, 0.98),
    "Occlusion": row(3, 0.08, 0.16, 0.04, -0.19, 0.27),
    "RISE": row(3, -0.07, -0.07, 0.73, -0.31, 0.13),
    "LIME": row(3, -0.02, -0.14, 0.04, -0.15, 0.08),
    "Kernel SHAP": row(3, -0.08, 0.20, 0.01, -0.36, 0.46),
    "Random (baseline)": row(9, 1.00, 1.00, 1.00, 1.00, 1.00),
    "Centre Gaussian (baseline)": row(9, 1.00, 1.00, 1.00, 1.00, 1.00),
    "Sobel edges (baseline)": row(9, 1.00, 1.00, 1.00, 1.00, 1.00),
    "All ones (baseline)": row(9, 0.00, 0.00, 1.00, 0.00, 0.00),
}
PIXEL_METHODS = ("Saliency", "Gradient × Input", "SmoothGrad", "Integrated Gradients", "DeepLIFT", "Guided Backprop",
                 "Guided Grad-CAM")
TABLE_09 = {name: TABLE_07[name] for name in PIXEL_METHODS}
RIGHT_07 = {"pass": ["CAM", "Grad-CAM", "Saliency", "SmoothGrad", "Occlusion", "LIME", "Kernel SHAP"],
            "measure": "ssim", "value": 0.62}
RIGHT_09 = {"pass": ["Saliency", "SmoothGrad"], "measure": "ssim", "value": 0.55}


def changed(table, name, **means):
    table = copy.deepcopy(table)
    table[name]["means"].update({("spearman |·|" if k == "rho_abs" else k): v for k, v in means.items()})
    table[name]["verdict"] = sanity.verdict(table[name]["means"])
    return table


def test_the_exercises_are_registered_with_their_lessons():
    for exercise_id, lesson in (("07-which-maps-pass", "07"), ("09-completeness", "09"), ("09-which-maps-pass", "09")):
        assert ANSWERS[exercise_id].lesson == lesson
        assert exercise_id.startswith(lesson + "-")


@pytest.mark.parametrize("exercise_id", ["07-which-maps-pass", "09-completeness", "09-which-maps-pass"])
def test_not_attempted_is_feedback(capsys, exercise_id):
    ok, out = feedback(capsys, exercise_id, None, TABLE_07)
    assert not ok and "not attempted yet" in out, out


# ---------------------------------------------------------------- 07-which-maps-pass


def test_07_right_answer_passes(capsys):
    ok, out = feedback(capsys, "07-which-maps-pass", RIGHT_07, TABLE_07)
    assert ok and out.startswith("✓ 07-which-maps-pass: right."), out


def test_07_names_and_measures_are_read_leniently(capsys):
    answer = {"pass": ["cam", "grad-cam", "SALIENCY", "smoothgrad", "occlusion", "lime", "kernel  shap"],
              "measure": "SSIM", "value": "0.62"}
    ok, out = feedback(capsys, "07-which-maps-pass", answer, TABLE_07)
    assert ok, out


@pytest.mark.parametrize("change,hint", [
    ({"pass": RIGHT_07["pass"] + ["Gradient × Input"]}, "a ρ-only rule would pass it"),
    ({"pass": RIGHT_07["pass"] + ["Integrated Gradients"]}, "the signed ρ of Integrated Gradients is low"),
    ({"pass": RIGHT_07["pass"] + ["RISE"]}, "RISE has SSIM +0.73"),
    ({"pass": RIGHT_07["pass"] + ["All ones (baseline)"]}, "null baseline"),
    ({"pass": RIGHT_07["pass"] + ["Guided Backprop"]}, "Guided Backprop fails the rule"),
    ({"pass": [n for n in RIGHT_07["pass"] if n != "CAM"]}, "not about one trial (its ρ runs from -0.35 to +0.84)"),
    ({"pass": RIGHT_07["pass"] + ["Grad-CAM+++"]}, "no method of that name"),
    ({"measure": "spearman"}, "the signed ρ is low"),
    ({"measure": "spearman |·|"}, "Integrated Gradients +0.37"),
    ({"measure": "banana"}, "name the measure as the table does"),
    ({"value": 0.54}, "DeepLIFT's mean SSIM"),
    ({"value": 0.5}, "Gradient × Input's mean on that measure"),
])
def test_07_wrong_answers_are_named(capsys, change, hint):
    ok, out = feedback(capsys, "07-which-maps-pass", {**RIGHT_07, **change}, TABLE_07)
    assert not ok and hint in out, out


def test_07_answer_of_the_wrong_form_is_named(capsys):
    ok, out = feedback(capsys, "07-which-maps-pass", ["CAM", "Grad-CAM"], TABLE_07)
    assert not ok and "answer with a dict" in out, out


def test_07_expected_follows_the_context(capsys):
    expected = ANSWERS["07-which-maps-pass"].expected(TABLE_07)
    assert expected["pass"] == set(RIGHT_07["pass"]) and expected["measure"] == {"ssim"}
    # RISE's SSIM falls below the threshold: RISE now passes, and the lesson's answer is no longer right.
    table = changed(TABLE_07, "RISE", ssim=0.30)
    assert "RISE" in ANSWERS["07-which-maps-pass"].expected(table)["pass"]
    ok, out = feedback(capsys, "07-which-maps-pass", RIGHT_07, table)
    assert not ok and "RISE passes" in out, out
    # Gradient × Input's SSIM moves: the expected number moves with it.
    table = changed(TABLE_07, "Gradient × Input", ssim=0.70)
    assert not feedback(capsys, "07-which-maps-pass", RIGHT_07, table)[0]
    assert feedback(capsys, "07-which-maps-pass", {**RIGHT_07, "value": 0.70}, table)[0]
    # Integrated Gradients' ρ of |·| rises above 0.5: the three now fail on both measures that ignore the sign.
    table = changed(TABLE_07, "Integrated Gradients", rho_abs=0.60)
    assert ANSWERS["07-which-maps-pass"].expected(table)["measure"] == {"spearman |·|", "ssim"}
    ok, out = feedback(capsys, "07-which-maps-pass", RIGHT_07, table)
    assert not ok and "name every such measure" in out, out
    assert feedback(capsys, "07-which-maps-pass", {**RIGHT_07, "measure": ["ssim", "spearman |·|"]}, table)[0]


# ---------------------------------------------------------------- 09-completeness

# Lesson 09's values: IG (32 midpoint steps) adds up to 11.14 for F(x) - F(x') = 10.45; DeepLIFT to t(x) - t(x0).
SUMS = {"Integrated Gradients": (11.14, 10.45), "DeepLIFT": (10.454, 10.454)}
RIGHT_COMPLETENESS = {"meet": ["DeepLIFT"], "ig_gap_percent": 6.6}


def test_completeness_right_answer_passes(capsys):
    ok, out = feedback(capsys, "09-completeness", RIGHT_COMPLETENESS, SUMS)
    assert ok and out.startswith("✓ 09-completeness: right."), out


@pytest.mark.parametrize("change,hint", [
    ({"meet": ["DeepLIFT", "Integrated Gradients"]}, "a gap of 6.6 %, above 5 %"),
    ({"meet": []}, "Summation-to-delta is exact"),
    ({"meet": ["SHAP"]}, "the two additive maps are"),
    ({"ig_gap_percent": 0.066}, "as a fraction"),
    ({"ig_gap_percent": 0.69}, "the gap in logits"),
    ({"ig_gap_percent": 6.19}, "not by the sum of IG"),
    ({"ig_gap_percent": 12.0}, "divided by F(x) - F(x'), in percent"),
])
def test_completeness_wrong_answers_are_named(capsys, change, hint):
    ok, out = feedback(capsys, "09-completeness", {**RIGHT_COMPLETENESS, **change}, SUMS)
    assert not ok and hint in out, out


def test_completeness_expected_follows_the_context(capsys):
    expected = ANSWERS["09-completeness"].expected(SUMS)
    assert expected["meet"] == {"DeepLIFT"} and expected["gap"] == pytest.approx(100 * 0.69 / 10.45)
    # With more steps IG adds up to within 0.5 %: both maps now meet the criterion.
    sums = {**SUMS, "Integrated Gradients": (10.50, 10.45)}
    assert ANSWERS["09-completeness"].expected(sums)["meet"] == {"DeepLIFT", "Integrated Gradients"}
    assert not feedback(capsys, "09-completeness", RIGHT_COMPLETENESS, sums)[0]
    assert feedback(capsys, "09-completeness", {"meet": ["DeepLIFT", "Integrated Gradients"], "ig_gap_percent": 0.48},
                    sums)[0]


# ---------------------------------------------------------------- 09-which-maps-pass


def test_09_right_answer_passes(capsys):
    ok, out = feedback(capsys, "09-which-maps-pass", RIGHT_09, TABLE_09)
    assert ok and out.startswith("✓ 09-which-maps-pass: right."), out


@pytest.mark.parametrize("change,hint", [
    ({"pass": ["Saliency", "SmoothGrad", "Integrated Gradients"]}, "a ρ-only rule would pass it"),
    ({"pass": ["Saliency", "SmoothGrad", "Guided Grad-CAM"]}, "Guided Grad-CAM fails the rule"),
    ({"pass": ["Saliency"]}, "SmoothGrad passes"),
    ({"pass": ["Saliency", "SmoothGrad", "CAM"]}, "no method of that name"),      # not one of lesson 09's rows
    ({"measure": "spearman |·|"}, "Integrated Gradients +0.37"),
    ({"value": 0.62}, "Gradient × Input's mean SSIM"),
])
def test_09_wrong_answers_are_named(capsys, change, hint):
    ok, out = feedback(capsys, "09-which-maps-pass", {**RIGHT_09, **change}, TABLE_09)
    assert not ok and hint in out, out


def test_09_expected_follows_the_context(capsys):
    table = changed(TABLE_09, "Integrated Gradients", ssim=0.45)
    expected = ANSWERS["09-which-maps-pass"].expected(table)
    assert expected["pass"] == {"Saliency", "SmoothGrad", "Integrated Gradients"} and expected["measure"] == set()
    assert not feedback(capsys, "09-which-maps-pass", RIGHT_09, table)[0]
    table = changed(TABLE_09, "Integrated Gradients", ssim=0.58)
    assert not feedback(capsys, "09-which-maps-pass", RIGHT_09, table)[0]
    assert feedback(capsys, "09-which-maps-pass", {**RIGHT_09, "value": 0.58}, table)[0]


# ---------------------------------------------------------------- lessons 07 and 09 cannot disagree


def cells(path):
    return json.loads(path.read_text())["cells"]


def table_rows(path) -> dict[str, str]:
    """The verdict table the lesson prints: {method: its printed row}."""
    for cell in cells(path):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "M.sanity.classifier_randomisation(" in source:
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("name") == "stdout")
            rows = {}
            for line in text.splitlines():
                match = re.match(r"(.+?)\s{2,}(\d+)\s+([+-]\d\.\d\d.*(passes|FAILS))$", line)
                if match:
                    rows[match.group(1).strip()] = " ".join(" ".join(match.group(2, 3)).split())
            return rows
    raise AssertionError(f"{path.name} runs no M.sanity.classifier_randomisation")


def protocol(path) -> dict[str, str]:
    """The settings of the lesson's classifier_randomisation call: photos, classes, seeds, layer, settings."""
    source = "\n".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "code")
    found = {}
    for key, pattern in (("photos", r"trial_photos = (\[.*?\])"), ("targets", r"trial_targets = (\{.*?\})"),
                         ("seeds", r"seeds=(\(.*?\))"), ("layer", r"layer=(lambda net: [\w.]+)"),
                         ("classifier", r"classifier=(lambda net: [\w.]+)")):
        match = re.search(pattern, source)
        assert match, f"{path.name}: no {key} in its sanity check"
        found[key] = match.group(1)
    return found


def test_lesson_09_runs_lesson_07s_protocol():
    assert protocol(LESSON_09) == protocol(LESSON_07)
    source_09 = "\n".join("".join(c["source"]) for c in cells(LESSON_09) if c["cell_type"] == "code")
    assert "settings=lambda method: method.preview" in source_09          # lesson 07's settings when FULL = False
    assert "method.fast or i == 0" in source_09                            # the multi-pass methods on the cat only
    assert "def reinitialise" not in source_09 and "def verdict" not in source_09    # no rule of its own


def test_lesson_09_repeats_lesson_07s_rows():
    rows_07, rows_09 = table_rows(LESSON_07), table_rows(LESSON_09)
    assert set(rows_09) == set(PIXEL_METHODS)
    for name, printed in rows_09.items():
        assert printed == rows_07[name], name
