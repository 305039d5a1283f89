"""Lesson 07's interpretation exercises.

``07-which-maps-pass`` is checked against the lesson's verdict table, the output
of :func:`xai_helpers.metrics.sanity.summarise` (``{method: {"n", "means",
"rho_range", "verdict"}}``). The expected answer is recomputed from the table's
means by the lesson's rule (a method passes iff each of the three measures'
means is below :data:`~xai_helpers.metrics.sanity.THRESHOLD`), so it follows the
numbers when a re-run moves them. Lesson 09 asks the same kind of question of
its own methods with :func:`pass_measure_exercise`.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import AnswerExercise, register

__all__ = ["INPUT_MULTIPLIED", "canonical_measure", "canonical_name", "failing_measures", "pass_measure_exercise",
           "passing"]

# The maps that are the input times a multiplier (lesson 07, Sec. 3).
INPUT_MULTIPLIED = ("Gradient × Input", "Integrated Gradients", "DeepLIFT")
MEASURE_WORDS = {"spearman": "Spearman ρ (signed)", "spearman |·|": "Spearman ρ of |map|", "ssim": "SSIM"}
ANSWER_FORMAT = '{"pass": [method names], "measure": "spearman" | "spearman |·|" | "ssim", "value": a number}'
VALUE_TOL = 0.006  # the table prints two decimals


def _rule():
    from ...metrics.sanity import MEASURES, THRESHOLD

    return MEASURES, THRESHOLD


def canonical_name(name) -> str:
    """A method's name as a learner may type it: case, spacing and 'x' for '×' do not matter."""
    return " ".join(str(name).lower().replace("×", "x").split())


def canonical_measure(measure) -> str | None:
    """'SSIM', 'rho', 'Spearman |.|', 'abs spearman', ... -> one of the three measure keys (None if none)."""
    text = str(measure).lower().replace(" ", "")
    if "ssim" in text:
        return "ssim"
    if any(word in text for word in ("spearman", "rho", "ρ", "rank")):
        return "spearman |·|" if any(word in text for word in ("|", "abs")) else "spearman"
    return None


def passing(summary) -> set[str]:
    """The lesson's rule applied to the table: the methods whose three means are all below the threshold."""
    measures, threshold = _rule()
    return {name for name, row in summary.items() if all(row["means"][k] < threshold for k in measures)}


def failing_measures(summary, name) -> set[str]:
    """The measures on which ``name`` fails: its mean is at or above the threshold."""
    measures, threshold = _rule()
    return {k for k in measures if summary[name]["means"][k] >= threshold}


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def _names(answer_list, table_names) -> tuple[set[str], list]:
    """(the table's names that the answer means, the answer's entries that name no method of the table)."""
    by_key = {canonical_name(n): n for n in table_names}
    known, unknown = set(), []
    for entry in _as_list(answer_list):
        key = canonical_name(entry)
        if key in by_key:
            known.add(by_key[key])
        else:
            unknown.append(entry)
    return known, unknown


def _measures(answer_measure) -> set:
    return {canonical_measure(m) for m in _as_list(answer_measure)}


def _mean(summary, name, measure) -> str:
    return f"{summary[name]['means'][measure]:+.2f}"


def _shape_ok(answer) -> bool:
    return isinstance(answer, dict) and {"pass", "measure", "value"} <= set(answer)


