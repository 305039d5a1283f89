"""How good is a heatmap? Faithfulness (ask the model again), localisation (ask the ground truth),
similarity (the sanity checks) and the statistics to read them with.

=================  ===============================================================
``removal``        which pixels a map ranks first, what removed pixels become, ROAD's imputation
``faithfulness``   Average Drop, Increase in Confidence, deletion and insertion, ROAD, all at once
``localisation``   the pointing game and the energy pointing game
``similarity``     Spearman's rho, SSIM and the signed unit scale of Adebayo et al. 2018
``statistics``     bootstrap intervals and Kendall's tau
``sanity``         the model-parameter randomisation test, its measures and its verdict rule
=================  ===============================================================

Every metric that runs the model goes through the engine's batched scorer
(:class:`xai_helpers.engine.Scorer`) and takes the methods' targets.
"""

from ..engine.targets import SCORES
from .faithfulness import (
    METRICS,
    absolute_drop,
    auc,
    average_drop,
    confidence_kept,
    deletion_auc,
    deletion_insertion_curves,
    explanation_scores,
    faithfulness,
    increase_in_confidence,
    insertion_auc,
    road,
)
from .localisation import energy_pointing_game, pointing_game
from .removal import REFERENCES, gaussian_blur, keep_top_mask, noisy_linear_imputation, reference_image
from . import sanity
from .similarity import average_ranks, spearman, ssim, unit_signed
from .statistics import bootstrap_ci, kendall_tau, proportion_ci

__all__ = [
    "METRICS",
    "REFERENCES",
    "SCORES",
    "absolute_drop",
    "auc",
    "average_drop",
    "average_ranks",
    "bootstrap_ci",
    "proportion_ci",
    "confidence_kept",
    "deletion_auc",
    "deletion_insertion_curves",
    "energy_pointing_game",
    "explanation_scores",
    "faithfulness",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion_auc",
    "keep_top_mask",
    "kendall_tau",
    "noisy_linear_imputation",
    "pointing_game",
    "reference_image",
    "road",
    "sanity",
    "spearman",
    "ssim",
    "unit_signed",
]
