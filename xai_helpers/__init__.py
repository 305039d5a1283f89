"""xai_helpers: finished, tested attribution methods and the helpers the lessons use.

>>> import xai_helpers as xh                                    # doctest: +SKIP
>>> m = xh.load_model()                                         # doctest: +SKIP
>>> x = m.preprocess("chelsea")                                 # doctest: +SKIP
>>> heat = xh.grad_cam(m.model, x, m.target_layer)              # (1, 224, 224) in [0, 1]
>>> heat = xh.METHODS["Saliency"](m.model, x)                   # every method, one protocol

``xh.METHODS`` (``xai_helpers.methods``) is the one registry of methods.
"""

from .backprop_rules import deeplift, guided_backprop, guided_grad_cam
from .baselines import all_ones, centre_gaussian, random_map, sobel_edges
from .cam_method import cam, find_gap_linear
from .core import nhwc_to_nchw, select_output, tokens_to_grid, to_feature_map
from .dashboard import Dashboard, DashboardState, dashboard
from .gradient_methods import grad_cam, grad_cam_plus_plus
from .hooks import LayerCapture, evaluating, model_lock
from .images import SAMPLES, load_image, sample_path
from .methods import FAMILIES, METHODS, TABULAR_METHODS, Method, Paper, TabularMethod, get_method, register, unregister
from .metrics import confidence_kept
from .model import LoadedModel, imagenet_categories, load_model
from .perturbation import occlusion, rise
from .pixel_gradients import input_x_gradient, integrated_gradients, saliency, saliency_heatmap, smoothgrad
from .score_method import score_cam
from .surrogates import SegmentAttribution, kernel_shap, lime, shapley_values, superpixels
from .visualize import SAFE_CMAPS, overlay, plot_overlays

__version__ = "0.2.0"

__all__ = [
    "Dashboard",
    "DashboardState",
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
    "all_ones",
    "cam",
    "centre_gaussian",
    "confidence_kept",
    "dashboard",
    "deeplift",
    "evaluating",
    "find_gap_linear",
    "get_method",
    "grad_cam",
    "grad_cam_plus_plus",
    "guided_backprop",
    "guided_grad_cam",
    "imagenet_categories",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "lime",
    "load_image",
    "load_model",
    "model_lock",
    "nhwc_to_nchw",
    "occlusion",
    "overlay",
    "plot_overlays",
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
    "to_feature_map",
    "tokens_to_grid",
    "unregister",
]
