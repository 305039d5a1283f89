"""The registry: every attribution method of the package, once.

The command line, the dashboard, the lessons and the tests read ``METHODS``;
nothing else lists methods or treats one by name.

The protocol
------------
A method is a :class:`Method` entry. Calling it returns the common heatmap::

    heat = METHODS["Grad-CAM"](model, x, layer, target=None, **settings)

* ``model``: any ``nn.Module``; its output goes through
  :func:`xai_helpers.engine.select_output` (tensor, ``"logits"``/``"out"`` entry,
  ``.logits`` attribute, or first element of a tuple).
* ``x``: a finite float (N, C, H, W) batch of the model's dtype, on the
  model's device. It is not modified, even by a model that works in place.
* ``layer``: the module to explain, for methods with ``needs_layer``; methods
  that work at the pixel take no layer and ignore one if given, so a caller
  can pass the same arguments to every entry.
* ``target``: None (each image's top-1), an int, N ints, or a callable
  ``f(output) -> (N,)`` score (see :mod:`xai_helpers.engine.targets`).
* ``settings``: the method's own keyword arguments (``reshape_transform`` for
  the layer methods, ``batch_size`` and ``progress`` for Score-CAM, ...).
* Returns a float32 (N, H, W) tensor in [0, 1] on the model's device, never
  NaN; a constant map is all zeros (except the all-ones null baseline, whose
  constant is its point).
* Leaves the model as it found it: train/eval flags, hooks, parameters'
  ``.grad`` and ``requires_grad``, and the input.
* Raises ``ValueError`` with the problem and the valid choices on bad input.

``entry.function`` is the raw function with the same arguments: a heatmap
already for the CAM family, a signed attribution for the others, such as
Saliency's (N, C, H, W) gradient or LIME's (N, H, W) superpixel values.

* ``entry.raw(...)`` always returns that tensor;
* ``entry(...)`` returns the (N, H, W) heatmap (``entry.to_heatmap`` of the raw output);
* ``entry.explain(...)`` returns an :class:`Explanation`: the raw tensor, the
  heatmap and the method's extras in one dict (Integrated Gradients' and
  DeepLIFT's completeness gap ``"delta"``; LIME's and Kernel SHAP's
  ``"segments"``, ``"values"``, ``"intercept"`` and the surrogate's ``"fit"``).

Adding a method
---------------
1. Write the raw function in the module of its family (``cam.py``,
   ``grad_cam.py``, ``score_cam.py``, ``pixel_gradients.py``,
   ``backprop_rules.py``, ``perturbation.py``, ``surrogates.py``, ...) with the
   signature above and the paper's equations in its docstring. A layer method
   is one ``combine(activation, gradient)`` given to
   :func:`~xai_helpers.methods.cam_template.layer_heatmap`; a multi-pass method
   hands its inputs to :class:`xai_helpers.engine.Scorer` as jobs.
2. Add one :class:`Method` entry below (or call :func:`register` from your
   own code); a slow method also gets ``preview`` settings.
3. Add a test with values computed by hand on a tiny model (and a peer
   library's value as an oracle where one exists). The generic tests (side
   effects, bad input, output contract, batch independence, non-finite input),
   the command line, the dashboard, the README's method table
   (``python3 dev.py readme``) and the lessons that read the registry
   (``python3 dev.py notebooks``) pick the entry up from here.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from ..engine import evidence_heatmap, normalize_per_image, saliency_heatmap
from .backprop_rules import deeplift, guided_backprop, guided_grad_cam
from .baselines import all_ones, centre_gaussian, random_map, sobel_edges
from .ablation_cam import ABLATION_BATCH, ablation_cam
from .cam import cam
from .cam_variants import eigen_cam, eigen_grad_cam, grad_cam_elementwise, hires_cam, layer_cam, xgrad_cam
from .full_grad import full_grad
from .grad_cam import grad_cam, grad_cam_plus_plus, smooth_grad_cam_plus_plus
from .perturbation import occlusion, rise
from .pixel_gradients import input_x_gradient, integrated_gradients, saliency, smoothgrad
from .sampled_score_cam import is_cam, ss_cam
from .score_cam import score_cam
from .surrogates import kernel_shap, lime
from .tabular import cem, exact_shapley_tabular, kernel_shap_tabular, permutation_importance, tree_importances, tree_shap

__all__ = [
    "Paper",
    "Method",
    "Explanation",
    "METHODS",
    "SMOOTHING",
    "FAMILIES",
    "register",
    "unregister",
    "get_method",
    "by_slug",
    "TabularMethod",
    "TABULAR_METHODS",
    "register_tabular",
]

FAMILIES = ("activation map", "gradient", "perturbation", "surrogate", "baseline")
#: pytorch-grad-cam's two smoothing settings (``methods.aug_smooth``, ``cam_template.reduce_channels``).
SMOOTHING = ("aug_smooth", "eigen_smooth")


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
        fast: about one pass: cheap enough to run as soon as a view opens
            (opt-in: False unless the entry says so).
        default: ticked when the dashboard opens (opt-in: False unless the
            entry says so, so a copied entry is not ticked by accident).
        to_heatmap: raw output -> (N, H, W) in [0, 1]; None when the raw
            output already is that heatmap.
        summary: one line on what it computes (the README's method table,
            ``python -m xai_helpers methods`` and the dashboard's tooltip).
        extras: the raw function's flag that makes it also return its extras
            (``"return_delta"``, ``"return_segments"``), read by :meth:`explain`.
        preview: settings that make a slow method cheaper for a first look
            or a table under a time budget (fewer samples or steps); callers
            that use them say so. Empty for methods that are cheap already.
        lesson: the notebook that derives the method.
        class_agnostic: the map does not depend on the target (EigenCAM), which
            is still checked; the tests and the lessons do not expect two
            classes to give two maps.
        baseline: a null baseline (``xai_helpers.baselines``): a map that
            ignores the decision, shown in every evaluation table so that a
            score can be read against chance; hidden from the dashboard's
            method list until "show baselines" is ticked.
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
    fast: bool = False
    default: bool = False
    to_heatmap: Callable[[torch.Tensor], torch.Tensor] | None = None
    summary: str = ""
    preview: dict = field(default_factory=dict)
    lesson: str = ""
    baseline: bool = False
    extras: str | None = None
    class_agnostic: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.baseline != (self.family == "baseline"):
            raise ValueError(f"{self.name}: baseline=True exactly for the family 'baseline'")
        if self.signed and self.to_heatmap is None:
            raise ValueError(f"{self.name}: a method with signed raw output needs a to_heatmap")
        if not self.slug or self.slug != self.slug.lower() or " " in self.slug:
            raise ValueError(f"slug must be lower case without spaces, got {self.slug!r}")

    @property
    def smoothing(self) -> tuple[str, ...]:
        """Which of pytorch-grad-cam's ``aug_smooth`` and ``eigen_smooth`` the raw function accepts (a setting each)."""
        parameters = inspect.signature(self.function).parameters
        return tuple(s for s in SMOOTHING if s in parameters)

    def with_settings(self, **settings) -> "Method":
        """This entry with ``settings`` fixed, under the name ``"Grad-CAM (eigen_smooth=True)"``: a row of its own
        in a comparison, e.g. lesson 11's measurement of the smoothing settings. Not registered."""
        if not settings:
            raise ValueError("with_settings needs at least one setting, e.g. eigen_smooth=True")
        parameters = inspect.signature(self.function).parameters
        unknown = [k for k in settings if k not in parameters]
        if unknown:
            raise ValueError(f"{self.name} has no setting {unknown[0]!r}; its settings are "
                             f"{', '.join(p for p in parameters if p not in ('model', 'x', 'layer', 'target'))}")
        shown = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        slug = self.slug + "".join(f"-{k.replace('_', '-')}-{str(v).lower()}" for k, v in settings.items())
        cost, passes = self.cost, self.passes
        if settings.get("aug_smooth") is True:  # the six copies run as one batch, after one forward pass
            cost = f"6 x ({self.cost}), on one batch of six copies, + 1 forward"

            def passes(**sizes):
                forward, backward = self.passes(**sizes)
                return (6 * forward + 1, 6 * backward)
        return replace(self, name=f"{self.name} ({shown})", slug=slug, cost=cost, passes=passes,
                       function=functools.partial(self.function, **settings), default=False)

    def _args(self, model, x, layer):
        if self.needs_layer:
            if layer is None:
                raise ValueError(f"{self.name} explains a layer: pass layer=, e.g. model.features[-1] or model.layer4")
            return (model, x, layer)
        return (model, x)

    def _refuse_extras_flags(self, settings: dict) -> None:
        for flag_name in ("return_delta", "return_segments"):
            if flag_name in settings:
                extra = (f"{self.name}.explain(...) returns them in .extras" if self.extras
                         else f"{self.name} has no extras")
                raise ValueError(f"{flag_name} is not a setting of a registry entry, which always returns a tensor; "
                                 f"{extra}")

    def raw(self, model, x, layer=None, target=None, **settings) -> torch.Tensor:
        """The raw output of ``function``, always a tensor (signed attributions for signed methods)."""
        self._refuse_extras_flags(settings)
        return self.function(*self._args(model, x, layer), target=target, **settings)

    def __call__(self, model, x, layer=None, target=None, **settings) -> torch.Tensor:
        """The (N, H, W) heatmap in [0, 1] (see the module's protocol)."""
        return self.heatmap_of(self.raw(model, x, layer, target, **settings))

    def heatmap_of(self, raw: torch.Tensor) -> torch.Tensor:
        """The (N, H, W) heatmap of a raw output of this method (``to_heatmap``, or the raw map itself)."""
        return raw if self.to_heatmap is None else self.to_heatmap(raw)

    def explain(self, model, x, layer=None, target=None, **settings) -> "Explanation":
        """The raw output, the heatmap and the extras of one call (see :class:`Explanation`)."""
        self._refuse_extras_flags(settings)
        if self.extras is None:
            raw, extras = self.raw(model, x, layer, target, **settings), {}
        else:
            out = self.function(*self._args(model, x, layer), target=target, **settings, **{self.extras: True})
            raw, extras = _split_extras(out)
        return Explanation(raw, self.heatmap_of(raw), extras)

    def __repr__(self) -> str:
        return f"<Method {self.name!r} ({self.family}; {self.cost})>"


