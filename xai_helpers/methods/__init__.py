"""The methods: one module per family, and the registry that lists them all.

=====================  ==========================================================
``registry``           ``METHODS`` (image methods) and ``TABULAR_METHODS``, the one list
``cam_template``       a layer method is ``combine(activation, gradient) -> map``; ``eigen_smooth``
``aug_smooth``         pytorch-grad-cam's ``aug_smooth``: the mean map of six copies (flipped or not, x 0.9, 1, 1.1)
``cam``                CAM (Zhou et al. 2016)
``grad_cam``           Grad-CAM, Grad-CAM++ and Smooth Grad-CAM++
``cam_variants``       XGrad-CAM, HiResCAM, Grad-CAM element-wise, LayerCAM, EigenCAM, Eigen-Grad-CAM
``score_cam``          Score-CAM
``ablation_cam``       Ablation-CAM (re-runs only the layers after the explained one)
``sampled_score_cam``  SS-CAM and IS-CAM (Score-CAM with several scores per channel)
``pixel_gradients``    Saliency, Gradient x Input, SmoothGrad, Integrated Gradients
``backprop_rules``     DeepLIFT, Guided Backprop, Guided Grad-CAM
``full_grad``          FullGrad (the input and every bias layer's gradient term)
``perturbation``       Occlusion and RISE
``surrogates``         LIME and Kernel SHAP on superpixels
``shapley``            Shapley values and the Kernel SHAP regression (shared with tabular)
``baselines``          the null baselines of the evaluation lessons
``tabular``            methods for models of tables (lesson 12)
=====================  ==========================================================
"""

from . import backprop_rules, perturbation, pixel_gradients, surrogates, tabular
from .ablation_cam import ablation_cam
from .backprop_rules import deeplift, guided_backprop, guided_grad_cam
from .baselines import all_ones, centre_gaussian, random_map, sobel_edges
from .cam import cam, find_gap_linear
from .cam_template import activation_and_gradient, layer_heatmap, weighted_sum
from .cam_variants import (
    eigen_cam,
    eigen_grad_cam,
    grad_cam_elementwise,
    hires_cam,
    layer_cam,
    layer_cam_fusion,
    xgrad_cam,
)
from .full_grad import full_grad
from .grad_cam import grad_cam, grad_cam_plus_plus, smooth_grad_cam_plus_plus
from .perturbation import occlusion, rise
from .pixel_gradients import input_x_gradient, integrated_gradients, saliency, smoothgrad
from .registry import (
    FAMILIES,
    METHODS,
    SMOOTHING,
    TABULAR_METHODS,
    Explanation,
    Method,
    Paper,
    TabularMethod,
    by_slug,
    get_method,
    register,
    unregister,
)
from .score_cam import score_cam
from .sampled_score_cam import is_cam, ss_cam
from .shapley import shapley_values
from .surrogates import SegmentAttribution, kernel_shap, lime, superpixels

__all__ = [
    "ablation_cam",
    "is_cam",
    "ss_cam",
    "full_grad",
    "smooth_grad_cam_plus_plus",
    "Explanation",
    "FAMILIES",
    "METHODS",
    "SMOOTHING",
    "Method",
    "Paper",
    "SegmentAttribution",
    "TABULAR_METHODS",
    "TabularMethod",
    "activation_and_gradient",
    "all_ones",
    "by_slug",
    "cam",
    "centre_gaussian",
    "deeplift",
    "find_gap_linear",
    "get_method",
    "grad_cam",
    "grad_cam_plus_plus",
    "guided_backprop",
    "guided_grad_cam",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "layer_heatmap",
    "lime",
    "occlusion",
    "random_map",
    "register",
    "rise",
    "saliency",
    "score_cam",
    "shapley_values",
    "smoothgrad",
    "sobel_edges",
    "superpixels",
    "backprop_rules",
    "perturbation",
    "pixel_gradients",
    "surrogates",
    "tabular",
    "unregister",
    "xgrad_cam",
    "layer_cam_fusion",
    "layer_cam",
    "hires_cam",
    "grad_cam_elementwise",
    "eigen_grad_cam",
    "eigen_cam",
    "weighted_sum",
]
