"""The auto-checked exercises: checkers accept the reference, name each known mistake; the learner's copy."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from xai_helpers.course.exercises import EXERCISES, check
from xai_helpers.engine.hooks import evaluating

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p for p in (ROOT / "notebooks").glob("[01][0-9]_*.ipynb") if not p.name.startswith("00"))


def run_check(capsys, exercise_id, fn):
    ok = check(exercise_id, fn)
    return ok, capsys.readouterr().out


# --- reference solutions and known mistakes, for each checker ---------------------------------


def cam_reference(a, w, c):
    return torch.einsum("k,khw->hw", w[c], a)


def alpha_reference(a, g, power=3, use_sum=True):
    s = a.sum((1, 2), keepdim=True) if use_sum else torch.ones_like(a)
    den = 2 * g**2 + s * g**power
    return torch.where(den != 0, g**2 / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(den))


def score_cam_reference(model, x, a, c, normalise=True, probability=True, size=None, eval_mode=True):
    context = evaluating(model) if eval_mode else torch.no_grad()
    with torch.no_grad(), context:
        up = F.interpolate(a[:, None], size=size or x.shape[-2:], mode="bilinear", align_corners=False)
        if normalise:
            lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
            up = (up - lo) / (hi - lo)
        out = model(x * up)
        return out.softmax(-1)[:, c] if probability else out[:, c]


def capture_reference(model, layer, x, remove=True):
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        if remove:
            handle.remove()
    return store["a"]


def ranks(v, average=True):
    if not average:
        return v.argsort(stable=True).argsort().double()
    ordered = v.sort().values
    return (torch.searchsorted(ordered, v) + torch.searchsorted(ordered, v, right=True) - 1).double() / 2


def pearson(p, q):
    p, q = p - p.mean(), q - q.mean()
    return float((p * q).sum() / (p.norm() * q.norm()))


REFERENCES = {
    "01-cam-map": cam_reference,
    "02-grad-cam-weights": lambda g: g.mean((1, 2)),
    "03-grad-cam-pp-alphas": alpha_reference,
    "04-score-cam-weights": score_cam_reference,
    "05-capture-layer": capture_reference,
    "06-average-drop": lambda y, o: float(((y - o).clamp_min(0) / y).mean() * 100),
    "07-spearman": lambda a, b: pearson(ranks(a), ranks(b)),
    "08-rise-saliency": lambda scores, masks, p: torch.einsum("k,khw->hw", scores, masks) / (len(scores) * p),
    "09-integrated-gradients": lambda g, x, x0: (x - x0) * g.mean(0),
    "11-layer-cam-map": lambda a, g: torch.einsum("khw,khw->hw", g.clamp_min(0), a),
    "12-permutation-drop": lambda f, X, y, metric, j, perm: metric(y, f(X)) - metric(
        y, f(__import__("numpy").concatenate([X[:, :j], X[perm, j : j + 1], X[:, j + 1 :]], 1))),
    "10-shapley-kernel": lambda m, s: (m - 1) / (torch.tensor([__import__("math").comb(m, int(k)) for k in s],
                                                              dtype=torch.float64) * s * (m - s)),
}

MISTAKES = [  # (exercise, the learner's wrong function, words the hint must contain)
    ("01-cam-map", lambda a, w, c: cam_reference(a, w, (c + 1) % w.shape[0]), "instead of class"),
    ("01-cam-map", lambda a, w, c: torch.einsum("k,khw->hw", w.T[c] if w.shape[0] == w.shape[1] else w[c], a), "transposed"),
    ("01-cam-map", lambda a, w, c: torch.einsum("k,khw->hw", w.mean(0), a), "averaged over all classes"),
    ("01-cam-map", lambda a, w, c: cam_reference(a, w, c).clamp_min(0), "ReLU applied too early"),
    ("02-grad-cam-weights", lambda g: g.sum((1, 2)), "final min-max-scaled map is identical"),
    ("02-grad-cam-weights", lambda g: g.clamp_min(0).mean((1, 2)), "ReLU on the gradients"),
    ("02-grad-cam-weights", lambda g: g.abs().mean((1, 2)), "absolute value"),
    ("03-grad-cam-pp-alphas", lambda a, g: g**2 / (2 * g**2 + a.sum((1, 2), keepdim=True) * g**3), "NaN or inf where the denominator is 0"),
    ("03-grad-cam-pp-alphas", lambda a, g: alpha_reference(a, g, power=2), "g² where g³ belongs"),
    ("03-grad-cam-pp-alphas", lambda a, g: alpha_reference(a, g, use_sum=False), "spatial sum dropped"),
    ("03-grad-cam-pp-alphas", lambda a, g: g**2, "no-op"),
    ("04-score-cam-weights", lambda *args: score_cam_reference(*args, probability=False), "logits instead of probabilities"),
    ("04-score-cam-weights", lambda *args: score_cam_reference(*args, normalise=False), "not scaled"),
    ("04-score-cam-weights", lambda *args: score_cam_reference(*args, size=(5, 5)), "upsampling size other than the input's"),
    ("04-score-cam-weights", lambda *args: score_cam_reference(*args, eval_mode=False), "train mode"),
    ("05-capture-layer", lambda *args: capture_reference(*args, remove=False), "hooks left on the model"),
    ("06-average-drop", lambda y, o: float((y - o).clamp_min(0).mean() * 100), "absolute drop"),
    ("06-average-drop", lambda y, o: float(((y - o) / y).mean() * 100), "negative drops counted"),
    ("07-spearman", lambda a, b: pearson(ranks(a, average=False), ranks(b, average=False)), "ties broken by position"),
    ("07-spearman", lambda a, b: pearson(a, b), "not of their ranks"),
    ("08-rise-saliency", lambda scores, masks, p: torch.einsum("k,khw->hw", scores, masks) / len(scores), "divides by E[M] = p"),
    ("08-rise-saliency", lambda scores, masks, p: torch.einsum("k,khw->hw", scores, masks) / masks.sum(0), "per-pixel normalisation"),
    ("09-integrated-gradients", lambda g, x, x0: x * g.mean(0), "path's length"),
    ("09-integrated-gradients", lambda g, x, x0: (x - x0) * g.sum(0), "divide by the number of steps"),
    ("10-shapley-kernel", lambda m, s: (m - 1) / (s * (m - s)).double(), "divided by C(M, |z|)"),
    ("11-layer-cam-map", lambda a, g: (g * a).sum(0), "that is HiResCAM"),
    ("11-layer-cam-map", lambda a, g: (g * a).clamp_min(0).sum(0), "Grad-CAM element-wise"),
    ("11-layer-cam-map", lambda a, g: (g.clamp_min(0).mean((1, 2), keepdim=True) * a).sum(0), "Grad-CAM's step"),
    ("11-layer-cam-map", lambda a, g: (g.clamp_min(0) * a).sum(0).clamp_min(0), "before the final ReLU"),
    ("12-permutation-drop", lambda f, X, y, metric, j, perm: metric(y, f(X)) - metric(y, f(X[perm])), "reordering whole rows"),
    ("12-permutation-drop", lambda *args: -REFERENCES["12-permutation-drop"](*args), "positive importance"),
]


def test_every_exercise_has_a_reference_here():
    assert set(REFERENCES) == set(EXERCISES)


@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_reference_solution_passes(capsys, exercise_id):
    ok, out = run_check(capsys, exercise_id, REFERENCES[exercise_id])
    assert ok and out.startswith(f"✓ {exercise_id}: all")


@pytest.mark.parametrize("exercise_id,wrong,hint", MISTAKES, ids=[f"{m[0]}:{m[2]}" for m in MISTAKES])
def test_known_mistake_is_rejected_and_named(capsys, exercise_id, wrong, hint):
    ok, out = run_check(capsys, exercise_id, wrong)
    assert not ok and out.startswith(f"✗ {exercise_id}: case ")
    assert "Known mistake" in out and hint in out, out


def test_score_cam_mode_must_be_restored(capsys):
    def leaves_eval_mode(model, x, a, c):
        model.eval()
        return score_cam_reference(model, x, a, c, eval_mode=False)

    ok, out = run_check(capsys, "04-score-cam-weights", leaves_eval_mode)
    assert not ok and "train/eval mode was not restored" in out


def test_unknown_answers_crashes_and_stubs_are_feedback_not_errors(capsys):
    ok, out = run_check(capsys, "02-grad-cam-weights", lambda g: g.median())
    assert not ok and "expected tensor of shape (3,)" in out and "Known mistake" not in out

    def stub(g):
        raise NotImplementedError

    ok, out = run_check(capsys, "02-grad-cam-weights", stub)
    assert not ok and "not attempted yet" in out
    ok, out = run_check(capsys, "02-grad-cam-weights", lambda g: g.nonexistent())
    assert not ok and "raised AttributeError" in out
    ok, out = run_check(capsys, "02-grad-cam-weights", "not a function")
    assert not ok and "pass your function itself" in out


def test_unknown_exercise_lists_the_valid_ids():
    with pytest.raises(ValueError, match="unknown exercise 'nope'; the exercises are: 01-cam-map, 02-grad-cam-weights"):
        check("nope", lambda: None)


def _code(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_has_a_checked_exercise(lesson):
    from xai_helpers.course.answers import ANSWERS  # the interpretation exercises, checked by the same check()

    ids = {m for source in _code(lesson) for m in re.findall(r'check\("([^"]+)"', source)}
    assert any(i.startswith(lesson.stem[:2]) for i in ids), lesson.name
    assert ids <= set(EXERCISES) | set(ANSWERS), ids - set(EXERCISES) - set(ANSWERS)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_student_copy.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out


def test_learner_copy_holds_no_solution_text(student):
    for lesson in LESSONS:
        original = json.loads(lesson.read_text())
        solution_lines, other_lines = set(), set()
        for source in _code(lesson):
            inside = False
            for line in source.splitlines():
                if line.strip() == "### BEGIN SOLUTION":
                    inside = True
                elif line.strip() == "### END SOLUTION":
                    inside = False
                elif inside and len(line.strip()) > 12:
                    solution_lines.add(line.strip())
                else:
                    other_lines.add(line.strip())
        copy = (student / lesson.name).read_text()
        assert "BEGIN SOLUTION" not in copy and "<summary>Solution" not in copy
        # A solution line that the lesson also uses outside any solution (handle.remove()) gives nothing away.
        other_text = "\n".join(other_lines)
        leaked = [line for line in solution_lines if line not in other_text and json.dumps(line)[1:-1] in copy]
        assert leaked == [], (lesson.name, leaked[:3])
        cells = json.loads(copy)["cells"]
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
        assert len(cells) == len(original["cells"])


@pytest.mark.parametrize("name", ["01_cam.ipynb", "02_grad_cam.ipynb", "03_grad_cam_plus_plus.ipynb"])
def test_learner_copy_runs_top_to_bottom(student, name):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(student / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # raises on any error
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "not attempted yet" in text
