#!/usr/bin/env python3
"""One entry point for learners, teachers and CI; needs only Python 3.11+ and pip.

    python3 dev.py lab         # set up .venv if needed, open JupyterLab on notebooks/
    python3 dev.py test        # set up .venv if needed, run every test (pytest + nbval)
    python3 dev.py notebooks   # re-execute the lessons that read the method registry (--all: every lesson;
                               # or name them), save their outputs, regenerate the docs' tables
    python3 dev.py tables      # regenerate the docs' tables (methods, comparison, lesson times)
    python3 dev.py bench       # run benchmarks/bench_methods.py (installs the [bench] extra)
    python3 dev.py voila       # serve the comparison dashboard as a web app (one CPU thread per kernel)
    python3 dev.py student     # write the learner's copy (no solutions, no outputs) to student/

Extra arguments after the command go to the tool it runs, e.g.
``python3 dev.py test -k grad_cam``.

Environment:
    XAI_TORCH="torch==... torchvision==..."   the PyTorch pair to install (default: the tested CUDA build)
    XAI_TORCH_INDEX=URL                       a package index for that pair, e.g. PyTorch's CPU-only wheels
                                              (see README, "A smaller, CPU-only PyTorch")
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
# The torch build the lessons are tested with. On aarch64 the CPU-only wheels
# of an older release are far smaller. Override with XAI_TORCH="torch==... torchvision==...".
TORCH = os.environ.get(
    "XAI_TORCH",
    "torch==2.9.1 torchvision==0.24.1" if platform.machine() in ("aarch64", "arm64") else "torch==2.14.1 torchvision==0.29.1",
)
EXTRAS = {
    "lab": "notebooks",
    "voila": "notebooks",
    "test": "test,notebooks",
    "notebooks": "test,notebooks",
    "tables": "notebooks",
    "bench": "bench",
    "student": "notebooks",
}


def run(*cmd: str | Path, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kwargs)


def ensure_venv(extras: str) -> None:
    """Create .venv and install the package with ``extras``, only when something changed."""
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    stamp = VENV / f".installed-{extras.replace(',', '-')}"
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + TORCH.encode() + os.environ.get("XAI_TORCH_INDEX", "").encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    pip = [PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    index = os.environ.get("XAI_TORCH_INDEX")
    run(*pip, *(["--index-url", index] if index else []), *TORCH.split())
    run(*pip, "-e", f".[{extras}]")
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):
        print(f"Python 3.11 or newer is needed; this is {platform.python_version()}.", file=sys.stderr)
        return 2
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv(EXTRAS[command])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        if command == "test":
            run(PYTHON, "-m", "pytest", *rest, env=env)
        elif command == "lab":
            # Jupyter refuses to start as root (containers, CI machines) unless told to.
            as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
            run(PYTHON, "-m", "jupyter", "lab", "notebooks", *as_root, *rest, env=env)
        elif command == "voila":
            # One thread per kernel: with a class on one server, kernels that each use every
            # core slow each other down many times over (docs/classroom.md has the measurements).
            threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            run(PYTHON, "-m", "voila", "notebooks/05_comparison_dashboard.ipynb", *rest, env={**env, **threads})
        elif command == "notebooks":
            run(PYTHON, "scripts/execute_notebooks.py", *rest, env=env)
            # The docs' tables are the registry's and the lessons' outputs (checked by tests/test_packaging.py).
            run(PYTHON, "scripts/update_tables.py", env=env)
        elif command == "tables":
            run(PYTHON, "scripts/update_tables.py", *rest, env=env)
        elif command == "student":
            run(PYTHON, "scripts/make_student_copy.py", *rest, env=env)
        elif command == "bench":
            run(PYTHON, "benchmarks/bench_methods.py", *rest, env=env)
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
