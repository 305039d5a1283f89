"""The registry is the only list of methods: everything else reads it, and nothing names a method."""

import ast
import inspect
import re
import json
from pathlib import Path

import pytest
import torch

import xai_helpers as xh
from xai_helpers.methods import (
    FAMILIES,
    Method,
    Paper,
    by_slug,
    get_method,
    register,
    unregister,
)
from xai_helpers.ui.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "xai_helpers"


def test_every_entry_is_complete():
    # The null baselines come last, so every table lists the methods first and chance below them.
    kinds = [m.baseline for m in xh.METHODS.values()]
    assert kinds == sorted(kinds) and any(kinds) and not all(kinds)
    for name, m in xh.METHODS.items():
        assert isinstance(m, Method) and m.name == name
        assert m.family in FAMILIES
        assert isinstance(m.paper, Paper) and m.paper.year > 2000 and m.paper.url.startswith("https://")
        assert m.cost and callable(m.passes) and callable(m.function)
        assert not m.signed or m.to_heatmap is not None
        assert (ROOT / "notebooks" / m.lesson).is_file(), (name, m.lesson)
        # The preview settings are real keyword arguments of the function.
        assert set(m.preview) <= set(inspect.signature(m.function).parameters), name
        doc = m.function.__doc__ or ""
        # The paper's equation, section or algorithm number, or an explicit statement that there is none to give.
        doc = " ".join(doc.split())  # a phrase may be wrapped over two lines
        numbered = re.search(r"(Eqs?\. ?\d|Sec\. ?\d|Algorithm ?\d)", doc)
        assert str(m.paper.year) in doc and (numbered or "(no paper" in doc or UNCHECKED in doc), name
        assert (UNCHECKED in doc) == (name in NUMBERS_NOT_CHECKED), name
        assert m.summary and not m.summary[0].isupper() and "\n" not in m.summary, name  # one line for the table
        assert m.fast or not m.default, name  # the dashboard ticks only methods that run in about one pass
    assert len(by_slug()) == len(xh.METHODS)


# Methods whose docstrings cite their paper without equation numbers, because nobody has checked them against the
# paper's text yet; each says so in its docstring. Checking one moves it out of this set.
UNCHECKED = "numbers not checked"
NUMBERS_NOT_CHECKED = {"XGrad-CAM", "HiResCAM", "LayerCAM", "EigenCAM", "Ablation-CAM", "Smooth Grad-CAM++", "SS-CAM",
                       "IS-CAM", "FullGrad"}


def test_costs_as_numbers():
    assert xh.METHODS["CAM"].passes() == (1, 0)
    assert xh.METHODS["Grad-CAM"].passes() == (1, 1)
    assert xh.METHODS["Score-CAM"].passes(channels=640) == (641, 0)
    assert xh.METHODS["Saliency"].passes() == (1, 1)
    assert xh.METHODS["Integrated Gradients"].passes(steps=50) == (51, 50)
    assert xh.METHODS["Occlusion"].passes(positions=169) == (170, 0)
    assert xh.METHODS["Kernel SHAP"].passes(samples=1000) == (1002, 0)
    assert xh.METHODS["DeepLIFT"].passes() == (2, 1)


def test_entries_keep_the_old_call_signature(small_cnn):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    layer = small_cnn.features[5]
    torch.testing.assert_close(xh.METHODS["Grad-CAM"](small_cnn, x, layer), xh.grad_cam(small_cnn, x, layer))
    torch.testing.assert_close(xh.METHODS["Grad-CAM"](small_cnn, x, layer, 2), xh.grad_cam(small_cnn, x, layer, 2))


