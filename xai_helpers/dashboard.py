"""An ipywidgets dashboard that puts the four CAM methods side by side.

    import xai_helpers as xh
    xh.dashboard()          # in JupyterLab, or served with `voila`

Pick a sample photo or upload your own, a target class (top-5 quick picks or
a search over all 1000 names), the methods and the layer. Each overlay shows
its run time and a faithfulness figure: the model's confidence in the class
when only the map's top 50% of pixels are kept, relative to the full photo.

Heatmaps are cached per (image, target, layer, method), so changing the
opacity or the colormap only re-draws. Errors (an upload that is not an
image, say) are shown in the dashboard, and the previous state stays usable.
"""

from __future__ import annotations

import hashlib
import html
import io
import time
from dataclasses import dataclass

import torch

from . import METHODS
from .images import SAMPLES, load_image
from .metrics import confidence_kept
from .model import LoadedModel, load_model
from .visualize import SAFE_CMAPS, overlay

__all__ = ["Dashboard", "dashboard", "MAX_SIDE"]

# Uploaded photos larger than this (in pixels, longest side) are shrunk first:
# the model sees 224 x 224 anyway, and overlays of huge photos are slow to draw.
MAX_SIDE = 1024
DISPLAY_SIDE = 520  # twice the panel width, sharp on high-density screens
PANEL_WIDTH = "260px"


@dataclass
class Result:
    heat: torch.Tensor  # (H, W) in [0, 1], on the CPU
    seconds: float
    faithfulness: float


