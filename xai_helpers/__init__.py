"""xai_helpers: finished, tested attribution methods and the helpers the lessons use.

>>> import xai_helpers as xh                                    # doctest: +SKIP
>>> m = xh.load_model()                                         # doctest: +SKIP
>>> x = m.preprocess("chelsea")                                 # doctest: +SKIP
>>> heat = xh.grad_cam(m.model, x, m.target_layer)              # (1, 224, 224) in [0, 1]
>>> heat = xh.METHODS["Saliency"](m.model, x)                   # every method, one protocol

The package is layered; each layer imports only from the layers below it
(``tests/test_layout.py`` checks this):

==============  ==========================================================
``engine``      hooks, inputs and targets, feature maps, heatmaps, the fast copy, the batched scorer
``methods``     the registry ``METHODS`` and one module per family of methods
``metrics``     faithfulness, localisation, similarity, statistics
``course``      the model, the photos, the synthetic data, the checked exercises
``ui``          figures, the dashboard, the command line
==============  ==========================================================

This module is the public face: every name the lessons use is here.
"""

from . import engine, methods, metrics
from .course import exercises, images, model, synthetic
from .course.claims import ClaimError, claim
from .course.exercises import check
from .course.images import SAMPLES, load_image, sample_path
from .course.model import LoadedModel, imagenet_categories, load_model
from .engine import (
    LayerCapture,
    evaluating,
    evidence_heatmap,
    model_lock,
    nhwc_to_nchw,
    normalize_per_image,
    saliency_heatmap,
    select_output,
    to_feature_map,
    tokens_to_grid,
)
from .methods import (
    FAMILIES,
    METHODS,
    TABULAR_METHODS,
    Explanation,
    Method,
    Paper,
    SegmentAttribution,
    TabularMethod,
    ablation_cam,
    is_cam,
    ss_cam,
    full_grad,
    smooth_grad_cam_plus_plus,
    activation_and_gradient,
    all_ones,
    backprop_rules,
    cam,
    centre_gaussian,
    deeplift,
    find_gap_linear,
    get_method,
    grad_cam,
    grad_cam_plus_plus,
    eigen_cam,
    eigen_grad_cam,
    grad_cam_elementwise,
    hires_cam,
    layer_cam,
    layer_cam_fusion,
    xgrad_cam,
    guided_backprop,
    guided_grad_cam,
    input_x_gradient,
    integrated_gradients,
    kernel_shap,
    lime,
    occlusion,
    perturbation,
    pixel_gradients,
    random_map,
    register,
    rise,
    saliency,
    score_cam,
    shapley_values,
    smoothgrad,
    sobel_edges,
    superpixels,
    surrogates,
    tabular,
    unregister,
)
from .metrics import confidence_kept
from .ui import SAFE_CMAPS, SIGNED_CMAP, Dashboard, DashboardState, dashboard, overlay, plot_overlays, plot_signed, signed_overlay

__version__ = "0.3.0"

__all__ = [
    "Dashboard",
    "DashboardState",
    "Explanation",
    "FAMILIES",
    "LayerCapture",
    "LoadedModel",
    "METHODS",
    "Method",
    "Paper",
    "SAFE_CMAPS",
    "SAMPLES",
    "SegmentAttribution",
    "TABULAR_METHODS",
    "TabularMethod",
    "activation_and_gradient",
    "all_ones",
    "cam",
    "centre_gaussian",
    "check",
    "claim",
    "ClaimError",
    "confidence_kept",
    "dashboard",
    "deeplift",
    "engine",
    "evaluating",
    "evidence_heatmap",
    "find_gap_linear",
    "get_method",
    "grad_cam",
    "grad_cam_plus_plus",
    "eigen_cam",
    "ablation_cam",
    "is_cam",
    "ss_cam",
    "full_grad",
    "smooth_grad_cam_plus_plus",
    "eigen_grad_cam",
    "grad_cam_elementwise",
    "hires_cam",
    "layer_cam",
    "layer_cam_fusion",
    "xgrad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "imagenet_categories",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "lime",
    "load_image",
    "load_model",
    "methods",
    "metrics",
    "model_lock",
    "nhwc_to_nchw",
    "normalize_per_image",
    "occlusion",
    "overlay",
    "plot_overlays",
    "plot_signed",
    "signed_overlay",
    "SIGNED_CMAP",
    "random_map",
    "register",
    "rise",
    "saliency",
    "saliency_heatmap",
    "sample_path",
    "score_cam",
    "select_output",
    "shapley_values",
    "smoothgrad",
    "sobel_edges",
    "superpixels",
    "tabular",
    "to_feature_map",
    "tokens_to_grid",
    "unregister",
]
