"""Lesson 12's tabular methods: hand-computed cases, identities, and scikit-learn, XGBoost and shap as oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from xai_helpers import tabular as T

xgboost = pytest.importorskip("xgboost")
sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def data():
    X, y = sklearn_datasets.load_breast_cancer(return_X_y=True)
    return X[:, :8], y   # 8 features: enumeration stays cheap


@pytest.fixture(scope="module")
def booster(data):
    X, y = data
    model = xgboost.XGBClassifier(n_estimators=30, max_depth=3, learning_rate=0.3, random_state=0, n_jobs=1)
    model.fit(X, y)
    return model


def accuracy(y, p):
    return float(((np.asarray(p) > 0.5) == y).mean())


# ---------------------------------------------------------------- permutation importance


def test_permutation_importance_by_hand():
    # The model reads feature 0 only: every other column's importance is exactly 0.
    X = np.array([[-1.0, 5.0, 2.0], [2.0, -3.0, 1.0], [-3.0, 2.0, 0.0], [4.0, 1.0, 9.0]])
    y = np.array([0, 1, 0, 1])
    result = T.permutation_importance(lambda A: (A[:, 0] > 0).astype(float), X, y, accuracy, n_repeats=4, seed=1)
    assert result.baseline == 1.0
    assert np.all(result.importances[1:] == 0) and result.importances_mean[0] > 0
    # The first repeat's permutation of column 0, redrawn: its drop by hand.
    rng = np.random.default_rng(1)
    perm = rng.permutation(4)
    expected = 1.0 - accuracy(y, (X[perm, 0] > 0).astype(float))
    assert result.importances[0, 0] == expected


def test_permutation_importance_against_scikit_learn(data, booster):
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    X, y = data
    ours = T.permutation_importance(lambda A: booster.predict_proba(A)[:, 1], X, y, accuracy, n_repeats=30, seed=0)
    theirs = sk_permutation_importance(booster, X, y, scoring=lambda est, A, b: accuracy(b, est.predict_proba(A)[:, 1]),
                                       n_repeats=30, random_state=0)
    se = np.sqrt((ours.importances_std**2 + theirs.importances_std**2) / 30)
    # Different random permutations: the means agree within the repeats' standard error.
    assert np.all(np.abs(ours.importances_mean - theirs.importances_mean) <= 3 * se + 1e-12)
    assert ours.importances_mean.max() > 0.01


def test_correlated_duplicate_splits_the_importance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(size=400)
    y = (a + 0.5 * b > 0).astype(int)
    X = np.stack([a, b, a], 1)                      # column 2 duplicates column 0
    # A model that averages the two copies: shuffling one copy only half-breaks it.
    dup = T.permutation_importance(lambda A: ((A[:, 0] + A[:, 2]) / 2 + 0.5 * A[:, 1] > 0).astype(float), X, y, accuracy,
                                   n_repeats=10)
    single = T.permutation_importance(lambda A: (A[:, 0] + 0.5 * A[:, 1] > 0).astype(float), X[:, :2], y, accuracy,
                                      n_repeats=10)
    assert dup.importances_mean[0] < 0.8 * single.importances_mean[0]


# ---------------------------------------------------------------- XGBoost's importances


def _by_hand(model, n):
    """weight, gain and cover from the JSON dump of every tree, summed independently of get_score."""
    weight, gain, cover = np.zeros(n), np.zeros(n), np.zeros(n)

    def walk(node):
        if "leaf" in node:
            return
        j = int(node["split"].lstrip("f")) if node["split"].startswith("f") else int(node["split"])
        weight[j] += 1
        gain[j] += node["gain"]
        cover[j] += node["cover"]
        for child in node["children"]:
            walk(child)

    for tree in model.get_booster().get_dump(dump_format="json", with_stats=True):
        walk(json.loads(tree))
    return weight, gain, cover


def test_tree_importances_against_the_trees_themselves(booster, data):
    n = data[0].shape[1]
    weight, gain, cover = _by_hand(booster, n)
    got = T.tree_importances(booster, n, normalise=False)
    np.testing.assert_allclose(got["weight"], weight)
    np.testing.assert_allclose(got["total_gain"], gain, rtol=1e-5)
    np.testing.assert_allclose(got["total_cover"], cover, rtol=1e-5)
    used = weight > 0
    np.testing.assert_allclose(got["gain"][used], gain[used] / weight[used], rtol=1e-5)
    np.testing.assert_allclose(got["cover"][used], cover[used] / weight[used], rtol=1e-5)
    normalised = T.tree_importances(booster, n)
    for kind, values in normalised.items():
        assert abs(values.sum() - 1) < 1e-12, kind
    # The three types rank the features differently on this model.
    orders = {tuple(np.argsort(-normalised[k])[:3]) for k in ("weight", "gain", "cover")}
    assert len(orders) > 1


# ---------------------------------------------------------------- Shapley values


def margin_fn(model):
    booster = model.get_booster()
    return lambda A: booster.predict(xgboost.DMatrix(A), output_margin=True)


def test_interventional_shapley_of_a_linear_model_by_hand():
    w = np.array([1.5, -2.0, 0.5])
    background = np.array([[0.0, 1.0, 2.0], [2.0, -1.0, 0.0], [1.0, 3.0, 1.0]])
    x = np.array([3.0, 0.5, -1.0])
    phi, phi0 = T.exact_shapley_tabular(lambda A: A @ w, x, background)
    np.testing.assert_allclose(phi, w * (x - background.mean(0)))
    assert abs(phi0 - background.mean(0) @ w) < 1e-12


def test_exact_and_kernel_shap_against_shap_tree_explainer_interventional(data, booster):
    shap = pytest.importorskip("shap")
    X, _ = data
    background, x = X[:20], X[100]
    f = margin_fn(booster)
    phi, phi0 = T.exact_shapley_tabular(f, x, background)
    explainer = shap.TreeExplainer(booster, data=background, feature_perturbation="interventional", model_output="raw")
    theirs = explainer.shap_values(x[None])[0]
    np.testing.assert_allclose(phi, theirs, rtol=1e-4, atol=1e-5)
    assert abs(phi0 - explainer.expected_value) < 1e-4
    # Kernel SHAP with every coalition is the same; sampled, it keeps local accuracy exactly.
    enumerated, _ = T.kernel_shap_tabular(f, x, background, samples=254)
    np.testing.assert_allclose(enumerated, phi, rtol=1e-6, atol=1e-8)
    sampled, base = T.kernel_shap_tabular(f, x, background, samples=60, seed=3)
    assert abs(sampled.sum() + base - float(f(x[None])[0])) < 1e-6
    assert not np.allclose(sampled, phi)


def test_kernel_shap_against_shap_kernel_explainer(data, booster):
    shap = pytest.importorskip("shap")
    X, _ = data
    background, x = X[:10], X[200]
    f = margin_fn(booster)
    ours, _ = T.kernel_shap_tabular(f, x, background, samples=254)
    # With nsamples >= 2^M - 2, shap's KernelExplainer enumerates every coalition too.
    theirs = shap.KernelExplainer(f, background).shap_values(x[None], nsamples=254, silent=True)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_tree_shap_local_accuracy_and_against_shap(data, booster):
    shap = pytest.importorskip("shap")
    X, _ = data
    contributions, bias = T.tree_shap(booster, X[:50])
    margins = booster.get_booster().predict(xgboost.DMatrix(X[:50]), output_margin=True)
    np.testing.assert_allclose(contributions.sum(1) + bias, margins, rtol=1e-5, atol=1e-5)
    theirs = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent").shap_values(X[:50])
    np.testing.assert_allclose(contributions, theirs, rtol=1e-4, atol=1e-5)


def test_bad_tables_are_named():
    with pytest.raises(ValueError, match="2-D table"):
        T.permutation_importance(lambda A: A[:, 0], np.zeros(5), np.zeros(5), accuracy)
    with pytest.raises(ValueError, match="y has 3 rows but X has 5"):
        T.permutation_importance(lambda A: A[:, 0], np.zeros((5, 2)), np.zeros(3), accuracy)
    with pytest.raises(ValueError, match="n_repeats must be a positive int"):
        T.permutation_importance(lambda A: A[:, 0], np.zeros((5, 2)), np.zeros(5), accuracy, n_repeats=0)
    with pytest.raises(ValueError, match="M <= 12"):
        T.exact_shapley_tabular(lambda A: A[:, 0], np.zeros(13), np.zeros((2, 13)))
    with pytest.raises(ValueError, match="background has 3"):
        T.kernel_shap_tabular(lambda A: A[:, 0], np.zeros(2), np.zeros((2, 3)))


# ---------------------------------------------------------------- CEM


class TwoFeatures(nn.Module):
    """Logits (x0 - 3 x1 - 0.5, 3 x1): class 0 needs feature 0 and the absence of feature 1; feature 2 is ignored."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, -3.0, 0.0], [0.0, 3.0, 0.0]]))
            self.linear.bias.copy_(torch.tensor([-0.5, 0.0]))

    def forward(self, x):
        return self.linear(x)