def _jpeg(image) -> bytes:
    # JPEG, not PNG: encoding is ~25x faster, which keeps a redraw of four
    # overlays well under 100 ms.
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Dashboard:
    """The comparison dashboard. ``Dashboard().widget`` is the root widget; the
    object displays itself in a notebook."""

    def __init__(self, loaded: LoadedModel | None = None, image: str = "chelsea", methods=None):
        import ipywidgets as w

        methods = list(METHODS) if methods is None else list(methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")

        self.loaded = loaded or load_model()
        self.cache: dict[tuple, Result] = {}
        self.image = None
        self.shown = None
        self.image_key = None
        self.x = None
        self.top5: list[tuple[int, str, float]] = []
        self.target: int | None = None
        self.results: dict = {}
        self.renders = 0
        self._busy = False

        names = [f"{i}: {name}" for i, name in enumerate(self.loaded.categories)]
        self._class_by_label = {label: i for i, label in enumerate(names)}
        layer_names = list(self.loaded.layers) or ["target layer"]
        default_layer = next(
            (n for n, mod in self.loaded.layers.items() if mod is self.loaded.target_layer), layer_names[-1]
        )

        self.image_picker = w.Dropdown(options=SAMPLES, value=image if image in SAMPLES else None, description="Photo")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload your own")
        self.predictions = w.HTML()
        self.quick_pick = w.ToggleButtons(options=[], description="Explain", style={"button_width": "auto"})
        self.search = w.Combobox(
            options=names, placeholder="search all 1000 classes", ensure_option=True, description="Class"
        )
        self.method_boxes = {name: w.Checkbox(value=name in methods, description=name, indent=False) for name in METHODS}
        self.layer = w.Dropdown(options=layer_names, value=default_layer, description="Layer")
        self.alpha = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="Opacity", continuous_update=False)
        self.cmap = w.Dropdown(options=list(SAFE_CMAPS), value="viridis", description="Colormap")
        self.message = w.HTML()
        self.status = w.HTML()
        self.progress = w.IntProgress(value=0, min=0, max=1, description="Score-CAM", layout={"visibility": "hidden"})
        self.original = w.Image(format="jpeg", layout={"width": PANEL_WIDTH})
        self.original_caption = w.HTML()
        self.panels = {name: (w.Image(format="jpeg", layout={"width": PANEL_WIDTH}), w.HTML()) for name in METHODS}
        box = {"width": PANEL_WIDTH, "margin": "4px"}
        self.original_box = w.VBox([self.original, self.original_caption], layout=box)
        self.panel_boxes = {name: w.VBox(list(parts), layout=box) for name, parts in self.panels.items()}
        self.grid = w.HBox(layout={"flex_flow": "row wrap"})

        controls = w.VBox(
            [
                w.HBox([self.image_picker, self.upload]),
                self.predictions,
                self.quick_pick,
                self.search,
                w.HBox(list(self.method_boxes.values())),
                w.HBox([self.layer, self.alpha, self.cmap]),
                w.HBox([self.progress, self.status]),
                self.message,
            ]
        )
        self.widget = w.VBox([w.HTML("<h3>Compare CAM methods</h3>"), controls, self.grid])

        self.image_picker.observe(self._on_sample, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.quick_pick.observe(self._on_quick_pick, names="value")
        self.search.observe(self._on_search, names="value")
        for box in self.method_boxes.values():
            box.observe(self._on_settings, names="value")
        self.layer.observe(self._on_settings, names="value")
        self.alpha.observe(self._on_style, names="value")
        self.cmap.observe(self._on_style, names="value")

        if self.image_picker.value:
            self._guard(self.set_image, self.image_picker.value, self.image_picker.value)

    # --- display -----------------------------------------------------------
    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # --- state changes -----------------------------------------------------
    def _guard(self, fn, *args):
        """Run a callback; show ValueError/FileNotFoundError in the UI, keep the previous state."""
        try:
            self.message.value = ""
            fn(*args)
        except (ValueError, FileNotFoundError) as error:
            self.message.value = (
                '<div class="xh-error" style="color:#b00020">'
                f"<b>Could not use that input:</b> {html.escape(str(error))}</div>"
            )

    def set_image(self, source, key: str) -> None:
        """Load a photo (anything ``load_image`` takes), predict, and explain its top-1 class."""
        image = load_image(source)
        if max(image.size) > MAX_SIDE:
            image = image.copy()
            image.thumbnail((MAX_SIDE, MAX_SIDE))
        x = self.loaded.preprocess(image)
        top5 = self.loaded.predict(x, k=5)
        # Only now, with everything valid, replace the state.
        self.image, self.image_key, self.x, self.top5 = image, key, x, top5
        # Overlays are drawn at display size: the panels are 260 px wide, and
        # blending and encoding a full-size photo would make every redraw slow.
        self.shown = image.copy()
        self.shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        self.cache = {k: v for k, v in self.cache.items() if k[0] == key}
        self.original.value = _jpeg(self.shown)
        rows = "".join(
            f"<tr><td>{rank}.</td><td>{html.escape(name)}</td><td>{p:.1%}</td></tr>"
            for rank, (_, name, p) in enumerate(top5, start=1)
        )
        self.predictions.value = f"<b>Top-5 predictions</b><table>{rows}</table>"
        self._busy = True
        try:
            self.quick_pick.options = [(f"{name} ({p:.0%})", index) for index, name, p in top5]
            self.quick_pick.value = top5[0][0]
        finally:
            self._busy = False
        self.set_target(top5[0][0])

    def set_target(self, target: int) -> None:
        if not 0 <= int(target) < len(self.loaded.categories):
            raise ValueError(f"class {target} is out of range; valid classes are 0..{len(self.loaded.categories) - 1}")
        self.target = int(target)
        self.refresh()

    def selected_methods(self) -> list[str]:
        return [name for name, box in self.method_boxes.items() if box.value]

    def compute(self, method: str) -> Result:
        """The heatmap of ``method`` for the current image, target and layer (cached)."""
        key = (self.image_key, self.target, self.layer.value, method)
        if key not in self.cache:
            layer = self.loaded.layers.get(self.layer.value, self.loaded.target_layer)
            kwargs = {}
            if method == "Score-CAM":
                kwargs["progress"] = self._progress
                self.progress.layout.visibility = "visible"
            start = time.perf_counter()
            try:
                heat = METHODS[method](self.loaded.model, self.x, layer, target=self.target, **kwargs)
            finally:
                self.progress.layout.visibility = "hidden"
            seconds = time.perf_counter() - start
            faithful = float(confidence_kept(self.loaded.model, self.x, heat, self.target)[0])
            self.cache[key] = Result(heat[0].cpu(), seconds, faithful)
        return self.cache[key]

    def _progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done

    def refresh(self) -> None:
        """Compute what is missing, then draw."""
        if self.image is None or self.target is None:
            return
        results = {}
        for method in self.selected_methods():
            self.status.value = f"computing {method}…"
            try:
                results[method] = self.compute(method)
            except ValueError as error:  # e.g. CAM on a layer that is not pooled
                results[method] = error
        self.status.value = ""
        self.results = results
        self.draw()

    def draw(self) -> None:
        """Re-draw the overlays of the last results (no model calls)."""
        results = self.results
        label = html.escape(self.loaded.categories[self.target])
        self.original_caption.value = f"<b>original</b><br>{self.image.width}×{self.image.height}"
        children = [self.original_box]
        for method, result in results.items():
            image_widget, caption = self.panels[method]
            if isinstance(result, Result):
                image_widget.value = _jpeg(overlay(self.shown, result.heat, self.alpha.value, self.cmap.value))
                caption.value = (
                    f"<b>{method}</b>: {label}<br>{result.seconds * 1000:.0f} ms · "
                    f"confidence with top 50% kept: {result.faithfulness:.0%}"
                )
            elif result is not None:
                image_widget.value = _jpeg(self.shown)
                caption.value = f"<b>{method}</b><br><span style='color:#b00020'>{html.escape(str(result))}</span>"
            children.append(self.panel_boxes[method])
        if tuple(self.grid.children) != tuple(children):
            self.grid.children = children
        self.renders += 1

    # --- widget callbacks --------------------------------------------------
    def _on_sample(self, change):
        if change["new"]:
            self._guard(self.set_image, change["new"], change["new"])

    def _on_upload(self, change):
        files = change["new"]
        if not files:
            return
        item = files[0]
        content = bytes(item["content"])
        key = "upload:" + hashlib.sha1(content).hexdigest()
        self._guard(self._set_upload, content, key, item.get("name", "upload"))

    def _set_upload(self, content: bytes, key: str, name: str) -> None:
        try:
            self.set_image(content, key)
        except ValueError as error:
            raise ValueError(f"{name!r}: {error}") from None
        self._busy = True
        try:
            self.image_picker.value = None
        finally:
            self._busy = False

    def _on_quick_pick(self, change):
        if change["new"] is not None and not self._busy:
            self._guard(self.set_target, change["new"])

    def _on_search(self, change):
        label = change["new"]
        if label in self._class_by_label:
            self._guard(self.set_target, self._class_by_label[label])

    def _on_settings(self, change):
        self._guard(self.refresh)

    def _on_style(self, change):
        if self.image is not None and self.target is not None:
            self._guard(self.draw)


def dashboard(loaded: LoadedModel | None = None, image: str = "chelsea", methods=None) -> Dashboard:
    """Build the comparison dashboard (display it by leaving it last in a cell).

    Args:
        loaded: the model (default: ``load_model()``).
        image: the sample photo shown first.
        methods: the methods ticked at the start (default: all four).
    """
    return Dashboard(loaded, image, methods)
