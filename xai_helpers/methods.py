"""The registry: every attribution method of the package, once.

The command line, the dashboard, the lessons and the tests read ``METHODS``;
nothing else lists methods or treats one by name.

The protocol
------------
A method is a :class:`Method` entry. Calling it returns the common heatmap::

    heat = METHODS["Grad-CAM"](model, x, layer, target=None, **settings)

* ``model``: any ``nn.Module``; its output goes through
  :func:`xai_helpers.core.select_output` (tensor, ``"logits"``/``"out"`` entry,
  ``.logits`` attribute, or first element of a tuple).
* ``x``: a float (N, C, H, W) batch on the model's device. It is not modified.
* ``layer``: the module to explain, for methods with ``needs_layer``; methods
  that work at the pixel take no layer and ignore one if given, so a caller
  can pass the same arguments to every entry.
* ``target``: None (each image's top-1), an int, N ints, or a callable
  ``f(output) -> (N,)`` score (see :mod:`xai_helpers.core`).
* ``settings``: the method's own keyword arguments (``reshape_transform`` for
  the layer methods, ``batch_size`` and ``progress`` for Score-CAM, ...).
* Returns a float32 (N, H, W) tensor in [0, 1] on the model's device, never
  NaN; a constant map is all zeros.
* Leaves the model as it found it: train/eval flags, hooks, parameters'
  ``.grad`` and ``requires_grad``, and the input.
* Raises ``ValueError`` with the problem and the valid choices on bad input.

``entry.function`` is the raw function with the same arguments: a heatmap
already for the CAM family, a signed attribution for the others, such as
Saliency's (N, C, H, W) gradient; ``entry.to_heatmap`` turns the raw output
into the heatmap, ``entry.raw(...)`` calls the function alone.

Adding a method
---------------
1. Write the raw function in the module of its family (``cam_method.py``,
   ``gradient_methods.py``, ``score_method.py``, ``pixel_gradients.py``, ...)
   with the signature above and the paper's equations in its docstring.
2. Add one :class:`Method` entry below (or call :func:`register` from your
   own code).
3. Add a test with values computed by hand on a tiny model
   (``tests/test_exact_values.py``). The generic tests (side effects, bad
   input, output contract), the command line and the dashboard pick the
   entry up from the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .cam_method import cam
from .gradient_methods import grad_cam, grad_cam_plus_plus
from .pixel_gradients import saliency, saliency_heatmap
from .score_method import score_cam

__all__ = ["Paper", "Method", "METHODS", "FAMILIES", "register", "unregister", "get_method", "by_slug"]

FAMILIES = ("activation map", "gradient", "perturbation", "surrogate")


@dataclass(frozen=True)
class Paper:
    authors: str
    year: int
    title: str
    url: str

    def __str__(self) -> str:
        return f"{self.authors} ({self.year}). {self.title}. {self.url}"


@dataclass(frozen=True, eq=False)
class Method:
    """One attribution method and what a caller needs to know about it.

    Attributes:
        name: display name, e.g. ``"Grad-CAM"``.
        slug: command-line name, e.g. ``"grad-cam"``.
        function: the raw function ``f(model, x, [layer,] target=None, **settings)``.
        paper: where it comes from.
        family: one of ``FAMILIES``.
        needs_layer: whether ``function`` takes a layer as its third argument.
        signed: whether the raw output has signed values (it then needs
            ``to_heatmap`` to become a heatmap).
        reports_progress: whether it accepts ``progress=`` (True or a
            ``progress(done, total)`` callback).
        needs_gradients: whether it backpropagates.
        cost: the cost in passes, as a formula of its settings (text).
        passes: ``passes(**sizes) -> (forward, backward)``, the same formula
            as numbers; Score-CAM needs ``channels=``.
        requirement: what the architecture must provide, or None.
        fast: about one pass: cheap enough to run as soon as a view opens.
        default: ticked when the dashboard opens.
        to_heatmap: raw output -> (N, H, W) in [0, 1]; None when the raw
            output already is that heatmap.
    """

    name: str
    slug: str
    function: Callable[..., torch.Tensor]
    paper: Paper
    family: str
    needs_layer: bool
    signed: bool
    reports_progress: bool
    needs_gradients: bool
    cost: str
    passes: Callable[..., tuple[int, int]]
    requirement: str | None = None
    fast: bool = True
    default: bool = True
    to_heatmap: Callable[[torch.Tensor], torch.Tensor] | None = None
    summary: str = field(default="")

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.signed and self.to_heatmap is None:
            raise ValueError(f"{self.name}: a method with signed raw output needs a to_heatmap")
        if not self.slug or self.slug != self.slug.lower() or " " in self.slug:
            raise ValueError(f"slug must be lower case without spaces, got {self.slug!r}")

    def _args(self, model, x, layer):
        if self.needs_layer:
            if layer is None:
                raise ValueError(f"{self.name} explains a layer: pass layer=, e.g. model.features[-1] or model.layer4")
            return (model, x, layer)
        return (model, x)

    def raw(self, model, x, layer=None, target=None, **settings) -> Any:
        """The raw output of ``function`` (signed attributions for signed methods)."""
        return self.function(*self._args(model, x, layer), target=target, **settings)

    def __call__(self, model, x, layer=None, target=None, **settings) -> torch.Tensor:
        """The (N, H, W) heatmap in [0, 1] (see the module's protocol)."""
        out = self.raw(model, x, layer, target, **settings)
        return out if self.to_heatmap is None else self.to_heatmap(out)

    def __repr__(self) -> str:
        return f"<Method {self.name!r} ({self.family}; {self.cost})>"


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to ``METHODS``; its name and slug must be new."""
    if not isinstance(method, Method):
        raise ValueError(f"register takes a Method, got {type(method).__name__}")
    if method.name in METHODS:
        raise ValueError(f"a method called {method.name!r} is already registered")
    if method.slug in by_slug():
        raise ValueError(f"the slug {method.slug!r} is already taken by {by_slug()[method.slug].name!r}")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove the method called ``name`` (display name) and return it."""
    if name not in METHODS:
        raise ValueError(f"no method called {name!r}; registered: {', '.join(METHODS)}")
    return METHODS.pop(name)


def by_slug() -> dict[str, Method]:
    return {m.slug: m for m in METHODS.values()}


def get_method(name: str) -> Method:
    """The entry for a display name or a slug (case-insensitive)."""
    for method in METHODS.values():
        if name.lower() in (method.name.lower(), method.slug):
            return method
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(m.slug for m in METHODS.values())}")


