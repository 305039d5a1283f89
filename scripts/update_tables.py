#!/usr/bin/env python3
"""Write the generated tables of the docs: the method tables from the registry, the comparison table
from lesson 06's last run.

    python scripts/update_tables.py          # rewrite the generated blocks of docs/*.md
    python scripts/update_tables.py --check  # exit 1 if a block differs from what would be written

Each block sits between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``;
nothing outside those markers is touched. tests/test_packaging.py runs ``--check``, so a method added
to the registry, or a re-executed lesson 06, cannot leave the docs behind.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LESSON_06 = ROOT / "notebooks" / "06_evaluation.ipynb"
TIMES = ROOT / "docs" / "lesson_times.json"
COMPARISON_HEADER = "| method | photos (n) |"


def _signature(function, layer: bool) -> str:
    parameters = []
    for name, p in inspect.signature(function).parameters.items():
        if name in ("model", "x") or (name == "layer" and layer):
            parameters.append(name)
        elif name in ("progress", "batch_size", "reshape_transform", "return_delta", "return_segments"):
            continue  # the same on every method that has them; the protocol doc describes them
        elif p.default is inspect.Parameter.empty:
            parameters.append(name)
        else:
            parameters.append(f"{name}={p.default!r}")
    return f"`xh.{function.__name__}({', '.join(parameters)})`"


def methods_table() -> str:
    import xai_helpers as xh

    rows = ["| entry | raw function | family | what it computes | paper | cost |", "|---|---|---|---|---|---|"]
    for m in xh.METHODS.values():
        paper = f"[{m.paper.authors.split(',')[0]} et al. {m.paper.year}]({m.paper.url})" \
            if "," in m.paper.authors else f"[{m.paper.authors} {m.paper.year}]({m.paper.url})"
        rows.append(f"| `\"{m.name}\"` | {_signature(m.function, m.needs_layer)} | {m.family} | {m.summary} | "
                    f"{paper} | {m.cost} |")
    return "\n".join(rows)


def tabular_table() -> str:
    import xai_helpers as xh

    rows = ["| entry | function | explains | scope | what it computes |", "|---|---|---|---|---|"]
    for m in xh.TABULAR_METHODS.values():
        rows.append(f"| `\"{m.name}\"` | `T.{m.function.__name__}` | {m.models} | {m.scope} | {m.summary} |")
    return "\n".join(rows)


def comparison_table() -> str:
    for cell in json.loads(LESSON_06.read_text())["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            text = "".join(output.get("text", ""))
            if text.startswith(COMPARISON_HEADER):
                return text.strip()
    raise SystemExit(f"{LESSON_06.name} has no printed table starting with {COMPARISON_HEADER!r}: execute it first")


def _title(path: Path) -> str:
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise SystemExit(f"{path.name} has no '# ' title")


def _seconds(name: str, times: dict) -> str:
    if name not in times:
        raise SystemExit(f"docs/lesson_times.json has no time for {name}: run python3 dev.py notebooks {name}")
    seconds = times[name]["seconds"]
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def lessons_table() -> str:
    """Every lesson with its title and its last measured machine time (docs/lesson_times.json)."""
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    rows = ["| lesson | machine time (2 cores) |", "|---|---|"]
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        if path.name.startswith("00"):
            continue
        rows.append(f"| [{_title(path)}](notebooks/{path.name}) | {_seconds(path.name, times)} |")
    return "\n".join(rows)


def times_table() -> str:
    """The teacher's guide's run times: machine time (measured) and learner time (our estimate), per lesson."""
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    rows = ["| lesson | machine time (2 cores) | learner time (estimate) |", "|---|---|---|"]
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        if path.name.startswith("00"):
            continue
        rows.append(f"| [{_title(path)}](../notebooks/{path.name}) | {_seconds(path.name, times)} | "
                    f"{LEARNER_TIME.get(path.name[:2], '–')} |")
    return "\n".join(rows)


# The teacher's estimate of a lesson's classroom time (minutes); machine times are measured.
LEARNER_TIME = {"01": "45 min", "02": "45 min", "03": "45 min", "04": "45 min", "05": "30 min", "06": "75 min",
                "07": "45 min", "08": "45 min", "09": "60 min", "10": "60 min", "11": "45 min", "12": "60 min", "15": "45 min"}


BLOCKS = {
    ROOT / "README.md": {"lessons": lessons_table},
    ROOT / "docs" / "teaching.md": {"times": times_table},
    ROOT / "docs" / "methods.md": {"methods": methods_table, "tabular": tabular_table},
    ROOT / "docs" / "evaluation.md": {"comparison": comparison_table},
}


INDEX = ROOT / "notebooks" / "00_index.ipynb"
_INDEX_ROW = re.compile(r"^(\| \[[^\]]+\]\((\d\d_[^)]+\.ipynb)\) \|.*\| )([^|]*)( \|)$", re.M)


def index_text() -> str:
    """The index notebook with each lesson row's last column (machine time) set from docs/lesson_times.json."""
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    nb = json.loads(INDEX.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        new = _INDEX_ROW.sub(lambda m: m.group(1) + _index_time(m.group(2), m.group(3), times) + m.group(4), text)
        if new != text:
            cell["source"] = new.splitlines(keepends=True)
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def _index_time(name: str, old: str, times: dict) -> str:
    seconds = _seconds(name, times)
    return f"{seconds}, then interactive" if "interactive" in old else seconds


def render(path: Path, blocks: dict) -> str:
    text = path.read_text()
    for name, make in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN GENERATED: {name} [^>]*-->\n).*?(<!-- END GENERATED: {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{path.relative_to(ROOT)} has no block for {name!r}")
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    stale = []
    for path, blocks in [*BLOCKS.items(), (INDEX, None)]:
        new = index_text() if blocks is None else render(path, blocks)
        if new != path.read_text():
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            stale.append(shown)
            if "--check" not in argv:
                path.write_text(new)
                print(f"updated {shown}")
    if "--check" in argv and stale:
        print(f"generated tables are out of date in {', '.join(map(str, stale))}; run python3 dev.py tables")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
