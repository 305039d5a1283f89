"""Re-execute lesson notebooks in place, top to bottom in a fresh kernel, and save their outputs.

Usage:
    python scripts/execute_notebooks.py                # the lessons that read the method registry
    python scripts/execute_notebooks.py --all          # every lesson
    python scripts/execute_notebooks.py NOTEBOOK ...   # these

"The lessons that read the registry" are those whose code mentions ``METHODS``
or ``get_method``: after a method is registered, they are the ones whose
outputs change. Each run's wall time goes to docs/lesson_times.json, the one
source of the machine times quoted in the README, the index and the
teacher's guide (scripts/update_tables.py copies them there).
"""

from __future__ import annotations

import datetime
import json

try:
    import fcntl
except ImportError:  # Windows: one run at a time
    fcntl = None
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TIMES = ROOT / "docs" / "lesson_times.json"


def reads_registry(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    return "METHODS" in code or "get_method" in code


def lessons() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(name: str, seconds: float) -> None:
    # Several runs may record at once (a lock file makes the read-modify-write one at a time).
    with open(TIMES.with_suffix(".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
        times[name] = {"seconds": round(seconds, 1), "measured": datetime.date.today().isoformat(),
                       "machine": f"{cpu()}, {os.cpu_count()} logical CPUs"}
        TIMES.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")


def main(args: list[str]) -> int:
    if "--all" in args:
        notebooks = lessons()
    elif args:
        notebooks = [Path(p) for p in args]
    else:
        notebooks = [p for p in lessons() if reads_registry(p)]
        print("lessons that read the registry:", ", ".join(p.name for p in notebooks), flush=True)
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - start
        nbformat.write(nb, path)
        record(path.name, seconds)
        print(f"{path.name}: {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