@dataclass(frozen=True)
class Explanation:
    """What :meth:`Method.explain` returns.

    raw: the raw function's tensor; heatmap: the (N, H, W) map in [0, 1];
    extras: ``{"delta": (N,)}`` (the completeness gap of Integrated Gradients
    and DeepLIFT), ``{"segments", "values", "intercept", "fit"}`` (LIME, Kernel
    SHAP), or ``{}``.
    """

    raw: torch.Tensor
    heatmap: torch.Tensor
    extras: dict


def _split_extras(out) -> tuple[torch.Tensor, dict]:
    if hasattr(out, "_asdict"):  # SegmentAttribution
        fields = out._asdict()
        return fields.pop("maps"), fields
    attribution, delta = out
    return attribution, {"delta": delta}


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


def _score_cam_passes(channels: int, top_channels: int | None = None, **_) -> tuple[int, int]:
    return (1 + (channels if top_channels is None else min(channels, top_channels)), 0)


def _ablation_passes(channels: int, batch_size: int = ABLATION_BATCH["cpu"], **_) -> tuple[int, int]:
    # one pass to record the layer, then one model call per batch of ablated activations (plus the check row)
    return (1 + -(-(channels + 1) // batch_size), 0)


def _sampled_score_passes(channels: int, samples: int, top_channels: int | None = None, **_) -> tuple[int, int]:
    return (1 + samples * (channels if top_channels is None else min(channels, top_channels)), 0)


def _ss_cam_passes(channels: int, samples: int = 35, top_channels: int | None = None, **_) -> tuple[int, int]:
    return _sampled_score_passes(channels, samples, top_channels)


def _is_cam_passes(channels: int, samples: int = 10, top_channels: int | None = None, **_) -> tuple[int, int]:
    return _sampled_score_passes(channels, samples, top_channels)


def _smooth_pp_passes(samples: int = 4, **_) -> tuple[int, int]:
    return (1 + samples, samples)


def _two_passes(**_) -> tuple[int, int]:
    return (2, 2)


def _deeplift_passes(**_) -> tuple[int, int]:
    return (2, 1)  # one pass of the input and its reference, stacked


def _smoothgrad_passes(samples: int = 50, **_) -> tuple[int, int]:
    return (1 + samples, samples)


def _ig_passes(steps: int = 50, **_) -> tuple[int, int]:
    return (1 + steps, steps)


def _occlusion_passes(positions: int = 169, **_) -> tuple[int, int]:
    return (1 + positions, 0)


def _rise_passes(masks: int = 1000, **_) -> tuple[int, int]:
    return (1 + masks, 0)


def _lime_passes(samples: int = 1000, **_) -> tuple[int, int]:
    return (1 + samples, 0)


def _kernel_shap_passes(samples: int = 1000, **_) -> tuple[int, int]:
    return (2 + samples, 0)


def _check_pass(**_) -> tuple[int, int]:
    return (1, 0)  # the protocol's target check; the map itself needs no model


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
        fast=True,
        summary="the final Linear layer's weights of the class, applied to the pooled layer's maps (Eq. 2)",
        lesson="01_cam.ipynb",
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
        fast=True,
        default=True,
        summary="channel weights are the spatial mean of the gradient (Eqs. 1-2)",
        lesson="02_grad_cam.ipynb",
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
        fast=True,
        summary="pixel-wise weights alpha of the positive gradients, closed form of Eq. 19",
        lesson="03_grad_cam_plus_plus.ipynb",
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
        preview={"top_channels": 64},  # the 64 most active live channels: an approximation, lesson 04 exercise 2
        summary="channel weights are the class probability on the image masked by each channel (Algorithm 1)",
        lesson="04_score_cam.ipynb",
    )
)
# ---------------------------------------------------------------- the rest of the CAM family (lesson 11)

