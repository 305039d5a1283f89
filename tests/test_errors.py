"""Bad input gets a clear ValueError or FileNotFoundError that names the problem and the valid choices; a learner's mistake gets a sentence, never a raw error or a silent pass."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers import tabular as T

from .conftest import all_hooks

METHODS = list(xh.METHODS.values())
LAYER_METHODS = [m for m in METHODS if m.needs_layer]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("shape", [(3, 16, 16), (16, 16), (1, 1, 3, 16, 16)])
def test_x_not_4d(method, small_cnn, shape):
    with pytest.raises(ValueError, match=r"4-D \(N, 3, H, W\)"):
        method(small_cnn, torch.randn(shape), small_cnn.features[5])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_x_not_a_float_tensor(method, small_cnn):
    with pytest.raises(ValueError, match="floating-point"):
        method(small_cnn, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), small_cnn.features[5])
    with pytest.raises(ValueError, match="torch.Tensor"):
        method(small_cnn, np.zeros((1, 3, 16, 16), np.float32), small_cnn.features[5])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("target", [5, -1, [0, 99], 10**9])
def test_target_out_of_range(method, small_cnn, target):
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"out of range; valid classes are 0\.\.4"):
        method(small_cnn, x, small_cnn.features[5], target=target)
    assert all_hooks(small_cnn) == 0


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("target", [[1], [1, 2, 3], torch.tensor([0, 1, 2])])
def test_wrong_number_of_targets(method, small_cnn, target):
    with pytest.raises(ValueError, match="got .* targets for a batch of 2 images"):
        method(small_cnn, torch.randn(2, 3, 16, 16), small_cnn.features[5], target=target)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_target_wrong_type(method, small_cnn):
    with pytest.raises(ValueError, match="target must be"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], target="cat")
    with pytest.raises(ValueError, match="not a bool"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], target=True)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_targets_accept_ints_tensors_numpy(method, small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = method(small_cnn, x, small_cnn.features[5], target=[1, 3])
    for target in ((1, 3), torch.tensor([1, 3]), np.array([1, 3])):
        torch.testing.assert_close(method(small_cnn, x, small_cnn.features[5], target=target), ref)
    torch.testing.assert_close(
        method(small_cnn, x, small_cnn.features[5], target=np.int64(2)),
        method(small_cnn, x, small_cnn.features[5], target=2),
    )


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_not_in_model(method, small_cnn):
    with pytest.raises(ValueError, match="not a submodule of the model"):
        method(small_cnn, torch.randn(1, 3, 16, 16), nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_never_runs(method, small_cnn):
    small_cnn.unused = nn.Conv2d(12, 12, 1)
    with pytest.raises(ValueError, match="never ran in the forward pass"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.unused)
    assert all_hooks(small_cnn) == 0


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_that_runs_twice(method):
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    model = Shared()
    with pytest.raises(ValueError, match="ran 2 times"):
        method(model, torch.randn(1, 3, 8, 8), model.conv)


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_with_non_spatial_output(method, small_cnn):
    with pytest.raises(ValueError, match=r"\(N, C, h, w\) feature map"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.fc)


def test_score_cam_options(small_cnn):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="score must be one of"):
        xh.score_cam(small_cnn, x, small_cnn.features[5], score="logits")
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        xh.score_cam(small_cnn, x, small_cnn.features[5], batch_size=0)


def test_cam_with_wrong_fc(small_cnn):
    with pytest.raises(ValueError, match="fc must be an nn.Linear with 12 inputs .* and 5 outputs"):
        xh.cam(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], fc=nn.Linear(7, 5))
    with pytest.raises(ValueError, match=r"got Linear\(12, 9\)"):
        xh.cam(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], fc=nn.Linear(12, 9))


def test_load_model_unknown_name():
    with pytest.raises(ValueError, match=r"choose one of \['efficientnet_lite0', 'resnet50'\]"):
        xh.load_model("vgg16")


# --- images -----------------------------------------------------------------


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_bytes_that_are_not_an_image():
    with pytest.raises(ValueError, match="not a readable image"):
        xh.load_image(b"this is a text file, not a photo")
    with pytest.raises(ValueError, match="empty"):
        xh.load_image(b"")


def test_truncated_file(tmp_path):
    data = (xh.sample_path("chelsea")).read_bytes()
    for cut in (len(data) // 2, 40):
        with pytest.raises(ValueError, match="not a readable image"):
            xh.load_image(data[:cut])
        path = tmp_path / f"cut{cut}.png"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable image"):
            xh.load_image(path)


def test_missing_path_and_unknown_sample():
    with pytest.raises(FileNotFoundError, match="samples are: .*chelsea"):
        xh.load_image("/no/such/photo.jpg")
    with pytest.raises(FileNotFoundError, match="no sample image called 'dog'"):
        xh.sample_path("dog")


def test_unsupported_source_type():
    with pytest.raises(ValueError, match="pass a sample name, a path, bytes or a PIL image"):
        xh.load_image(42)


def test_decompression_bomb():
    bomb = _png(Image.new("1", (9000, 8000)))  # 72 megapixels in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="too large"):
        xh.load_image(bomb)
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit does not rely on Pillow's global one
    try:
        with pytest.raises(ValueError, match="too large"):
            xh.load_image(bomb)
    finally:
        Image.MAX_IMAGE_PIXELS = before


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1", "I"])
def test_modes_are_converted_to_rgb(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10) * 500)
    else:
        img = rgb.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I") else "PNG"
    for source in (img, _png(img, fmt)):
        out = xh.load_image(source)
        assert out.mode == "RGB" and out.size == (10, 12)
    if mode == "I;16":  # 16-bit values are rescaled from 0..65535, not clipped to white
        values = np.asarray(xh.load_image(img))[..., 0]
        assert values.min() == 0 and values.max() == round(59500 / 65535 * 255) and len(np.unique(values)) > 100


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert xh.load_image(img).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_honoured():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = xh.load_image(_png(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    arr = np.asarray(out).mean(-1)
    assert arr[:20].mean() > 200 and arr[20:].mean() < 50  # the white half is now on top


X16 = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


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


