"""The data the lessons stand on: synthetic images with exact masks, their shipped checkpoints, photo variants."""

import numpy as np
import pytest
import torch

import xai_helpers as xh
from xai_helpers.course.synthetic import (
    CLASSES,
    SIZE,
    SyntheticCNN,
    SyntheticMLP,
    load_synthetic_model,
    make_dataset,
)


def test_hard_dataset_masks_instances_sizes_and_cue():
    from xai_helpers.course.synthetic import CLASSES, CORNERS, make_hard_dataset

    data = make_hard_dataset(90, seed=3)
    x, y, mask, tag = data["x"], data["y"], data["mask"], data["tag"]
    assert x.shape == (90, 3, 64, 64) and torch.bincount(y).tolist() == [30, 30, 30]
    assert not (mask & tag).any()  # the cue is never evidence
    assert tag.flatten(1).sum(1).eq(32).all()  # one 4 x 8 tag per image
    assert 15 <= int(data["two"].sum()) <= 45  # about a third show two instances
    assert data["radius"].min() >= 3 and data["radius"].max() <= 12 and (data["radius"] <= 5).any()
    pixels = x * 0.25 + 0.5
    for i in range(90):
        colour = {"red": 0, "green": 1, "blue": 2}[CLASSES[int(y[i])][0]]
        assert (pixels[i, :, mask[i]].argmax(0) == colour).all()
    # cue = 1: the tag always sits in the class's corner; cue = 0: it says nothing about the class
    def corner(data, i):
        ys, xs = torch.nonzero(data["tag"][i], as_tuple=True)
        return [k for k, (cy, cx) in enumerate(CORNERS) if cy <= ys.min() <= cy + 7 and cx <= xs.min() <= cx + 7][0]

    always = make_hard_dataset(30, seed=4, cue=1.0)
    assert all(corner(always, i) == int(always["y"][i]) for i in range(30))
    never = make_hard_dataset(300, seed=5, cue=0.0)
    agree = sum(corner(never, i) == int(never["y"][i]) for i in range(300)) / 300
    assert 0.2 < agree < 0.47  # chance is 1/3
    again = make_hard_dataset(90, seed=3)
    assert torch.equal(again["x"], x) and torch.equal(again["mask"], mask)
    with pytest.raises(ValueError, match="cue must be a probability"):
        make_hard_dataset(3, cue=1.5)


@pytest.mark.parametrize("kind", ["gap-hard", "mlp-hard"])
def test_hard_checkpoints_load_and_are_accurate(kind):
    from xai_helpers.course.synthetic import load_synthetic_model, make_hard_dataset

    model = load_synthetic_model(kind)
    data = make_hard_dataset(150, seed=7)
    with torch.no_grad():
        assert (model(data["x"]).argmax(1) == data["y"]).float().mean() >= 0.95


def test_photo_variants():
    from PIL import ImageOps

    from xai_helpers.course.images import VARIANTS, photo_variant

    assert VARIANTS == ("original", "mirror", "crop")
    original = photo_variant("chelsea")
    assert np.array_equal(np.asarray(photo_variant("chelsea", "mirror")), np.asarray(original)[:, ::-1])
    assert np.array_equal(np.asarray(ImageOps.mirror(original)), np.asarray(original)[:, ::-1])
    w, h = original.size
    assert photo_variant("chelsea", "crop").size == (round(0.9 * w) - round(0.1 * w), round(0.9 * h) - round(0.1 * h))
    with pytest.raises(ValueError, match="unknown variant 'rotate'; choose from original, mirror, crop"):
        photo_variant("chelsea", "rotate")


def test_synthetic_dataset_has_exact_masks():
    x, y, masks = make_dataset(30, seed=3)
    assert x.shape == (30, 3, SIZE, SIZE) and masks.shape == (30, SIZE, SIZE)
    assert torch.bincount(y).tolist() == [10, 10, 10]
    pixels = x * 0.25 + 0.5
    for i in range(30):
        colour = {"red": 0, "green": 1, "blue": 2}[CLASSES[int(y[i])][0]]
        inside = pixels[i, :, masks[i]]
        # the mask covers exactly the class object: its dominant channel is the class colour
        assert masks[i].sum() > 60 and (inside.argmax(0) == colour).all()
    x2, y2, masks2 = make_dataset(30, seed=3)
    assert torch.equal(x, x2) and torch.equal(masks, masks2)


def test_synthetic_checkpoint_loads_and_is_accurate():
    model = load_synthetic_model()
    assert isinstance(model, SyntheticCNN) and not model.training
    x, y, _ = make_dataset(150, seed=7)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.95
    assert xh.find_gap_linear(model, x[:1], model.features.block4) is model.classifier


def test_second_synthetic_model_has_a_head_where_the_methods_differ():
    model = load_synthetic_model("mlp")
    assert isinstance(model, SyntheticMLP) and not model.training
    x, y, _ = make_dataset(150, seed=7)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.95
    layer = model.features.block4
    with pytest.raises(ValueError, match="global average pooling"):
        xh.cam(model, x[:2], layer)
    grad_cam = xh.grad_cam(model, x[:8], layer, target=y[:8])
    plus = xh.grad_cam_plus_plus(model, x[:8], layer, target=y[:8])
    assert (grad_cam - plus).abs().amax() > 0.2  # genuinely different maps, unlike on the GAP model
    with pytest.raises(ValueError, match="unknown synthetic model 'vgg'; choose from gap, mlp"):
        load_synthetic_model("vgg")


def test_synthetic_checkpoint_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_synthetic.py"):
        load_synthetic_model(path=tmp_path / "none.pt")


