"""Sample images, overlays, figures and the command line."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xai_helpers as xh
from xai_helpers.ui.cli import main
from xai_helpers.ui.figures import signed_limit, signed_map

ROOT = Path(__file__).resolve().parent.parent


def test_samples_listed_and_loadable():
    photos = {"chelsea", "coffee", "astronaut", "rocket", "china", "flower", "grace_hopper", "camera"}
    assert photos | {"cat_and_coffee", "two_cats"} <= set(xh.SAMPLES)
    for name in xh.SAMPLES:
        img = xh.load_image(name)
        assert img.mode == "RGB" and min(img.size) >= 200


def test_every_sample_has_source_and_licence():
    readme = (ROOT / "data" / "README.md").read_text()
    for name in xh.SAMPLES:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{name}")), None)
        assert row is not None, f"data/README.md has no row for {name}"
        assert re.search(r"CC0|public domain|CC BY|Apache|derived", row, re.I), row


def test_load_image_sources(tmp_path):
    path = xh.sample_path("coffee")
    from_name = xh.load_image("coffee")
    for source in (path, str(path), path.read_bytes(), Image.open(path)):
        assert np.array_equal(np.asarray(xh.load_image(source)), np.asarray(from_name))


def test_overlay_at_photo_size():
    photo = xh.load_image("chelsea")
    heat = torch.zeros(7, 7)
    heat[0, 0] = 1.0
    out = xh.overlay(photo, heat, alpha=1.0, cmap="viridis")
    assert out.size == photo.size and out.mode == "RGB"
    # alpha=1: pure colormap; the top-left is yellow (viridis(1)), the bottom-right dark purple (viridis(0)).
    top_left, bottom_right = np.asarray(out)[0, 0], np.asarray(out)[-1, -1]
    assert top_left[0] > 200 and top_left[1] > 200 and top_left[2] < 80
    assert tuple(bottom_right) == (68, 1, 84)
    assert np.array_equal(np.asarray(xh.overlay(photo, heat, alpha=0.0)), np.asarray(photo))


def test_overlay_errors():
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        xh.overlay("chelsea", torch.zeros(4, 4), alpha=1.5)
    with pytest.raises(ValueError, match="colour-blind-safe choices are viridis"):
        xh.overlay("chelsea", torch.zeros(4, 4), cmap="no-such-map")
    with pytest.raises(ValueError, match=r"index the batch, e\.g\. heat\[0\]"):
        xh.overlay("chelsea", torch.zeros(2, 4, 4))


def test_plot_overlays_has_colourbar_and_titles():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heats = {"Grad-CAM": torch.rand(8, 8), "CAM": torch.rand(8, 8)}
    fig = xh.plot_overlays("chelsea", heats, subtitles={"CAM": "Egyptian cat (77.3%)"}, title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert "original" in titles and "Grad-CAM" in titles and "CAM\nEgyptian cat (77.3%)" in titles
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    plt.close(fig)


def test_signed_map_sums_colour_channels_and_refuses_what_it_cannot_draw():
    a = torch.arange(12.0).reshape(3, 2, 2) - 6  # channel sums: (-6-2+2, -5-1+3, -4+0+4, -3+1+5) = (-6, -3, 0, 3)
    expected = np.array([[-6.0, -3.0], [0.0, 3.0]])
    assert np.array_equal(signed_map(a), expected) and np.array_equal(signed_map(a[None]), expected)
    assert signed_map(a).dtype == np.float64
    with pytest.raises(ValueError, match=r"index the batch, e\.g\. raw\[0\]"):
        signed_map(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        signed_map(torch.tensor([[0.0, float("nan")]]))


def test_signed_limit_is_the_percentile_of_the_magnitude():
    a = np.concatenate([np.linspace(-1, 1, 101), [50.0]])  # one outlier
    assert signed_limit(a, 100) == 50.0
    assert signed_limit(a, 50) == pytest.approx(np.percentile(np.abs(a), 50))
    assert signed_limit(np.zeros((3, 3))) == 1.0  # nothing to scale: any limit draws all zeros
    spike = np.zeros((20, 20))
    spike[0, 0] = -2.0  # the 99th percentile of |a| is 0 here, so the maximum is used
    assert signed_limit(spike) == 2.0
    with pytest.raises(ValueError, match="clip must be a percentile"):
        signed_limit(a, 0)


def test_signed_overlay_colours_for_orange_against_purple_and_leaves_zero_alone():
    photo = Image.new("RGB", (40, 40), (90, 160, 30))
    a = np.zeros((40, 40))
    a[:, :10], a[:, 30:] = 1.0, -1.0
    out = np.asarray(xh.signed_overlay(photo, a, clip=100)).astype(int)
    grey = np.asarray(photo.convert("L").convert("RGB")).astype(int)
    assert np.array_equal(out[:, 15:25], grey[:, 15:25])  # zero: the greyscale photo, untouched
    for_, against = out[20, 2], out[20, 37]
    assert for_[0] > for_[2] + 60 and against[2] > against[0] + 15  # orange (red > blue) for, purple against
    # symmetric: the colour depends on the sign and |value| only, on a scale centred on zero
    flipped = np.asarray(xh.signed_overlay(photo, -a, clip=100)).astype(int)
    assert np.array_equal(flipped[:, :10], out[:, 30:]) and np.array_equal(flipped[:, 30:], out[:, :10])


def test_plot_signed_gives_each_map_a_symmetric_colourbar_clear_of_the_titles():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = {f"method {k}": torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(k)) * 10**-k for k in range(6)}
    fig = xh.plot_signed("chelsea", maps, units={"method 0": "logit"}, columns=3)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(bars) == 6 and [ax.get_title() for ax in panels] == list(maps)
    for bar, attribution in zip(bars, maps.values()):
        low, high = bar.get_ylim()
        v = signed_limit(signed_map(attribution))
        assert low == pytest.approx(-v) and high == pytest.approx(v)
    assert bars[0].get_ylabel().startswith("logit") and bars[1].get_ylabel().startswith("attribution")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [bar.yaxis.label.get_window_extent(renderer) for bar in bars]
    titles = [ax.title.get_window_extent(renderer) for ax in panels]
    others = [ax.get_window_extent(renderer) for ax in panels]
    for i, label in enumerate(labels):
        assert not any(label.overlaps(t) for t in titles), f"colourbar label {i} runs into a panel title"
        assert not any(label.overlaps(o) for j, o in enumerate(others) if j != i), f"label {i} covers a panel"
    plt.close(fig)


def test_cli_explain_all_methods(tmp_path, capsys, monkeypatch):
    from xai_helpers.ui import figures as visualize

    figures = []
    original = visualize.plot_overlays
    monkeypatch.setattr(visualize, "plot_overlays", lambda *a, **k: figures.append(original(*a, **k)) or figures[-1])
    out = tmp_path / "fig.png"
    assert main(["explain", "coffee", "--method", "all", "--baselines", "--preview", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1. espresso" in text
    for method in xh.METHODS:
        assert re.search(rf"{re.escape(method)}\s+\d+ ms", text), method
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_images()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["original", *xh.METHODS]
    assert Image.open(out).width > Image.open(out).height


def test_cli_all_leaves_the_baselines_out_unless_asked():
    from xai_helpers.ui.cli import chosen_methods

    methods = [m for m in xh.METHODS.values() if not m.baseline]
    baselines = [m for m in xh.METHODS.values() if m.baseline]
    assert len(baselines) == 4 and chosen_methods(["all"]) == methods
    assert chosen_methods(["all"], baselines=True) == methods + baselines
    assert chosen_methods(["cam", "random-baseline"], baselines=True) == [xh.METHODS["CAM"], *baselines]


def test_cli_runs_the_chosen_methods_only(tmp_path, capsys):
    assert main(["explain", "coffee", "--method", "cam", "--method", "saliency", "--out", str(tmp_path / "f.png")]) == 0
    text = capsys.readouterr().out
    assert re.search(r"CAM\s+\d+ ms", text) and re.search(r"Saliency\s+\d+ ms", text) and "Grad-CAM" not in text


def test_load_image_leaves_pillows_global_limit_alone(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    xh.load_image("chelsea")
    with pytest.raises(ValueError):
        xh.load_image(b"junk")
    assert Image.MAX_IMAGE_PIXELS == before
    Image.MAX_IMAGE_PIXELS = None  # a caller that switched Pillow's check off keeps it off
    try:
        xh.load_image("coffee")
        assert Image.MAX_IMAGE_PIXELS is None
    finally:
        Image.MAX_IMAGE_PIXELS = before


def test_cli_errors(capsys):
    assert main(["explain", "no_such_image", "--method", "cam"]) == 2
    assert "no image file at 'no_such_image'" in capsys.readouterr().err
    assert main(["explain", "coffee", "--method", "cam", "--target", "1000"]) == 2
    assert "valid classes are 0..999" in capsys.readouterr().err


def test_cli_as_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "xai_helpers", "explain", "chelsea", "--method", "grad-cam", "--target", "285",
         "--out", str(tmp_path / "cat.png")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "explaining class 285 'Egyptian cat'" in result.stdout and (tmp_path / "cat.png").is_file()
