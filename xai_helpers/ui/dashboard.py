"""A dashboard that puts the registered methods side by side.

    import xai_helpers as xh
    xh.dashboard()          # in JupyterLab, or served with `voila`

Pick a sample photo or upload your own, a target class (top-5 quick picks or
a search over all 1000 names), the methods and the layer. Each overlay shows
its run time and a faithfulness figure: the model's confidence in the class
when only the map's top 50% of pixels are kept, relative to the full photo.
"Measure deletion AUC" adds, under every overlay, the area under the map's
deletion curve (lesson 06; 15 points, one progress bar for all maps).
"Show baselines" adds the registry's null baselines (random, centre, edges,
all ones), so each figure can be read against chance. "signed maps" draws
the methods whose raw output is signed as signed (orange for the class,
purple against, on a greyscale photo) instead of as heatmaps.

It opens with the registry's ``default`` entries, fast methods whose maps
differ (Grad-CAM, Saliency, DeepLIFT), not three members of the CAM family;
a note under the title says when the CAM family agrees by construction (a
layer pooled straight into the final Linear layer, where CAM equals Grad-CAM).

Two parts:

* :class:`DashboardState` holds the photo, the class, the layer, the cache and
  the computation, with no widget in sight, so it is tested on its own;
* :class:`Dashboard` is the thin ipywidgets view over it.

The methods come from the registry (``xai_helpers.methods.METHODS``). Those
marked ``default`` are ticked at the start; expensive ones (Score-CAM) are one
click away and show a progress bar. Heatmaps are cached per (image, target,
layer, method), so changing the opacity or the colormap only re-draws. Any
error, from a bad upload to a method that runs out of memory, is shown in the
dashboard, and the previous state stays usable.
"""

from __future__ import annotations

import hashlib
import html
import io
import time
from dataclasses import dataclass
from numbers import Integral
from typing import Callable

import numpy as np
import torch

from ..course.images import SAMPLES, load_image
from ..course.model import LoadedModel, load_model
from ..engine.inputs import flag
from ..methods import METHODS, SMOOTHING, find_gap_linear
from ..metrics import auc, confidence_kept, faithfulness
from .figures import SAFE_CMAPS, overlay, signed_overlay

__all__ = ["Dashboard", "DashboardState", "Result", "dashboard", "MAX_SIDE"]

# Uploaded photos larger than this (in pixels, longest side) are shrunk first:
# the model sees 224 x 224 anyway, and overlays of huge photos are slow to draw.
MAX_SIDE = 1024
DISPLAY_SIDE = 520  # twice the panel width, sharp on high-density screens
PANEL_WIDTH = "260px"
# Deletion curves with 15 points at 224 x 224 (16 rows of pixels a step); lesson 06 uses 7 (225 with
# FULL = True, the paper's 224-pixel steps).
DELETION_POINTS = 15


@dataclass
class Result:
    heat: torch.Tensor  # (H, W) in [0, 1], on the CPU
    seconds: float
    faithfulness: float  # confidence with the top 50% kept, relative to the photo
    deletion_auc: float | None = None  # measured on demand (DashboardState.measure)
    raw: torch.Tensor | None = None  # the signed attribution of a signed method, on the CPU


def describe_error(error: BaseException) -> str:
    """One line for the UI: the message, prefixed by the kind unless it is a plain ValueError."""
    text = str(error) or type(error).__name__
    if isinstance(error, (ValueError, FileNotFoundError)):
        return text
    return f"{type(error).__name__}: {text}"


