"""The planted shortcut (issue 23, lesson 14): the MLP shortcut model reads the corner tag, the other models do not.

Checked against the known tags of the harder synthetic benchmark: the tag's corner agrees with the class
(``cue=1.0``) or is random (``cue=0.0``), on images never seen in training (seed 11). The GAP head cannot tell
one corner from another, so the same data planted no shortcut in the GAP model: a contrast, tested too.
"""

from __future__ import annotations

import pytest
import torch

import xai_helpers as xh
from xai_helpers import metrics as M
from xai_helpers.course.synthetic import load_synthetic_model, make_hard_dataset

N = 300


@pytest.fixture(scope="module")
def test_sets():
    return {cue: make_hard_dataset(N, seed=11, cue=cue) for cue in (1.0, 0.0)}


def predictions(model, data) -> torch.Tensor:
    with torch.no_grad():
        return model(data["x"]).argmax(1)


def accuracy(model, data) -> float:
    return (predictions(model, data) == data["y"]).double().mean().item()


def test_only_the_mlp_shortcut_model_depends_on_the_tag(test_sets):
    drops = {kind: accuracy(load_synthetic_model(kind), test_sets[1.0]) - accuracy(load_synthetic_model(kind), test_sets[0.0])
             for kind in ("mlp-shortcut", "mlp-hard", "gap-shortcut", "gap-hard")}
    # Measured when the checkpoints were made: 1.000 against 0.860 for the MLP shortcut model, no drop for the others.
    assert drops["mlp-shortcut"] > 0.08, drops
    assert all(abs(drops[k]) < 0.03 for k in ("mlp-hard", "gap-shortcut", "gap-hard")), drops


def test_occlusion_finds_the_tag_where_the_model_was_misled_and_grad_cam_misses_it(test_sets):
    model, data = load_synthetic_model("mlp-shortcut"), test_sets[0.0]
    predicted = predictions(model, data)
    misled = predicted != data["y"]  # the tag's corner pointed elsewhere, and the model followed it
    assert int(misled.sum()) >= 20
    x, tag, target = data["x"][misled], data["tag"][misled], predicted[misled]
    hits = {}
    for name in ("Occlusion", "Grad-CAM"):
        entry = xh.METHODS[name]
        heat = entry(model, x, model.features.block4, target=target, **entry.preview)
        hits[name] = M.pointing_game(heat, tag, tolerance=4).double().mean().item()
    # Measured: Occlusion's maximum is on the tag in 0.98 of these images, Grad-CAM's in 0.07.
    assert hits["Occlusion"] > 0.9 and hits["Grad-CAM"] < 0.2, hits
