#!/usr/bin/env python3
"""Copy lesson 06's comparison table, as the notebook last printed it, into the README.

    python scripts/update_readme_table.py          # rewrite README.md's table
    python scripts/update_readme_table.py --check  # exit 1 if the two differ

Run it after re-executing lesson 06 (`python3 dev.py notebooks`); tests/test_packaging.py
checks that the README and the lesson never disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "06_evaluation.ipynb"
README = ROOT / "README.md"
HEADER = "| method | photos (n) |"


def lesson_table() -> str:
    for cell in json.loads(LESSON.read_text())["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            text = "".join(output.get("text", ""))
            if text.startswith(HEADER):
                return text.strip()
    raise SystemExit(f"{LESSON.name} has no printed table starting with {HEADER!r}: execute the lesson first")


def readme_with(table: str) -> str:
    text = README.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start)
    return text[:start] + table + text[end:]


def main(argv: list[str]) -> int:
    updated = readme_with(lesson_table())
    if "--check" in argv:
        if updated != README.read_text():
            print("README.md's table differs from lesson 06's output; run python scripts/update_readme_table.py")
            return 1
        return 0
    README.write_text(updated)
    print(f"updated {README.name} from {LESSON.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
