"""The dashboard's callbacks, driven through widget values as a browser would, without a browser."""

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

import xai_helpers as xh

ipywidgets = pytest.importorskip("ipywidgets")

DEFAULTS = [name for name, m in xh.METHODS.items() if m.default]


@pytest.fixture
def board(lite0):
    """A fresh dashboard for every test: no test depends on what another one clicked."""
    return xh.Dashboard(lite0, image="coffee")


def png_bytes(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def upload(board, content: bytes, name: str):
    item = {"name": name, "type": "image/png", "size": len(content), "content": memoryview(content), "last_modified": 0}
    board.upload.set_state({"value": [item]})


def overlay_images(board):
    return {m: board.panels[m][0].value for m in board.selected_methods()}


def test_initial_state(board, lite0):
    assert board.image_key == "coffee"
    assert board.target == 967  # espresso, the top-1
    assert "espresso" in board.predictions.value and board.predictions.value.count("<tr>") == 5
    assert [v for _, v in board.quick_pick.options] == [i for i, _, _ in lite0.predict("coffee", k=5)]
    assert len(board.search.options) == 1000
    assert board.layer.value == "head" and list(board.layer.options)[0] == "stem"
    # It opens with the registry's default methods; the slow ones are one click away.
    defaults = [name for name, m in xh.METHODS.items() if m.default]
    assert board.selected_methods() == defaults and all(xh.METHODS[n].fast for n in defaults)
    assert set(board.method_boxes) == set(xh.METHODS)
    assert len(board.grid.children) == 1 + len(defaults)
    for method, png in overlay_images(board).items():
        assert png[:3] == b"\xff\xd8\xff", method  # JPEG
    caption = board.panels["Grad-CAM"][1].value
    assert "espresso" in caption and " ms" in caption and "top 50% kept" in caption
    assert board.message.value == ""


def test_cached_heatmaps_match_library(board, lite0):
    x = lite0.preprocess("coffee")
    for method in DEFAULTS:
        cached = board.cache[("coffee", 967, "head", method)].heat
        torch.testing.assert_close(cached, xh.METHODS[method](lite0.model, x, lite0.target_layer, target=967)[0])


def test_alpha_and_cmap_redraw_without_recomputing(board, monkeypatch):
    calls = []
    monkeypatch.setattr(xh.Method, "raw", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(xh.Method, "__call__", lambda *a, **k: calls.append(1))
    before = overlay_images(board)
    start = time.perf_counter()
    board.alpha.value = 0.8
    elapsed = time.perf_counter() - start
    after_alpha = overlay_images(board)
    board.cmap.value = "cividis"
    after_cmap = overlay_images(board)
    assert calls == []
    assert all(after_alpha[m] != before[m] for m in before)
    assert all(after_cmap[m] != after_alpha[m] for m in before)
    print(f"alpha re-render: {elapsed * 1000:.0f} ms")
    board.alpha.value, board.cmap.value = 0.5, "viridis"


def test_switching_target_changes_overlays(board):
    before = overlay_images(board)
    board.quick_pick.value = board.quick_pick.options[1][1]  # the second most likely class
    assert board.target == board.quick_pick.options[1][1]
    after = overlay_images(board)
    assert all(after[m] != before[m] for m in before)
    board.search.value = "285: Egyptian cat"
    assert board.target == 285 and "Egyptian cat" in board.panels[DEFAULTS[0]][1].value
    board.search.value = "not a class"  # ignored: not one of the options
    assert board.target == 285


def test_method_checkboxes_and_layer(board):
    board.method_boxes[DEFAULTS[-1]].value = False
    assert board.selected_methods() == DEFAULTS[:-1]
    assert len(board.grid.children) == len(DEFAULTS)
    board.method_boxes["CAM"].value = True
    assert board.selected_methods() == [m for m in xh.METHODS if m in DEFAULTS[:-1] + ["CAM"]]
    board.layer.value = "stage5"
    captions = {m: board.panels[m][1].value for m in board.selected_methods()}
    assert "global average pooling" in captions["CAM"]  # CAM explains why it cannot run here
    assert " ms" in captions["Grad-CAM"]
    assert ("coffee", board.target, "stage5", "Grad-CAM") in board.cache
    board.layer.value = "head"
    board.method_boxes["CAM"].value = False
    board.method_boxes[DEFAULTS[-1]].value = True


# The upload tests are about the image, not the methods: one of each kind of fast method is enough (every
# method's map is tested elsewhere), and it keeps four uploads at 224 x 224 cheap.
FAST = [name for name in ("Grad-CAM", "EigenCAM", "Saliency", "DeepLIFT", "FullGrad", "Random (baseline)")
        if xh.METHODS[name].fast]


def test_upload_image_and_conversions(lite0):
    board = xh.Dashboard(lite0, image="coffee", methods=FAST)
    old_cache = set(board.cache)
    rgba = xh.load_image("chelsea").convert("RGBA")
    upload(board, png_bytes(rgba), "cat.png")
    assert board.message.value == ""
    assert board.image_key.startswith("upload:") and board.image.mode == "RGB"
    assert board.target in (281, 282, 285)  # a cat class
    assert not old_cache & set(board.cache)  # a new image invalidates the cache
    gray = xh.load_image("chelsea").convert("L")
    upload(board, png_bytes(gray), "gray.png")
    assert board.image.mode == "RGB" and board.message.value == ""
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (2400, 3000, 3), dtype=np.uint8))
    upload(board, png_bytes(big, "JPEG"), "big.jpg")
    assert max(board.image.size) == 1024 and board.message.value == ""


