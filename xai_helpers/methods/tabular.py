"""Explaining models of tabular data: permutation importance, tree importances, SHAP and CEM.

The image methods take an image batch; these take a table ``X`` of shape
(rows, features) and a model given as a function ``model_fn(X) -> scores``
(any model: a scikit-learn or XGBoost model's ``predict_proba``, a PyTorch
network wrapped in a function). They work in NumPy and float64, where the
tables are small; CEM optimises through a differentiable PyTorch model.

Lesson 12 derives each one and checks it against scikit-learn, XGBoost and shap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..engine import evaluating
from ..engine.inputs import number, positive_int
from .shapley import constrained_wls, kernel_shap_design, shapley_values

__all__ = [
    "PermutationImportance",
    "permutation_importance",
    "TREE_IMPORTANCE_TYPES",
    "tree_importances",
    "coalition_values",
    "kernel_shap_tabular",
    "exact_shapley_tabular",
    "tree_shap",
    "CEMResult",
    "cem",
]


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        count = int((~np.isfinite(values)).sum())
        raise ValueError(f"{name} contains {count} non-finite value{'s' if count > 1 else ''} (NaN or inf); "
                         "impute or drop them first: the methods here need finite inputs")
    return values


def _table(X, name: str = "X") -> np.ndarray:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric table (rows, features): {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D table (rows, features), got shape {X.shape}")
    return _finite(name, X)


def _predictions(model_fn, rows: np.ndarray, expected: int) -> np.ndarray:
    """model_fn(rows) as a float64 vector of one score per row, checked to be finite."""
    out = np.asarray(model_fn(rows), dtype=np.float64).reshape(-1)
    if out.shape[0] != expected:
        raise ValueError(f"model_fn must return one score per row ({expected}), got {out.shape[0]} values; "
                         "pick one class, e.g. lambda X: model.predict_proba(X)[:, 1]")
    return _finite("model_fn's output", out)


_positive_int = positive_int


# ---------------------------------------------------------------- permutation importance


@dataclass(frozen=True)
class PermutationImportance:
    """importances: (features, repeats) score drops; mean and std over repeats; baseline: the unpermuted score."""

    importances: np.ndarray
    importances_mean: np.ndarray
    importances_std: np.ndarray
    baseline: float


def permutation_importance(
    model_fn: Callable[[np.ndarray], np.ndarray],
    X,
    y,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_repeats: int = 5,
    seed: int = 0,
) -> PermutationImportance:
    """Permutation feature importance (Breiman 2001, Sec. 10; Fisher, Rudin & Dominici 2019, Eq. 3.2).

    .. math::
        I_j = s(y, f(X)) - \\frac{1}{K} \\sum_{k=1}^{K} s\\big(y, f(X^{\\pi_k, j})\\big)

    where X^{pi, j} is X with column j shuffled by the permutation pi and s a
    score where higher is better (``metric(y_true, model_fn(X))``, e.g.
    accuracy or ROC AUC). The shuffle breaks the column's link to y *and to
    the other columns*: with correlated features the model may use the
    partner instead, and both importances shrink (the lesson's trap).

    The permutations come from ``numpy.random.default_rng(seed)``: for each
    repeat, one permutation per column, drawn in column order.
    """
    X = _table(X)
    y = np.asarray(y)
    if len(y) != len(X):
        raise ValueError(f"y has {len(y)} rows but X has {len(X)}")
    n_repeats = _positive_int("n_repeats", n_repeats)
    baseline = float(metric(y, model_fn(X)))
    rng = np.random.default_rng(seed)
    drops = np.zeros((X.shape[1], n_repeats))
    for k in range(n_repeats):
        for j in range(X.shape[1]):
            shuffled = X.copy()
            shuffled[:, j] = X[rng.permutation(len(X)), j]
            drops[j, k] = baseline - float(metric(y, model_fn(shuffled)))
    return PermutationImportance(drops, drops.mean(1), drops.std(1), baseline)


# ---------------------------------------------------------------- XGBoost's importances

TREE_IMPORTANCE_TYPES = ("weight", "gain", "cover", "total_gain", "total_cover")


def tree_importances(booster, n_features: int | None = None, normalise: bool = True) -> dict[str, np.ndarray]:
    """XGBoost's built-in importances (Chen & Guestrin 2016, Sec. 2.2, Eq. 7 for a split's gain), side by side: {type: (features,)}.

    * ``weight``: how many splits use the feature;
    * ``gain``: the mean loss reduction of those splits; ``total_gain`` the sum;
    * ``cover``: the mean number of (hessian-weighted) training rows those
      splits route; ``total_cover`` the sum.

    They disagree because they count different things: a feature split often
    near the leaves (small gain, small cover) ranks high by weight, one split
    once at the root ranks high by gain and cover. Features never split on get
    0. With ``normalise`` each type sums to 1. ``booster`` is an
    ``xgboost.Booster`` or a model with ``get_booster()``.
    """
    booster = booster.get_booster() if hasattr(booster, "get_booster") else booster
    n = n_features if n_features is not None else booster.num_features()
    names = booster.feature_names
    out = {}
    for kind in TREE_IMPORTANCE_TYPES:
        scores = booster.get_score(importance_type=kind)
        values = np.zeros(n)
        for key, value in scores.items():
            index = names.index(key) if names is not None and key in names else int(key.lstrip("f"))
            values[index] = value
        out[kind] = values / values.sum() if normalise and values.sum() > 0 else values
    return out


# ---------------------------------------------------------------- Shapley values


def coalition_values(model_fn, x, background, z) -> np.ndarray:
    """v(S) for coalitions z (K, M): the mean over background rows b of f(x_S, b_{not S}).

    The *interventional* (marginal) value function of Janzing et al. 2020 and
    Kernel SHAP's independence approximation (Lundberg & Lee 2017, Eq. 11):
    features outside S are drawn from the background data, whatever x_S is.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    background = _table(background, "background")
    z = np.asarray(z, dtype=bool)
    k, b = len(z), len(background)
    rows = np.where(z[:, None, :], x[None, None, :], background[None, :, :]).reshape(k * b, -1)
    return _predictions(model_fn, rows, k * b).reshape(k, b).mean(1)


