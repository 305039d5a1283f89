"""Lesson 11's interpretation exercise: the expected answer follows the lesson's measured differences."""

from xai_helpers.course.answers import ANSWERS, run

EXERCISE = ANSWERS["11-same-as-cam"]
MEASURED = {"Grad-CAM": 4e-7, "XGrad-CAM": 5e-7, "HiResCAM": 5e-7, "Grad-CAM element-wise": 0.53, "LayerCAM": 0.53,
            "EigenCAM": 1.0, "Eigen-Grad-CAM": 0.91}


def test_the_right_answer_in_any_spelling(capsys):
    assert run(EXERCISE, ["grad-cam", "XGrad CAM", "hirescam"], (MEASURED,))
    assert "right" in capsys.readouterr().out


def test_the_answer_follows_the_numbers(capsys):
    moved = {**MEASURED, "LayerCAM": 3e-6}  # a model without negative class weights: LayerCAM would be CAM too
    assert not run(EXERCISE, ["Grad-CAM", "XGrad-CAM", "HiResCAM"], (moved,))
    assert run(EXERCISE, ["Grad-CAM", "XGrad-CAM", "HiResCAM", "LayerCAM"], (moved,))


def test_the_named_mistakes(capsys):
    cases = [
        (["Grad-CAM", "XGrad-CAM", "HiResCAM", "LayerCAM"], "negative class weight"),
        (["Grad-CAM", "XGrad-CAM", "HiResCAM", "EigenCAM"], "never reads the class"),
        (["Grad-CAM", "HiResCAM"], "average of a constant"),
        (["Grad-CAM", "XGrad-CAM"], "divided by Z"),
    ]
    for answer, words in cases:
        assert not run(EXERCISE, answer, (MEASURED,))
        assert words in capsys.readouterr().out, answer


def test_a_string_or_nothing_is_not_an_answer(capsys):
    assert not run(EXERCISE, "Grad-CAM", (MEASURED,))
    assert not run(EXERCISE, None, (MEASURED,))
    assert "not attempted yet" in capsys.readouterr().out