def test_upload_not_an_image_keeps_previous_state(lite0):
    board = xh.Dashboard(lite0, image="coffee", methods=FAST)
    state = (board.image_key, board.target, overlay_images(board))
    upload(board, b"%PDF-1.4 definitely not a photo", "notes.pdf")
    assert "Could not use that input" in board.message.value and "not a readable image" in board.message.value
    assert "notes.pdf" in board.message.value and "Traceback" not in board.message.value
    assert (board.image_key, board.target, overlay_images(board)) == state
    board.quick_pick.value = board.quick_pick.options[2][1]  # still usable
    assert board.message.value == "" and board.target == board.quick_pick.options[2][1]


def test_slow_method_is_one_click_away_with_progress(lite0):
    board = xh.Dashboard(lite0, image="coffee")
    slow = [name for name, m in xh.METHODS.items() if m.reports_progress]
    assert slow and not any(board.method_boxes[name].value for name in slow)
    assert all("(slow)" in board.method_boxes[name].description for name in slow)
    seen = []
    board.progress.observe(lambda change: seen.append(change["new"]), names="value")
    board.method_boxes[slow[0]].value = True
    assert seen and seen[-1] == board.progress.max > 100
    assert board.progress.layout.visibility == "hidden"
    assert " ms" in board.panels[slow[0]][1].value


def test_dashboard_factory_displays(lite0):
    board = xh.dashboard(lite0, image="chelsea", methods=["Grad-CAM"])
    assert isinstance(board.widget, ipywidgets.VBox)
    assert board.target == 285 and board.selected_methods() == ["Grad-CAM"]
    with pytest.raises(ValueError, match="unknown method"):
        xh.dashboard(lite0, methods=["Not a method"])


def test_any_error_of_a_method_is_shown_not_raised(lite0, monkeypatch):
    board = xh.Dashboard(lite0, image="coffee", methods=["Grad-CAM", "Grad-CAM++"])
    entry = xh.METHODS["Grad-CAM++"]

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(entry.__dict__, "function", out_of_memory)  # a frozen dataclass: patch its field
    board.quick_pick.value = board.quick_pick.options[1][1]  # a new class: both are recomputed
    caption = board.panels["Grad-CAM++"][1].value
    assert "RuntimeError: CUDA out of memory" in caption and "Traceback" not in caption
    assert " ms" in board.panels["Grad-CAM"][1].value  # the other method still works
    assert isinstance(board.results["Grad-CAM++"], RuntimeError)


