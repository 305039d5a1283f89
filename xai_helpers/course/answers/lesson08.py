"""Lesson 08's interpretation exercises."""

from __future__ import annotations

from .base import AnswerExercise, register  # noqa: F401