class DashboardState:
    """Everything the dashboard knows and computes, without widgets.

    ``methods`` are the names ticked at the start (default: the registry's
    ``default`` entries). Methods are looked up in ``METHODS`` when they run,
    so an entry registered later shows up in a new dashboard.
    """

    def __init__(self, loaded: LoadedModel | None = None, methods=None):
        self.show_baselines = False
        self.smoothing = dict.fromkeys(SMOOTHING, False)  # pytorch-grad-cam's settings, for the methods that have them
        if methods is None:
            methods = [name for name, entry in METHODS.items() if entry.default]
        methods = list(methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        self.loaded = loaded or load_model()
        self.methods = list(METHODS)  # every method the view offers, in registry order
        self.selected = [m for m in self.methods if m in methods]
        self.cache: dict[tuple, Result] = {}
        self.image = None
        self.shown = None
        self.image_key = None
        self.x = None
        self.top5: list[tuple[int, str, float]] = []
        self.target: int | None = None
        self.layer_names = list(self.loaded.layers) or ["target layer"]
        self.layer_name = next(
            (n for n, mod in self.loaded.layers.items() if mod is self.loaded.target_layer), self.layer_names[-1]
        )
        self.results: dict[str, Result | BaseException] = {}
        self._notes: dict[tuple, str] = {}

    # --- inputs ---------------------------------------------------------------
    def set_image(self, source, key: str) -> None:
        """Load a photo (anything ``load_image`` takes) and predict; the state changes only if all of it works."""
        image = load_image(source)
        if max(image.size) > MAX_SIDE:
            image = image.copy()
            image.thumbnail((MAX_SIDE, MAX_SIDE))
        x = self.loaded.preprocess(image)
        top5 = self.loaded.predict(x, k=5)
        # Only now, with everything valid, replace the state.
        self.image, self.image_key, self.x, self.top5 = image, key, x, top5
        # Overlays are drawn at display size: blending and encoding a
        # full-size photo would make every redraw slow.
        self.shown = image.copy()
        self.shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        self.cache = {k: v for k, v in self.cache.items() if k[0] == key}
        self.target = top5[0][0]

    def set_target(self, target: int) -> None:
        classes = len(self.loaded.categories)
        if isinstance(target, (bool, np.bool_)) or not isinstance(target, Integral):
            raise ValueError(f"the class must be an integer index 0..{classes - 1}, got {type(target).__name__}")
        if not 0 <= int(target) < classes:
            raise ValueError(f"class {int(target)} is out of range; valid classes are 0..{classes - 1}")
        self.target = int(target)

    def set_layer(self, name: str) -> None:
        if name not in self.layer_names:
            raise ValueError(f"unknown layer {name!r}; choose from {', '.join(self.layer_names)}")
        self.layer_name = name

    def set_smoothing(self, setting: str, on: bool) -> None:
        """Turn ``aug_smooth`` or ``eigen_smooth`` on or off for every shown method that has it (lesson 11, section 10)."""
        if setting not in SMOOTHING:
            raise ValueError(f"unknown smoothing setting {setting!r}; choose from {', '.join(SMOOTHING)}")
        self.smoothing[setting] = flag(setting, on)

    def settings_of(self, method: str) -> dict:
        """The smoothing settings that are on and that ``method`` has, e.g. ``{"aug_smooth": True}``."""
        return {s: True for s, on in self.smoothing.items() if on and s in METHODS[method].smoothing}

    def select(self, names) -> None:
        unknown = [m for m in names if m not in self.methods]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {self.methods}")
        self.selected = [m for m in self.methods if m in names]

    # --- computation ----------------------------------------------------------
    def compute(self, method: str, progress: Callable[[int, int], None] | None = None) -> Result:
        """The heatmap of ``method`` for the current image, target and layer (cached)."""
        smoothing = self.settings_of(method)
        key = (self.image_key, self.target, self.layer_name, method) + ((tuple(smoothing),) if smoothing else ())
        if key not in self.cache:
            entry = METHODS[method]
            layer = self.loaded.layers.get(self.layer_name, self.loaded.target_layer)
            settings = {"progress": progress} if entry.reports_progress and progress is not None else {}
            settings.update(smoothing)
            start = time.perf_counter()
            raw = entry.raw(self.loaded.model, self.x, layer, target=self.target, **settings)
            heat = entry.heatmap_of(raw)
            seconds = time.perf_counter() - start
            faithful = float(confidence_kept(self.loaded.model, self.x, heat, self.target)[0])
            self.cache[key] = Result(heat[0].cpu(), seconds, faithful, raw=raw[0].detach().cpu() if entry.signed else None)
        return self.cache[key]

    def family_note(self) -> str:
        """One sentence on whether the CAM family agrees by construction at the current layer."""
        key = (self.image_key, self.layer_name)
        if key not in self._notes:
            layer = self.loaded.layers.get(self.layer_name, self.loaded.target_layer)
            try:
                find_gap_linear(self.loaded.model, self.x, layer)
                pooled = True
            except ValueError:
                pooled = False
            self._notes[key] = (
                f"At the layer <b>{html.escape(self.layer_name)}</b> the model pools the map straight into its final "
                "Linear layer, so CAM and Grad-CAM give the same map by construction (lesson 02), and "
                "Grad-CAM++ nearly so unless some channels have negative gradients (lesson 03): the first view "
                "shows methods that differ instead."
                if pooled else
                f"At the layer <b>{html.escape(self.layer_name)}</b> the head is not global average pooling into one "
                "Linear layer: CAM cannot run here, and the CAM family's maps may differ."
            )
        return self._notes[key]

    def refresh(self, before=None, progress_for=None) -> dict[str, Result | BaseException]:
        """Compute every selected method; a method's error becomes its result, never an exception.

        ``before(method)`` is called before each computation (for a status
        line); ``progress_for(method)`` gives the progress callback for it.
        """
        results: dict[str, Result | BaseException] = {}
        if self.image is None or self.target is None:
            self.results = results
            return results
        for method in self.selected:
            if before is not None:
                before(method)
            try:
                results[method] = self.compute(method, progress_for(method) if progress_for else None)
            except Exception as error:  # noqa: BLE001 - shown in the panel: out of memory, a bad layer, a bug
                results[method] = error
        self.results = results
        return results

    def offered(self) -> list[str]:
        """The methods the view lists: all of them, the null baselines only when shown."""
        return [m for m in self.methods if self.show_baselines or not METHODS[m].baseline]

    def set_show_baselines(self, show: bool) -> None:
        """Show the null baselines, ticked; hiding them unticks them."""
        self.show_baselines = bool(show)
        baselines = [m for m in self.methods if METHODS[m].baseline]
        keep = [m for m in self.selected if m not in baselines]
        self.select(keep + baselines if self.show_baselines else keep)

    def measure(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Deletion AUC of every shown map that has none yet, in one set of shared passes.

        The same curve as lesson 06: pixels removed to 0 in the model's input space
        (the "mean" reference: mid-grey for this package's EfficientNet), most
        relevant first, in DELETION_POINTS points; the probability of the class.
        """
        todo = {m: r for m, r in self.results.items() if isinstance(r, Result) and r.deletion_auc is None}
        if not todo:
            return
        h, w = self.x.shape[-2:]
        step = -(-h * w // (DELETION_POINTS - 1))
        maps = {m: r.heat[None].to(self.x.device) for m, r in todo.items()}
        found = faithfulness(self.loaded.model, self.x, maps, self.target, metrics=("deletion",), step=step,
                             progress=progress or False)
        for m, r in todo.items():
            r.deletion_auc = float(auc(found[m]["deletion"])[0])

    def caption(self, method: str) -> str:
        """The HTML caption under a method's panel."""
        result = self.results.get(method)
        label = html.escape(self.loaded.categories[self.target]) if self.target is not None else ""
        if isinstance(result, Result):
            deletion = "" if result.deletion_auc is None else f"<br>deletion AUC {result.deletion_auc:.3f} (lower is better)"
            smoothing = "".join(f" · {s}" for s in self.settings_of(method))
            return (
                f"<b>{html.escape(method)}</b>{smoothing}: {label}<br>{result.seconds * 1000:.0f} ms · "
                f"confidence with top 50% kept: {result.faithfulness:.0%}{deletion}"
            )
        if result is None:
            return f"<b>{html.escape(method)}</b>"
        return (
            f"<b>{html.escape(method)}</b><br><span class='xh-error' style='color:#b00020'>"
            f"{html.escape(describe_error(result))}</span>"
        )


def _jpeg(image) -> bytes:
    # JPEG, not PNG: encoding is ~25x faster, which keeps a redraw of four
    # overlays well under 100 ms.
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Dashboard:
    """The comparison dashboard's view. ``Dashboard().widget`` is the root widget; the
    object displays itself in a notebook. ``.state`` is its :class:`DashboardState`."""

    def __init__(self, loaded: LoadedModel | None = None, image: str = "chelsea", methods=None):
        import ipywidgets as w

        self.state = DashboardState(loaded, methods)
        self.renders = 0
        self._busy = False
        state = self.state

        names = [f"{i}: {name}" for i, name in enumerate(state.loaded.categories)]
        self._class_by_label = {label: i for i, label in enumerate(names)}

        self.image_picker = w.Dropdown(options=SAMPLES, value=image if image in SAMPLES else None, description="Photo")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload your own")
        self.predictions = w.HTML()
        self.quick_pick = w.ToggleButtons(options=[], description="Explain", style={"button_width": "auto"})
        self.search = w.Combobox(
            options=names, placeholder="search all 1000 classes", ensure_option=True, description="Class"
        )
        self.method_boxes = {
            name: w.Checkbox(
                value=name in state.selected,
                description=name if METHODS[name].fast else f"{name} (slow)",
                tooltip=f"{METHODS[name].summary} ({METHODS[name].paper.authors} {METHODS[name].paper.year}; "
                        f"cost: {METHODS[name].cost})",
                indent=False,
                layout={} if name in state.offered() else {"display": "none"},
            )
            for name in state.methods
        }
        self.baselines_toggle = w.Checkbox(value=False, description="show baselines", indent=False,
                                           tooltip="add the null baselines: what chance scores")
        self.measure_button = w.Button(description="Measure deletion AUC", icon="line-chart",
                                       tooltip="the deletion curve of every shown map (15 passes each)",
                                       layout={"width": "auto"})
        self.signed_toggle = w.Checkbox(value=False, description="signed maps", indent=False,
                                        tooltip="draw signed attributions as signed: orange for the class, purple against")
        self.smoothing_toggles = {
            "aug_smooth": w.Checkbox(value=False, description="aug_smooth", indent=False,
                                     tooltip="each CAM averaged over 6 copies of the photo, flipped or not, values x 0.9, 1, 1.1 (6x the "
                                             "cost); nicer, not more faithful: lesson 11, section 10"),
            "eigen_smooth": w.Checkbox(value=False, description="eigen_smooth", indent=False,
                                       tooltip="the first principal component of the CAM's channel terms instead of "
                                               "their sum; nicer, not more faithful: lesson 11, section 10"),
        }
        self.note = w.HTML()
        self.layer = w.Dropdown(options=state.layer_names, value=state.layer_name, description="Layer")
        self.alpha = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="Opacity", continuous_update=False)
        self.cmap = w.Dropdown(options=list(SAFE_CMAPS), value="viridis", description="Colormap")
        self.message = w.HTML()
        self.status = w.HTML()
        self.progress = w.IntProgress(value=0, min=0, max=1, description="", layout={"visibility": "hidden"})
        self.original = w.Image(format="jpeg", layout={"width": PANEL_WIDTH})
        self.original_caption = w.HTML()
        self.panels = {name: (w.Image(format="jpeg", layout={"width": PANEL_WIDTH}), w.HTML()) for name in state.methods}
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
                w.HBox(list(self.method_boxes.values()), layout={"flex_flow": "row wrap"}),
                w.HBox([self.baselines_toggle, self.signed_toggle, self.measure_button]),
                w.HBox([w.HTML("pytorch-grad-cam's smoothing (CAM family):&nbsp;"), *self.smoothing_toggles.values()]),
                w.HBox([self.layer, self.alpha, self.cmap]),
                w.HBox([self.progress, self.status]),
                self.message,
            ]
        )
        self.widget = w.VBox([w.HTML("<h3>Compare explanation methods</h3>"), self.note, controls, self.grid])

        self.image_picker.observe(self._on_sample, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.quick_pick.observe(self._on_quick_pick, names="value")
        self.search.observe(self._on_search, names="value")
        for checkbox in self.method_boxes.values():
            checkbox.observe(self._on_methods, names="value")
        self.baselines_toggle.observe(self._on_baselines, names="value")
        self.measure_button.on_click(lambda _: self._guard(self.measure))
        self.layer.observe(self._on_layer, names="value")
        self.alpha.observe(self._on_style, names="value")
        self.cmap.observe(self._on_style, names="value")
        self.signed_toggle.observe(self._on_style, names="value")
        for setting, toggle in self.smoothing_toggles.items():
            toggle.observe(lambda change, setting=setting: self._guard(self._apply_smoothing, setting, change["new"]),
                           names="value")

        if self.image_picker.value:
            self._guard(self._load, self.image_picker.value, self.image_picker.value)

    # --- convenience views of the state (read-only) ----------------------------
    loaded = property(lambda self: self.state.loaded)
    cache = property(lambda self: self.state.cache)
    image = property(lambda self: self.state.image)
    image_key = property(lambda self: self.state.image_key)
    target = property(lambda self: self.state.target)
    results = property(lambda self: self.state.results)

    def selected_methods(self) -> list[str]:
        return list(self.state.selected)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # --- actions --------------------------------------------------------------
    def _guard(self, fn, *args):
        """Run an action; show any error in the UI and keep the previous state."""
        try:
            self.message.value = ""
            fn(*args)
        except Exception as error:  # noqa: BLE001 - the page must say what went wrong, not go silent
            kind = "Could not use that input" if isinstance(error, (ValueError, FileNotFoundError)) else "Something went wrong"
            self.message.value = (
                f'<div class="xh-error" style="color:#b00020"><b>{kind}:</b> {html.escape(describe_error(error))}</div>'
            )

    def _load(self, source, key: str) -> None:
        self.state.set_image(source, key)
        self.original.value = _jpeg(self.state.shown)
        rows = "".join(
            f"<tr><td>{rank}.</td><td>{html.escape(name)}</td><td>{p:.1%}</td></tr>"
            for rank, (_, name, p) in enumerate(self.state.top5, start=1)
        )
        self.predictions.value = f"<b>Top-5 predictions</b><table>{rows}</table>"
        self._busy = True
        try:
            self.quick_pick.options = [(f"{name} ({p:.0%})", index) for index, name, p in self.state.top5]
            self.quick_pick.value = self.state.target
        finally:
            self._busy = False
        self.refresh()

    def set_target(self, target: int) -> None:
        self.state.set_target(target)
        self.refresh()

    def _progress_for(self, method: str):
        def update(done: int, total: int) -> None:
            self.progress.max = max(total, 1)
            self.progress.value = done

        self.progress.description = method
        return update

    def _before(self, method: str) -> None:
        self.status.value = f"computing {html.escape(method)}…"
        if METHODS[method].reports_progress:
            self.progress.value = 0
            self.progress.layout.visibility = "visible"

    def refresh(self) -> None:
        """Compute what is missing, then draw."""
        try:
            self.state.refresh(before=self._before, progress_for=self._progress_for)
        finally:
            self.status.value = ""
            self.progress.layout.visibility = "hidden"
        self.draw()

    def draw(self) -> None:
        """Re-draw the overlays of the last results (no model calls)."""
        state = self.state
        if state.image is None:
            return
        self.original_caption.value = f"<b>original</b><br>{state.image.width}×{state.image.height}"
        self.note.value = f"<i>{state.family_note()}</i>"
        children = [self.original_box]
        for method, result in state.results.items():
            image_widget, caption = self.panels[method]
            if isinstance(result, Result) and self.signed_toggle.value and result.raw is not None:
                image_widget.value = _jpeg(signed_overlay(state.shown, result.raw))
            elif isinstance(result, Result):
                image_widget.value = _jpeg(overlay(state.shown, result.heat, self.alpha.value, self.cmap.value))
            else:
                image_widget.value = _jpeg(state.shown)
            caption.value = state.caption(method)
            children.append(self.panel_boxes[method])
        if tuple(self.grid.children) != tuple(children):
            self.grid.children = children
        self.renders += 1

    # --- widget callbacks -------------------------------------------------------
    def _on_sample(self, change):
        if change["new"]:
            self._guard(self._load, change["new"], change["new"])

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
            self._load(content, key)
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

    def _on_methods(self, change):
        if not self._busy:
            self._guard(self._apply_methods)

    def _on_baselines(self, change):
        self._guard(self._apply_baselines, change["new"])

    def _apply_baselines(self, show: bool) -> None:
        self.state.set_show_baselines(show)
        offered = set(self.state.offered())
        self._busy = True
        try:
            for name, box in self.method_boxes.items():
                box.layout.display = None if name in offered else "none"
                box.value = name in self.state.selected
        finally:
            self._busy = False
        self.refresh()

    def _apply_smoothing(self, setting: str, on: bool) -> None:
        self.state.set_smoothing(setting, on)
        self.refresh()

    def measure(self) -> None:
        """Deletion AUC under every overlay, with the progress bar."""
        self.progress.value = 0
        self.progress.layout.visibility = "visible"
        self.status.value = "measuring deletion curves…"
        try:
            self.state.measure(self._progress_for("deletion"))
        finally:
            self.status.value = ""
            self.progress.layout.visibility = "hidden"
        self.draw()

    def _apply_methods(self):
        self.state.select([name for name, box in self.method_boxes.items() if box.value])
        self.refresh()

    def _on_layer(self, change):
        self._guard(self._apply_layer, change["new"])

    def _apply_layer(self, name):
        self.state.set_layer(name)
        self.refresh()

    def _on_style(self, change):
        if self.state.image is not None and self.state.target is not None:
            self._guard(self.draw)


def dashboard(loaded: LoadedModel | None = None, image: str = "chelsea", methods=None) -> Dashboard:
    """Build the comparison dashboard (display it by leaving it last in a cell).

    Args:
        loaded: the model (default: ``load_model()``).
        image: the sample photo shown first.
        methods: the methods ticked at the start (default: the registry's
            ``default`` ones, Grad-CAM, Saliency and DeepLIFT: fast methods whose
            maps differ, only one of them from the CAM family; the others are one
            click away).
    """
    return Dashboard(loaded, image, methods)