def test_cem_pertinent_negative_flips_the_class_and_is_sparse():
    model = TwoFeatures().double().train()
    x = np.array([1.0, 0.0, 2.0])                     # class 0: logits (0.5, 0)
    pn = T.cem(model, x, mode="PN", x_max=np.full(3, 5.0), steps=300)
    assert model.training                             # the mode is restored
    assert pn.original == 0 and pn.found and pn.predicted != 0
    # Class 1 needs 6 d1 > 0.5 (+ kappa = 0.1 of margin): d1 = 0.1, and nothing else changes.
    assert 0.08 < pn.delta[1] < 0.15 and abs(pn.delta[0]) < 1e-9 and abs(pn.delta[2]) < 1e-9
    with torch.no_grad():
        assert int(model(torch.tensor(x + pn.delta)[None]).argmax()) == 1


def test_cem_pertinent_positive_alone_keeps_the_class():
    model = TwoFeatures().double().eval()
    x = np.array([1.0, 0.0, 2.0])
    pp = T.cem(model, x, mode="PP", steps=300)
    assert pp.found and pp.predicted == 0
    # The empty input is class 1 (logits (-0.5, 0)): the pertinent positive needs feature 0, and
    # feature 2 plays no role, so the sparsity term leaves it out.
    assert 0.4 < pp.delta[0] <= 1.0 and abs(pp.delta[2]) < 1e-9
    with torch.no_grad():
        assert int(model(torch.tensor(pp.explanation)[None]).argmax()) == 0
    with pytest.raises(ValueError, match="mode must be 'PN'"):
        T.cem(model, x, mode="both")