_PGC = Paper("Gildenblat and contributors", 2021, "PyTorch library for CAM methods (pytorch-grad-cam)",
             "https://github.com/jacobgil/pytorch-grad-cam")
_LESSON_11 = "11_cam_family_tree.ipynb"
for _name, _slug, _function, _paper, _summary in (
    ("XGrad-CAM", "xgrad-cam", xgrad_cam,
     Paper("Fu, Hu, Dong, Guo, Gao, Li", 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation "
           "of CNNs", "https://arxiv.org/abs/2008.02312"),
     "the gradient averaged with the channel's own activations as weights (the axioms' closed form)"),
    ("HiResCAM", "hires-cam", hires_cam,
     Paper("Draelos, Carin", 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional "
           "neural networks", "https://arxiv.org/abs/2011.08891"),
     "the gradient times the activation at each position, summed over channels: Grad-CAM without the averaging"),
    ("Grad-CAM element-wise", "grad-cam-elementwise", grad_cam_elementwise, _PGC,
     "the gradient times the activation with the ReLU inside the channel sum (pytorch-grad-cam's variant)"),
    ("LayerCAM", "layer-cam", layer_cam,
     Paper("Jiang, Zhang, Hou, Cheng, Wei", 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for "
           "Localization", "https://doi.org/10.1109/TIP.2021.3089943"),
     "each position weighted by its own positive gradient, so early layers keep their detail"),
):
    register(Method(name=_name, slug=_slug, function=_function, paper=_paper, family="activation map",
                    needs_layer=True, signed=False, reports_progress=False, needs_gradients=True,
                    cost="1 forward + 1 backward from the output to the layer", passes=_pass_and_backward,
                    fast=True, summary=_summary, lesson=_LESSON_11))