def pass_measure_exercise(id: str, lesson: str, question: str, focus: str,
                          measure_of: Callable[[dict], set], methods: tuple[str, ...] | None = None) -> AnswerExercise:
    """An exercise 'which of these maps pass, on which measure does ``focus`` fail, and what is its mean there?'.

    ``measure_of(summary)`` gives the expected measures; ``methods`` restricts the
    question to some rows of the table (lesson 09's methods); the context is the
    table itself.
    """

    def rows(summary):
        return {n: r for n, r in summary.items() if methods is None or n in methods}

    def expected(summary):
        table = rows(summary)
        measure = measure_of(table)
        return {"pass": passing(table), "measure": measure,
                "value": {k: table[focus]["means"][k] for k in measure}, "names": list(table)}

    def compare(answer, want) -> bool:
        if not _shape_ok(answer):
            return False
        named, unknown = _names(answer["pass"], want["names"])
        if unknown or named != want["pass"] or _measures(answer["measure"]) != want["measure"]:
            return False
        if not want["measure"]:
            return answer["value"] is None
        return any(abs(float(answer["value"]) - v) <= VALUE_TOL for v in want["value"].values())

    def mistakes(answer, want, summary):
        measures, threshold = _rule()
        if not _shape_ok(answer):
            return f"answer with a dict: {ANSWER_FORMAT}."
        table = rows(summary)
        named, unknown = _names(answer["pass"], want["names"])
        if unknown:
            return f"{', '.join(map(str, unknown))}: no method of that name in the table; use the names it prints."
        for name in sorted(named - want["pass"]):
            if name.endswith("(baseline)"):
                return f"{name} is a null baseline: it ignores the model, so a sound rule must fail it, and it does."
            bad = sorted(failing_measures(table, name), key=measures.index)
            worst = " and ".join(f"{MEASURE_WORDS[k]} {_mean(table, name, k)}" for k in bad)
            if "spearman" not in bad:
                return (f"the signed ρ of {name} is low ({_mean(table, name, 'spearman')}), so a ρ-only rule would "
                        f"pass it; but the rule needs all three means below {threshold}, and {name} has {worst}.")
            return f"{name} fails the rule: its mean {worst} is not below {threshold}."
        for name in sorted(want["pass"] - named):
            low, high = table[name]["rho_range"]
            means = ", ".join(f"{MEASURE_WORDS[k]} {_mean(table, name, k)}" for k in measures)
            return (f"{name} passes: all three of its means are below {threshold} ({means}). The rule is about the "
                    f"means over its {table[name]['n']} trials, not about one trial (its ρ runs from {low:+.2f} to "
                    f"{high:+.2f}).")
        given = _measures(answer["measure"])
        if given != want["measure"]:
            if None in given:
                return "name the measure as the table does: 'spearman', 'spearman |·|' or 'ssim'."
            for measure in sorted(given - want["measure"], key=measures.index):
                fine = [n for n in (focus, *INPUT_MULTIPLIED) if n in table and table[n]["means"][measure] < threshold]
                values = ", ".join(f"{n} {_mean(table, n, measure)}" for n in dict.fromkeys(fine))
                if measure == "spearman":
                    return (f"the signed ρ is low ({values}): the input-multiplied maps change their sign pattern; "
                            "what survives is |map|, the photo's structure, which the other measures see.")
                return f"{MEASURE_WORDS[measure]} is below {threshold} there ({values}), so it is not where the rule fails."
            missing = sorted(want["measure"] - given, key=measures.index)
            return f"the rule also fails on {' and '.join(MEASURE_WORDS[k] for k in missing)}: name every such measure."
        try:
            value = float(answer["value"])
        except (TypeError, ValueError):
            return f"the number is {focus}'s mean on that measure, as the table prints it (2 decimals)."
        for measure in want["measure"]:
            for other in table:
                if other != focus and abs(value - table[other]["means"][measure]) <= VALUE_TOL:
                    return f"{value:+.2f} is {other}'s mean {MEASURE_WORDS[measure]}; the question asks for {focus}'s."
        return f"the number is {focus}'s mean on that measure, read from its row of the table (2 decimals)."

    return register(AnswerExercise(id=id, lesson=lesson, question=question, answer_format=ANSWER_FORMAT,
                                   expected=expected, compare=compare, mistakes=mistakes))


def _common_failures(table) -> set[str]:
    """The measures on which every input-multiplied method of the table fails."""
    sets = [failing_measures(table, n) for n in INPUT_MULTIPLIED if n in table]
    return set.intersection(*sets) if sets else set()


pass_measure_exercise(
    id="07-which-maps-pass",
    lesson="07",
    question=("By the lesson's rule, which maps pass the classifier step of the randomisation test? On which "
              "measure do all three input-multiplied methods (Gradient × Input, Integrated Gradients, DeepLIFT) "
              "fail, and what is Gradient × Input's mean on it?"),
    focus="Gradient × Input",
    measure_of=_common_failures,
)
