"""Mistakes a learner makes get a sentence that names them, never a raw error or a silent pass (issue 19)."""

import numpy as np
import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers import tabular as T

X16 = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# --- the exercise checker ------------------------------------------------------------------


def test_check_stops_an_endless_loop(capsys, monkeypatch):
    from xai_helpers.course import exercises

    monkeypatch.setattr(exercises, "TIME_LIMIT", 0.5)

    def forever(g):
        while True:
            pass

    assert xh.check("02-grad-cam-weights", forever) is False
    out = capsys.readouterr().out
    assert "still running after 0.5 s" in out and "a loop that never ends" in out


def test_check_names_a_forward_hook_left_on_the_model(capsys):
    def leaky(model, x, a, c):
        model.fc.register_forward_hook(lambda *args: None)  # never removed
        with torch.no_grad(), xh.evaluating(model):
            up = nn.functional.interpolate(a[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
            lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
            return model(x * (up - lo) / (hi - lo)).softmax(-1)[:, c]

    assert xh.check("04-score-cam-weights", leaky) is False
    assert "a hook is still attached to the model" in capsys.readouterr().out


def test_check_names_and_removes_a_global_module_hook(capsys):
    from torch.nn.modules import module

    def global_hook(model, layer, x):
        store = {}
        module.register_module_forward_hook(lambda m, i, o: store.setdefault(m, o))
        model(x)
        return store[layer]

    before = len(module._global_forward_hooks)
    assert xh.check("05-capture-layer", global_hook) is False
    assert "global module hook" in capsys.readouterr().out
    assert len(module._global_forward_hooks) == before


def test_check_names_an_input_changed_in_place(capsys):
    def in_place(y, o):
        y -= o  # writes into the caller's y
        return float((y.clamp_min(0) / (y + o)).mean() * 100)

    assert xh.check("06-average-drop", in_place) is False
    assert "changed its argument 1 in place" in capsys.readouterr().out


def test_check_names_weights_changed_in_place(capsys):
    def writes(model, layer, x):
        with torch.no_grad():
            model.conv.weight.mul_(1.0001)
        store = {}
        handle = layer.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
        try:
            model(x)
        finally:
            handle.remove()
        return store["a"]

    assert xh.check("05-capture-layer", writes) is False
    assert "changed the model's weights" in capsys.readouterr().out


def test_check_refuses_a_string(capsys):
    def formatted(y, o):
        return f"{float(((y - o).clamp_min(0) / y).mean() * 100):.6f}"

    assert xh.check("06-average-drop", formatted) is False
    assert "returned a string" in capsys.readouterr().out


# --- messages a student reads --------------------------------------------------------------


def test_a_corrupt_upload_is_described_in_a_sentence():
    with pytest.raises(ValueError) as info:
        xh.load_image(b"definitely not an image")
    assert "not a readable image" in str(info.value) and "<_io" not in str(info.value) and "0x" not in str(info.value)


def test_dashboard_state_accepts_numpy_integers(lite0):
    state = xh.DashboardState(lite0, methods=["Grad-CAM"])
    state.set_target(np.int64(3))
    assert state.target == 3 and type(state.target) is int
    with pytest.raises(ValueError, match="integer index"):
        state.set_target(2.5)


def test_cli_out_directory_and_early_errors(tmp_path, capsys, monkeypatch):
    from xai_helpers.ui.cli import main

    calls = []
    monkeypatch.setattr(xh.Method, "__call__", lambda self, *a, **k: calls.append(self.name) or torch.zeros(1, 224, 224))
    assert main(["explain", "chelsea", "--method", "grad-cam", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "chelsea_explained.png").is_file()
    assert f"wrote {tmp_path / 'chelsea_explained.png'}" in capsys.readouterr().out
    calls.clear()
    assert main(["explain", "chelsea", "--method", "grad-cam", "--out", str(tmp_path / "nope" / "a.png")]) == 2
    assert "does not exist" in capsys.readouterr().err and calls == []
    assert main(["explain", "chelsea", "--method", "grad-cam", "--out", str(tmp_path / "figure.txt")]) == 2
    assert "must end in one of .png" in capsys.readouterr().err and calls == []


# --- tabular ------------------------------------------------------------------------------


def test_tree_shap_keeps_a_dataframes_feature_names():
    pd = pytest.importorskip("pandas")
    xgboost = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["radius", "texture", "area"])
    y = (frame["radius"] + 0.5 * frame["area"] > 0).astype(int)
    booster = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(frame, y)
    contributions, bias = T.tree_shap(booster, frame)
    margin = booster.predict(frame, output_margin=True)
    np.testing.assert_allclose(contributions.sum(1) + bias, margin, rtol=1e-5, atol=1e-5)


def test_tabular_shapley_refuses_nan():
    model_fn = lambda A: A @ np.array([1.0, -2.0, 0.5])  # noqa: E731
    background = np.zeros((4, 3))
    with pytest.raises(ValueError, match="x contains 1 non-finite value"):
        T.kernel_shap_tabular(model_fn, np.array([1.0, np.nan, 2.0]), background)
    with pytest.raises(ValueError, match="background contains"):
        T.exact_shapley_tabular(model_fn, np.ones(3), np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="model_fn's output contains"):
        T.exact_shapley_tabular(lambda A: np.log(A[:, 0] - 5), np.ones(3), background)


def test_cem_refuses_a_negative_learning_rate_and_reports_divergence():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        T.cem(model, np.ones(3), learning_rate=-0.01)
    with pytest.raises(ValueError, match="x contains"):
        T.cem(model, np.array([1.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="diverged"):
        T.cem(model, np.ones(3), mode="PN", learning_rate=1e300, c=1e300, steps=3)


# --- settings of the wrong type --------------------------------------------------------------


@pytest.mark.parametrize("call,match", [
    (lambda m: xh.rise(m, X16, 0, masks=8, seed="abc"), "seed must be a non-negative int"),
    (lambda m: xh.lime(m, X16, 0, samples=8, kernel_width="a"), "kernel_width must be a finite number"),
    (lambda m: xh.lime(m, X16, 0, samples=8, segments="slic"), "segments must be None .* or an"),
    (lambda m: xh.rise(m, X16, 0, masks=8, progress="yes"), "progress must be True, False or a callable"),
    (lambda m: xh.rise(m, X16, 0, masks=8, centre="no"), "centre must be True or False"),
    (lambda m: xh.smoothgrad(m, X16, 0, samples=2, noise=True), "noise must be a finite number"),
    (lambda m: xh.deeplift(m, X16, 0, eps=-1), "eps must be a finite number > 0"),
    (lambda m: xh.score_cam(m, X16, m.features, 0, subtract_reference="yes"), "subtract_reference must be True or False"),
    (lambda m: xh.integrated_gradients(m, X16, 0, steps=4, return_delta=1), "return_delta must be True or False"),
    (lambda m: xh.grad_cam(m, X16.double(), m.features, 0), "x is torch.float64 but the model's parameters are torch.float32"),
    (lambda m: xh.grad_cam(m, X16[:, :2], m.features, 0), "the model cannot run on an input of shape \\(1, 2, 16, 16\\)"),
    (lambda m: M.faithfulness(m, X16, {"a": X16[:, 0]}, 0, batch_size=-1), "batch_size must be a positive int"),
    (lambda m: M.faithfulness(m, X16, {"a": X16[:, 0]}, 0, step=0), "step must be a positive int"),
])
def test_bad_settings_are_sentences(call, match):
    model = nn.Sequential()
    model.features = nn.Conv2d(3, 4, 3, padding=1)
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.flat = nn.Flatten()
    model.fc = nn.Linear(4, 3)
    model.eval()
    with pytest.raises(ValueError, match=match):
        call(model)


def test_a_tiny_centre_gaussian_still_has_a_peak(small_cnn):
    heat = xh.centre_gaussian(small_cnn, X16, sigma=1e-6)
    assert heat.max() == 1 and heat.sum() == 4  # the four pixels nearest the centre of a 16 x 16 map
    assert heat[0, 7:9, 7:9].eq(1).all()


def test_metrics_take_the_methods_targets(small_cnn):
    heat = xh.grad_cam(small_cnn, X16, small_cnn.features[5], target=2)
    by_index = M.faithfulness(small_cnn, X16, {"g": heat}, target=2, metrics=("drop", "deletion"), step=64)
    by_callable = M.faithfulness(small_cnn, X16, {"g": heat}, target=lambda out: out.softmax(-1)[:, 2],
                                 metrics=("drop", "deletion"), step=64)
    torch.testing.assert_close(by_callable["g"]["deletion"], by_index["g"]["deletion"])
    torch.testing.assert_close(by_callable["g"]["o"], by_index["g"]["o"])


# --- the registry's contract ----------------------------------------------------------------


@pytest.mark.parametrize("name,flag", [("Integrated Gradients", "return_delta"), ("DeepLIFT", "return_delta"),
                                       ("LIME", "return_segments"), ("Kernel SHAP", "return_segments"),
                                       ("Grad-CAM", "return_delta")])
def test_extras_flags_are_refused_by_entries_and_given_by_explain(small_cnn, name, flag):
    entry = xh.METHODS[name]
    quick = {"Integrated Gradients": {"steps": 4}, "LIME": {"samples": 16}, "Kernel SHAP": {"samples": 16}}.get(name, {})
    with pytest.raises(ValueError, match=f"{flag} is not a setting of a registry entry"):
        entry(small_cnn, X16, small_cnn.features[5], target=1, **{flag: True}, **quick)
    with pytest.raises(ValueError, match=f"{flag} is not a setting"):
        entry.raw(small_cnn, X16, small_cnn.features[5], target=1, **{flag: True}, **quick)
    found = entry.explain(small_cnn, X16, small_cnn.features[5], target=1, **quick)
    assert isinstance(found.raw, torch.Tensor) and found.heatmap.shape == (1, 16, 16)
    torch.testing.assert_close(found.heatmap, entry(small_cnn, X16, small_cnn.features[5], target=1, **quick))
    expected = {"return_delta": {"delta"}, "return_segments": {"segments", "values", "intercept", "fit"}}[flag]
    assert set(found.extras) == (expected if entry.extras else set())


def test_entries_are_not_fast_or_default_unless_they_say_so():
    entry = xh.Method(name="Toy", slug="toy", function=xh.grad_cam, paper=xh.METHODS["Grad-CAM"].paper,
                      family="activation map", needs_layer=True, signed=False, reports_progress=False,
                      needs_gradients=True, cost="1", passes=lambda **_: (1, 1))
    assert entry.fast is False and entry.default is False
