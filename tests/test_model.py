"""The offline pretrained model: structure, equivalence with the reference package, predictions."""

import pytest
import torch
from torch import nn

import xai_helpers as xh
from xai_helpers.course.model import (
    RESNET50_FILES,
    EfficientNetLite0,
    efficientnet_lite0_weights_path,
)

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
# What a person sees in each photo; the model's top-1 must be one of these.
EXPECTED_TOP1 = {
    "chelsea": CAT_CLASSES,
    "coffee": {"espresso", "cup", "coffee mug"},
    "camera": {"tripod", "reflex camera"},
    "grace_hopper": {"military uniform", "suit", "bow tie"},
    "china": {"bell cote", "palace", "monastery", "boathouse", "pagoda", "stupa"},
    "cat_and_coffee": CAT_CLASSES | {"espresso", "cup"},
    "two_cats": CAT_CLASSES,
}


def test_structure(lite0):
    model = lite0.model
    assert isinstance(model, EfficientNetLite0) and not model.training
    assert [n for n, _ in model.named_children()] == ["features", "pool", "classifier"]
    assert lite0.target_layer is model.features.head
    assert isinstance(model.features.head.act, nn.ReLU6)
    assert lite0.fc is model.classifier.fc and lite0.fc.out_features == 1000
    assert len(lite0.categories) == 1000 and lite0.categories[285] == "Egyptian cat"
    assert lite0.mean == (0.5, 0.5, 0.5) and lite0.std == (0.5, 0.5, 0.5)
    assert list(lite0.layers)[0] == "stem" and list(lite0.layers)[-1] == "head"


def test_head_activation_runs_once(lite0, cat_x):
    calls = []
    handle = lite0.model.features.head.act.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            lite0.model(cat_x)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_target_layer_output_is_pooled(lite0, cat_x):
    store = {}
    handle = lite0.target_layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o) or None)
    try:
        with torch.no_grad():
            logits = lite0.model(cat_x)
    finally:
        handle.remove()
    assert store["a"].shape == (1, 1280, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(lite0.fc(store["a"].mean((2, 3))), logits)


def test_matches_reference_package(lite0):
    """Same logits as efficientnet-lite-pytorch's own model with the same checkpoint."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(efficientnet_lite0_weights_path())).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lite0.model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_any_input_size(lite0):
    with torch.no_grad():
        assert lite0.model(torch.randn(1, 3, 160, 200)).shape == (1, 1000)


def test_transform(lite0):
    x = lite0.transform(xh.load_image("coffee"))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert -1.01 <= float(x.min()) and float(x.max()) <= 1.01  # (x - 0.5) / 0.5


@pytest.mark.parametrize("sample", sorted(EXPECTED_TOP1))
def test_top1_is_what_a_person_sees(lite0, sample):
    (index, name, prob), *_ = lite0.predict(sample, k=5)
    assert name in EXPECTED_TOP1[sample], f"{sample}: top-1 {name} ({prob:.2f})"
    assert lite0.categories[index] == name


def test_predict_format(lite0):
    top = lite0.predict(xh.load_image("chelsea"), k=3)
    assert len(top) == 3
    probs = [p for _, _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert all(isinstance(i, int) and isinstance(n, str) for i, n, _ in top)
    with pytest.raises(ValueError, match="k must be between 1 and 1000"):
        lite0.predict("chelsea", k=0)


def test_predict_restores_every_submodules_mode(lite0):
    # A training model with frozen BatchNorm: model.train(True) afterwards would unfreeze them.
    lite0.model.train()
    frozen = [m for m in lite0.model.modules() if isinstance(m, torch.nn.BatchNorm2d)][::2]
    for bn in frozen:
        bn.eval()
    before = {name: m.training for name, m in lite0.model.named_modules()}
    try:
        assert lite0.predict("coffee", k=1)[0][1] == "espresso"  # computed in eval mode
        assert {name: m.training for name, m in lite0.model.named_modules()} == before
        assert not any(bn.training for bn in frozen)
    finally:
        lite0.model.eval()


def test_weights_loaded_with_weights_only(monkeypatch):
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    xh.load_model()
    assert calls == [True]


def test_resnet50_missing_weights_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="IMAGENET1K_V2.*needs no download"):
        xh.load_model("resnet50")


def test_resnet50_from_local_cache(monkeypatch, tmp_path):
    from torchvision.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    state = resnet50().state_dict()
    torch.save(state, tmp_path / "hub" / "checkpoints" / RESNET50_FILES[0])
    loaded = xh.load_model("resnet-50")
    assert loaded.target_layer is loaded.model.layer4 and loaded.fc is loaded.model.fc
    assert not loaded.model.training and loaded.mean == (0.485, 0.456, 0.406)
    torch.testing.assert_close(loaded.model.fc.weight, state["fc.weight"])
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(xh.grad_cam(loaded.model, x, loaded.target_layer), xh.cam(loaded.model, x, loaded.target_layer), atol=1e-5, rtol=0)