def test_unexpected_error_while_loading_is_shown(lite0, monkeypatch):
    board = xh.Dashboard(lite0, image="coffee", methods=["Grad-CAM"])
    before = board.image_key
    monkeypatch.setattr(board.state.loaded, "predict", lambda *a, **k: (_ for _ in ()).throw(MemoryError("no room")))
    board.image_picker.value = "chelsea"
    assert "Something went wrong" in board.message.value and "MemoryError: no room" in board.message.value
    assert board.image_key == before


def test_state_works_without_widgets(lite0):
    from xai_helpers.ui.dashboard import DashboardState, Result

    state = DashboardState(lite0, methods=["Grad-CAM", "CAM"])
    assert state.selected == ["CAM", "Grad-CAM"]  # registry order
    state.set_image("chelsea", "chelsea")
    assert state.target == 285 and state.top5[0][1] == "Egyptian cat"
    results = state.refresh()
    assert set(results) == {"CAM", "Grad-CAM"} and all(isinstance(r, Result) for r in results.values())
    x = lite0.preprocess("chelsea")
    torch.testing.assert_close(results["CAM"].heat, xh.cam(lite0.model, x, lite0.target_layer, target=285)[0])
    state.set_layer("stage5")
    results = state.refresh()
    assert isinstance(results["CAM"], ValueError) and "global average pooling" in state.caption("CAM")
    assert isinstance(results["Grad-CAM"], Result)
    with pytest.raises(ValueError, match="unknown layer 'nope'; choose from stem"):
        state.set_layer("nope")
    with pytest.raises(ValueError, match="out of range; valid classes are 0..999"):
        state.set_target(1000)
    with pytest.raises(ValueError, match="unknown method"):
        state.select(["Grad-CAM", "Nope"])
    with pytest.raises(ValueError, match="not a readable image"):
        state.set_image(b"not an image", "bad")
    assert state.image_key == "chelsea"  # nothing was lost