register(
    Method(
        name="EigenCAM",
        slug="eigen-cam",
        function=eigen_cam,
        paper=Paper("Muhammad, Yeasin", 2020, "Eigen-CAM: Class Activation Map using Principal Components",
                    "https://arxiv.org/abs/2008.00299"),
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=False,
        needs_gradients=False,
        cost="1 forward",
        passes=_one_pass,
        fast=True,
        summary="the first principal component of the layer's channels; class-agnostic (the target is ignored)",
        lesson=_LESSON_11,
        class_agnostic=True,
    )
)
register(
    Method(
        name="Eigen-Grad-CAM",
        slug="eigen-grad-cam",
        function=eigen_grad_cam,
        paper=_PGC,
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward from the output to the layer",
        passes=_pass_and_backward,
        fast=True,
        summary="the first principal component of gradient times activation (pytorch-grad-cam's variant)",
        lesson=_LESSON_11,
    )
)
register(
    Method(
        name="Ablation-CAM",
        slug="ablation-cam",
        function=ablation_cam,
        paper=Paper("Desai, Ramaswamy", 2020, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via "
                    "Gradient-free Localization", "https://openaccess.thecvf.com/content_WACV_2020/html/"
                    "Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_"
                    "Localization_WACV_2020_paper.html"),
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=True,
        needs_gradients=False,
        cost="1 forward + ⌈(live channels + 1) / 256⌉ calls that re-run only the layers after the layer",
        passes=_ablation_passes,
        summary="channel weights are the relative drop of the class score when the channel is set to 0",
        lesson=_LESSON_11,
    )
)
register(
    Method(
        name="Smooth Grad-CAM++",
        slug="smooth-grad-cam++",
        function=smooth_grad_cam_plus_plus,
        paper=Paper("Omeiza, Speakman, Cintas, Weldemariam", 2019, "Smooth Grad-CAM++: An Enhanced Inference Level "
                    "Visualization Technique for Deep Convolutional Neural Network Models",
                    "https://arxiv.org/abs/1908.01224"),
        family="activation map",
        needs_layer=True,
        signed=False,
        reports_progress=True,
        needs_gradients=True,
        cost="1 forward + samples (4) forwards and backwards from the output to the layer",
        passes=_smooth_pp_passes,
        summary="the Grad-CAM++ weights with each power of the gradient averaged over noisy copies of the image",
        lesson=_LESSON_11,
    )
)
for _name, _slug, _function, _paper, _cost, _passes, _over in (
    ("SS-CAM", "ss-cam", ss_cam,
     Paper("Wang, Naidu, Michael, Kundu", 2020, "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization",
           "https://arxiv.org/abs/2006.14255"),
     "1 + samples (35) x live channels forwards", _ss_cam_passes, "noisy copies of the channel's mask"),
    ("IS-CAM", "is-cam", is_cam,
     Paper("Naidu, Ghosh, Maurya, Nayak K, Kundu", 2020, "IS-CAM: Integrated Score-CAM for axiomatic-based "
           "explanations", "https://arxiv.org/abs/2010.03023"),
     "1 + samples (10) x live channels forwards", _is_cam_passes, "growing multiples of the channel's mask"),
):
    register(Method(name=_name, slug=_slug, function=_function, paper=_paper, family="activation map",
                    needs_layer=True, signed=False, reports_progress=True, needs_gradients=False, cost=_cost,
                    passes=_passes,
                    preview={"top_channels": 16, "samples": 2},  # 32 masked passes: an approximation, as Score-CAM's
                    summary=f"channel weights are the softmax of the mean logit increase over {_over}",
                    lesson=_LESSON_11))
