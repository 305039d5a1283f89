"""Interpretation exercises, one module per lesson (see :mod:`.base`)."""

from . import lesson06, lesson07, lesson08, lesson09, lesson10, lesson11, lesson12, lesson15  # noqa: F401  (they register themselves)
from .base import ANSWERS, AnswerExercise, register, run

__all__ = ["ANSWERS", "AnswerExercise", "register", "run"]
