"""Interpretation exercises: the learner answers with names and numbers, checked against the lesson's own values.

A formula exercise (``xai_helpers.course.exercises``) checks a function on hidden
cases. An interpretation exercise checks an *answer*: which maps pass a test,
which metric a baseline wins, how many images a difference needs. Its expected
answer is computed from the values the lesson measured, passed to ``check`` as
``context``, by the rule the lesson states, so the exercise stays right when a
re-run moves the numbers::

    answer = None  # {"pass": [...names...], "threshold": 0.5}
    ### BEGIN SOLUTION
    answer = {"pass": ["CAM", "Grad-CAM"], "threshold": 0.5}
    ### END SOLUTION
    check("07-which-maps-pass", answer, verdict_table)

Each lesson's exercises live in their own module (``lesson06.py``, ...), and
register themselves here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["AnswerExercise", "ANSWERS", "register", "run"]


@dataclass(frozen=True)
class AnswerExercise:
    """One interpretation exercise.

    expected(*context) -> the right answer, computed from the lesson's values;
    compare(answer, expected) -> True if the answer is right;
    mistakes(answer, expected, *context) -> a hint that names the mistake, or None.
    """

    id: str
    lesson: str
    question: str
    answer_format: str
    expected: Callable[..., Any]
    compare: Callable[[Any, Any], bool]
    mistakes: Callable[..., str | None] = field(default=lambda answer, expected, *context: None)


ANSWERS: dict[str, AnswerExercise] = {}



def name_key(text) -> str:
    """A name as answers compare it: lower case, '_' and '-' as spaces, runs of spaces as one."""
    return " ".join(str(text).strip().lower().replace("_", " ").replace("-", " ").split())


def close(a, b, tol: float) -> bool:
    """|a - b| <= tol for anything float() reads; False for what it cannot (a learner's typo)."""
    try:
        return abs(float(a) - float(b)) <= tol
    except (TypeError, ValueError):
        return False

def register(exercise: AnswerExercise) -> AnswerExercise:
    if exercise.id in ANSWERS:
        raise ValueError(f"an exercise called {exercise.id!r} is already registered")
    ANSWERS[exercise.id] = exercise
    return exercise


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def run(exercise: AnswerExercise, answer, context: tuple) -> bool:
    """Print the feedback for ``answer``; True if it is right. Never raises on a wrong answer."""
    if answer is None or answer is Ellipsis:
        print(f"… {exercise.id}: not attempted yet. Answer as {exercise.answer_format}, then run this cell again.")
        return False
    try:
        expected = exercise.expected(*context)
    except Exception as error:  # noqa: BLE001 - the lesson's values must be passed as the cell shows
        print(f"✗ {exercise.id}: the lesson's values could not be read ({type(error).__name__}: {error}); "
              "pass them as the cell shows")
        return False
    try:
        right = bool(exercise.compare(answer, expected))
    except Exception:  # noqa: BLE001 - an answer of the wrong form is feedback, not an error
        right = False
    if right:
        print(f"✓ {exercise.id}: right.")
        return True
    hint = None
    try:
        hint = exercise.mistakes(answer, expected, *context)
    except Exception:  # noqa: BLE001
        hint = None
    message = f"✗ {exercise.id}: not quite; you answered {_describe(answer)}."
    if hint:
        message += f"\n  Hint: {hint}"
    else:
        message += f"\n  The answer has the form {exercise.answer_format}; look again at the lesson's table."
    print(message)
    return False