register(
    Method(
        name="FullGrad",
        slug="full-grad",
        function=full_grad,
        paper=Paper("Srinivas, Fleuret", 2019, "Full-Gradient Representation for Neural Network Visualization",
                    "https://arxiv.org/abs/1905.00780"),
        family="activation map",  # its map is the sum of every layer's bias-gradient maps, as in pytorch-grad-cam
        needs_layer=False,
        signed=False,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward to the input",
        passes=_pass_and_backward,
        requirement="BatchNorm layers with running statistics (it refuses batch statistics)",
        fast=True,
        summary="the input-gradient term and every convolution's and BatchNorm's bias-gradient term, rescaled and summed",
        lesson=_LESSON_11,
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
        to_heatmap=saliency_heatmap,
        fast=True,
        default=True,
        summary="the absolute gradient of the class score at each pixel, maximum over colour channels (Sec. 3.1)",
        lesson="09_pixel_gradients.ipynb",
    )
)
register(
    Method(
        name="Gradient × Input",
        slug="input-x-gradient",
        function=input_x_gradient,
        paper=Paper("Shrikumar, Greenside, Shcherbina, Kundaje", 2016,
                    "Not Just a Black Box: Learning Important Features Through Propagating Activation Differences",
                    "https://arxiv.org/abs/1605.01713"),
        family="gradient",
        needs_layer=False,
        signed=True,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward to the input",
        passes=_pass_and_backward,
        to_heatmap=evidence_heatmap,
        fast=True,
        summary="the input times its gradient, summed over colour channels; positive part",
        lesson="09_pixel_gradients.ipynb",
    )
)
register(
    Method(
        name="SmoothGrad",
        slug="smoothgrad",
        function=smoothgrad,
        paper=Paper("Smilkov, Thorat, Kim, Viégas, Wattenberg", 2017,
                    "SmoothGrad: removing noise by adding noise", "https://arxiv.org/abs/1706.03825"),
        family="gradient",
        needs_layer=False,
        signed=True,
        reports_progress=True,
        needs_gradients=True,
        cost="samples (50) forwards + backwards to the input",
        passes=_smoothgrad_passes,
        to_heatmap=saliency_heatmap,
        summary="the gradient averaged over noisy copies of the image (Eq. 2), shown as Saliency",
        preview={"samples": 10},
        lesson="09_pixel_gradients.ipynb",
    )
)
register(
    Method(
        name="Integrated Gradients",
        slug="integrated-gradients",
        function=integrated_gradients,
        paper=Paper("Sundararajan, Taly, Yan", 2017, "Axiomatic Attribution for Deep Networks",
                    "https://arxiv.org/abs/1703.01365"),
        family="gradient",
        needs_layer=False,
        signed=True,
        reports_progress=True,
        needs_gradients=True,
        cost="steps (50) forwards + backwards to the input",
        passes=_ig_passes,
        to_heatmap=evidence_heatmap,
        extras="return_delta",
        summary="(x - x') times the gradient integrated along the straight path from the reference x' (Eq. 1)",
        preview={"steps": 16},
        lesson="09_pixel_gradients.ipynb",
    )
)
register(
    Method(
        name="DeepLIFT",
        slug="deeplift",
        function=deeplift,
        paper=Paper("Shrikumar, Greenside, Kundaje", 2017,
                    "Learning Important Features Through Propagating Activation Differences",
                    "https://arxiv.org/abs/1704.02685"),
        family="gradient",
        needs_layer=False,
        signed=True,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward of the image and its reference, stacked",
        passes=_deeplift_passes,
        to_heatmap=evidence_heatmap,
        fast=True,
        default=True,
        extras="return_delta",
        summary="the Rescale rule: multipliers Δy/Δx through every nonlinearity, times x - x' (Sec. 3.5.2)",
        lesson="09_pixel_gradients.ipynb",
    )
)
register(
    Method(
        name="Guided Backprop",
        slug="guided-backprop",
        function=guided_backprop,
        paper=Paper("Springenberg, Dosovitskiy, Brox, Riedmiller", 2015,
                    "Striving for Simplicity: The All Convolutional Net", "https://arxiv.org/abs/1412.6806"),
        family="gradient",
        needs_layer=False,
        signed=True,
        reports_progress=False,
        needs_gradients=True,
        cost="1 forward + 1 backward to the input",
        passes=_pass_and_backward,
        to_heatmap=saliency_heatmap,
        fast=True,
        summary="the gradient with only positive signals passed back through each ReLU (Fig. 1)",
        lesson="09_pixel_gradients.ipynb",
    )
)
register(
    Method(
        name="Guided Grad-CAM",
        slug="guided-grad-cam",
        function=guided_grad_cam,
        paper=Paper("Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra", 2017,
                    "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
                    "https://arxiv.org/abs/1610.02391"),
        family="gradient",
        needs_layer=True,
        signed=True,
        reports_progress=False,
        needs_gradients=True,
        cost="2 forwards + 2 backwards (Grad-CAM and Guided Backprop)",
        passes=_two_passes,
        to_heatmap=saliency_heatmap,
        fast=True,
        summary="the Guided Backprop map times the upsampled Grad-CAM map (Sec. 3)",
        lesson="09_pixel_gradients.ipynb",
    )
)
register(
    Method(
        name="Occlusion",
        slug="occlusion",
        function=occlusion,
        paper=Paper("Zeiler, Fergus", 2014, "Visualizing and Understanding Convolutional Networks",
                    "https://arxiv.org/abs/1311.2901"),
        family="perturbation",
        needs_layer=False,
        signed=True,
        reports_progress=True,
        needs_gradients=False,
        cost="1 + window positions forwards (170 at 224², window 32, stride 16)",
        passes=_occlusion_passes,
        to_heatmap=evidence_heatmap,
        summary="the drop of the class probability when a sliding grey patch hides each region (Sec. 4.2)",
        preview={"window": 0.25, "stride": 0.125},  # 56 and 28 pixels at 224 x 224
        lesson="08_occlusion_and_rise.ipynb",
    )
)
register(
    Method(
        name="RISE",
        slug="rise",
        function=rise,
        paper=Paper("Petsiuk, Das, Saenko", 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
                    "https://arxiv.org/abs/1806.07421"),
        family="perturbation",
        needs_layer=False,
        signed=False,
        reports_progress=True,
        needs_gradients=False,
        cost="1 + masks (1000) forwards",
        passes=_rise_passes,
        to_heatmap=normalize_per_image,
        summary="random smooth masks averaged with the class probability of the masked image as weight (Eq. 6)",
        preview={"masks": 64},
        lesson="08_occlusion_and_rise.ipynb",
    )
)
register(
    Method(
        name="LIME",
        slug="lime",
        function=lime,
        paper=Paper("Ribeiro, Singh, Guestrin", 2016, "\"Why Should I Trust You?\": Explaining the Predictions of Any Classifier",
                    "https://arxiv.org/abs/1602.04938"),
        family="surrogate",
        needs_layer=False,
        signed=True,
        reports_progress=True,
        needs_gradients=False,
        cost="1 + samples (1000) forwards, one per coalition of superpixels",
        passes=_lime_passes,
        to_heatmap=evidence_heatmap,
        extras="return_segments",
        summary="a weighted ridge regression of the class probability on which superpixels are kept (Eqs. 1-2)",
        preview={"samples": 64},
        lesson="10_lime_and_kernel_shap.ipynb",
    )
)
register(
    Method(
        name="Kernel SHAP",
        slug="kernel-shap",
        function=kernel_shap,
        paper=Paper("Lundberg, Lee", 2017, "A Unified Approach to Interpreting Model Predictions",
                    "https://arxiv.org/abs/1705.07874"),
        family="surrogate",
        needs_layer=False,
        signed=True,
        reports_progress=True,
        needs_gradients=False,
        cost="2 + samples (1000) forwards, one per coalition of superpixels",
        passes=_kernel_shap_passes,
        to_heatmap=evidence_heatmap,
        extras="return_segments",
        summary="the Shapley values of the superpixels by weighted least squares with the Shapley kernel (Theorem 2)",
        preview={"samples": 64},
        lesson="10_lime_and_kernel_shap.ipynb",
    )
)