def _one_pass(**_) -> tuple[int, int]:
    return (1, 0)


def _pass_and_backward(**_) -> tuple[int, int]:
    return (1, 1)


def _score_cam_passes(channels: int, **_) -> tuple[int, int]:
    return (1 + channels, 0)


register(
    Method(
        name="CAM",
        slug="cam",
        function=cam,
        paper=Paper("Zhou, Khosla, Lapedriza, Oliva, Torralba", 2016,
                    "Learning Deep Features for Discriminative Localization", "https://arxiv.org/abs/1512.04150"),
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=False,
        needs_gradients=False,
        cost="1 forward",
        passes=_one_pass,
        requirement="GAP → Linear head",
        summary="the final Linear layer's weights of the class, applied to the pooled layer's maps (Eq. 2)",
    )
)
register(
    Method(
        name="Grad-CAM",
        slug="grad-cam",
        function=grad_cam,
        paper=Paper("Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra", 2017,
                    "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
                    "https://arxiv.org/abs/1610.02391"),
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward from the output to the layer",
        passes=_pass_and_backward,
        summary="channel weights are the spatial mean of the gradient (Eqs. 1-2)",
    )
)
register(
    Method(
        name="Grad-CAM++",
        slug="grad-cam++",
        function=grad_cam_plus_plus,
        paper=Paper("Chattopadhay, Sarkar, Howlader, Balasubramanian", 2018,
                    "Grad-CAM++: Generalized Gradient-Based Visual Explanations for Deep Convolutional Networks",
                    "https://arxiv.org/abs/1710.11063"),
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward from the output to the layer",
        passes=_pass_and_backward,
        summary="pixel-wise weights alpha of the positive gradients, closed form of Eq. 19",
    )
)
register(
    Method(
        name="Score-CAM",
        slug="score-cam",
        function=score_cam,
        paper=Paper("Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu", 2020,
                    "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
                    "https://arxiv.org/abs/1910.01279"),
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=True,
        needs_gradients=False,
        cost="1 + (live channels ≤ C) forwards",
        passes=_score_cam_passes,
        fast=False,
        default=False,
        summary="channel weights are the class probability on the image masked by each channel (Algorithm 1)",
    )
)
register(
    Method(
        name="Saliency",
        slug="saliency",
        function=saliency,
        paper=Paper("Simonyan, Vedaldi, Zisserman", 2014,
                    "Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps",
                    "https://arxiv.org/abs/1312.6034"),
        family="gradient",
        needs_layer=False,
        signed=True,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward to the input",
        passes=_pass_and_backward,
        default=False,
        to_heatmap=saliency_heatmap,
        summary="the absolute gradient of the class score at each pixel, maximum over colour channels (Sec. 3.1)",
    )
)
