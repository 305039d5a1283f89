"""xai_helpers: finished, tested CAM methods and the helpers the lessons use.

>>> import xai_helpers as xh                                    # doctest: +SKIP
>>> m = xh.load_model()                                         # doctest: +SKIP
>>> x = m.preprocess("chelsea")                                 # doctest: +SKIP
>>> heat = xh.grad_cam(m.model, x, m.target_layer)              # (1, 224, 224) in [0, 1]
"""

from .cam_method import cam, find_gap_linear
from .gradient_methods import grad_cam, grad_cam_plus_plus
from .hooks import LayerCapture, evaluating
from .images import SAMPLES, load_image, sample_path
from .model import LoadedModel, imagenet_categories, load_model
from .score_method import score_cam
from .visualize import SAFE_CMAPS, overlay, plot_overlays

__version__ = "0.1.0"

METHODS = {
    "CAM": cam,
    "Grad-CAM": grad_cam,
    "Grad-CAM++": grad_cam_plus_plus,
    "Score-CAM": score_cam,
}

from .dashboard import Dashboard, dashboard  # noqa: E402  (needs METHODS)
from .metrics import confidence_kept  # noqa: E402

__all__ = [
    "Dashboard",
    "confidence_kept",
    "dashboard",
    "METHODS",
    "SAMPLES",
    "SAFE_CMAPS",
    "LayerCapture",
    "LoadedModel",
    "cam",
    "evaluating",
    "find_gap_linear",
    "grad_cam",
    "grad_cam_plus_plus",
    "imagenet_categories",
    "load_image",
    "load_model",
    "overlay",
    "plot_overlays",
    "sample_path",
    "score_cam",
]