def test_signed_raw_output_and_common_heatmap(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    entry = xh.METHODS["Saliency"]
    raw = entry.raw(small_cnn, x, target=1)
    assert raw.shape == (2, 3, 16, 16) and (raw < 0).any() and (raw > 0).any()
    heat = entry(small_cnn, x, target=1)
    assert heat.shape == (2, 16, 16) and heat.min() == 0 and heat.amax((1, 2)).eq(1).all()
    # The layer argument is accepted and ignored by a method that needs none.
    torch.testing.assert_close(entry(small_cnn, x, small_cnn.features[5], target=1), heat)


def test_a_layer_method_without_a_layer(small_cnn):
    with pytest.raises(ValueError, match="Grad-CAM explains a layer: pass layer="):
        xh.METHODS["Grad-CAM"](small_cnn, torch.randn(1, 3, 16, 16))


def test_lookup_and_registration_errors():
    assert get_method("grad-cam++") is xh.METHODS["Grad-CAM++"] is get_method("GRAD-CAM++")
    with pytest.raises(ValueError, match="unknown method 'lrp'; choose from cam, grad-cam"):
        get_method("lrp")
    with pytest.raises(ValueError, match="already registered"):
        register(xh.METHODS["CAM"])
    with pytest.raises(ValueError, match="family must be one of"):
        toy(family="magic")
    with pytest.raises(ValueError, match="signed raw output needs a to_heatmap"):
        toy(signed=True)
    with pytest.raises(ValueError, match="no method called"):
        unregister("Toy")


def toy(**changes):
    def centre_blob(model, x, layer, target=None):
        """A made-up method: a blob in the centre (Eq. 0)."""
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        return (1 - (yy**2 + xx**2) / 2).clamp(0, 1).expand(x.shape[0], h, w).clone()

    fields = dict(
        name="Toy", slug="toy", function=centre_blob, paper=Paper("Nobody", 2026, "A toy", "https://example.org"),
        family="perturbation", needs_layer=True, signed=False, reports_progress=False, needs_gradients=False,
        cost="none", passes=lambda **_: (0, 0), default=True,
    )
    fields.update(changes)
    return Method(**fields)


@pytest.fixture
def registered_toy():
    register(toy())
    try:
        yield xh.METHODS["Toy"]
    finally:
        unregister("Toy")
    assert "Toy" not in xh.METHODS


def test_a_new_entry_reaches_the_cli_and_the_dashboard(registered_toy, lite0, tmp_path, capsys):
    choices = next(a for a in build_parser()._subparsers._group_actions[0].choices["explain"]._actions
                   if a.dest == "method").choices
    assert "toy" in choices
    assert main(["explain", "coffee", "--method", "toy", "--out", str(tmp_path / "toy.png")]) == 0
    assert "Toy" in capsys.readouterr().out
    board = xh.Dashboard(lite0, image="coffee")
    assert "Toy" in board.method_boxes and board.method_boxes["Toy"].value  # default=True
    assert board.state.results["Toy"].heat.shape == (224, 224)
    assert "<b>Toy</b>" in board.panels["Toy"][1].value


def test_cli_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    image, tabular = capsys.readouterr().out.split("\n\n")
    assert [line.split()[0] for line in image.splitlines()] == [m.slug for m in xh.METHODS.values()]
    assert [line.split()[0] for line in tabular.splitlines()[1:]] == [m.slug for m in xh.TABULAR_METHODS.values()]


def test_tabular_entries_are_complete_and_documented():
    readme = (ROOT / "docs" / "methods.md").read_text()
    assert len(xh.TABULAR_METHODS) == 6
    for name, m in xh.TABULAR_METHODS.items():
        doc = m.function.__doc__ or ""
        assert str(m.paper.year) in doc or m.paper.year == 2019, name
        assert any(ref in doc for ref in ("Eq", "Sec.", "Algorithm", "Theorem")), name
        assert (ROOT / "notebooks" / m.lesson).is_file()
        assert f"T.{m.function.__name__}" in readme or f"tabular.{m.function.__name__}" in readme, name
    # Every image method's function is in the generated method table too.
    for m in xh.METHODS.values():
        assert f"xh.{m.function.__name__}" in readme, m.name


def _package_modules():
    return sorted(PACKAGE.rglob("*.py"))


def _names():
    return {m.name for m in xh.METHODS.values()} | {m.slug for m in xh.METHODS.values()}


def _string_constants(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_method_is_named_in_the_package_outside_the_registry():
    names = set(xh.METHODS)  # display names; slugs such as "cam" are also function names
    found = [
        f"{path.name}:{node.lineno} {node.value!r}"
        for path in _package_modules()
        # The registry names the methods; the interpretation exercises are about a lesson's named results.
        if path.relative_to(PACKAGE).as_posix() != "methods/registry.py"
        and not path.relative_to(PACKAGE).as_posix().startswith("course/answers/")
        for node in _string_constants(ast.parse(path.read_text()))
        if node.value in names
    ]
    assert found == []
    assert len(_package_modules()) > 20  # the check looked into the subpackages


def test_no_notebook_special_cases_a_method_by_name():
    names = _names()
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in _outside_claims(ast.parse(code)):
                # Comparisons or membership tests against a method's name ("if name == 'Score-CAM'",
                # "name in ('RISE', 'LIME')"); a claim about a named result (xh.claim(..., r["CAM"] < 0.1)) is
                # a checked sentence of the prose, not a special case.
                if isinstance(node, ast.Compare):
                    for operand in [node.left, *node.comparators]:
                        items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                        for const in items:
                            if isinstance(const, ast.Constant) and const.value in names:
                                found.append(f"{path.name} cell {index}: {const.value!r}")
    assert found == []


def _outside_claims(tree):
    """The nodes of ``tree`` that are not inside a call of ``claim`` (``xh.claim`` or ``claim``)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr == "claim") or (isinstance(func, ast.Name) and func.id == "claim"):
                skip.update(id(n) for n in ast.walk(node))
    return [n for n in ast.walk(tree) if id(n) not in skip]