def test_baselines_hidden_until_shown_and_measured_on_demand(lite0):
    board = xh.Dashboard(lite0, image="chelsea", methods=["Grad-CAM"])
    baselines = [name for name, m in xh.METHODS.items() if m.baseline]
    assert all(board.method_boxes[name].layout.display == "none" for name in baselines)
    assert board.method_boxes["Grad-CAM"].layout.display != "none"
    board.baselines_toggle.value = True
    assert board.selected_methods() == ["Grad-CAM", *baselines]
    assert all(board.method_boxes[name].layout.display != "none" and board.method_boxes[name].value for name in baselines)
    assert len(board.grid.children) == 2 + len(baselines)
    assert "deletion AUC" not in board.panels["Grad-CAM"][1].value  # not measured yet
    progress = []
    board.state.measure(lambda done, total: progress.append((done, total)))
    board.draw()
    assert progress[-1][0] == progress[-1][1] > 0
    x = lite0.preprocess("chelsea")
    for name in ("Grad-CAM", *baselines):
        heat = board.cache[("chelsea", 285, "head", name)].heat
        expected = xh.metrics.auc(xh.metrics.deletion_insertion_curves(lite0.model, x, heat[None], 285, step=-(-224 * 224 // 14)))
        assert board.results[name].deletion_auc == pytest.approx(float(expected[0]), abs=1e-6)
        assert f"deletion AUC {board.results[name].deletion_auc:.3f}" in board.panels[name][1].value
    # Scattered random pixels wreck the photo's texture, so random deletion "wins" on deletion AUC
    # (lesson 06 shows why ROAD imputes instead), while keeping Grad-CAM's top half keeps the cat.
    assert board.results[baselines[0]].deletion_auc < board.results["Grad-CAM"].deletion_auc
    assert board.results["Grad-CAM"].faithfulness > 0.5 > board.results[baselines[0]].faithfulness
    board.measure_button.click()  # nothing left to measure: no error, nothing recomputed
    assert board.message.value == ""
    board.baselines_toggle.value = False
    assert board.selected_methods() == ["Grad-CAM"] and len(board.grid.children) == 2


def test_first_view_differs_and_says_why_the_cam_family_agrees(board):
    # Not three members of the CAM family, which agree on this GAP -> Linear head by construction.
    families = [xh.METHODS[m].family for m in board.selected_methods()]
    assert families.count("activation map") == 1 and len(set(families)) >= 2
    assert "same map by construction" in board.note.value and "head" in board.note.value
    board.layer.value = "stage5"
    assert "CAM cannot run here" in board.note.value
    board.layer.value = "head"
    heats = [r.heat for r in board.results.values()]
    for i in range(len(heats)):
        for j in range(i + 1, len(heats)):
            assert torch.corrcoef(torch.stack([heats[i].flatten(), heats[j].flatten()]))[0, 1] < 0.9  # they differ


def test_signed_maps_toggle_redraws_signed_methods_only(board, monkeypatch):
    signed = [m for m in board.selected_methods() if xh.METHODS[m].signed]
    unsigned = [m for m in board.selected_methods() if not xh.METHODS[m].signed]
    assert signed and unsigned
    calls = []
    monkeypatch.setattr(xh.Method, "raw", lambda *a, **k: calls.append(1))
    before = overlay_images(board)
    board.signed_toggle.value = True
    after = overlay_images(board)
    assert calls == []  # a re-draw, no recomputation
    assert all(after[m] != before[m] for m in signed) and all(after[m] == before[m] for m in unsigned)
    raw = board.results[signed[0]].raw
    assert raw is not None and (raw < 0).any() and (raw > 0).any()


def test_the_measure_button_label_is_not_cut(board):
    assert board.measure_button.layout.width == "auto"


def test_smoothing_toggles_apply_to_the_methods_that_have_the_setting(lite0, monkeypatch):
    board = xh.Dashboard(lite0, image="chelsea", methods=["Grad-CAM", "EigenCAM", "Saliency"])
    x, layer = lite0.preprocess("chelsea"), lite0.target_layer
    plain = {m: board.results[m].heat for m in board.selected_methods()}
    board.smoothing_toggles["aug_smooth"].value = True
    torch.testing.assert_close(board.results["Grad-CAM"].heat, xh.grad_cam(lite0.model, x, layer, 285, aug_smooth=True)[0])
    torch.testing.assert_close(board.results["EigenCAM"].heat, xh.eigen_cam(lite0.model, x, layer, 285, aug_smooth=True)[0])
    assert torch.equal(board.results["Saliency"].heat, plain["Saliency"])  # no such setting: unchanged
    assert "<b>Grad-CAM</b> · aug_smooth:" in board.panels["Grad-CAM"][1].value
    assert "aug_smooth" not in board.panels["Saliency"][1].value
    board.smoothing_toggles["eigen_smooth"].value = True
    torch.testing.assert_close(board.results["Grad-CAM"].heat,
                               xh.grad_cam(lite0.model, x, layer, 285, aug_smooth=True, eigen_smooth=True)[0])
    assert "· aug_smooth · eigen_smooth:" in board.panels["Grad-CAM"][1].value
    assert "eigen_smooth" not in board.panels["EigenCAM"][1].value  # EigenCAM is a principal component already
    calls = []
    monkeypatch.setattr(xh.Method, "raw", lambda *a, **k: calls.append(1))
    board.smoothing_toggles["eigen_smooth"].value = False
    board.smoothing_toggles["aug_smooth"].value = False
    assert calls == [] and board.message.value == ""  # both views were computed before: taken from the cache
    assert all(torch.equal(board.results[m].heat, plain[m]) for m in plain)


def test_smoothing_settings_refuse_bad_values(lite0):
    from xai_helpers.ui.dashboard import DashboardState

    state = DashboardState(lite0, methods=["Grad-CAM"])
    with pytest.raises(ValueError, match="unknown smoothing setting 'blur'; choose from aug_smooth, eigen_smooth"):
        state.set_smoothing("blur", True)
    with pytest.raises(ValueError, match="aug_smooth must be True or False"):
        state.set_smoothing("aug_smooth", "yes")
    assert state.smoothing == {"aug_smooth": False, "eigen_smooth": False}