def _check_row(x, background):
    x = _finite("x", np.asarray(x, dtype=np.float64).reshape(-1))
    background = _table(background, "background")
    if background.shape[1] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} features but the background has {background.shape[1]}")
    return x, background


def exact_shapley_tabular(model_fn, x, background) -> tuple[np.ndarray, float]:
    """Exact interventional Shapley values of one row by enumeration (Eq. 8 of Lundberg & Lee 2017):
    (phi (M,), phi_0 = v(empty)). All 2^M coalitions, each scored on every background row; M <= 12."""
    x, background = _check_row(x, background)
    m = x.shape[0]
    if m > 12:
        raise ValueError(f"exact enumeration needs M <= 12 features (2^M coalitions), got {m}; use kernel_shap_tabular")
    phi = shapley_values(lambda z: torch.from_numpy(coalition_values(model_fn, x, background, z.numpy())), m)
    empty = coalition_values(model_fn, x, background, np.zeros((1, m), dtype=bool))[0]
    return phi.numpy(), float(empty)


def kernel_shap_tabular(model_fn, x, background, samples: int = 2048, seed: int = 0) -> tuple[np.ndarray, float]:
    """Kernel SHAP for one row (Lundberg & Lee 2017, Theorem 2) with a background set: (phi (M,), phi_0).

    The same estimator as the image version (:func:`xai_helpers.kernel_shap`):
    the Shapley-kernel weighted least squares with local accuracy imposed
    exactly, every coalition once when ``samples`` >= 2^M - 2 (then the exact
    Shapley values of :func:`coalition_values`), paired sampling otherwise.
    """
    x, background = _check_row(x, background)
    samples = _positive_int("samples", samples)
    m = x.shape[0]
    empty = coalition_values(model_fn, x, background, np.zeros((1, m), dtype=bool))[0]
    full = float(_predictions(model_fn, x[None], 1)[0])
    if m == 1:
        return np.array([full - empty]), float(empty)
    z, w = kernel_shap_design(m, samples, seed)
    y = torch.from_numpy(coalition_values(model_fn, x, background, z.numpy()))
    phi = constrained_wls(z.double(), y - empty, w, torch.tensor(full - empty, dtype=torch.float64))
    return phi.numpy(), float(empty)


