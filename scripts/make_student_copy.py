"""Write the learner's copy of the lessons: no solutions, no outputs.

    python3 dev.py student            # writes student/*.ipynb (git-ignored)
    python scripts/make_student_copy.py [--out DIR]

In every code cell, the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION``
are replaced by a stub: inside a function, ``raise NotImplementedError(...)``,
which ``xai_helpers.course.exercises.check`` reports as "not attempted yet"; at the top
level of a cell, a ``# YOUR CODE HERE`` comment, so that the cells after it still
run. Markdown ``<details>`` blocks whose summary mentions a solution are removed,
and every output and execution count is cleared. The copy sits at the same depth
as ``notebooks/``, so the lessons' relative links still work.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
DETAILS = re.compile(r"<details>\s*<summary>[^<]*solution[^<]*</summary>.*?</details>\s*", re.IGNORECASE | re.DOTALL)


def strip_code(source: str) -> str:
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            if indent:
                out.append(f'{indent}raise NotImplementedError("write your solution here")')
            else:
                out.append("# YOUR CODE HERE")
            continue
        if stripped == END:
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} without {END} in:\n{source}")
    return "\n".join(out)


def student_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = strip_code(cell.source)
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = DETAILS.sub("", cell.source)
    return notebook


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "student"), help="where to write the copy (default: student/)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        notebook = student_copy(nbformat.read(path, as_version=4))
        nbformat.write(notebook, out / path.name)
        print(f"wrote {out / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