# ---------------------------------------------------------------- null baselines (lessons 06 and 07)

_HOOKER = Paper("Hooker, Erhan, Kindermans, Kim", 2019, "A Benchmark for Interpretability Methods in Deep Neural Networks",
                "https://arxiv.org/abs/1806.10758")
for _name, _slug, _function, _paper, _summary in (
    ("Random (baseline)", "random-baseline", random_map, _HOOKER,
     "uniform noise from a fixed seed: the score of ranking pixels at random"),
    ("Centre Gaussian (baseline)", "centre-baseline", centre_gaussian,
     Paper("Judd, Ehinger, Durand, Torralba", 2009, "Learning to Predict Where Humans Look",
           "https://people.csail.mit.edu/tjudd/WherePeopleLook/Docs/wherepeoplelook.pdf"),
     "a Gaussian blob in the middle (sigma = a quarter of the side): the photos' centre bias"),
    ("Sobel edges (baseline)", "edges-baseline", sobel_edges, _HOOKER,
     "the image's edge magnitude: looks like an explanation, knows nothing of the model"),
    ("All ones (baseline)", "ones-baseline", all_ones,
     Paper("Poppi, Cornia, Baraldi, Cucchiara", 2021, "Revisiting The Evaluation of Class Activation Mapping for "
           "Explainability: A Novel Metric and Experimental Analysis", "https://arxiv.org/abs/2104.10252"),
     "every pixel relevant: a perfect Average Drop, no explanation"),
):
    register(
        Method(
            name=_name,
            slug=_slug,
            function=_function,
            paper=_paper,
            family="baseline",
            needs_layer=False,
            signed=False,
            reports_progress=False,
            needs_gradients=False,
            cost="1 forward (to check the target); the map needs no model",
            passes=_check_pass,
            fast=True,
            summary=_summary,
            lesson="06_evaluation.ipynb",
            baseline=True,
        )
    )


