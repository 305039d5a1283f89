"""The engine: what every method and metric shares, and nothing that knows a method by name.

=================  ===============================================================
``hooks``          eval mode restored per module, hooks always removed, a lock per model
``inputs``         checks of the batch, the layer and every setting (clear ValueErrors)
``targets``        the selected output, the target, and the one place a class becomes a score
``forward``        one checked pass of the caller's model on a private copy of the input
``feature_maps``   a layer's output as (N, C, h, w); layouts guessed only where unambiguous
``layer_pass``     the activation A of a layer and d y / d A, for the layer methods
``layer_replay``   the layers after one layer, re-run on a batch of replacement activations
``input_gradient`` d y / d x in one pass, for the one-pass pixel methods
``heatmaps``       min-max scaling, the CAM finishing order, pixel-map reductions
``references``     the reference input x' of a method
``progress``       a tqdm bar or a callback
``model_traits``   what a model's structure implies: batch statistics, tie-breaking max pooling
``model_cache``    what is derived from a model, kept and verified before every reuse
``fast_copy``      the cached, verified private copy (BatchNorm folded, channels_last)
``scorer``         the one batched loop for multi-pass methods and metrics
=================  ===============================================================
"""

from . import model_cache
from .fast_copy import clear_fast_copies, copy_without_hooks, fast_copy, fold_batchnorm
from .model_traits import breaks_ties, uses_batch_statistics
from .feature_maps import ReshapeTransform, fits_input, nhwc_to_nchw, to_feature_map, tokens_to_grid
from .forward import model_output
from .heatmaps import evidence_heatmap, finish, minmax, normalize_per_image, saliency_heatmap
from .hooks import LayerCapture, check_submodule, evaluating, iter_modules, model_lock
from .input_gradient import input_gradient
from .inputs import check_input, check_layer
from .layer_pass import LayerPass, layer_pass
from .layer_replay import LayerReplay
from .progress import progress_bar
from .references import make_reference
from .scorer import FAST_COPY_MIN_PASSES, Scorer, default_batch_size
from .targets import SCORES, Target, class_scores, resolve_targets, select_output, target_scores

__all__ = [
    "FAST_COPY_MIN_PASSES",
    "LayerCapture",
    "LayerPass",
    "LayerReplay",
    "ReshapeTransform",
    "SCORES",
    "Scorer",
    "Target",
    "breaks_ties",
    "check_input",
    "check_layer",
    "check_submodule",
    "class_scores",
    "clear_fast_copies",
    "copy_without_hooks",
    "default_batch_size",
    "evaluating",
    "evidence_heatmap",
    "fast_copy",
    "finish",
    "fits_input",
    "fold_batchnorm",
    "input_gradient",
    "iter_modules",
    "layer_pass",
    "make_reference",
    "model_cache",
    "minmax",
    "model_lock",
    "model_output",
    "nhwc_to_nchw",
    "normalize_per_image",
    "progress_bar",
    "resolve_targets",
    "saliency_heatmap",
    "select_output",
    "target_scores",
    "to_feature_map",
    "tokens_to_grid",
    "uses_batch_statistics",
]
