"""The package's layout shows its architecture: five layers, and no module imports from a layer above it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xai_helpers"
LAYERS = ("engine", "methods", "metrics", "course", "ui")  # bottom to top


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    if parts[0] != "xai_helpers":
        return None
    if len(parts) == 1:
        return len(LAYERS)  # the package's public face sits above every layer
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


def imports(path: Path) -> list[str]:
    """Absolute names of the package's modules that ``path`` imports."""
    tree = ast.parse(path.read_text())
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
                # "from . import tabular": the names themselves may be modules.
                found += [name] if node.module else [f"{name}.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [n for n in found if n and n.split(".")[0] == "xai_helpers"]


def test_every_module_lives_in_a_layer():
    flat = [p.name for p in PACKAGE.glob("*.py")]
    assert sorted(flat) == ["__init__.py", "__main__.py"]
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")} == set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_it(path):
    own = layer_of(dotted(path))
    for name in imports(path):
        assert name != "xai_helpers" or own == len(LAYERS), f"{path.name} imports the package's __init__"
        target = layer_of(name)
        assert target <= own, f"{dotted(path)} (layer {LAYERS[own] if own < len(LAYERS) else 'face'}) imports {name}"


def test_the_layering_check_catches_an_upward_import(tmp_path):
    fake = PACKAGE / "engine" / "_probe_upward.py"
    fake.write_text("from ..metrics import auc\n")
    try:
        with pytest.raises(AssertionError, match="imports xai_helpers.metrics"):
            test_no_module_imports_from_a_layer_above_it(fake)
    finally:
        fake.unlink()
