"""Project plumbing: environment.yml agrees with pyproject.toml, CI runs the README's test command."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch", "xgboost-cpu": "xgboost"}  # PyPI name -> conda-forge name


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("notebooks", "test"):
        reqs += project["optional-dependencies"][extra]
    # A platform's alternative to another requirement (xgboost on macOS for xgboost-cpu) is the
    # same conda-forge package: compare the requirement without its marker, once.
    reqs = [r.split(";")[0] for r in reqs if "== 'Darwin'" not in r]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_requirements() -> dict[str, str]:
    found = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:") :].splitlines():
        m = re.match(r"\s+- ([A-Za-z0-9_.\-]+[^#]*)$", line)
        if m and not m.group(1).startswith(("pip", "python=")):
            req = m.group(1).strip()
            found[_name(req)] = req.replace(" ", "")
    return found


def test_environment_yml_matches_pyproject():
    py = _pyproject_requirements()
    conda = _environment_requirements()
    expected = {CONDA_NAMES.get(name, name): req.replace(name, CONDA_NAMES.get(name, name), 1) for name, req in py.items()}
    assert set(conda) == set(expected), f"only in pyproject: {set(expected) - set(conda)}; only in environment.yml: {set(conda) - set(expected)}"
    for name, req in expected.items():
        assert conda[name] == req, f"{name}: environment.yml has {conda[name]}, pyproject.toml {req}"


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 dev.py test" in readme and "python3 dev.py lab" in readme
    assert re.search(r"^python3 dev\.py test\b", ci, re.M)


def test_generated_tables_are_up_to_date():
    """docs/methods.md from the registry, docs/evaluation.md from lesson 06, the README's lesson times."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_tables.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stale_table_is_caught(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_tables", ROOT / "scripts" / "update_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    doc = tmp_path / "methods.md"
    doc.write_text("<!-- BEGIN GENERATED: methods (x) -->\n| stale |\n<!-- END GENERATED: methods -->\n")
    monkeypatch.setattr(tables, "BLOCKS", {doc: {"methods": tables.methods_table}})
    assert tables.main(["--check"]) == 1
    assert tables.main([]) == 0 and tables.main(["--check"]) == 0
    assert "| `\"Grad-CAM\"` |" in doc.read_text()


def test_the_front_page_stays_short():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 8000, len(readme)
    for link in ("docs/methods.md", "docs/protocol.md", "docs/evaluation.md", "docs/teaching.md"):
        assert link in readme and (ROOT / link).is_file()