# ---------------------------------------------------------------- tabular methods (lesson 12)
#
# Models of tables take other arguments than image models (a prediction function
# and a table, a booster, a differentiable model), so they have their own small
# protocol: each entry names its function and what kind of model it needs.


@dataclass(frozen=True, eq=False)
class TabularMethod:
    """A method for models of tabular data (``xai_helpers.tabular``).

    Attributes:
        name, slug, function, paper, summary, lesson: as for :class:`Method`.
        models: what it can explain: "any model" (only predictions are used),
            "XGBoost" (reads the trees) or "differentiable PyTorch model".
        scope: "global" (the model as a whole) or "local" (one row).
    """

    name: str
    slug: str
    function: Callable[..., Any]
    paper: Paper
    models: str
    scope: str
    summary: str
    lesson: str = "12_tabular.ipynb"


TABULAR_METHODS: dict[str, TabularMethod] = {}


def register_tabular(method: TabularMethod) -> TabularMethod:
    """Add ``method`` to ``TABULAR_METHODS``; its name and slug must be new."""
    if method.name in TABULAR_METHODS or method.slug in {m.slug for m in TABULAR_METHODS.values()}:
        raise ValueError(f"a tabular method called {method.name!r} or with slug {method.slug!r} is already registered")
    if method.scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {method.scope!r}")
    TABULAR_METHODS[method.name] = method
    return method