def tree_shap(booster, X) -> tuple[np.ndarray, np.ndarray]:
    """Path-dependent TreeSHAP (Lundberg, Erion & Lee 2018, Algorithm 2) through XGBoost's
    ``predict(..., pred_contribs=True)``: (contributions (rows, M), bias (rows,)), on the margin.

    Local accuracy: contributions.sum(1) + bias equals the margin (log-odds) of each row.
    "Path-dependent": a feature outside the coalition follows the training
    rows' split proportions (cover) down the tree, so the values describe the
    model *and* the training distribution of correlated features; Kernel SHAP
    with a background set (:func:`kernel_shap_tabular`) gives the
    interventional values instead.

    ``X`` may be a pandas DataFrame (its column names are passed on, so a
    booster trained with feature names accepts it) and may hold NaN: XGBoost
    treats NaN as a missing value and sends it down each split's default branch.
    """
    import xgboost

    booster = booster.get_booster() if hasattr(booster, "get_booster") else booster
    names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
    values = np.asarray(X, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D table (rows, features), got shape {values.shape}")
    if np.isinf(values).any():
        raise ValueError("X contains inf; XGBoost reads NaN as missing, but inf is a value no split can place")
    out = booster.predict(xgboost.DMatrix(values, feature_names=names), pred_contribs=True)
    return out[:, :-1].astype(np.float64), out[:, -1].astype(np.float64)


# ---------------------------------------------------------------- CEM


@dataclass(frozen=True)
class CEMResult:
    """delta: the perturbation found; explanation: the input it describes (x_min + delta for a
    pertinent positive, x + delta for a pertinent negative); predicted: the model's class on it;
    found: whether the class condition holds (kept for PP, changed for PN)."""

    mode: str
    delta: np.ndarray
    explanation: np.ndarray
    predicted: int
    original: int
    found: bool


def cem(
    model: torch.nn.Module,
    x,
    mode: str = "PN",
    x_min=None,
    x_max=None,
    kappa: float = 0.1,
    beta: float = 0.1,
    c: float = 10.0,
    steps: int = 500,
    learning_rate: float = 0.01,
) -> CEMResult:
    """Contrastive Explanation Method (Dhurandhar et al. 2018, Eqs. 1-4), without the autoencoder term.

    Features are measured from ``x_min``, the value that means "absent"
    (default: zero). With t_0 the class of x and [z]_i the logits:

    * pertinent negative (``mode="PN"``, Eq. 1): the smallest *addition*
      delta >= 0 (within ``x_max``) such that x + delta is classified
      differently,
      min_delta  c * max([x+d]_{t0} - max_{i != t0} [x+d]_i, -kappa) + beta ||d||_1 + ||d||_2^2;
    * pertinent positive (``mode="PP"``, Eq. 3): the smallest part
      0 <= delta <= x - x_min that alone keeps the class,
      min_delta  c * max(max_{i != t0} [x_min+d]_i - [x_min+d]_{t0}, -kappa) + beta ||d||_1 + ||d||_2^2.

    Solved by FISTA (Beck & Teboulle 2009): a gradient step on the smooth part
    (hinge + squared norm), the elastic-net soft threshold for beta ||.||_1,
    the projection onto the box, then Nesterov's momentum; the best feasible
    iterate (sparsest loss among those meeting the class condition) is kept.
    The paper's optional autoencoder term gamma ||x + d - AE(x + d)||^2 is
    left out: the lesson's tabular data have no autoencoder.
    """
    if mode not in ("PN", "PP"):
        raise ValueError(f"mode must be 'PN' (pertinent negative) or 'PP' (pertinent positive), got {mode!r}")
    steps = _positive_int("steps", steps)
    kappa = number("kappa", kappa, low=0.0)
    beta = number("beta", beta, low=0.0)
    c = number("c", c, low=0.0, low_open=True)
    learning_rate = number("learning_rate", learning_rate, low=0.0, low_open=True)
    x = torch.as_tensor(_finite("x", np.asarray(x, dtype=np.float64).reshape(-1)))
    lo = torch.zeros_like(x) if x_min is None else torch.as_tensor(np.asarray(x_min, dtype=np.float64).reshape(-1))
    hi = torch.full_like(x, float("inf")) if x_max is None else torch.as_tensor(np.asarray(x_max, dtype=np.float64).reshape(-1))
    if lo.shape != x.shape or hi.shape != x.shape:
        raise ValueError(f"x_min and x_max must have x's {x.shape[0]} features")
    if torch.isnan(lo).any() or torch.isnan(hi).any() or torch.isinf(lo).any() or (hi < lo).any():
        raise ValueError("x_min must be finite and x_max (which may be +inf) at least x_min, feature by feature")
    dtype = next(model.parameters()).dtype

    def logits(inp: torch.Tensor) -> torch.Tensor:
        return model(inp.to(dtype)[None])[0].double()

    with evaluating(model):
        with torch.no_grad():
            t0 = int(logits(x).argmax())
        base = lo if mode == "PP" else x
        upper = (x - lo) if mode == "PP" else (hi - x)     # the box for delta: [0, upper]
        upper = upper.clamp_min(0)

        def hinge(d: torch.Tensor) -> torch.Tensor:
            z = logits(base + d)
            others = torch.cat([z[:t0], z[t0 + 1 :]]).max()
            margin = (z[t0] - others) if mode == "PN" else (others - z[t0])
            return torch.clamp(margin, min=-kappa)

        def condition(d: torch.Tensor) -> bool:
            with torch.no_grad():
                predicted = int(logits(base + d).argmax())
            return predicted != t0 if mode == "PN" else predicted == t0

        delta = torch.zeros_like(x)
        y = delta.clone()
        best, best_cost = None, float("inf")
        for k in range(steps):
            y_ = y.clone().requires_grad_(True)
            with torch.enable_grad():
                smooth = c * hinge(y_) + (y_**2).sum()
                (grad,) = torch.autograd.grad(smooth, y_)
            step = y - learning_rate * grad
            # Soft threshold (the proximal step of beta * ||.||_1), then the box [0, upper].
            new = torch.sign(step) * (step.abs() - learning_rate * beta).clamp_min(0)
            new = torch.minimum(new.clamp_min(0), upper)
            y = new + k / (k + 3) * (new - delta)
            y = torch.minimum(y.clamp_min(0), upper)
            delta = new
            if condition(delta):
                cost = float(beta * delta.abs().sum() + (delta**2).sum())
                if cost < best_cost:
                    best, best_cost = delta.clone(), cost
        found = best is not None
        final = best if found else delta
        if not bool(torch.isfinite(final).all()):
            raise ValueError("CEM's optimisation diverged to NaN or inf; lower learning_rate or c")
        with torch.no_grad():
            predicted = int(logits(base + final).argmax())
    return CEMResult(mode, final.numpy(), (base + final).numpy(), predicted, t0, found)