register_tabular(TabularMethod(
    name="Permutation importance", slug="permutation-importance", function=permutation_importance,
    paper=Paper("Breiman; Fisher, Rudin, Dominici", 2019,
                "All Models are Wrong, but Many are Useful: Learning a Variable's Importance by Studying an Entire "
                "Class of Prediction Models Simultaneously", "https://arxiv.org/abs/1801.01489"),
    models="any model", scope="global",
    summary="the drop of a score when one column is shuffled, mean and spread over repeats",
))
register_tabular(TabularMethod(
    name="XGBoost importances", slug="tree-importances", function=tree_importances,
    paper=Paper("Chen, Guestrin", 2016, "XGBoost: A Scalable Tree Boosting System", "https://arxiv.org/abs/1603.02754"),
    models="XGBoost", scope="global",
    summary="weight, gain and cover of the splits on each feature, normalised, side by side",
))
register_tabular(TabularMethod(
    name="Kernel SHAP (tabular)", slug="kernel-shap-tabular", function=kernel_shap_tabular,
    paper=Paper("Lundberg, Lee", 2017, "A Unified Approach to Interpreting Model Predictions",
                "https://arxiv.org/abs/1705.07874"),
    models="any model", scope="local",
    summary="interventional Shapley values of one row against a background set, by the Shapley-kernel regression",
))
register_tabular(TabularMethod(
    name="Exact Shapley values", slug="exact-shapley", function=exact_shapley_tabular,
    paper=Paper("Lundberg, Lee", 2017, "A Unified Approach to Interpreting Model Predictions",
                "https://arxiv.org/abs/1705.07874"),
    models="any model", scope="local",
    summary="the interventional Shapley values by enumerating all 2^M coalitions (M <= 12)",
))
register_tabular(TabularMethod(
    name="TreeSHAP", slug="tree-shap", function=tree_shap,
    paper=Paper("Lundberg, Erion, Lee", 2018, "Consistent Individualized Feature Attribution for Tree Ensembles",
                "https://arxiv.org/abs/1802.03888"),
    models="XGBoost", scope="local",
    summary="path-dependent Shapley values of every row, from XGBoost's pred_contribs",
))
register_tabular(TabularMethod(
    name="CEM", slug="cem", function=cem,
    paper=Paper("Dhurandhar, Chen, Luss, Tu, Ting, Shanmugam, Das", 2018,
                "Explanations based on the Missing: Towards Contrastive Explanations with Pertinent Negatives",
                "https://arxiv.org/abs/1802.07623"),
    models="differentiable PyTorch model", scope="local",
    summary="pertinent positives and negatives by projected FISTA on the elastic-net objective (no autoencoder term)",
))
